"""``qsf process --out``: each output kind is a directory of Parquet part files
(``OUT/signals.parquet/part-000000.parquet``, ...), one part per commit that produced rows.

A part is first written hidden (``.part-N.parquet.tmp``, fsynced) with its checkpoint
number and the input offsets it covers in its footer, and renamed into place only once
that checkpoint is committed; a restart renames the hidden parts its resume point covers
(the --state snapshot's checkpoint, else the offsets it resumes from) and deletes the
others (their input is read again, so their rows come again). A restart therefore appends
and never destroys (and, resuming a --state snapshot, never doubles). Readers take the
directory: ``pyarrow.parquet.read_table(dir)``,
``polars.read_parquet("dir/*.parquet")``, DuckDB ``read_parquet('dir/*.parquet')``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError

OFFSETS_KEY = b"qsf.offsets"
CHECKPOINT_KEY = b"qsf.checkpoint"
_PART = re.compile(r"^\.?part-(\d{6})\.parquet(\.tmp)?$")

Offsets = Mapping[tuple[str, int], int]  # (topic, partition) -> next offset to read


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartsOutput:
    """One output kind as a directory of parts; rows are buffered until :meth:`stage`."""

    def __init__(self, directory: Path, schema: pa.Schema) -> None:
        if directory.exists() and not directory.is_dir():
            raise UserError(
                f"--out: {str(directory)!r} is a file (e.g. from qsf backtest); qsf process writes a "
                "directory of part files there: choose another --out"
            )
        self.dir = directory  # created with the first part: a run that fails at once leaves nothing
        self.schema = schema
        self.rows = 0
        self._buffer: list[pa.Table] = []
        self._next = 1 + max((int(m.group(1)) for m in map(_PART.match, self._names()) if m), default=-1)

    def _names(self) -> list[str]:
        return [p.name for p in self.dir.iterdir()] if self.dir.is_dir() else []

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._buffer.append(table)

    def stage(self, offsets: Offsets, checkpoint: int = 0) -> Path | None:
        """Write the buffered rows as a hidden part of ``checkpoint``, which commits
        ``offsets`` (None if no rows)."""
        if not self._buffer:
            return None
        table = pa.concat_tables(self._buffer)
        self._buffer = []
        meta = {OFFSETS_KEY: json.dumps([[t, p, o] for (t, p), o in sorted(offsets.items())]).encode(),
                CHECKPOINT_KEY: str(checkpoint).encode()}
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f".part-{self._next:06d}.parquet.tmp"
        self._next += 1
        with open(path, "wb") as fh:
            pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), fh,
                           compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows += table.num_rows
        return path

    def publish(self, staged: Path) -> None:
        """Rename a staged part into place (its offsets are committed)."""
        os.replace(staged, staged.with_name(staged.name[1:].removesuffix(".tmp")))
        _fsync_dir(self.dir)

    def close(self) -> None:
        """Publish rows with no input offsets (e.g. ``on_stop``'s); an empty run still leaves a
        readable directory (one empty part with the schema)."""
        if not self._buffer and not any(_PART.match(n) and n[0] != "." for n in self._names()):
            self._buffer = [self.schema.empty_table()]
        staged = self.stage({})
        if staged is not None:
            self.publish(staged)

    def discard(self, staged: list[Path]) -> None:
        """Forget rows not committed (buffered or ``staged``): their input will be read again."""
        self._buffer = []
        for path in staged:
            path.unlink(missing_ok=True)

    def resolve(self, committed: Callable[[Offsets, int], bool]) -> tuple[int, int]:
        """After a crash: publish the hidden parts whose offsets and checkpoint ``committed``
        confirms, delete the others; returns (published, deleted)."""
        published = deleted = 0
        for path in sorted(self.dir / n for n in self._names() if n.startswith(".part-") and n.endswith(".tmp")):
            try:
                meta = pq.read_schema(path).metadata or {}
                offsets = {(t, p): o for t, p, o in json.loads(meta[OFFSETS_KEY])}
                checkpoint = int(meta[CHECKPOINT_KEY])
            except (OSError, ValueError, KeyError, pa.ArrowException):  # cut short by the crash: never committed
                offsets = None
            if offsets is not None and committed(offsets, checkpoint):
                self.publish(path)
                published += 1
            else:
                path.unlink()
                deleted += 1
        return published, deleted
