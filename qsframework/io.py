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
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pyarrow as pa

Batch = tuple[str, pa.Table]  # (event kind, rows of that kind)


@dataclass(frozen=True, slots=True)
class Refused:
    """A row a sink refused for its data (not for being unavailable): its index in the
    written table and the sink's reason; the caller dead-letters it, the rest is written."""

    index: int
    reason: str


class Source(ABC):
    """Hands out ``(kind, table)`` batches in the order it has them (per kind, the order a
    recording or a partition holds them; the engine's merge makes the one total order).

    :meth:`batches` ends when the source is exhausted (a file, a recording) or after
    :meth:`stop` (a live feed: what it holds is handed out first). Rows that break a
    validity rule never leave a source: it counts or dead-letters them with the reason.
    """

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


class Sink(ABC):
    """Takes batches away; see the commit rule in this module's docstring.

    Lifecycle: :meth:`start` once, :meth:`write` any number of times, :meth:`flush` before
    each commit (then :meth:`commit` with the checkpoint committed), :meth:`close` once,
    also after a failure. Only :meth:`write` must be written; the others do nothing here.
    """

    async def start(self) -> None:
        """Connect, open files: whatever may fail should fail here, before any input."""

    @abstractmethod
    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        """Take the rows of ``table`` (events or outputs of ``kind``). Returns the rows the
        sink refused for their data (the caller dead-letters them); an unavailable
        destination is waited for or raised, never reported as refused rows."""

    async def flush(self) -> None:
        """Make everything written so far durable (or staged for :meth:`commit`)."""

    async def commit(self, checkpoint: int) -> None:
        """The input offsets of ``checkpoint`` (numbered from 1 in a run) are committed:
        publish what :meth:`flush` staged for it."""

    async def close(self) -> None:
        """Release connections and files; nothing more is written."""
