"""A recording as a :class:`~qsframework.io.Source`: its events in the engine's total order,
as fast as they are read or paced by event time (what ``qsf ingest replay`` publishes)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..io import Batch, FileSource
from .reader import Recording


class RecordingSource(FileSource):
    """The events of ``kinds`` (default: every kind recorded) with ``start <= ts_event < end``
    and ``key in keys``, merged into the total order, ``batch_size`` rows at most per batch,
    every row as stored (a consumer checks them and dead-letters the bad).

    With ``speed`` the gaps between events take their event-time length divided by
    ``speed`` in wall time (1 = real time), counted from the first event: a batch holds the
    events due by then (within a millisecond), so pacing never reorders anything. Synchronous
    iteration sleeps the thread, :meth:`batches` the event loop."""

    def __init__(self, recording: Recording | str | Path, *, kinds: Sequence[str] | None = None,
                 keys: Sequence[str] | None = None, start: int | None = None, end: int | None = None,
                 speed: float | None = None, batch_size: int = 16_384) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.recording = recording if isinstance(recording, Recording) else Recording(recording)
        self.kinds = list(kinds or self.recording.kinds)
        self.keys = keys
        self.start = start
        self.end = end
        self.speed = speed
        self.batch_size = batch_size
        self._wake: asyncio.Event | None = None  # set by stop(): a paced wait ends now

    def __iter__(self) -> Iterator[Batch]:
        for item in self._schedule():
            if self._stopped:
                return
            if isinstance(item, float):
                time.sleep(item)
            else:
                yield item

    async def batches(self) -> AsyncIterator[Batch]:
        self._wake = wake = asyncio.Event()
        for item in self._schedule():
            if self._stopped:
                return
            if isinstance(item, float):
                with contextlib.suppress(TimeoutError):  # the wait ends early at a stop()
                    await asyncio.wait_for(wake.wait(), item)
            else:
                yield item
                await asyncio.sleep(0)  # let the event loop run between batches

    def stop(self) -> None:
        super().stop()
        if self._wake is not None:
            self._wake.set()

    def _schedule(self) -> Iterator[Batch | float]:
        """The batches, and between them the seconds to wait before the next one is due."""
        size = self.batch_size
        merged = self.recording.stream_all(self.kinds, start=self.start, end=self.end, keys=self.keys,
                                           batch_size=size, bounds=None)
        # the merge keeps a run of one kind together, across the read batches: cut it to size
        stream = ((kind, batch.slice(at, size)) for kind, batch in merged for at in range(0, batch.num_rows, size))
        if self.speed is None:
            for kind, batch in stream:
                yield kind, pa.Table.from_batches([batch])
            return
        t0 = time.monotonic()
        first: int | None = None
        for kind, batch in stream:
            ts = batch.column("ts_event").to_numpy()
            if first is None:
                first = int(ts[0])
            due = (ts - first) / 1e9 / self.speed  # seconds after t0; sorted (total order)
            i = 0
            while i < len(due):
                now = time.monotonic() - t0
                n = int(np.searchsorted(due, now + 0.001, side="right"))
                if n > i:
                    yield kind, pa.Table.from_batches([batch.slice(i, n - i)])
                    i = n
                else:
                    yield float(due[i] - now)
