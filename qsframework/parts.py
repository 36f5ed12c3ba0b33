"""Part files committed with the input offsets they cover, for ``qsf process --out`` and
``--record``.

``--out``: each output kind is a directory of Parquet part files
(``OUT/signals.parquet/part-000000.parquet``, ...), one part per commit that produced rows.
``--record``: a recording's ``kind=K/date=D/part-NNNNN.parquet`` files, one per commit, kind
and day (see :mod:`qsframework.recording.writer`).

A part is first written hidden (``.part-N.parquet.tmp``, fsynced) with its checkpoint
number and the input offsets it covers in its footer, and renamed into place only once
that checkpoint is committed; a restart renames the hidden parts its resume point covers
(the --state snapshot's checkpoint, else the offsets it resumes from) and deletes the
others (their input is read again, so their rows come again). A restart therefore appends
and never destroys (and, resuming a --state snapshot, never doubles). Readers never see a
hidden part (a leading dot, a ``.tmp`` suffix). Readers of ``--out`` take the directory:
``pyarrow.parquet.read_table(dir)``, ``polars.read_parquet("dir/*.parquet")``, DuckDB
``read_parquet('dir/*.parquet')``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .io import Committed, Offsets

OFFSETS_KEY = b"qsf.offsets"
CHECKPOINT_KEY = b"qsf.checkpoint"
_PART = re.compile(r"^\.?part-(\d+)\.parquet(\.tmp)?$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a hidden temporary file, fsynced, renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (fsync the directory itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def next_part(directory: Path) -> int:
    """One past the highest part number in ``directory``, hidden (staged) parts included, so
    a new part never takes the name of one that exists or is still to be published."""
    names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
    return 1 + max((int(m.group(1)) for m in map(_PART.match, names) if m), default=-1)


def hidden_part(directory: Path, index: int, width: int) -> Path:
    """The staged (hidden) name of part ``index``; :func:`publish` gives it its final name."""
    return directory / f".part-{index:0{width}d}.parquet.tmp"


def write_part(path: Path, table: pa.Table, *, offsets: Offsets | None = None, checkpoint: int = 0,
               **options: Any) -> None:
    """Write ``table`` to ``path`` and fsync it; with ``offsets``, they and ``checkpoint`` go
    into its footer (a staged part). ``options`` go to :func:`pyarrow.parquet.write_table`."""
    if offsets is not None:
        meta = {OFFSETS_KEY: json.dumps([[t, p, o] for (t, p), o in sorted(offsets.items())]).encode(),
                CHECKPOINT_KEY: str(checkpoint).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pq.write_table(table, fh, **options)
        fh.flush()
        os.fsync(fh.fileno())


def publish(staged: Path) -> Path:
    """Rename a staged part into place (its offsets are committed); returns its final path."""
    final = staged.with_name(staged.name[1:].removesuffix(".tmp"))
    os.replace(staged, final)
    fsync_directory(staged.parent)
    return final


def discard(staged: Iterable[Path]) -> None:
    """Delete staged parts that will not be committed (their input will be read again)."""
    for path in staged:
        path.unlink(missing_ok=True)


def staged_parts(directory: Path) -> list[Path]:
    """The hidden parts in ``directory``, in part order."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(".part-") and p.name.endswith(".tmp"))


def settle(staged: Iterable[Path], committed: Committed) -> tuple[int, int]:
    """After a crash: publish the hidden parts whose offsets and checkpoint ``committed``
    confirms, delete the others; returns (published, deleted)."""
    published = deleted = 0
    for path in staged:
        try:
            meta = pq.read_schema(path).metadata or {}
            offsets = {(t, p): o for t, p, o in json.loads(meta[OFFSETS_KEY])}
            checkpoint = int(meta[CHECKPOINT_KEY])
        except (OSError, ValueError, KeyError, pa.ArrowException):  # cut short by the crash: never committed
            offsets = None
        if offsets is not None and committed(offsets, checkpoint):
            publish(path)
            published += 1
        else:
            path.unlink()
            deleted += 1
    return published, deleted


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
        self._next = next_part(directory)

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
        # the directory asked again: another processor may have written it since (a standby
        # that took over, a partition's next owner: qsf process scale-out)
        index = max(self._next, next_part(self.dir))
        path = hidden_part(self.dir, index, 6)
        self._next = index + 1
        write_part(path, table, offsets=offsets, checkpoint=checkpoint, compression="zstd")
        self.rows += table.num_rows
        return path

    def close(self) -> None:
        """Publish rows with no input offsets (e.g. ``on_stop``'s); an empty run still leaves a
        readable directory (one empty part with the schema)."""
        if not self._buffer and not any(
                _PART.match(p.name) and p.name[0] != "." for p in (self.dir.iterdir() if self.dir.is_dir() else ())):
            self._buffer = [self.schema.empty_table()]
        staged = self.stage({})
        if staged is not None:
            publish(staged)

    def discard(self) -> None:
        """Forget the buffered rows (not committed: their input will be read again)."""
        self._buffer = []

    def resolve(self, committed: Committed) -> tuple[int, int]:
        """Settle the hidden parts a crash left (see :func:`settle`)."""
        return settle(staged_parts(self.dir), committed)
