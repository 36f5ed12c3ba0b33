"""The two extension points of the data flow: a :class:`Source` hands events in, a
:class:`Sink` takes events or outputs away. Both speak the engine's unit of work: an event
kind (``"trade"``, ``"signal"``, ``"position"``, ... see :mod:`qsframework.events`) and a
``pyarrow`` table of rows of that kind.

    source --(kind, table)--> broker / recording --> engine --(kind, table)--> sinks

A connector implements one of them and nothing else: the recording replay, the Kafka
consumer, the Binance WebSocket, the MAVLink link and the file importers are sources; the
Parquet outputs, the recording writer, Kafka, PostgreSQL and Telegram are sinks. A third
party adds one without touching the core (the README shows a 15-line sink).

**The commit rule.** A processor commits its input offsets (and its state snapshot) only
after every sink's :meth:`Sink.flush` returned: what a sink acknowledged there is durable,
what it has not flushed may be written again after a crash (the input is read again). A
sink therefore either tolerates the same rows twice (PostgreSQL merges on natural keys,
Telegram remembers what it sent) or holds them back until :meth:`Sink.commit` (Parquet
parts and recording files are staged hidden and renamed once the offsets are committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

Batch = tuple[str, pa.Table]  # (event kind, rows of that kind)
Emit = Callable[[str, pa.Table], Awaitable[None]]  # how a live source hands over a batch


Offsets = Mapping[tuple[str, int], int]  # (topic, partition) -> the next offset to read


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a commit makes final: the input offsets up to which everything written so far
    was consumed, numbered 1, 2, ... across restarts (a ``--state`` snapshot keeps the number)."""

    number: int
    offsets: Offsets


#: after a crash, tells whether a checkpoint (its offsets and number) was committed
Committed = Callable[[Offsets, int], bool]


@dataclass(frozen=True, slots=True)
class Refused:
    """A row a sink refused for its data (not for being unavailable): its index in the
    written table and the sink's reason; the caller dead-letters it, the rest is written."""

    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input a source refused (a frame it cannot parse, an event that breaks a validity
    rule): the raw bytes (or the event as JSON), why, its kind if known, and where it came
    from (DLQ headers such as ``topic``)."""

    value: bytes
    reason: str
    kind: str | None = None
    origin: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


RejectHandler = Callable[[Rejected], Awaitable[None]]


class Source(ABC):
    """Hands out ``(kind, table)`` batches in the order it has them (per kind, the order a
    recording or a partition holds them; the engine's merge makes the one total order).

    :meth:`batches` ends when the source is exhausted (a file, a recording) or after
    :meth:`stop` (a live feed: what it holds is handed out first). Rows that break a
    validity rule never leave a source as events: it counts them and hands them to
    :attr:`on_reject` (e.g. a DLQ) when one is set.
    """

    on_reject: RejectHandler | None = None

    async def reject(self, rejected: Rejected) -> None:
        """Hand refused input to :attr:`on_reject` (counting it is the source's own business)."""
        if self.on_reject is not None:
            await self.on_reject(rejected)

    @abstractmethod
    def batches(self) -> AsyncIterator[Batch]:
        """The batches, as an async iterator (``async for kind, table in source.batches()``)."""

    def stop(self) -> None:
        """Ask a live source to end; :meth:`batches` returns after what it holds."""


class FileSource(Source):
    """A source that reads what is already there (a recording, a log file): it iterates
    synchronously too (``for kind, table in source``), as the importers and backtests do."""

    _stopped = False

    @abstractmethod
    def __iter__(self) -> Iterator[Batch]:
        """The batches, read as they are needed."""

    async def batches(self) -> AsyncIterator[Batch]:
        for batch in self:
            if self._stopped:
                return
            yield batch
            await asyncio.sleep(0)  # let the event loop run between batches

    def stop(self) -> None:
        self._stopped = True


class LiveSource(Source):
    """A source fed by its own connections and tasks (a WebSocket, a MAVLink link): it
    implements :meth:`produce`, which hands batches to ``emit`` until :meth:`stop`;
    :meth:`batches` yields them through a short queue, so a slow consumer slows the source
    instead of piling rows up in memory. A failure of ``produce`` is raised by :meth:`batches`."""

    _queue_batches = 16

    @abstractmethod
    async def produce(self, emit: Emit) -> None:
        """Connect, read and ``await emit(kind, table)`` until stopped; hand over what is held."""

    async def batches(self) -> AsyncIterator[Batch]:
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(self._queue_batches)

        async def run() -> None:
            try:
                await self.produce(lambda kind, table: queue.put((kind, table)))
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            if not task.done():  # the consumer left early: stop producing
                self.stop()
                while not task.done():  # let it finish, never blocked on a full queue
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                    getter.cancel()
        task.result()  # the source's own failure, if any


class Sink(ABC):
    """Takes batches away; see the commit rule in this module's docstring.

    Lifecycle: :meth:`start` once, :meth:`write` any number of times, :meth:`flush` before
    each commit (then :meth:`commit` once the checkpoint's offsets are committed), and
    :meth:`close` once, also after a failure (after :meth:`discard`). A sink that holds
    writes back until :meth:`commit` also answers :meth:`settle` after a crash. Only
    :meth:`write` must be written; the others do nothing here.

    A processor gives a sink the strategy's outputs (``outputs``) and/or the input rows the
    engine consumed (``inputs``), as its class says.
    """

    inputs: bool = False
    outputs: bool = True

    async def start(self) -> None:
        """Connect, open files: whatever may fail should fail here, before any input."""

    @abstractmethod
    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        """Take the rows of ``table`` (events or outputs of ``kind``). Returns the rows the
        sink refused for their data (the caller dead-letters them); an unavailable
        destination is waited for or raised, never reported as refused rows."""

    async def write_all(self, tables: list[tuple[str, pa.Table]]) -> list[list[Refused]]:
        """:meth:`write` each (kind, rows) in turn; a sink that can take them together (one
        transaction) does so. Returns each table's refused rows."""
        return [await self.write(kind, table) for kind, table in tables]

    async def flush(self, checkpoint: Checkpoint | None = None) -> None:
        """Make everything written so far durable, or staged as part of ``checkpoint`` (a
        processor's commit; None from a recorder or an importer)."""

    async def commit(self, checkpoint: Checkpoint) -> None:
        """``checkpoint``'s offsets are committed: publish what :meth:`flush` staged for it."""

    async def discard(self) -> None:
        """The run failed or was cut short: forget what was written and not flushed (its
        input is read again on restart). What :meth:`flush` staged stays for :meth:`settle`:
        the checkpoint's snapshot may already be saved while its offsets are not committed."""

    def settle(self, committed: Committed) -> tuple[int, int]:
        """At a restart, before any input: publish what a crash left staged whose checkpoint
        was ``committed``, delete the rest; returns (published, deleted)."""
        return 0, 0

    async def close(self) -> None:
        """Release connections and files; nothing more is written."""


async def pump(source: Source, sinks: Sequence[Sink], *, flush_every_s: float = 0.0,
               duration_s: float | None = None) -> None:
    """Everything ``source`` hands out, to every sink in order: the loop of the ``qsf record``
    and ``qsf ingest`` commands. Each sink is flushed at least every ``flush_every_s`` (0:
    after each batch) and at the end; the source is stopped after ``duration_s``. A row a
    sink refuses ends the run (a sink of these commands has nowhere else to put it)."""
    loop = asyncio.get_running_loop()
    timer = loop.call_later(duration_s, source.stop) if duration_s is not None else None
    for sink in sinks:
        await sink.start()
    try:
        last_flush = time.monotonic()
        async with contextlib.aclosing(source.batches()) as batches:  # a failing sink stops the source now
            async for kind, table in batches:
                for sink in sinks:
                    refused = await sink.write(kind, table)
                    if refused:
                        raise ValueError(f"{type(sink).__name__} refused {len(refused)} {kind} rows: {refused[0].reason}")
                if time.monotonic() - last_flush >= flush_every_s:
                    for sink in sinks:
                        await sink.flush()
                    last_flush = time.monotonic()
        for sink in sinks:
            await sink.flush()
    finally:
        if timer is not None:
            timer.cancel()
        for sink in sinks:
            await sink.close()
