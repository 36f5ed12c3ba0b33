"""The dashboard extra alone (marimo, altair) serves the backtest, sweep and live dashboards:
nothing they import needs pymavlink (the mavlink extra), which a new user without it lacked."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.modules["pymavlink"] = None  # as if the mavlink extra were not installed: importing it fails
import qsframework.dashboards, qsframework.dashboards.server, qsframework.cli.dashboard
from qsframework.dashboards import load_backtest, load_sweep, load_live_health
try:
    import pymavlink  # noqa: F401
except ImportError:
    print("ok")
"""


def test_the_dashboards_import_without_pymavlink():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
