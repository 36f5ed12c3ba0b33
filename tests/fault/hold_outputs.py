"""A sink that holds a checkpoint after the sinks before it flushed outputs (``--sink kafka``
acknowledged them) and before the offsets are committed, while the file $QSF_TEST_HOLD exists:
the window where a crash makes an at-least-once processor send those outputs again. Holding,
it creates ``$QSF_TEST_HOLD.held`` for the test to wait on, then waits until it is killed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qsframework.loader import load_sink

# loaded by path, as qsf process loads this file
HoldAtFlush = load_sink(f"{Path(__file__).with_name('gate_sink.py')}:HoldAtFlush")


class HoldAfterOutputs(HoldAtFlush):
    """:class:`HoldAtFlush`'s counting, on the outputs, and a hold that ends with the process."""

    inputs = False
    outputs = True

    async def flush(self, checkpoint=None) -> None:
        got, self.rows = self.rows, 0
        if checkpoint is not None and got and self.hold.exists():
            self.hold.with_name(self.hold.name + ".held").touch()
            await asyncio.Event().wait()  # until the test's SIGKILL
