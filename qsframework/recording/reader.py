"""Read a recording with DuckDB: filter by time, keys and kinds; stream ordered Arrow batches.

Files are read in time order. Runs of files whose time ranges do not overlap are scanned
as they are (each file is sorted); only overlapping files are sorted together, so memory
stays bounded by a batch and DuckDB's own limit however large the recording.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..events import ORDER_COLUMNS, conform, get_kind
from ..order import merge_kinds
from .format import FORMAT_VERSION, MANIFEST


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One part file and the time range its footer records."""

    path: Path
    kind: str
    rows: int
    ts_min: int
    ts_max: int
    keys: frozenset[str] | None = None  # distinct keys, when the writer recorded them


def _file_info(path: Path, kind: str) -> FileInfo:
    try:
        md = pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise UserError(f"recording file {str(path)!r} is corrupt or unreadable: {exc}") from None
    meta = md.metadata or {}
    version = int(meta.get(b"qsf.format_version", b"1"))
    if version > FORMAT_VERSION:
        raise UserError(
            f"{str(path)!r} uses recording format {version}; this qsf reads up to {FORMAT_VERSION}"
        )
    if b"qsf.ts_min" in meta:
        ts_min, ts_max = int(meta[b"qsf.ts_min"]), int(meta[b"qsf.ts_max"])
    else:  # a foreign file: take the range from column statistics
        idx = md.schema.to_arrow_schema().get_field_index("ts_event")
        if idx < 0:
            raise UserError(f"{str(path)!r} has no ts_event column")
        stats = [md.row_group(i).column(idx).statistics for i in range(md.num_row_groups)]
        if not stats or any(s is None or not s.has_min_max for s in stats):
            raise UserError(f"{str(path)!r} has no ts_event statistics")
        ts_min, ts_max = min(s.min for s in stats), max(s.max for s in stats)
    keys = None
    if b"qsf.keys" in meta:
        try:
            keys = frozenset(json.loads(meta[b"qsf.keys"]))
        except ValueError:
            keys = None
    return FileInfo(path, kind, md.num_rows, int(ts_min), int(ts_max), keys)


def _runs(files: list[FileInfo]) -> list[tuple[list[FileInfo], bool]]:
    """Group time-ordered files: (files, needs_sort). Disjoint files need no sort."""
    groups: list[list[FileInfo]] = []
    end = None
    for f in files:
        if groups and end is not None and f.ts_min <= end:
            groups[-1].append(f)  # overlaps (or touches) the group before
        else:
            groups.append([f])
        end = f.ts_max if end is None else max(end, f.ts_max)
    out: list[tuple[list[FileInfo], bool]] = []
    for g in groups:
        sort = len(g) > 1
        if not sort and out and not out[-1][1]:
            out[-1][0].extend(g)  # chain disjoint sorted files into one scan
        else:
            out.append((g, sort))
    return out


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

    def span(self) -> tuple[int, int] | None:
        files = [f for fs in self._files.values() for f in fs]
        if not files:
            return None
        return min(f.ts_min for f in files), max(f.ts_max for f in files)

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
    ) -> Iterator[pa.RecordBatch]:
        """Batches of ``kind`` in total order with ``start <= ts_event < end`` and ``key in keys``.

        ``columns`` reads only those fields (``ts_event`` is always included).
        """
        ek = get_kind(kind)
        schema, _ = ek.project(tuple(columns) if columns is not None else None)
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
        cols = ", ".join(f'"{n}"' for n in schema.names)
        order = ", ".join(ORDER_COLUMNS)

        def scans() -> Iterator[pa.RecordBatch]:
            con = self._con.cursor()  # its own cursor: several kinds stream at once
            for group, needs_sort in _runs(files):
                paths = [str(f.path) for f in group]
                sql = f"SELECT {cols} FROM read_parquet(?) WHERE {' AND '.join(where)}"
                if needs_sort:
                    sql += f" ORDER BY {order}"
                try:
                    reader = con.sql(sql, params=[paths, *params]).to_arrow_reader(batch_size)
                    for batch in reader:
                        yield conform(batch, ek, schema)
                except duckdb.Error as exc:
                    raise UserError(f"reading {kind} events failed: {exc}") from None

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
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Events of several kinds merged into the engine's total order."""
        present = [k for k in kinds if k in self._files]
        if columns and len(present) > 1:  # merging needs the order columns of every kind
            columns = {k: [*dict.fromkeys([*c, *ORDER_COLUMNS])] for k, c in columns.items()}
        streams = {
            k: self.stream(
                k, start=start, end=end, keys=keys, batch_size=batch_size,
                columns=(columns or {}).get(k),
            )
            for k in kinds
            if k in self._files
        }
        if not streams:
            return iter(())
        return merge_kinds(streams)

    # -- summary ---------------------------------------------------------------------
    def info(self) -> dict:
        """Kinds, keys, counts and time spans, computed with DuckDB."""
        out: dict = {"path": str(self.root), "format_version": FORMAT_VERSION, "kinds": {}}
        if self.origin is not None:
            out["origin"] = self.origin
        for kind, files in self._files.items():
            rows = self._con.execute(
                "SELECT key, count(*), min(ts_event), max(ts_event) FROM read_parquet(?) "
                "GROUP BY key ORDER BY key",
                [[str(f.path) for f in files]],
            ).fetchall()
            out["kinds"][kind] = {
                "files": len(files),
                "rows": sum(r[1] for r in rows),
                "ts_min": min(r[2] for r in rows),
                "ts_max": max(r[3] for r in rows),
                "keys": {r[0]: {"rows": r[1], "ts_min": r[2], "ts_max": r[3]} for r in rows},
            }
        return out

