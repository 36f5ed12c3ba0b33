"""A recording as a :class:`~qsframework.io.Sink`: events written as sorted, immutable part
files. A recorder or an importer (``staged=False``) writes what is buffered as new files at
each :meth:`RecordingSink.flush` (a crash loses at most what came after the last one);
``qsf process --record`` (``staged=True``) writes each checkpoint's rows as hidden files,
renamed into place once the checkpoint is committed, so a restart never records a row twice."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..io import Checkpoint, Committed, Refused
from ..recording import RecordingWriter
from .staged import StagedSink


class RecordingSink(StagedSink):

    inputs = True
    outputs = False

    def __init__(self, writer: RecordingWriter, *, staged: bool = False) -> None:
        super().__init__()
        self.writer = writer
        self.staged = staged
        self._held: list[tuple[str, pa.Table]] = []  # staged mode: written since the last checkpoint

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        if self.staged:
            self._held.append((kind, table))
        else:
            self.writer.write(kind, table)
        return []

    async def flush(self, checkpoint: Checkpoint | None = None) -> None:
        if self.staged:
            await super().flush(checkpoint)
        else:
            self.writer.flush()

    def stage(self, checkpoint: Checkpoint) -> list[Path]:
        held, self._held = self._held, []
        if not held:
            return []
        return self.writer.stage(held, offsets=checkpoint.offsets, checkpoint=checkpoint.number)

    def drop(self) -> None:
        self._held = []

    def settle(self, committed: Committed) -> tuple[int, int]:
        return self.writer.resolve(committed)

    async def close(self) -> None:
        self.writer.close()
