"""A recording as a :class:`~qsframework.io.Sink`: events written as sorted, immutable part
files (``qsf record ...`` and the importers). :meth:`RecordingSink.flush` writes what is
buffered as new files (a crash loses at most what came after the last flush)."""

from __future__ import annotations

import pyarrow as pa

from ..io import Refused, Sink
from ..recording import RecordingWriter


class RecordingSink(Sink):
    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        self.writer.write(kind, table)
        return []

    async def flush(self) -> None:
        self.writer.flush()

    async def close(self) -> None:
        self.writer.close()
