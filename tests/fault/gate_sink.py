"""A sink that holds a checkpoint after the sinks before it have staged their files and
before the snapshot is saved, while the file named by $QSF_TEST_HOLD exists: the window where
a crash once doubled --record (its files written, the snapshot not yet). It takes the input
rows too, so it holds only checkpoints that bring new rows (those the recorder stages)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from qsframework.io import Sink


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
        while checkpoint is not None and got and self.hold.exists():
            await asyncio.sleep(0.01)  # a gate the test opens, not a timing margin
