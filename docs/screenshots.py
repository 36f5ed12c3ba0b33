"""Regenerate the README's dashboard screenshots (docs/dashboard-*.png) from the browser tests.

Usage: python docs/screenshots.py   (runs tests/dashboards/test_{backtest,sweep}.py's browser
tests with QSF_UPDATE_SCREENSHOTS=1, which also write the committed PNGs here)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    tests = sorted(str(p) for p in (ROOT / "tests" / "dashboards").glob("test_*.py"))
    env = {**os.environ, "QSF_UPDATE_SCREENSHOTS": "1"}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-k", "browser", *tests], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
