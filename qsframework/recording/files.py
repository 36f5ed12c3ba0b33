"""The part files of a recording as their footers describe them: what each holds (kind,
rows, time range, keys, source), checked before any row is read (readable, of the format
version this qsf reads, every column of a type that reads as the kind's, no nulls where the
kind allows none), and which files overlap in time and must be sorted together."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..events import KINDS, EventKind
from .format import FORMAT_VERSION


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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, with unprintable characters escaped."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = lines[0] if lines else type(exc).__name__
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in line)


def damaged(path: Path | str, what: str) -> UserError:
    """The one-line error for a file of the recording that cannot be read as it claims."""
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
        raise damaged(path, f"has an unreadable schema: {first_line(exc)}") from None
    for field in kind.schema:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise damaged(path, f"has no column {field.name!r} ({kind.name} events need it)")
        have = schema.field(idx).type
        if not _fits(have, field.type):
            raise damaged(path, f"stores column {field.name!r} as {have}, not {field.type}")
        if field.nullable:
            continue
        for i in range(md.num_row_groups):
            stats = md.row_group(i).column(idx).statistics
            if stats is not None and stats.has_null_count and stats.null_count:
                raise damaged(path, f"has nulls in column {field.name!r}, which may not be null")


def _ts_statistics(path: Path, md: pq.FileMetaData) -> tuple[int, int] | None:
    idx = md.schema.to_arrow_schema().get_field_index("ts_event")
    if idx < 0:
        raise damaged(path, "has no ts_event column")
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


def file_info(path: Path, kind: str) -> FileInfo:
    """What the part file ``path`` of ``kind`` holds, from its footer, checked against its statistics."""
    try:
        md = pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise damaged(path, f"is corrupt or unreadable: {first_line(exc)}") from None
    meta = md.metadata or {}
    try:
        version = int(meta.get(b"qsf.format_version", b"1"))
        footer = (int(meta[b"qsf.ts_min"]), int(meta[b"qsf.ts_max"])) if b"qsf.ts_min" in meta else None
    except (ValueError, KeyError):
        raise damaged(path, "has a corrupt qsf footer") from None
    if version > FORMAT_VERSION:
        raise UserError(
            f"{str(path)!r} uses recording format {version}; this qsf reads up to {FORMAT_VERSION}"
        )
    if kind in KINDS:
        _check_columns(path, KINDS[kind], md)
    stats = _ts_statistics(path, md) if md.num_rows else footer
    if footer is None:  # a foreign file: take the range from column statistics
        if stats is None:
            raise damaged(path, "has no ts_event statistics")
        footer = stats
    elif stats is not None and stats != footer:
        raise damaged(
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


def runs(files: list[FileInfo]) -> list[tuple[list[FileInfo], bool]]:
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
