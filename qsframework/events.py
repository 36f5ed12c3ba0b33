"""Event kinds: one Arrow schema per kind, shared by Parquet, DuckDB, Kafka and the engine.

Every kind starts with the common fields (``ts_event``, ``ts_recv``, ``source``, ``key``,
``seq``); times are int64 UTC nanoseconds. New kinds register themselves with
:func:`define_kind` and need no change to the engine.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import pyarrow as pa

COMMON_FIELDS: tuple[pa.Field, ...] = (
    pa.field("ts_event", pa.int64(), nullable=False),
    pa.field("ts_recv", pa.int64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
)
COMMON_NAMES: tuple[str, ...] = tuple(f.name for f in COMMON_FIELDS)

#: Columns of the engine's total order, within one kind; across kinds the kind name
#: breaks ties after ``key``: ``(ts_event, source, key, kind, seq)``.
ORDER_COLUMNS: tuple[str, ...] = ("ts_event", "source", "key", "seq")


@dataclass(frozen=True, slots=True)
class EventKind:
    """A kind of event: its name, Arrow schema, row type and Kafka topic."""

    name: str
    schema: pa.Schema
    row: type
    topic: str
    doc: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def project(self, fields: tuple[str, ...] | None) -> tuple[pa.Schema, type]:
        """Schema and row type of a subset of the fields (``ts_event`` always included)."""
        if fields is None:
            return self.schema, self.row
        return _projection(self, tuple(fields))


_PROJECTIONS: dict[tuple[str, tuple[str, ...]], tuple[pa.Schema, type]] = {}


def _projection(kind: EventKind, fields: tuple[str, ...]) -> tuple[pa.Schema, type]:
    key = (kind.name, fields)
    if key not in _PROJECTIONS:
        unknown = [f for f in fields if f not in kind.schema.names]
        if unknown:
            raise ValueError(f"{kind.name} events have no field {unknown[0]!r}")
        wanted = {"ts_event", *fields}
        names = [n for n in kind.schema.names if n in wanted]  # schema order, ts_event first
        schema = pa.schema([kind.schema.field(n) for n in names])
        row = namedtuple(kind.row.__name__, names)  # type: ignore[misc]
        row.__doc__ = kind.row.__doc__
        _PROJECTIONS[key] = (schema, row)
    return _PROJECTIONS[key]


KINDS: dict[str, EventKind] = {}


def define_kind(
    name: str,
    fields: list[pa.Field] | list[tuple[str, pa.DataType]],
    *,
    topic: str | None = None,
    doc: str = "",
) -> EventKind:
    """Register an event kind whose schema is the common fields plus ``fields``."""
    extra = [f if isinstance(f, pa.Field) else pa.field(f[0], f[1]) for f in fields]
    schema = pa.schema([*COMMON_FIELDS, *extra])
    row = namedtuple(name.title().replace("_", ""), schema.names)  # type: ignore[misc]
    row.__doc__ = doc or f"One {name} event (fields as in its Arrow schema)."
    kind = EventKind(name, schema, row, topic or f"qsf.{name}s", doc)
    existing = KINDS.get(name)
    if existing is not None and existing.schema != schema:
        raise ValueError(f"event kind {name!r} is already defined with another schema")
    KINDS.setdefault(name, kind)
    return KINDS[name]


def get_kind(name: str) -> EventKind:
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise KeyError(f"unknown event kind {name!r} (known: {known})") from None


TRADE = define_kind(
    "trade",
    [
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),
        pa.field("is_buyer_maker", pa.bool_(), nullable=False),
    ],
    doc="A market trade; seq is the exchange trade id, key the symbol.",
)
SIGNAL = define_kind(
    "signal",
    [
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("attrs", pa.string()),
    ],
    doc="A strategy's numeric output; attrs is JSON text of extra fields.",
)
ALERT = define_kind(
    "alert",
    [
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("dedup_key", pa.string(), nullable=False),
    ],
    doc="A strategy's alert for humans; dedup_key lets sinks send it once.",
)

GAP = define_kind(
    "gap",
    [
        pa.field("first_id", pa.int64(), nullable=False),
        pa.field("last_id", pa.int64(), nullable=False),
        pa.field("filled", pa.int64(), nullable=False),
    ],
    doc="Missing trade ids first_id..last_id of key (the symbol), seen as a jump in the ids; "
    "filled counts those backfilled; ts_event is the first trade after the gap.",
)

ORDER = define_kind(
    "order",
    [
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("tag", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("filled", pa.float64(), nullable=False),
    ],
    doc="A simulated order's status change (accepted, filled, cancelled); qty and filled are "
    "signed, price null for a market order.",
)
FILL = define_kind(
    "fill",
    [
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("order_id", pa.int64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("fee", pa.float64(), nullable=False),
        pa.field("liquidity", pa.string(), nullable=False),
    ],
    doc="A simulated fill of an order on a trade of key; ts_event is the trade's.",
)
EQUITY = define_kind(
    "equity",
    [
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("cash", pa.float64(), nullable=False),
        pa.field("equity", pa.float64(), nullable=False),
        pa.field("positions", pa.map_(pa.string(), pa.float64())),
    ],
    doc="A sample of a strategy's portfolio (key \"portfolio\"): cash, equity marked at each "
    "key's last trade price, and the non-zero positions.",
    topic="qsf.equity",
)

Trade = TRADE.row
Signal = SIGNAL.row
Alert = ALERT.row


def conform(
    batch: pa.RecordBatch | pa.Table, kind: EventKind, schema: pa.Schema | None = None
) -> pa.RecordBatch:
    """``batch`` with exactly the kind's columns (or ``schema``'s), order and types.

    Raises ``ValueError`` naming the first missing column.
    """
    schema = kind.schema if schema is None else schema
    if isinstance(batch, pa.Table):
        table = batch.combine_chunks()
        batches = table.to_batches()
        batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    cols = []
    for field in schema:
        idx = batch.schema.get_field_index(field.name)
        if idx < 0:
            raise ValueError(f"{kind.name} events lack the column {field.name!r}")
        col = batch.column(idx)
        if col.type != field.type:
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64())
            col = col.cast(field.type)
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=schema)
