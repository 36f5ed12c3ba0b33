"""File importers (Binance dumps, ``.tlog``, DataFlash logs) as
:class:`~qsframework.io.FileSource`\\ s, and the one loop that writes an import as a new
recording: ``pump(source, [RecordingSink(writer)])`` into a directory that appears complete
or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import math
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pyarrow as pa

from ..io import Batch, FileSource, Rejected, pump
from ..sinks.recording import RecordingSink
from ..validity import Invalid
from ..wire import encode
from .writer import new_recording


class ImportSource(FileSource):
    """A file read into events. Input it refuses (a malformed row, an event that breaks a
    validity rule) is counted by the importer and, when :attr:`on_reject` is set, held while
    the file is read and handed over by :meth:`batches` before the next batch (a source read
    synchronously, ``for kind, table in source``, only counts it: set no handler there)."""

    def __init__(self) -> None:
        self._refused: list[Rejected] = []

    @abstractmethod
    def origin(self) -> dict:
        """The recording's ``origin`` (its manifest): where the events came from and, once
        the file is read, what was refused."""

    @property
    def refusing(self) -> bool:
        """Whether refused input is wanted as :class:`~qsframework.io.Rejected` (else only counted)."""
        return self.on_reject is not None

    def refuse(self, rejected: Rejected) -> None:
        """Hold ``rejected`` for :attr:`on_reject` (nothing is held without one)."""
        if self.on_reject is not None:
            self._refused.append(rejected)

    def refuse_invalid(self, kind: str, table: pa.Table | pa.RecordBatch, invalid: Sequence[Invalid],
                       origin: Sequence[tuple[str, bytes]]) -> None:
        """The rows of ``table`` (events of ``kind``) that :func:`~qsframework.validity.check`
        found ``invalid``, each as JSON with its reason."""
        if self.on_reject is None or not invalid:
            return
        rows = table.take(pa.array([bad.index for bad in invalid], pa.int64()))
        for (_key, value), bad in zip(encode(rows), invalid, strict=True):
            self._refused.append(Rejected(value, bad.reason, kind=kind, origin=tuple(origin)))

    async def batches(self) -> AsyncIterator[Batch]:
        try:
            async with contextlib.aclosing(super().batches()) as batches:
                async for batch in batches:
                    await self._hand_refused()
                    yield batch
        finally:  # also when the file turns out unusable: what was refused is handed over
            await self._hand_refused()

    async def _hand_refused(self) -> None:
        held, self._refused = self._refused, []
        for rejected in held:
            await self.reject(rejected)


def import_recording(source: ImportSource, out: str | Path) -> None:
    """Write every batch of ``source`` as the new recording ``out`` (absent or empty), which
    appears only once the whole file is imported. Files are written when a day or the
    writer's file size is full and at the end, never per batch, so the files are the same
    however the source batches its rows."""
    with new_recording(out, origin=source.origin()) as writer:
        asyncio.run(pump(source, [RecordingSink(writer)], flush_every_s=math.inf))
        writer.origin = source.origin()  # with what reading found; the manifest is written at the close
