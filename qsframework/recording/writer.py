"""Write events as a recording: ``kind=K/date=YYYY-MM-DD/part-NNNNN.parquet`` (zstd).

Each file holds rows sorted in total order and is written under a temporary name, synced
and renamed, so a killed writer never leaves a half file behind. A new recording made in one
go (an import) is written by :func:`new_recording`, which makes the whole directory appear at
once, or not at all when the import fails. ``qsf process --record`` stages its files hidden
with the offsets they cover and publishes them once those are committed
(:meth:`RecordingWriter.stage`, the rules of :mod:`qsframework.parts`), so a restart never
records a row twice.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UserError
from ..events import conform, get_kind
from ..order import is_sorted, sort_table
from ..parts import (
    Committed,
    Offsets,
    atomic_write_bytes,
    fsync_directory,
    hidden_part,
    next_part,
    publish,
    settle,
    staged_parts,
    write_part,
)
from .format import FORMAT_NAME, FORMAT_VERSION, MANIFEST

DAY_NS = 86_400 * 1_000_000_000


def _day(ts_ns: int) -> str:
    return np.datetime64(ts_ns // DAY_NS, "D").astype(str)


class RecordingWriter:
    """Buffers events per (kind, date) and writes sorted, immutable part files."""

    def __init__(
        self,
        root: str | Path,
        *,
        rows_per_file: int = 2_000_000,
        row_group_rows: int = 131_072,
        compression_level: int = 3,
        origin: dict | None = None,
    ) -> None:
        self.root = Path(root)
        self.origin = origin
        self.rows_per_file = rows_per_file
        self.row_group_rows = row_group_rows
        self.compression_level = compression_level
        self._buffers: dict[tuple[str, str], list[pa.Table]] = {}
        self._buffered: dict[tuple[str, str], int] = {}
        self.rows_written = 0
        self.files_written: list[Path] = []
        self._kinds: set[str] = set()
        self._next: dict[Path, int] = {}  # per kind=K/date=D directory: the next file number
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_manifest()

    def _write_manifest(self) -> None:
        path = self.root / MANIFEST
        kinds = set()
        if path.exists():
            try:
                kinds = set(json.loads(path.read_text()).get("kinds", []))
            except (ValueError, OSError):
                kinds = set()
        kinds |= self._kinds
        doc: dict = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kinds": sorted(kinds)}
        if self.origin is not None:
            doc["origin"] = self.origin
        elif path.exists():
            try:
                old = json.loads(path.read_text()).get("origin")
            except (ValueError, OSError):
                old = None
            if old is not None:
                doc["origin"] = old
        atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())

    def write(self, kind: str, data: pa.Table | pa.RecordBatch) -> None:
        """Add events of ``kind`` (any order; each file is sorted before it is written)."""
        days = self._days(kind, data)
        if not days:
            return
        # a later day has begun: earlier days of this kind are (normally) complete
        for k in [k for k in self._buffers if k[0] == kind and k[1] < days[-1][0]]:
            self._flush(k, final=True)
        for day, part in days:
            k = (kind, day)
            self._buffers.setdefault(k, []).append(part)
            self._buffered[k] = self._buffered.get(k, 0) + part.num_rows
            if self._buffered[k] >= self.rows_per_file:
                self._flush(k, final=False)

    def _days(self, kind: str, data: pa.Table | pa.RecordBatch) -> list[tuple[str, pa.Table]]:
        """``data`` conformed to ``kind``'s schema and split by day (listing ``kind`` in the manifest)."""
        ek = get_kind(kind)
        if kind not in self._kinds:
            self._kinds.add(kind)
            self._write_manifest()
        table = pa.Table.from_batches([conform(data, ek)])
        if table.num_rows == 0:
            return []
        days = table.column("ts_event").to_numpy() // DAY_NS
        first, last = int(days.min()), int(days.max())
        if first == last:
            return [(_day(first * DAY_NS), table)]
        out = []
        for day in range(first, last + 1):
            part = table.filter(pa.array(days == day))
            if part.num_rows:
                out.append((_day(day * DAY_NS), part))
        return out

    def stage(self, items: Iterable[tuple[str, pa.Table | pa.RecordBatch]], *, offsets: Offsets,
              checkpoint: int) -> list[Path]:
        """Write ``items`` (kind, rows) as hidden files of ``checkpoint``, which commits
        ``offsets`` (in their footers), apart from the buffered rows; :func:`~qsframework.parts.publish`
        renames them into place once it is committed, :meth:`resolve` settles them after a crash."""
        grouped: dict[tuple[str, str], list[pa.Table]] = {}
        for kind, data in items:
            for day, part in self._days(kind, data):
                grouped.setdefault((kind, day), []).append(part)
        staged = []
        for k in sorted(grouped):
            table = pa.concat_tables(grouped[k])
            for start in range(0, table.num_rows, self.rows_per_file):
                staged.append(self._write_file(k, table.slice(start, self.rows_per_file),
                                               staged=(offsets, checkpoint)))
        return staged

    def resolve(self, committed: Committed) -> tuple[int, int]:
        """After a crash: publish the hidden files whose offsets and checkpoint ``committed``
        confirms, delete the others (see :func:`~qsframework.parts.settle`); (published, deleted)."""
        published = deleted = 0
        for directory in sorted(self.root.glob("kind=*/date=*")):
            p, d = settle(staged_parts(directory), committed)
            published, deleted = published + p, deleted + d
        self._next.clear()
        return published, deleted

    def _flush(self, k: tuple[str, str], *, final: bool) -> None:
        """Write full files of ``rows_per_file`` rows; the remainder too when ``final``."""
        parts = self._buffers.pop(k, [])
        self._buffered.pop(k, None)
        if not parts:
            return
        table = pa.concat_tables(parts)
        while table.num_rows >= self.rows_per_file or (final and table.num_rows):
            chunk, table = table.slice(0, self.rows_per_file), table.slice(self.rows_per_file)
            self._write_file(k, chunk)
        if table.num_rows:
            self._buffers[k] = [table]
            self._buffered[k] = table.num_rows

    def _write_file(self, k: tuple[str, str], table: pa.Table, *,
                    staged: tuple[Offsets, int] | None = None) -> Path:
        """Write one sorted file of ``k``: in place, or hidden with ``staged`` (offsets, checkpoint)."""
        kind, day = k
        if not is_sorted(table):
            table = sort_table(table)
        directory = self.root / f"kind={kind}" / f"date={day}"
        index = self._next.get(directory)
        if index is None:  # max + 1 over published and staged files: a gap never makes it overwrite
            index = next_part(directory)
        self._next[directory] = index + 1
        ts = table.column("ts_event")
        meta = {
            b"qsf.format": FORMAT_NAME.encode(),
            b"qsf.format_version": str(FORMAT_VERSION).encode(),
            b"qsf.kind": kind.encode(),
            b"qsf.rows": str(table.num_rows).encode(),
            b"qsf.ts_min": str(ts[0].as_py()).encode(),
            b"qsf.ts_max": str(ts[table.num_rows - 1].as_py()).encode(),
            b"qsf.keys": json.dumps(sorted(pc.unique(table.column("key")).to_pylist())).encode(),
        }
        path = hidden_part(directory, index, 5)
        offsets, checkpoint = staged if staged is not None else (None, 0)
        write_part(path, table.replace_schema_metadata(meta), offsets=offsets, checkpoint=checkpoint,
                   compression="zstd", compression_level=self.compression_level,
                   row_group_size=self.row_group_rows, use_dictionary=["source", "key"], write_statistics=True)
        self.rows_written += table.num_rows
        if staged is not None:
            return path
        path = publish(path)
        self.files_written.append(path)
        return path

    def flush(self) -> None:
        """Write every buffered row to files now."""
        for k in sorted(self._buffers):
            self._flush(k, final=True)
        self._write_manifest()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_empty(target: str | Path) -> None:
    """Refuse (one line) an output directory that already holds something: writing into it
    would mix a second run with the first."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        what = "is not empty" if target.is_dir() else "exists and is not a directory"
        raise UserError(f"{target} {what}: write into a new directory")


def _sync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    with suppress(OSError):  # a platform that cannot open a directory: the rename stands, unsynced
        fsync_directory(path)


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A new directory ``target`` that appears complete or not at all: the block writes into
    a hidden directory beside it, renamed to ``target`` when the block succeeds and removed
    (with any parent made for it) when it fails, so a failed run never blocks its retry."""
    require_empty(target)
    final = Path(os.path.abspath(target))
    made = next((p for p in reversed(final.parents) if not p.exists()), None)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create {target}: {exc.strerror or exc}") from None
    try:
        yield tmp
        if final.exists():
            final.rmdir()  # the empty directory it was given
        os.rename(tmp, final)
        _sync_directory(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


@contextmanager
def new_recording(root: str | Path, *, origin: dict | None = None, **options: int) -> Iterator[RecordingWriter]:
    """A :class:`RecordingWriter` of the new recording ``root`` (absent or empty), which
    appears there only once the block succeeded (see :func:`staged_directory`)."""
    with staged_directory(root) as tmp:
        writer = RecordingWriter(tmp, origin=origin, **options)
        yield writer
        writer.close()
