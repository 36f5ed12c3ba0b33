"""Shared by every dashboard browser test: ``qsf dashboard ...`` started as a real process (its
URL line awaited), a Playwright page on Debian's Chromium, a recorder of requests leaving
localhost, waiting for marimo's charts (drawn inside shadow roots) and the screenshots."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: safety nets only: each wait ends on its condition (a line, an element)
START_BOUND_S = 240.0
PAGE_BOUND_MS = 180_000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
#: a drawn vega chart: a canvas or an svg of marks inside its .vega-embed
CHART = ".vega-embed canvas, .vega-embed svg.marks"
#: the README's screenshots, rewritten with QSF_UPDATE_SCREENSHOTS=1 (``python docs/screenshots.py``)
DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class Dashboard:
    """A running ``qsf dashboard`` process, its URL and everything it printed."""

    proc: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    def stop(self) -> int:
        """Ctrl-C (SIGINT) and the exit code; the process must end on its own."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=START_BOUND_S)


@contextmanager
def dashboard(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[Dashboard]:
    """Start ``qsf dashboard ARGS`` (in CWD), yield once it printed its URL, stop it with SIGINT
    after. ``-P``: run as the ``qsf`` script runs, without the working directory on sys.path."""
    proc = subprocess.Popen([sys.executable, "-P", "-m", "qsframework.cli", "dashboard", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    url = None
    try:
        while url is None:
            line = lines.get(timeout=START_BOUND_S)
            if line is None:
                raise AssertionError(f"qsf dashboard exited ({proc.wait()}) before its URL:\n{''.join(output)}")
            if line.startswith("qsf dashboard ") and "http://" in line:
                url = line.split("http://", 1)[1].split()[0]
                url = f"http://{url}"
        yield Dashboard(proc=proc, url=url, output=output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=START_BOUND_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Requests:
    """Every URL the page asked for, and those that went anywhere but localhost."""

    all: list[str] = field(default_factory=list)

    def record(self, url: str) -> None:
        self.all.append(url)

    @property
    def outside(self) -> list[str]:
        return [u for u in self.all if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                and urlsplit(u).hostname not in LOCAL_HOSTS]


@contextmanager
def browser_page(url: str) -> Iterator[tuple[object, Requests]]:
    """A Chromium page (Debian's binary, never a download) on URL, with its request recorder."""
    from playwright.sync_api import sync_playwright

    requests = Requests()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # tall: every panel is on screen, so each draws and the screenshots show the whole page
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.set_default_timeout(PAGE_BOUND_MS)
            page.on("request", lambda r: requests.record(r.url))
            page.on("websocket", lambda ws: requests.record(ws.url))
            page.goto(url, wait_until="load")
            yield page, requests
        finally:
            browser.close()


def wait_for_charts(page: object, count: int) -> None:
    """Until COUNT vega charts have drawn. A locator, not ``document.querySelectorAll``: it pierces
    the shadow roots marimo renders into; attached, not visible: a refresh may be redrawing one."""
    page.locator(CHART).nth(count - 1).wait_for(state="attached")  # type: ignore[attr-defined]


def screenshot(page: object, path: Path, *, charts: int, full_page: bool = False,
               clip: dict[str, float] | None = None) -> Path:
    """The page, once CHARTS charts are drawn, into PATH; also the README's copy in docs/ (CLIP
    of it, if given) with QSF_UPDATE_SCREENSHOTS=1."""
    wait_for_charts(page, charts)
    page.screenshot(path=str(path), full_page=full_page)  # type: ignore[attr-defined]
    if os.environ.get("QSF_UPDATE_SCREENSHOTS") == "1":
        if clip is None:
            shutil.copy(path, DOCS / path.name)
        else:
            page.screenshot(path=str(DOCS / path.name), clip=clip)  # type: ignore[attr-defined]
    return path
