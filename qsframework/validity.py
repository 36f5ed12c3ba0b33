"""What makes an event valid beyond its Arrow schema: value rules per kind and event-time bounds.

The same rules apply wherever events enter the system (Kafka, the Binance parser, recordings,
MAVLink), so a strategy never sees a trade with ``price <= 0`` or an event dated 2100. A bad
row is not an error of the run: callers count it and dead-letter it with :func:`check`'s
reason, and process the rest.

Event-time bounds: ``ts_event`` may not be more than ``max_future_ns`` ahead of the row's own
``ts_recv`` (a clock gone wrong would otherwise move the watermark past every later event),
and not before ``floor_ns`` (a zeroed clock would otherwise make periodic timers catch up
over decades).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .durations import format_time, parse_time

NS_PER_S = 1_000_000_000
DEFAULT_MAX_FUTURE_NS = 60 * NS_PER_S
DEFAULT_FLOOR_NS = parse_time("2000-01-01T00:00:00Z")
MAX_KEY_BYTES = 256


@dataclass(frozen=True, kw_only=True)
class TimeBounds:
    """``ts_event`` must lie in ``[floor_ns, ts_recv + max_future_ns]``."""

    max_future_ns: int = DEFAULT_MAX_FUTURE_NS
    floor_ns: int = DEFAULT_FLOOR_NS


DEFAULT_BOUNDS = TimeBounds()

@dataclass(frozen=True, slots=True)
class Rule:
    """A rule rows must keep: the reason given for a row that breaks it; ``keeps`` gives a
    boolean array, True where a row keeps it (nulls count as kept: nullability is the
    schema's business); ``holds``, if given, answers quickly whether every row does;
    ``sql``, if given, is the same test as a DuckDB expression (the recording reader then
    checks rows while it scans them, without reading the columns out)."""

    reason: str
    keeps: Callable[[pa.Table], pa.Array]
    holds: Callable[[pa.Table], bool] | None = None
    sql: str | None = None


_RULES: dict[str, list[Rule]] = {}


def add_rule(kind: str, reason: str, keeps: Callable[[pa.Table], pa.Array],
             holds: Callable[[pa.Table], bool] | None = None, sql: str | None = None) -> None:
    """Add a value rule for ``kind`` (e.g. for a kind of one's own from ``define_kind``)."""
    _RULES.setdefault(kind, []).append(Rule(reason, keeps, holds, sql))


def _values(table: pa.Table | pa.RecordBatch, name: str) -> np.ndarray | None:
    """A numeric column as one numpy array, or None when it has nulls."""
    col = table.column(name)
    if col.null_count:
        return None
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col.to_numpy(zero_copy_only=False)


def _min_above(name: str, lo: float, *, inclusive: bool) -> Callable[[pa.Table], bool]:
    def holds(t: pa.Table) -> bool:
        v = _values(t, name)
        if v is None or not len(v):
            return v is not None
        m = v.min()  # NaN propagates, and fails the compare
        return bool(m >= lo if inclusive else m > lo)
    return holds


def _positive(name: str) -> Rule:
    return Rule(f"{name} must be > 0", lambda t: pc.greater(t.column(name), 0),
                _min_above(name, 0, inclusive=False), f'"{name}" > 0')


def _within(name: str, lo: float, hi: float) -> Rule:
    return Rule(f"{name} must be within [{lo:g}, {hi:g}]",
                lambda t: pc.and_(pc.greater_equal(t.column(name), lo), pc.less_equal(t.column(name), hi)),
                sql=f'"{name}" BETWEEN {lo!r} AND {hi!r}')


for _name, _rule in [
    ("trade", _positive("price")),
    ("trade", _positive("qty")),
    ("gap", Rule("first_id must be <= last_id",
                 lambda t: pc.less_equal(t.column("first_id"), t.column("last_id")),
                 sql="first_id <= last_id")),
    ("position", _within("lat", -90, 90)),
    ("position", _within("lon", -180, 180)),
    ("gps", _within("lat", -90, 90)),
    ("gps", _within("lon", -180, 180)),
]:
    _RULES.setdefault(_name, []).append(_rule)


def _future_holds(max_future_ns: int) -> Callable[[pa.Table], bool]:
    def holds(t: pa.Table) -> bool:
        ts, recv = _values(t, "ts_event"), _values(t, "ts_recv")
        return ts is not None and recv is not None and bool(((ts - recv) <= max_future_ns).all())
    return holds


def _no_nul(t: pa.Table, name: str) -> bool:
    """No NUL byte anywhere in a string column's data buffers (false alarms only cost the slow path)."""
    col = t.column(name)
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size and not np.frombuffer(data, np.uint8).all():
            return False
    return True


def _finite(t: pa.Table, name: str) -> bool:
    v = _values(t, name)
    if v is None:
        return False
    return not len(v) or bool(np.isfinite(v.min()) and np.isfinite(v.max()))


def _max_length_holds(name: str, limit: int) -> Callable[[pa.Table], bool]:
    """Whether no string of column ``name`` is longer than ``limit`` bytes (from the offsets)."""
    def holds(t: pa.Table) -> bool:
        col = t.column(name)
        for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
            if len(chunk) and chunk.null_count == 0 and pa.types.is_string(chunk.type):
                offsets = np.frombuffer(chunk.buffers()[1], np.int32, len(chunk) + 1, chunk.offset * 4)
                if np.diff(offsets).max() > limit:
                    return False
            elif len(chunk) and pc.max(pc.binary_length(chunk)).as_py() > limit:
                return False
        return True
    return holds


@functools.cache
def _common_rules(schema: pa.Schema, bounds: TimeBounds) -> list[Rule]:
    """The rules of every kind, for ``schema`` and ``bounds`` (made once per pair: a live
    poll checks a few dozen rows, and making them cost more than checking; callers only
    read the list)."""
    rules = [
        Rule(f"ts_event before the floor {format_time(bounds.floor_ns)}",
             lambda t: pc.greater_equal(t.column("ts_event"), bounds.floor_ns),
             _min_above("ts_event", bounds.floor_ns, inclusive=True),
             f"ts_event >= {int(bounds.floor_ns)}"),
        Rule(f"ts_event more than {bounds.max_future_ns / NS_PER_S:g} s ahead of ts_recv (max-future)",
             lambda t: pc.less_equal(pc.subtract(t.column("ts_event"), t.column("ts_recv")),
                                     bounds.max_future_ns),
             _future_holds(bounds.max_future_ns),
             f"ts_event::HUGEINT - ts_recv <= {int(bounds.max_future_ns)}"),
        Rule(f"key longer than {MAX_KEY_BYTES} bytes",
             lambda t: pc.less_equal(pc.binary_length(t.column("key")), MAX_KEY_BYTES),
             _max_length_holds("key", MAX_KEY_BYTES),
             f"strlen(key) <= {MAX_KEY_BYTES}"),
    ]
    for field in schema:
        name = field.name
        if pa.types.is_string(field.type):
            rules.append(Rule(f"{name} contains a NUL byte",
                              lambda t, n=name: pc.invert(pc.match_substring(t.column(n), "\x00")),
                              lambda t, n=name: _no_nul(t, n), f'strpos("{name}", chr(0)) = 0'))
        elif pa.types.is_floating(field.type):
            rules.append(Rule(f"{name} is not finite", lambda t, n=name: pc.is_finite(t.column(n)),
                              lambda t, n=name: _finite(t, n), f'isfinite("{name}")'))
    return rules


@dataclass(frozen=True, slots=True)
class Invalid:
    """Row ``index`` of the checked table breaks a rule, for ``reason``."""

    index: int
    reason: str


def describe_rejected(rejected: dict[str, int]) -> str:
    """Counts of rejected rows by reason in one line, most frequent first, e.g.
    ``"3 rejected (position: lat must be within [-90, 90] 2, ...)"``."""
    if not rejected:
        return "0 rejected"
    reasons = ", ".join(f"{why} {n:,}" for why, n in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{sum(rejected.values()):,} rejected ({reasons})"


def check(kind: str, table: pa.Table | pa.RecordBatch,
          bounds: TimeBounds = DEFAULT_BOUNDS) -> tuple[pa.Table | pa.RecordBatch, list[Invalid]]:
    """The rows of ``table`` (a full table of the kind's schema) that keep every rule, in
    order, and the others with the first rule each breaks. The usual all-valid case costs a
    few vectorized compares and returns ``table`` itself."""
    if table.num_rows == 0:
        return table, []
    rules = [r for r in (*_common_rules(table.schema, bounds), *_RULES.get(kind, ()))
             if r.holds is None or not r.holds(table)]
    if not rules:
        return table, []
    masks = [pc.fill_null(r.keeps(table), True).to_numpy(zero_copy_only=False) for r in rules]
    ok = np.logical_and.reduce(masks)
    if ok.all():
        return table, []
    invalid = [Invalid(i, next(r.reason for r, m in zip(rules, masks) if not m[i]))
               for i in np.flatnonzero(~ok).tolist()]
    return table.filter(pa.array(ok)), invalid


def sql_check(kind: str, schema: pa.Schema, bounds: TimeBounds = DEFAULT_BOUNDS) -> str | None:
    """A DuckDB expression true for the rows of ``kind`` (columns as in ``schema``) that
    keep every rule, as :func:`check` decides; None when a rule has no SQL form."""
    rules = [*_common_rules(schema, bounds), *_RULES.get(kind, ())]
    if any(r.sql is None for r in rules):
        return None
    return " AND ".join(f"COALESCE({r.sql}, TRUE)" for r in rules)
