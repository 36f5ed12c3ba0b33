"""The gate sink of the SIGKILL test (gate_sink.py) holds a checkpoint on an event, not a
polling loop: until the test has opened its FIFO for writing and closed it."""

from __future__ import annotations

import asyncio
import os

import pyarrow as pa

from qsframework.io import Checkpoint

from .gate_sink import HoldAtFlush, in_daemon_thread

ROWS = pa.table({"ts_event": pa.array([1, 2, 3], pa.int64())})
BOUND_S = 120  # a safety net only: each wait ends on its event


def test_a_checkpoint_with_rows_waits_for_the_fifo_to_be_opened_and_closed(tmp_path, monkeypatch):
    hold = tmp_path / "hold"
    os.mkfifo(hold)
    monkeypatch.setenv("QSF_TEST_HOLD", str(hold))

    async def main() -> None:
        gate = HoldAtFlush()
        await gate.flush(Checkpoint(1, {}))  # no new rows: nothing to hold
        await gate.write("trade", ROWS)
        await gate.flush(None)  # not a checkpoint (a recorder's flush): nothing to hold
        await gate.write("trade", ROWS)
        flushing = asyncio.create_task(gate.flush(Checkpoint(2, {})))
        # opening for writing returns once the gate has opened the FIFO for reading: it is waiting
        writer = await asyncio.wait_for(in_daemon_thread(lambda: open(hold, "wb")), BOUND_S)
        assert not flushing.done()
        writer.close()
        await asyncio.wait_for(flushing, BOUND_S)
        hold.unlink()  # no FIFO: the next checkpoint goes on at once
        await gate.write("trade", ROWS)
        await asyncio.wait_for(gate.flush(Checkpoint(3, {})), BOUND_S)

    asyncio.run(main())
