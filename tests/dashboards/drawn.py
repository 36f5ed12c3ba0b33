"""Waiting for marimo's charts in the dashboard tests of the live and flight views: marimo
draws each vega chart inside a shadow root, which Playwright's locators pierce (a
``document.querySelectorAll`` does not)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHART = ".vega-embed canvas, .vega-embed svg.marks"


def wait_for_drawn(page: object, count: int) -> None:
    """Until ``count`` vega charts have drawn (a canvas or an svg of marks in each)."""
    page.locator(CHART).nth(count - 1).wait_for(state="attached")  # type: ignore[attr-defined]


def screenshot(page: object, path: Path, *, charts: int, height: int = 2200) -> Path:
    """The page in one tall viewport (marimo scrolls inside the page, so a full-page shot would
    cut it), once ``charts`` charts are drawn; also copied to $QSF_SCREENSHOTS_DIR when set (``QSF_SCREENSHOTS_DIR=docs``
    regenerates the README's screenshots)."""
    page.set_viewport_size({"width": 1400, "height": height})  # type: ignore[attr-defined]
    wait_for_drawn(page, charts)  # a refresh may be redrawing them
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
    if os.environ.get("QSF_SCREENSHOTS_DIR"):
        shutil.copy(path, Path(os.environ["QSF_SCREENSHOTS_DIR"]) / path.name)
    return path
