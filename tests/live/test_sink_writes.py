"""The processor's writer (qsframework.live.writes): polls that come while a write is under way
are written together next, one write per kind, in their order; nothing is lost or doubled,
and after a sink fails nothing more is written and the failure reaches the checkpoint. A
checkpoint's barrier runs once exactly the rows scheduled before it are written, never a row
after it (no write spans two checkpoints)."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.io import Sink
from qsframework.latency import LatencyWindow
from qsframework.live.config import ProcessStats
from qsframework.live.writes import SinkWrites


class Gated(Sink):
    """Records each write; a write waits while the gate is closed."""

    inputs = True
    outputs = True

    def __init__(self, *, fail_on: int | None = None) -> None:
        self.gate = asyncio.Event()
        self.writes: list[tuple[str, list[int]]] = []
        self.fail_on = fail_on

    async def write(self, kind, table):
        await self.gate.wait()
        if self.fail_on is not None and self.fail_on in table.column("seq").to_pylist():
            raise RuntimeError("the sink is down")
        self.writes.append((kind, table.column("seq").to_pylist()))
        return []


def _rows(kind: str, seqs: list[int]) -> pa.Table:
    return pa.table({"seq": pa.array(seqs, pa.int64()), "what": [kind] * len(seqs)})


def _writer(sink: Sink) -> SinkWrites:
    return SinkWrites([sink], source=None, stats=ProcessStats(), latency=LatencyWindow())  # type: ignore[arg-type]


@settings(deadline=None)
@given(polls=st.lists(st.lists(st.tuples(st.sampled_from(["trade", "signal"]), st.integers(1, 5)), max_size=3),
                      min_size=1, max_size=12),
       opened_at=st.integers(0, 12))
def test_queued_polls_are_written_together_in_order_each_row_once(polls, opened_at):
    async def run() -> tuple[list[tuple[str, list[int]]], dict[str, list[int]]]:
        sink = Gated()
        writes = _writer(sink)
        sent: dict[str, list[int]] = {"trade": [], "signal": []}
        seq = 0
        for i, poll in enumerate(polls):
            if i == opened_at:
                sink.gate.set()
            for kind, n in poll:
                seqs = list(range(seq, seq + n))
                seq += n
                sent[kind] += seqs
                writes.add(kind, _rows(kind, seqs), output=kind == "signal")
            writes.schedule([np.array([0])])
            await asyncio.sleep(0)  # the writer runs when the loop is free, as between polls
        sink.gate.set()
        await writes.wait()
        return sink.writes, sent

    written, sent = asyncio.run(run())
    for kind in ("trade", "signal"):
        assert [s for k, seqs in written if k == kind for s in seqs] == sent[kind]  # in order, once


def test_a_failed_write_fails_the_checkpoint_and_nothing_after_it_is_written():
    async def run() -> tuple[Gated, BaseException | None]:
        sink = Gated(fail_on=1)
        writes = _writer(sink)
        writes.add("trade", _rows("trade", [0, 1]), output=False)
        writes.schedule([])
        sink.gate.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        writes.add("trade", _rows("trade", [2]), output=False)
        writes.schedule([])
        try:
            await writes.wait()
        except RuntimeError as exc:
            return sink, exc
        return sink, None

    sink, failure = asyncio.run(run())
    assert isinstance(failure, RuntimeError)
    assert sink.writes == []  # rows 0, 1 failed; row 2 came after the failure


def test_polls_during_a_write_become_one_write_a_kind():
    async def run() -> list[tuple[str, list[int]]]:
        sink = Gated()
        writes = _writer(sink)
        writes.add("trade", _rows("trade", [0]), output=False)
        writes.schedule([])
        await asyncio.sleep(0)  # the first write starts, and waits at the gate
        for seq in (1, 2, 3):
            writes.add("trade", _rows("trade", [seq]), output=False)
            writes.add("signal", _rows("signal", [seq]), output=True)
            writes.schedule([])
        sink.gate.set()
        await writes.wait()
        return sink.writes

    assert asyncio.run(run()) == [("trade", [0]), ("trade", [1, 2, 3]), ("signal", [1, 2, 3])]


@pytest.mark.parametrize("rows", [0, 3])
def test_wait_returns_when_nothing_is_queued(rows):
    async def run() -> list:
        sink = Gated()
        sink.gate.set()
        writes = _writer(sink)
        if rows:
            writes.add("trade", _rows("trade", list(range(rows))), output=False)
        writes.schedule([])
        await writes.wait()
        return sink.writes

    assert asyncio.run(run()) == ([("trade", [0, 1, 2])] if rows else [])


@settings(deadline=None)
@given(steps=st.lists(st.one_of(st.just("barrier"), st.just("yield"), st.integers(1, 4)), min_size=1, max_size=20),
       opened_at=st.integers(0, 20))
def test_a_barrier_runs_after_exactly_the_rows_scheduled_before_it(steps, opened_at):
    async def run() -> tuple[list[tuple[list[int], list[int]]], Gated]:
        sink = Gated()
        writes = _writer(sink)
        seen: list[tuple[list[int], list[int]]] = []  # (rows scheduled before it, rows written when it ran)
        seq = 0
        for i, step in enumerate(steps):
            if i == opened_at:
                sink.gate.set()
            if step == "barrier":
                before = list(range(seq))

                async def at_barrier(before=before) -> None:
                    seen.append((before, [s for _, seqs in sink.writes for s in seqs]))
                    await asyncio.sleep(0)  # rows scheduled meanwhile wait for it

                writes.barrier(at_barrier)
            elif step == "yield":
                await asyncio.sleep(0)
            else:
                writes.add("trade", _rows("trade", list(range(seq, seq + step))), output=False)
                seq += step
                writes.schedule([])
        sink.gate.set()
        await writes.wait()
        return seen, sink

    seen, sink = asyncio.run(run())
    assert len(seen) == steps.count("barrier")
    for before, written in seen:
        assert written == before
    rows = sum(s for s in steps if isinstance(s, int))
    assert [s for _, seqs in sink.writes for s in seqs] == list(range(rows))


def test_a_failing_barrier_stops_the_writer_and_cancels_the_barriers_after_it():
    async def run() -> tuple[Gated, BaseException | None, bool]:
        sink = Gated()
        sink.gate.set()
        writes = _writer(sink)

        async def broken() -> None:
            raise RuntimeError("flush failed")

        async def fine() -> None:
            pass

        writes.add("trade", _rows("trade", [0]), output=False)
        writes.barrier(broken)
        writes.add("trade", _rows("trade", [1]), output=False)
        later = writes.barrier(fine)
        try:
            await writes.wait()
        except RuntimeError as exc:
            return sink, exc, later.passed.cancelled()
        return sink, None, later.passed.cancelled()

    sink, failure, cancelled = asyncio.run(run())
    assert isinstance(failure, RuntimeError) and cancelled
    assert sink.writes == [("trade", [0])]
