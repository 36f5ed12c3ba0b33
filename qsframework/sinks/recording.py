"""A recording as a :class:`~qsframework.io.Sink`: events written as sorted, immutable part
files. A recorder or an importer (``staged=False``) writes what is buffered as new files at
each :meth:`RecordingSink.flush` (a crash loses at most what came after the last one);
``qsf process --record`` (``staged=True``) writes each checkpoint's rows as hidden files,
renamed into place once the checkpoint is committed, so a restart never records a row twice."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..io import Checkpoint, Committed, Refused, Sink
from ..parts import publish
from ..recording import RecordingWriter


class RecordingSink(Sink):

    inputs = True
    outputs = False
    def __init__(self, writer: RecordingWriter, *, staged: bool = False) -> None:
        self.writer = writer
        self.staged = staged
        self._held: list[tuple[str, pa.Table]] = []  # staged mode: written since the last checkpoint
        self._files: list[Path] = []  # staged, not yet committed

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        if self.staged:
            self._held.append((kind, table))
        else:
            self.writer.write(kind, table)
        return []

    async def flush(self, checkpoint: Checkpoint | None = None) -> None:
        if not self.staged:
            self.writer.flush()
        elif checkpoint is not None and self._held:
            held, self._held = self._held, []
            self._files += self.writer.stage(held, offsets=checkpoint.offsets, checkpoint=checkpoint.number)

    async def commit(self, checkpoint: Checkpoint) -> None:
        files, self._files = self._files, []
        for path in files:
            publish(path)

    async def discard(self) -> None:
        """Forget the rows not staged; staged files stay hidden for the restart to settle."""
        self._files, self._held = [], []

    def settle(self, committed: Committed) -> tuple[int, int]:
        return self.writer.resolve(committed)

    async def close(self) -> None:
        self.writer.close()
