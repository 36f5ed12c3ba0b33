"""The Kafka wire format: one compact JSON object per event, keyed by the event key.

``{"ts_event": 1767571200107000000, "ts_recv": ..., "source": "binance", "key": "BTCUSDT",
"seq": 3000000001, "price": 95001.5, "qty": 0.002, "is_buyer_maker": false}`` - the field
names and types of the kind's Arrow schema, so any Kafka client can read and write it.
Messages that do not decode to a valid event (malformed, null, or breaking a rule of
:mod:`qsframework.validity`, event-time bounds included) are returned with the reason, for the DLQ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from .events import EventKind
from .validity import DEFAULT_BOUNDS, Invalid, TimeBounds, check

_CHECKS = {
    "int64": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
    "double": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf"),
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}


def _check_of(type_: pa.DataType) -> Callable[[object], bool]:
    """The value check of a field type: the fast ones above, else whether Arrow takes the
    value as that type (a kind of one's own may use any type)."""
    known = _CHECKS.get(str(type_))
    if known is not None:
        return known

    def fits(v: object) -> bool:
        try:
            pa.scalar(v, type=type_)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError,
                OverflowError):
            return False
        return True

    return fits


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that is not a valid event of its kind, why, and its position in the input."""

    value: bytes
    reason: str
    index: int = -1


def encode(batch: pa.RecordBatch | pa.Table) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs for every row, in row order."""
    names = batch.schema.names
    cols = [c.to_pylist() for c in batch.columns]
    key_index = names.index("key")
    dumps = orjson.dumps
    out = []
    for row in zip(*cols):
        out.append((row[key_index].encode(), dumps(dict(zip(names, row)))))
    return out


def decode(kind: EventKind, values: Iterable[bytes | None], *, bounds: TimeBounds | None = DEFAULT_BOUNDS,
           now_ns: int | None = None) -> tuple[pa.Table, list[Rejected]]:
    """Valid events as a table of the kind's schema (in message order), and the rejects
    (in message order). ``bounds`` are the event-time bounds (None: schema checks only);
    with ``now_ns`` (live input), a ``ts_recv`` more than ``bounds.max_future_ns`` ahead of
    it is rejected too: a receive time cannot lie in the future of the receiver's clock."""
    values = list(values)
    table = _decode_block(kind, values) if _plain(kind.schema) else _decode_all_valid(kind, values)
    rejected: list[Rejected] = []
    if table is None:
        table, rejected = _decode_each(kind, values)
    if bounds is None or not table.num_rows:
        return table, rejected
    kept, invalid = check(kind.name, table, bounds)
    if now_ns is not None and kept.num_rows:
        kept, invalid = _recv_not_ahead(table, kept, invalid, now_ns + bounds.max_future_ns)
    if not invalid:
        return kept, rejected
    bad = {r.index for r in rejected}
    position = [i for i in range(len(values)) if i not in bad]  # decoded row -> message index
    rejected += [Rejected(values[position[i.index]] or b"", i.reason, position[i.index]) for i in invalid]
    rejected.sort(key=lambda r: r.index)
    return kept, rejected


def _recv_not_ahead(table: pa.Table, kept: pa.Table, invalid: list[Invalid],
                    limit_ns: int) -> tuple[pa.Table, list[Invalid]]:
    """Also reject the rows of ``table`` whose ts_recv is past ``limit_ns`` (the common case,
    none, costs one max)."""
    if pc.max(kept.column("ts_recv")).as_py() <= limit_ns:
        return kept, invalid
    ahead = pc.greater(table.column("ts_recv"), limit_ns).to_numpy(zero_copy_only=False)
    already = {i.index for i in invalid}
    more = [Invalid(i, "ts_recv ahead of this machine's clock by more than max-future")
            for i in np.flatnonzero(ahead).tolist() if i not in already]
    invalid = sorted([*invalid, *more], key=lambda i: i.index)
    keep = np.ones(table.num_rows, bool)
    keep[[i.index for i in invalid]] = False
    return table.filter(pa.array(keep)), invalid


def _plain(schema: pa.Schema) -> bool:
    """Whether every field is a number, a string or a bool (Arrow's JSON reader converts
    exactly as the message-by-message checks judge those)."""
    return all(pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_string(f.type)
               or pa.types.is_boolean(f.type) for f in schema)


# one thread: a poll's block is small, and handing it to Arrow's pool costs more than it saves
_READ = pj.ReadOptions(use_threads=False, block_size=1 << 20)


def _decode_block(kind: EventKind, values: list[bytes | None]) -> pa.Table | None:
    """:func:`_decode_all_valid` for plain schemas in one pass of Arrow's JSON reader over
    the messages, a line each (no Python object per value); None when any message needs the
    row-by-row path to be judged. A message is one line starting with ``{`` and ending with
    ``}``, so each line is one message and gives at least one row or an error: as many rows
    as messages means one each. The reader refuses what the checks refuse (a fraction or an
    exponent for an integer, a value out of the type's range, a string for a number, a
    number for a bool, a missing or null required field, a repeated field, a lone
    surrogate); it takes NaN, Infinity and bytes that are not UTF-8, checked after it."""
    if not values or not all(v is not None and v[:1] == b"{" and v[-1:] == b"}" for v in values):
        return None
    block = b"\n".join(values)  # type: ignore[arg-type]  (None ruled out above)
    if block.count(b"\n") != len(values) - 1:
        return None
    options = pj.ParseOptions(explicit_schema=kind.schema, unexpected_field_behavior="ignore",
                              newlines_in_values=False)
    try:
        table = pj.read_json(pa.BufferReader(block), read_options=_READ, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(values):
        return None
    table = table.cast(kind.schema)  # the reader's fields are nullable; the kind's may not be
    for field, column in zip(kind.schema, table.columns):
        if not field.nullable and column.null_count:
            return None
        if pa.types.is_string(field.type):
            try:
                column.validate(full=True)  # UTF-8
            except pa.ArrowInvalid:
                return None
        elif pa.types.is_floating(field.type):
            if column.null_count < len(column) and not pc.all(pc.is_finite(column.drop_null())).as_py():
                return None
    return table


def _decode_all_valid(kind: EventKind, values: list[bytes | None]) -> pa.Table | None:
    """One parse and one typed conversion for the usual case of a batch without bad
    messages; None when any message needs the row-by-row path to be judged."""
    if not values:
        return None
    try:
        # one parse per message (never a join of them: two halves of a bad message could
        # parse as one object, and one message could hold two)
        rows = list(map(orjson.loads, values))
        if not all(type(r) is dict for r in rows):
            return None
        table = pa.Table.from_pylist(rows, schema=kind.schema)
    except (orjson.JSONDecodeError, pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None
    for field, column in zip(kind.schema, table.columns):
        if not field.nullable and column.null_count:
            return None
        name = field.name
        if pa.types.is_integer(field.type):
            # Arrow would truncate 1.5 to 1: only real JSON integers are valid here
            if not all(type(r.get(name)) is int for r in rows):
                return None
        elif pa.types.is_floating(field.type):
            if not all(type(r.get(name)) in (int, float) for r in rows if r.get(name) is not None):
                return None
            if column.null_count < len(column) and not pc.all(pc.is_finite(column.drop_null())).as_py():
                return None
    return table


def _decode_each(kind: EventKind, values: list[bytes | None]) -> tuple[pa.Table, list[Rejected]]:
    schema = kind.schema
    checks = []
    for field in schema:
        checks.append((field.name, _check_of(field.type), field.nullable))
    columns: list[list] = [[] for _ in checks]
    rejected: list[Rejected] = []
    for index, value in enumerate(values):
        if value is None:
            rejected.append(Rejected(b"", "null value (a tombstone, not an event)", index))
            continue
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            rejected.append(Rejected(value, f"malformed JSON: {exc}", index))
            continue
        if not isinstance(obj, dict):
            rejected.append(Rejected(value, "not a JSON object", index))
            continue
        row, reason = [], None
        for name, fits, nullable in checks:
            v = obj.get(name)
            if v is None:
                if nullable:
                    row.append(None)
                    continue
                reason = f"missing field {name!r}"
                break
            if not fits(v):
                reason = f"field {name!r} has a bad value {v!r:.40}"
                break
            row.append(float(v) if fits is _CHECKS["double"] else v)
        if reason is not None:
            rejected.append(Rejected(value, reason, index))
            continue
        for column, v in zip(columns, row):
            column.append(v)
    table = pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema
    )
    return table, rejected
