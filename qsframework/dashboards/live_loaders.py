"""Loaders of the live operations dashboard: what ``qsf process --sink timescale`` writes to
``$QSF_PG_DSN``, as Polars frames. Series are bucketed in the database (``bucket_s`` wide,
over the last ``window_s`` of the table's own event time, so a replayed recording shows too):
TimescaleDB's ``time_bucket``/``last`` when the extension is installed, plain PostgreSQL
(floor arithmetic, ``array_agg``) otherwise, behind the same functions.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import asyncpg
import polars as pl

NS = 1_000_000_000


def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one query, on a connection of its own; from a thread of its own when the
    caller runs an event loop (a notebook's kernel may)."""

    async def go() -> list[asyncpg.Record]:
        con = await asyncpg.connect(dsn, timeout=10)
        try:
            return await con.fetch(sql, *args)
        finally:
            await con.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(go())
    out: list[list[asyncpg.Record]] = []
    failed: list[BaseException] = []

    def worker() -> None:
        try:
            out.append(asyncio.run(go()))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=worker, name="qsf-live-loader")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out[0]


def has_timescale(dsn: str) -> bool:
    """Whether the database has the timescaledb extension installed (CREATE EXTENSION done)."""
    return bool(fetch(dsn, "SELECT count(*) AS n FROM pg_extension WHERE extname = 'timescaledb'")[0]["n"])


TABLES = ("trades", "signals", "alerts", "fills", "equity", "pipeline_health")


def missing_tables(dsn: str) -> list[str]:
    """The dashboard's tables the database does not have yet (the first ``qsf process --sink
    timescale`` creates them)."""
    rows = fetch(dsn, "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL", list(TABLES))
    return [r["t"] for r in rows]


def bucket(column: str, *, timescale: bool) -> str:
    """The SQL of ``column`` (int64 ns) floored to buckets of ``$1`` ns."""
    if timescale:
        return f"time_bucket($1::bigint, {column})"
    return f"({column} - ((({column} % $1::bigint) + $1::bigint) % $1::bigint))"


def last(value: str, column: str, *, timescale: bool) -> str:
    """The SQL aggregate: ``value`` at the latest ``column`` of the group."""
    if timescale:
        return f"last({value}, {column})"
    return f"(array_agg({value} ORDER BY {column} DESC))[1]"


def series_sql(table: str, column: str, select: str, *, timescale: bool, where: str = "TRUE",
               by: str | None = None) -> str:
    """A bucketed series of ``table``: ``select`` (with ``{last:VALUE}`` for the value at the
    bucket's latest time) per bucket (and ``by``), over the ``$2`` ns before its latest ``column``.
    ``$1``: the bucket width in ns."""
    fields = select
    while "{last:" in fields:
        start = fields.index("{last:")
        end = fields.index("}", start)
        fields = fields[:start] + last(fields[start + 6:end], column, timescale=timescale) + fields[end + 1:]
    group = "1" if by is None else f"1, {by}"
    return (f"SELECT {bucket(column, timescale=timescale)} AS bucket{'' if by is None else ', ' + by}, {fields} "
            f"FROM {table} WHERE {where} AND {column} >= (SELECT max({column}) FROM {table} WHERE {where}) - $2::bigint "
            f"GROUP BY {group} ORDER BY {group}")


def _frame(rows: Sequence[asyncpg.Record], schema: dict[str, Any]) -> pl.DataFrame:
    frame = pl.DataFrame([dict(r) for r in rows], schema=schema, orient="row")
    for name in ("bucket", "ts_event", "ts", "last_commit"):  # int64 ns -> UTC datetimes for the charts
        if name in schema:
            frame = frame.with_columns(pl.col(name).cast(pl.Datetime("ns", "UTC")))
    return frame


def _series(dsn: str, sql: str, schema: dict[str, Any], *, window_s: float, bucket_s: float) -> pl.DataFrame:
    return _frame(fetch(dsn, sql, int(bucket_s * NS), int(window_s * NS)), schema)


def _scale(timescale: bool | None, dsn: str) -> bool:
    return has_timescale(dsn) if timescale is None else timescale


def load_live_prices(dsn: str, *, window_s: float = 900, bucket_s: float = 2, timescale: bool | None = None) -> pl.DataFrame:
    """Each key's last trade price and trade count per bucket: bucket, key, price, trades."""
    sql = series_sql("trades", "ts_event", "{last:price} AS price, count(*) AS trades", by="key",
                     timescale=_scale(timescale, dsn))
    return _series(dsn, sql, {"bucket": pl.Int64, "key": pl.Utf8, "price": pl.Float64, "trades": pl.Int64},
                   window_s=window_s, bucket_s=bucket_s)


def load_live_spread(dsn: str, *, window_s: float = 900, bucket_s: float = 2, timescale: bool | None = None) -> pl.DataFrame:
    """The spread strategy's ``spread`` signal per bucket (its last value and the legs'
    correlation in its attrs): bucket, key (the pair), spread, corr."""
    sql = series_sql("signals", "ts_event", "{last:value} AS spread, {last:(attrs::jsonb->>'corr')::float8} AS corr",
                     by="key", where="name = 'spread'", timescale=_scale(timescale, dsn))
    return _series(dsn, sql, {"bucket": pl.Int64, "key": pl.Utf8, "spread": pl.Float64, "corr": pl.Float64},
                   window_s=window_s, bucket_s=bucket_s)


def load_live_equity(dsn: str, *, window_s: float = 900, bucket_s: float = 2, timescale: bool | None = None) -> pl.DataFrame:
    """Paper trading's equity per bucket and strategy (its last sample): bucket, strategy, equity, cash."""
    sql = series_sql("equity", "ts_event", "{last:equity} AS equity, {last:cash} AS cash", by="strategy",
                     timescale=_scale(timescale, dsn))
    return _series(dsn, sql, {"bucket": pl.Int64, "strategy": pl.Utf8, "equity": pl.Float64, "cash": pl.Float64},
                   window_s=window_s, bucket_s=bucket_s)


HEALTH_SERIES = ("sum(events)::float8 / ($1::bigint / 1e9) AS events_per_s, max(consumer_lag) AS consumer_lag, "
                 "max(latency_ms_p50) AS latency_ms_p50, max(latency_ms_p99) AS latency_ms_p99, sum(dlq) AS dlq")


def load_live_health(dsn: str, *, window_s: float = 900, bucket_s: float = 2, timescale: bool | None = None) -> pl.DataFrame:
    """pipeline_health per bucket and consumer group: events/s (the bucket's events over its
    width), the largest lag and latency percentiles of its rows, dead letters."""
    sql = series_sql("pipeline_health", "ts", HEALTH_SERIES, by="group_id", timescale=_scale(timescale, dsn))
    return _series(dsn, sql, {"bucket": pl.Int64, "group_id": pl.Utf8, "events_per_s": pl.Float64,
                              "consumer_lag": pl.Int64, "latency_ms_p50": pl.Float64, "latency_ms_p99": pl.Float64,
                              "dlq": pl.Int64}, window_s=window_s, bucket_s=bucket_s)


LATEST_HEALTH_SQL = """
SELECT * FROM (
  SELECT DISTINCT ON (group_id, processor) ts, group_id, processor, strategy, events_per_s, consumer_lag,
         latency_ms_p50, latency_ms_p99, last_commit
  FROM pipeline_health ORDER BY group_id, processor, ts DESC
) latest ORDER BY ts DESC, group_id, processor
"""

DLQ_SQL = """
SELECT r.key AS reason, sum(r.value::bigint) AS dead_letters
FROM pipeline_health h, jsonb_each_text(h.dlq_by_reason) AS r
WHERE h.ts >= (SELECT max(ts) FROM pipeline_health) - $1::bigint
GROUP BY 1 ORDER BY 2 DESC, 1
"""


def load_live_health_latest(dsn: str) -> pl.DataFrame:
    """Each processor's latest pipeline_health row (its events/s, lag, latency, last commit),
    the most recent first."""
    return _frame(fetch(dsn, LATEST_HEALTH_SQL), {
        "ts": pl.Int64, "group_id": pl.Utf8, "processor": pl.Utf8, "strategy": pl.Utf8, "events_per_s": pl.Float64,
        "consumer_lag": pl.Int64, "latency_ms_p50": pl.Float64, "latency_ms_p99": pl.Float64, "last_commit": pl.Int64})


def load_live_dead_letters(dsn: str, *, window_s: float = 900) -> pl.DataFrame:
    """Dead letters by reason class over the window (summed from pipeline_health): reason, dead_letters."""
    return _frame(fetch(dsn, DLQ_SQL, int(window_s * NS)), {"reason": pl.Utf8, "dead_letters": pl.Int64})


RECENT = {
    "signals": ("ts_event, strategy, key, name, value, attrs", {"ts_event": pl.Int64, "strategy": pl.Utf8,
                "key": pl.Utf8, "name": pl.Utf8, "value": pl.Float64, "attrs": pl.Utf8}),
    "alerts": ("ts_event, strategy, key, name, severity, text", {"ts_event": pl.Int64, "strategy": pl.Utf8,
               "key": pl.Utf8, "name": pl.Utf8, "severity": pl.Utf8, "text": pl.Utf8}),
    "fills": ("ts_event, strategy, key, order_id, qty, price, fee, liquidity", {"ts_event": pl.Int64,
              "strategy": pl.Utf8, "key": pl.Utf8, "order_id": pl.Int64, "qty": pl.Float64, "price": pl.Float64,
              "fee": pl.Float64, "liquidity": pl.Utf8}),
}


def load_live_recent(dsn: str, table: str, *, limit: int = 50, exclude_names: Sequence[str] = ()) -> pl.DataFrame:
    """The latest ``limit`` rows of ``signals``, ``alerts`` or ``fills``, newest first
    (``exclude_names``: signal or alert names left out, e.g. the periodic ``spread``)."""
    columns, schema = RECENT[table]
    where = "name <> ALL($2::text[])" if table != "fills" else "$2::text[] IS NOT NULL"
    sql = f"SELECT {columns} FROM {table} WHERE {where} ORDER BY ts_event DESC LIMIT $1"
    return _frame(fetch(dsn, sql, limit, list(exclude_names)), schema)
