"""Graceful stops: SIGTERM and SIGINT call a component's ``stop()`` on the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable


def stop_on_signals(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM/SIGINT (a no-op off the main thread, where signals cannot go)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # add_signal_handler refuses off the main thread (RuntimeError/ValueError) and on
        # loops without signal support (NotImplementedError): the caller then stops by
        # other means (its own stop() or end of input), so there is nothing to install
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop)
