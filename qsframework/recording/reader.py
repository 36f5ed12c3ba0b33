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

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..events import KINDS, ORDER_COLUMNS, EventKind, conform, get_kind
from ..order import first_out_of_order, merge_kinds
from ..strategy import repeat_string
from ..user_cache import writable_cache_dir
from ..validity import DEFAULT_BOUNDS, TimeBounds, check, sql_check
from .format import FORMAT_VERSION, MANIFEST

_OK = "__qsf_ok"  # the column DuckDB computes: the row keeps every validity rule
_constant = lru_cache(maxsize=8)(repeat_string)  # a column of one string (batches repeat sizes)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One part file and the time range its footer records."""

    path: Path
    kind: str
    rows: int
    ts_min: int
    ts_max: int
    keys: frozenset[str] | None = None  # distinct keys, when the writer recorded them
    source: str | None = None  # the one source of every row, when the statistics show one


@dataclass(frozen=True, slots=True)
class Rejected:
    """Rows of a recording that break a validity rule: skipped, each with its reason."""

    kind: str
    rows: pa.Table  # the full rows, in the kind's schema
    reasons: list[str]
    files: list[str]


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, with unprintable characters escaped."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = lines[0] if lines else type(exc).__name__
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in line)


def _damaged(path: Path | str, what: str) -> UserError:
    return UserError(f"recording file {str(path)!r} {what}")


def _fits(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a file's column type reads exactly as the kind's type."""
    if pa.types.is_dictionary(have):
        have = have.value_type
    if have == want:
        return True
    if pa.types.is_integer(want):
        return pa.types.is_integer(have) or (want == pa.int64() and pa.types.is_timestamp(have))
    if pa.types.is_floating(want):
        return pa.types.is_floating(have)
    if pa.types.is_string(want):
        return pa.types.is_string(have) or pa.types.is_large_string(have)
    return False


def _check_columns(path: Path, kind: EventKind, md: pq.FileMetaData) -> None:
    """Every column of the kind, of a type that reads as the kind's, and no nulls where
    the kind allows none (from the row groups' statistics)."""
    try:
        schema = md.schema.to_arrow_schema()
    except Exception as exc:  # pyarrow raises several types for damaged schemas
        raise _damaged(path, f"has an unreadable schema: {_first_line(exc)}") from None
    for field in kind.schema:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise _damaged(path, f"has no column {field.name!r} ({kind.name} events need it)")
        have = schema.field(idx).type
        if not _fits(have, field.type):
            raise _damaged(path, f"stores column {field.name!r} as {have}, not {field.type}")
        if field.nullable:
            continue
        for i in range(md.num_row_groups):
            stats = md.row_group(i).column(idx).statistics
            if stats is not None and stats.has_null_count and stats.null_count:
                raise _damaged(path, f"has nulls in column {field.name!r}, which may not be null")


def _ts_statistics(path: Path, md: pq.FileMetaData) -> tuple[int, int] | None:
    idx = md.schema.to_arrow_schema().get_field_index("ts_event")
    if idx < 0:
        raise _damaged(path, "has no ts_event column")
    stats = [md.row_group(i).column(idx).statistics for i in range(md.num_row_groups)]
    if not stats or any(s is None or not s.has_min_max for s in stats):
        return None
    return int(min(s.min for s in stats)), int(max(s.max for s in stats))


def _one_source(md: pq.FileMetaData) -> str | None:
    """The value of the ``source`` column when its statistics show it is the same in every row."""
    idx = md.schema.to_arrow_schema().get_field_index("source")
    values = set()
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(idx).statistics if idx >= 0 else None
        if stats is None or not stats.has_min_max or stats.null_count or stats.min != stats.max:
            return None
        if not (getattr(stats, "is_min_value_exact", True) and getattr(stats, "is_max_value_exact", True)):
            return None  # truncated values: equal prefixes say nothing
        values.add(stats.min)
    return values.pop() if len(values) == 1 and isinstance(next(iter(values)), str) else None


def _file_info(path: Path, kind: str) -> FileInfo:
    try:
        md = pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise _damaged(path, f"is corrupt or unreadable: {_first_line(exc)}") from None
    meta = md.metadata or {}
    try:
        version = int(meta.get(b"qsf.format_version", b"1"))
        footer = (int(meta[b"qsf.ts_min"]), int(meta[b"qsf.ts_max"])) if b"qsf.ts_min" in meta else None
    except (ValueError, KeyError):
        raise _damaged(path, "has a corrupt qsf footer") from None
    if version > FORMAT_VERSION:
        raise UserError(
            f"{str(path)!r} uses recording format {version}; this qsf reads up to {FORMAT_VERSION}"
        )
    if kind in KINDS:
        _check_columns(path, KINDS[kind], md)
    stats = _ts_statistics(path, md) if md.num_rows else footer
    if footer is None:  # a foreign file: take the range from column statistics
        if stats is None:
            raise _damaged(path, "has no ts_event statistics")
        footer = stats
    elif stats is not None and stats != footer:
        raise _damaged(
            path, f"has a footer whose qsf.ts_min/ts_max ({footer[0]}..{footer[1]}) disagree with "
            f"its ts_event statistics ({stats[0]}..{stats[1]}): the file is damaged",
        )
    keys = None
    if b"qsf.keys" in meta:
        try:
            keys = frozenset(json.loads(meta[b"qsf.keys"]))
        except ValueError:
            keys = None
    return FileInfo(path, kind, md.num_rows, footer[0], footer[1], keys, _one_source(md))


def _runs(files: list[FileInfo]) -> list[tuple[list[FileInfo], bool]]:
    """Group time-ordered files into scans: (files, needs_sort). A file that overlaps no
    other is scanned alone (so a problem names it); overlapping ones are sorted together."""
    groups: list[list[FileInfo]] = []
    end = None
    for f in files:
        if groups and end is not None and f.ts_min <= end:
            groups[-1].append(f)  # overlaps (or touches) the group before
        else:
            groups.append([f])
        end = f.ts_max if end is None else max(end, f.ts_max)
    return [(g, len(g) > 1) for g in groups]


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


class _CheckedFiles:
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


class _Verifier:
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
                raise _damaged(name, f"has nulls in column {col!r}, which may not be null")
        bad = first_out_of_order(batch, self.last, one_source=one_source)
        if bad >= 0:
            at = batch.column("ts_event")[bad].as_py()
            raise _damaged(
                name, f"is not in (ts_event, source, key, seq) order: a row at ts_event {at} "
                "comes after a later one; sort the file (or remove it) and retry",
            )
        ts = batch.column("ts_event")
        first, last = ts[0].as_py(), ts[batch.num_rows - 1].as_py()
        if first < lo or last > hi:
            raise _damaged(
                name, f"holds events at {first if first < lo else last}, outside the range its "
                f"footer claims ({lo}..{hi}): the footer or the file is damaged",
            )
        self.last = tuple(batch.column(c)[batch.num_rows - 1].as_py() for c in ORDER_COLUMNS)


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
                infos = [_file_info(p, kind) for p in paths]
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
                raise UserError(f"recording {str(self.root)!r} cannot be read: {_first_line(exc)}") from None
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
        checked = _CheckedFiles(ok_sql) if ok_sql is not None else None
        order = ", ".join(ORDER_COLUMNS)
        verify = _Verifier(ek, schema)  # one for the whole stream: order across files too

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
                    for _ in scan_files(con, [f], False, _Verifier(ek, schema), quiet=True):
                        pass
                raise

        def scan_files(con: duckdb.DuckDBPyConnection, group: list[FileInfo], needs_sort: bool,
                       verify: _Verifier, quiet: bool = False) -> Iterator[pa.RecordBatch]:
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
                raise _damaged(name, f"cannot be read: {_first_line(exc)}") from None

        def scans() -> Iterator[pa.RecordBatch]:
            con = self._con.cursor()  # its own cursor: several kinds stream at once
            for group, needs_sort in _runs(files):
                yield from scan(con, group, needs_sort)

        return _rebatch(scans(), batch_size)

    def stream_all(
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
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Events of several kinds merged into the engine's total order."""
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
        return merge_kinds(streams)

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
                    raise _damaged(f.path, f"cannot be read: {_first_line(exc)}") from None
                for key, n, lo, hi, *nonnull in rows:
                    for field, have in zip(schema, nonnull):
                        if field.name in required and have != n:
                            col = field.name
                            raise _damaged(f.path, f"has nulls in column {col!r}, which may not be null")
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
