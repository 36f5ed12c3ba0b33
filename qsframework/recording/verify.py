"""The checks a stream of a recording makes as it goes: the validity rules' verdict on a
file remembered in the user's cache (so an unchanged file is checked once), and the order,
null and time-range checks of every batch read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from ..events import ORDER_COLUMNS, EventKind
from ..order import first_out_of_order
from ..user_cache import writable_cache_dir
from .files import FileInfo, damaged


class CheckedFiles:
    """Files whose every row kept the validity rules (as a DuckDB expression), remembered in
    the user's cache by path, size and modification time: a later read of an unchanged file
    skips the columns only the rules need, so checking costs one read per file."""

    def __init__(self, rules: str) -> None:
        self.dir = writable_cache_dir("checked")
        self.rules = rules

    def _entry(self, f: FileInfo) -> Path | None:
        if self.dir is None:
            return None
        try:
            st = f.path.stat()
        except OSError:
            return None
        text = f"{f.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.rules}"
        return self.dir / hashlib.sha256(text.encode()).hexdigest()

    def clean(self, group: list[FileInfo]) -> bool:
        return all((e := self._entry(f)) is not None and e.exists() for f in group)

    def mark(self, group: list[FileInfo]) -> None:
        for f in group:
            entry = self._entry(f)
            if entry is not None:
                try:
                    entry.touch()
                except OSError:
                    return


class Verifier:
    """Checks one kind's stream as it goes: no nulls where none may be, rows in total order
    (within and across batches and files), times inside each file's footer range."""

    def __init__(self, kind: EventKind, schema: pa.Schema) -> None:
        self.kind = kind
        self.required = [f.name for f in schema if not kind.schema.field(f.name).nullable]
        self.last: tuple | None = None

    def __call__(self, batch: pa.RecordBatch, name: str, lo: int, hi: int, *,
                 one_source: bool = False) -> None:
        for col in self.required:
            if batch.column(col).null_count:
                raise damaged(name, f"has nulls in column {col!r}, which may not be null")
        bad = first_out_of_order(batch, self.last, one_source=one_source)
        if bad >= 0:
            at = batch.column("ts_event")[bad].as_py()
            raise damaged(
                name, f"is not in (ts_event, source, key, seq) order: a row at ts_event {at} "
                "comes after a later one; sort the file (or remove it) and retry",
            )
        ts = batch.column("ts_event")
        first, last = ts[0].as_py(), ts[batch.num_rows - 1].as_py()
        if first < lo or last > hi:
            raise damaged(
                name, f"holds events at {first if first < lo else last}, outside the range its "
                f"footer claims ({lo}..{hi}): the footer or the file is damaged",
            )
        self.last = tuple(batch.column(c)[batch.num_rows - 1].as_py() for c in ORDER_COLUMNS)

