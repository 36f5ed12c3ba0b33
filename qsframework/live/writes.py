"""The sinks' side of ``qsf process``: each poll's rows (outputs, and the input rows the engine
consumed) are written by one writer task, so the writes run while the next poll is fetched and
processed; rows a sink refuses for their data are dead-lettered.

Polls that come while a write is under way are written together next, one write per kind
(group commit): a sink's cost is mostly per write (a PostgreSQL COPY is a transaction, and
its commit waits for the disk), so one write per poll falls behind at a few thousand events/s
in small polls, and every row's latency grows with the queue.

A checkpoint is a :class:`Barrier` in that queue: the writer writes every row scheduled before
it, runs it (the sinks' flush for that checkpoint), and goes on with the rows after it, so
the processor keeps polling and processing while a checkpoint is taken, and no write mixes
rows of two checkpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa

from ..io import Refused, Sink
from ..kafka import dead_letter
from ..latency import LatencyWindow
from .config import ProcessStats
from .kafka_source import KafkaSource


Item = tuple[str, pa.Table, bool]  # (kind, rows, is an output)


@dataclass(slots=True)
class _Poll:
    items: list[Item]
    recv: list[np.ndarray]  # receive times of the input, for the latency


@dataclass(slots=True)
class Barrier:
    """A checkpoint's place among the writes: :attr:`run` is awaited by the writer once every
    row scheduled before it is written; :attr:`passed` is cancelled if it never runs (the
    writer failed or was cancelled first)."""

    run: Callable[[], Awaitable[None]]
    passed: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SinkWrites:
    """The chain of write tasks; a checkpoint is a :meth:`barrier` in it, or (waiting for the
    whole checkpoint) :meth:`wait`\\ s for it before flushing the sinks."""

    def __init__(self, sinks: list[Sink], *, source: KafkaSource, stats: ProcessStats,
                 latency: LatencyWindow) -> None:
        self.sinks = sinks
        self.source = source  # its DLQ and the partitions of _part ids
        self.stats = stats
        self.latency = latency
        self.items: list[Item] = []  # this poll's rows
        self.queued: list[_Poll | Barrier] = []  # what the writer has not taken yet, in order
        self.task: asyncio.Task | None = None  # the writer: runs while rows are queued
        self.written = False  # something was written since the last checkpoint (which resets it)

    def add(self, kind: str, table: pa.Table, *, output: bool) -> None:
        """Rows for this poll's write."""
        self.items.append((kind, table, output))

    def schedule(self, recv: list[np.ndarray]) -> None:
        """This poll's rows to the sinks, after the rows queued before them;
        ``recv`` (receive times of the input) gives the receive-to-durable latency."""
        items, self.items = self.items, []
        if not items and (not recv or not self.queued):
            if recv:
                self._durable_now(recv)
            return
        self.written = self.written or bool(items)
        self._enqueue(_Poll(items, recv))

    def barrier(self, run: Callable[[], Awaitable[None]]) -> Barrier:
        """``run`` once every row scheduled so far is written, before any row scheduled after."""
        self.schedule([])
        barrier = Barrier(run)
        self._enqueue(barrier)
        return barrier

    def _enqueue(self, entry: _Poll | Barrier) -> None:
        self.queued.append(entry)
        if self.task is None or self.task.done() and not self.failed():
            self.task = asyncio.create_task(self._writer())

    def failed(self) -> bool:
        """The writer stopped on a sink's failure (:meth:`wait` raises it; nothing more is written)."""
        task = self.task
        return task is not None and task.done() and (task.cancelled() or task.exception() is not None)

    async def wait(self) -> None:
        """Until every write scheduled so far is done (raises a sink's failure)."""
        if self.task is not None:
            await self.task

    async def cancel(self) -> None:
        """Stop writing: the run failed or was cut short."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})
        self.items = []
        self._drop_queued()

    def _drop_queued(self) -> None:
        for entry in self.queued:
            if isinstance(entry, Barrier):
                entry.passed.cancel()
        self.queued = []

    async def _writer(self) -> None:
        """Write what is queued, then what was queued meanwhile, until nothing is: the polls up
        to the next barrier together, then the barrier."""
        try:
            while self.queued:
                head = self.queued[0]
                if isinstance(head, Barrier):  # queued while it runs, so a failure cancels it too
                    await head.run()
                    self.queued.pop(0)
                    head.passed.set_result(None)
                    continue
                polls: list[_Poll] = []
                while self.queued and isinstance(self.queued[0], _Poll):
                    polls.append(self.queued.pop(0))  # type: ignore[arg-type]
                await self._write(_together([i for p in polls for i in p.items]), [r for p in polls for r in p.recv])
        except BaseException:
            self._drop_queued()
            raise

    async def _write(self, items: list[Item], recv: list[np.ndarray]) -> None:
        """Write rows to every sink that takes them; rows a sink refuses for their data go to
        the DLQ with its reason."""
        for sink in self.sinks:
            taken = [(kind, table) for kind, table, is_output in items if (sink.outputs if is_output else sink.inputs)]
            if taken:
                for (kind, table), refused in zip(taken, await sink.write_all(taken)):
                    if refused:
                        await self._dead_letter_rows(kind, table, refused)
        if recv:
            self._durable_now(recv)

    async def _dead_letter_rows(self, kind: str, table: pa.Table, refused: list[Refused]) -> None:
        """Dead-letter rows of ``table`` by index and reason; input rows keep their origin."""
        assert self.source.dlq is not None
        for r in refused:
            row = table.slice(r.index, 1).to_pylist()[0]
            origin = self.source.origin(row.pop("_part", -1))
            offset = row.pop("_offset", None)
            await self.source.dlq.send(dead_letter(
                reason=r.reason, value=orjson.dumps(row), key=str(row["key"]).encode(errors="replace"),
                topic=origin.topic if origin else None, partition=origin.partition if origin else None,
                offset=offset, kind=kind))

    def _durable_now(self, recv: list[np.ndarray]) -> None:
        """Receive-to-durable latency of rows the sinks hold now."""
        self.stats.last_processed_at = time.monotonic()
        now_ns = time.time_ns()
        for ts_recv in recv:
            lat_ms = (now_ns - ts_recv) / 1e6
            # meaningful for live data only (not replays of old recordings): keep the
            # samples received within the last hour
            self.latency.add(lat_ms[(lat_ms >= 0) & (lat_ms < 3.6e6)])


def _together(items: list[Item]) -> list[Item]:
    """Queued polls' rows as one table per kind and role (and columns), in first-come order."""
    groups: dict[tuple, list[pa.Table]] = {}
    for kind, table, is_output in items:
        groups.setdefault((kind, is_output, table.schema), []).append(table)
    return [(kind, tables[0] if len(tables) == 1 else pa.concat_tables(tables), is_output)
            for (kind, is_output, _), tables in groups.items()]
