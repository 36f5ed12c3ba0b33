"""Read a recording with DuckDB: filter by time, keys and kinds; stream ordered Arrow batches.

Files are read in time order. Files whose time ranges do not overlap are scanned as they
are (each file is sorted); only overlapping files are sorted together, so memory stays
bounded by a batch and DuckDB's own limit however large the recording.

A recording is never silently wrong: opening it checks each file's footer, column types
and null counts; streaming checks that rows come in total order and inside the range the
footer claims, and stops with one line naming the file otherwise. Rows that break a
validity rule (:mod:`qsframework.validity`) are skipped and handed to ``on_reject`` with
their reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ..errors import UserError
from ..events import KINDS, ORDER_COLUMNS, conform, get_kind
from ..order import first_out_of_order, merge_windows
from ..strategy import repeat_string
from ..validity import DEFAULT_BOUNDS, TimeBounds, check, sql_check
from ..window import Window
from .files import FileInfo, damaged, file_info, first_line, runs
from .format import FORMAT_VERSION, MANIFEST
from .verify import CheckedFiles, Verifier

__all__ = ["FileInfo", "Recording", "Rejected"]

_OK = "__qsf_ok"  # the column DuckDB computes: the row keeps every validity rule
_constant = lru_cache(maxsize=8)(repeat_string)  # a column of one string (batches repeat sizes)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Rows of a recording that break a validity rule: skipped, each with its reason."""

    kind: str
    rows: pa.Table  # the full rows, in the kind's schema
    reasons: list[str]
    files: list[str]


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Exactly ``size`` rows per batch (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            batch = batch.slice(take)
            count += take
            if count == size:
                yield _join(pending)
                pending, count = [], 0
    if count:
        yield _join(pending)


def _join(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


class Recording:
    """A recording directory (see recordings/README.md)."""

    def __init__(self, root: str | Path, *, memory_limit: str = "512MB", threads: int = 2) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise UserError(f"recording {str(self.root)!r} does not exist")
        if not self.root.is_dir():
            raise UserError(f"recording {str(self.root)!r} is not a directory")
        manifest = self.root / MANIFEST
        self.origin: dict | None = None
        if manifest.exists():
            try:
                doc = json.loads(manifest.read_text())
                self.origin = doc.get("origin")
                version = int(doc["version"])
            except (ValueError, KeyError, TypeError, OSError):
                raise UserError(f"{str(manifest)!r} is corrupt") from None
            if version > FORMAT_VERSION:
                raise UserError(
                    f"recording format {version} is newer than this qsf reads ({FORMAT_VERSION})"
                )
        self._files: dict[str, list[FileInfo]] = {}
        for kind_dir in sorted(self.root.glob("kind=*")):
            kind = kind_dir.name.split("=", 1)[1]
            paths = sorted(kind_dir.glob("date=*/part-*.parquet"))
            if paths:
                infos = [file_info(p, kind) for p in paths]
                self._files[kind] = sorted(infos, key=lambda f: (f.ts_min, f.ts_max, str(f.path)))
        if not self._files and not manifest.exists():
            raise UserError(f"{str(self.root)!r} is not a recording (no {MANIFEST}, no kind=*/ files)")
        self._con = duckdb.connect(":memory:")
        self._con.execute(f"SET memory_limit='{memory_limit}'")
        self._con.execute(f"SET threads={int(threads)}")
        self._con.execute("SET preserve_insertion_order=true")

    @property
    def kinds(self) -> list[str]:
        return sorted(self._files)

    def files(self, kind: str) -> list[FileInfo]:
        return list(self._files.get(kind, []))

    def rows(self, kinds: Sequence[str] | None = None) -> int:
        return sum(f.rows for k in (kinds or self.kinds) for f in self._files.get(k, []))

    def count(
        self,
        kinds: Sequence[str],
        *,
        start: int | None = None,
        end: int | None = None,
        keys: Sequence[str] | None = None,
    ) -> int:
        """Rows of ``kinds`` in ``[start, end)`` with ``key in keys`` (before validity checks):
        from the footers where a file lies wholly inside, else counted by DuckDB."""
        wanted = frozenset(keys) if keys is not None else None
        total, partial = 0, []
        for f in (f for k in kinds for f in self._files.get(k, [])):
            if (start is not None and f.ts_max < start) or (end is not None and f.ts_min >= end):
                continue
            if wanted is not None and f.keys is not None and not f.keys & wanted:
                continue
            inside = (start is None or f.ts_min >= start) and (end is None or f.ts_max < end)
            if inside and (wanted is None or (f.keys is not None and f.keys <= wanted)):
                total += f.rows
            else:
                partial.append(str(f.path))
        if partial:
            sql = ("SELECT count(*) FROM read_parquet(?) WHERE (? IS NULL OR ts_event >= ?) "
                   "AND (? IS NULL OR ts_event < ?) AND (? IS NULL OR list_contains(?, key))")
            ks = None if wanted is None else sorted(wanted)
            try:
                row = self._con.execute(sql, [partial, start, start, end, end, ks, ks]).fetchone()
            except (duckdb.Error, pa.ArrowException) as exc:
                raise UserError(f"recording {str(self.root)!r} cannot be read: {first_line(exc)}") from None
            total += int(row[0]) if row else 0
        return total

    def span(self) -> tuple[int, int] | None:
        files = [f for fs in self._files.values() for f in fs]
        if not files:
            return None
        return min(f.ts_min for f in files), max(f.ts_max for f in files)

    def prepare(self) -> float:
        """Load the compiled order check (compiling it on first use); returns the seconds."""
        t0 = time.perf_counter()
        empty = pa.RecordBatch.from_pydict(
            {"ts_event": [0, 1], "source": ["", ""], "key": ["", ""], "seq": [0, 0]}
        )
        first_out_of_order(empty)
        return time.perf_counter() - t0

    # -- streaming -----------------------------------------------------------------
    def stream(
        self,
        kind: str,
        *,
        start: int | None = None,
        end: int | None = None,
        keys: Sequence[str] | None = None,
        batch_size: int = 65_536,
        columns: Sequence[str] | None = None,
        bounds: TimeBounds | None = DEFAULT_BOUNDS,
        on_reject: Callable[[Rejected], None] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Batches of ``kind`` in total order with ``start <= ts_event < end`` and ``key in keys``.

        ``columns`` reads only those fields (``ts_event`` and the other order columns are
        always included). Rows that break a validity rule under ``bounds`` are left out and
        handed to ``on_reject`` (``bounds=None``: no validity check, every row as stored). Raises :class:`UserError` naming the file when a file is
        damaged, holds wrong types or nulls, or is not in total order.
        """
        ek = get_kind(kind)
        wanted_cols = None if columns is None else tuple(dict.fromkeys([*columns, *ORDER_COLUMNS]))
        schema, _ = ek.project(wanted_cols)
        wanted = frozenset(keys) if keys is not None else None
        files = [
            f
            for f in self._files.get(kind, [])
            if (start is None or f.ts_max >= start)
            and (end is None or f.ts_min < end)
            and (wanted is None or f.keys is None or f.keys & wanted)
        ]
        if wanted is not None and all(f.keys is not None and f.keys <= wanted for f in files):
            keys = None  # every row qualifies: skip the per-row filter
        where, params = ["TRUE"], []
        if start is not None:
            where.append("ts_event >= ?")
            params.append(start)
        if end is not None:
            where.append("ts_event < ?")
            params.append(end)
        if keys is not None:
            where.append("list_contains(?, key)")
            params.append(list(keys))
        ok_sql = sql_check(kind, ek.schema, bounds) if bounds is not None else None
        python_check = bounds is not None and ok_sql is None
        if python_check:  # a rule without a SQL form: read every column, check in Python
            schema = ek.schema
        plain = ", ".join(f'"{n}"' for n in schema.names)
        checked = CheckedFiles(ok_sql) if ok_sql is not None else None
        order = ", ".join(ORDER_COLUMNS)
        verify = Verifier(ek, schema)  # one for the whole stream: order across files too

        def rejected(con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
            """The full rows of ``paths`` that DuckDB found invalid, with check()'s reasons."""
            sql = (f"SELECT * FROM read_parquet(?, filename=true) WHERE {' AND '.join(where)} "
                   f"AND NOT ({ok_sql}) ORDER BY {order}")
            table = con.sql(sql, params=[paths, *params]).to_arrow_table()
            files = table.column("filename").to_pylist()
            rows = pa.Table.from_batches([conform(table, ek)])
            _, invalid = check(kind, rows, bounds)  # type: ignore[arg-type]
            reasons = ["breaks a validity rule"] * rows.num_rows
            for bad in invalid:
                reasons[bad.index] = bad.reason
            if on_reject is not None:
                on_reject(Rejected(kind, rows, reasons, files))

        def scan(con: duckdb.DuckDBPyConnection, group: list[FileInfo], needs_sort: bool) -> Iterator[pa.RecordBatch]:
            try:
                yield from scan_files(con, group, needs_sort, verify)
            except UserError:
                if len(group) == 1:
                    raise
                for f in group:  # name the file at fault: each alone, as a scan of it alone sees it
                    for _ in scan_files(con, [f], False, Verifier(ek, schema), quiet=True):
                        pass
                raise

        def scan_files(con: duckdb.DuckDBPyConnection, group: list[FileInfo], needs_sort: bool,
                       verify: Verifier, quiet: bool = False) -> Iterator[pa.RecordBatch]:
            paths = [str(f.path) for f in group]
            name = paths[0] if len(paths) == 1 else f"{paths[0]} (sorted with {len(paths) - 1} overlapping files)"
            lo, hi = min(f.ts_min for f in group), max(f.ts_max for f in group)
            rules = checked is not None and not checked.clean(group)
            # a source the statistics show constant is not read out: filled in from them
            sources = {f.source for f in group}
            source = sources.pop() if len(sources) == 1 and "source" in schema.names else None
            cols = plain if source is None else ", ".join(f'"{n}"' for n in schema.names if n != "source")
            cols = f"{cols}, ({ok_sql}) AS {_OK}" if rules else cols
            sql = f"SELECT {cols} FROM read_parquet(?) WHERE {' AND '.join(where)}"
            if needs_sort:
                sql += f" ORDER BY {order}"
            some_invalid = False
            try:
                for batch in con.sql(sql, params=[paths, *params]).to_arrow_reader(batch_size):
                    if rules:
                        ok = batch.column(_OK)
                        batch = batch.drop_columns([_OK])
                        if ok.false_count:
                            some_invalid = True
                            batch = batch.filter(ok)
                    elif python_check:
                        batch = conform(batch, ek)
                        valid, invalid = check(kind, batch, bounds)  # type: ignore[arg-type]
                        if invalid:
                            idx = pa.array([bad.index for bad in invalid])
                            if on_reject is not None and not quiet:
                                on_reject(Rejected(kind, pa.Table.from_batches([batch.take(idx)]),
                                                   [bad.reason for bad in invalid], [name] * len(idx)))
                            batch = valid
                    if not batch.num_rows:
                        continue
                    if source is not None:
                        batch = batch.add_column(schema.get_field_index("source"), "source",
                                                 _constant(source, batch.num_rows))
                    batch = conform(batch, ek, schema)
                    verify(batch, name, lo, hi, one_source=source is not None)
                    yield batch
                if some_invalid and not quiet:
                    rejected(con, paths)
                elif rules and len(where) == 1 and checked is not None:  # every row was read
                    checked.mark(group)
            except (duckdb.Error, pa.ArrowException) as exc:
                raise damaged(name, f"cannot be read: {first_line(exc)}") from None

        def scans() -> Iterator[pa.RecordBatch]:
            con = self._con.cursor()  # its own cursor: several kinds stream at once
            for group, needs_sort in runs(files):
                yield from scan(con, group, needs_sort)

        return _rebatch(scans(), batch_size)

    def stream_all(self, kinds: Sequence[str], **options: Any) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Events of several kinds merged into the engine's total order, as runs of one kind
        (options as :meth:`windows`)."""
        for window in self.windows(kinds, **options):
            yield from window.runs()

    def windows(
        self,
        kinds: Sequence[str],
        *,
        start: int | None = None,
        end: int | None = None,
        keys: Sequence[str] | None = None,
        batch_size: int = 65_536,
        columns: dict[str, Sequence[str]] | None = None,
        bounds: TimeBounds | None = DEFAULT_BOUNDS,
        on_reject: Callable[[Rejected], None] | None = None,
    ) -> Iterator[Window]:
        """Events of several kinds merged into the engine's total order, as windows holding
        every kind (:class:`~qsframework.window.Window`); options as :meth:`stream`."""
        streams = {
            k: self.stream(
                k, start=start, end=end, keys=keys, batch_size=batch_size,
                columns=(columns or {}).get(k), bounds=bounds, on_reject=on_reject,
            )
            for k in kinds
            if k in self._files
        }
        if not streams:
            return iter(())
        return merge_windows(streams)

    # -- summary ---------------------------------------------------------------------
    def info(self) -> dict:
        """Kinds, keys, counts and time spans, computed with DuckDB (reading every column,
        so damaged data and nulls where none may be are found)."""
        out: dict = {"path": str(self.root), "format_version": FORMAT_VERSION, "kinds": {}}
        if self.origin is not None:
            out["origin"] = self.origin
        for kind, files in self._files.items():
            keys: dict[str, dict] = {}
            schema = KINDS[kind].schema if kind in KINDS else pa.schema([])
            required = [f.name for f in schema if not f.nullable]
            # counted row by row (not from statistics): every value is decoded
            counts = "".join(f', count(*) FILTER (WHERE "{f.name}" IS NOT NULL)' for f in schema)
            for f in files:
                try:
                    rows = self._con.execute(
                        f"SELECT key, count(*), min(ts_event), max(ts_event){counts} "
                        "FROM read_parquet(?) GROUP BY key", [str(f.path)],
                    ).fetchall()
                except (duckdb.Error, pa.ArrowException) as exc:
                    raise damaged(f.path, f"cannot be read: {first_line(exc)}") from None
                for key, n, lo, hi, *nonnull in rows:
                    for field, have in zip(schema, nonnull):
                        if field.name in required and have != n:
                            col = field.name
                            raise damaged(f.path, f"has nulls in column {col!r}, which may not be null")
                    k = keys.setdefault(key, {"rows": 0, "ts_min": lo, "ts_max": hi})
                    k["rows"] += n
                    k["ts_min"], k["ts_max"] = min(k["ts_min"], lo), max(k["ts_max"], hi)
            keys = dict(sorted(keys.items()))
            out["kinds"][kind] = {
                "files": len(files),
                "rows": sum(k["rows"] for k in keys.values()),
                "ts_min": min((k["ts_min"] for k in keys.values()), default=None),
                "ts_max": max((k["ts_max"] for k in keys.values()), default=None),
                "keys": keys,
            }
        return out
