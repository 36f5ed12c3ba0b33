"""A sink that holds a checkpoint after the sinks before it have staged their files and
before the snapshot is saved, while a FIFO exists at $QSF_TEST_HOLD: the window where a
crash once doubled --record (its files written, the snapshot not yet). It takes the input
rows too, so it holds only checkpoints that bring new rows (those the recorder stages).

A held checkpoint goes on once the test has opened the FIFO for writing and closed it: the
wait is on that event itself (a blocking open in a daemon thread), not a polling loop."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from qsframework.io import Sink

T = TypeVar("T")


class HoldAtFlush(Sink):
    inputs = True
    outputs = False

    def __init__(self) -> None:
        self.hold = Path(os.environ["QSF_TEST_HOLD"])
        self.rows = 0

    async def write(self, kind, table):
        self.rows += table.num_rows
        return []

    async def flush(self, checkpoint=None) -> None:
        got, self.rows = self.rows, 0
        if checkpoint is not None and got and self.hold.is_fifo():
            await released(self.hold)


def released(fifo: Path) -> asyncio.Future:
    """Done once a writer has opened ``fifo`` and closed it."""

    def wait() -> None:
        with open(fifo, "rb") as reader:  # blocks until the test opens the FIFO for writing
            reader.read()  # returns at the end: the test closed it

    return in_daemon_thread(wait)


def in_daemon_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """``call()``'s result, from a daemon thread: a blocking open of a FIFO must neither stop
    the event loop nor keep a process (or a failed test) from exiting."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        result = call()
        loop.call_soon_threadsafe(done.set_result, result)

    threading.Thread(target=run, name="qsf-test-gate", daemon=True).start()
    return done
