"""Waiting for marimo's charts in the live and flight browser tests, and their screenshots:
marimo draws each vega chart inside a shadow root, which Playwright's locators pierce (a
``document.querySelectorAll`` does not)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHART = ".vega-embed canvas, .vega-embed svg.marks"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def wait_for_drawn(page: object, count: int) -> None:
    """Until ``count`` vega charts have drawn (a canvas or an svg of marks in each)."""
    page.locator(CHART).nth(count - 1).wait_for(state="attached")  # type: ignore[attr-defined]


def screenshot(page: object, path: Path, *, charts: int) -> Path:
    """The page once ``charts`` charts are drawn (a refresh may be redrawing them); also the
    README's copy in docs/ with QSF_UPDATE_SCREENSHOTS=1 (``python docs/screenshots.py``)."""
    wait_for_drawn(page, charts)
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
    if os.environ.get("QSF_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, DOCS / path.name)
    return path
