"""The live operations loaders and notebook on the embedded PostgreSQL (the plain branch; the
TimescaleDB branch by its SQL text): bucketed series equal an independent Polars computation,
and the notebook, run headless, shows the health figures of the pipeline_health table."""

from __future__ import annotations

import asyncio
import runpy
from importlib import resources

import asyncpg
import numpy as np
import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from qsframework.dashboards import live_loaders as L
from qsframework.sinks.postgres import schema_sql

from ..live.feeds import fetch, fresh_database

NS = 1_000_000_000
T0 = 1_767_571_200_000_000_000  # 2026-01-05T00:00:00Z
BUCKET_S, WINDOW_S = 2.0, 60.0


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def live_db(stack_endpoints):
    """A database of its own on the embedded PostgreSQL with the sink tables and known rows."""
    dsn = fresh_database(stack_endpoints.pg_dsn, "live")
    rng = np.random.default_rng(5)
    n = 400
    trades = pl.DataFrame({
        "ts_event": T0 + np.sort(rng.integers(0, 90 * NS, n)),
        "key": rng.choice(["BTCUSDT", "ETHUSDT"], n),
        "seq": np.arange(n),
        "price": np.round(rng.normal(100, 1, n), 2),
    })
    spread = pl.DataFrame({"ts_event": T0 + np.arange(0, 90 * NS, NS // 2),
                           "value": rng.normal(0, 0.001, 180), "corr": rng.uniform(-1, 1, 180)})
    health = pl.DataFrame({
        "ts": T0 + np.arange(30) * 3 * NS + 17, "events": rng.integers(0, 5000, 30),
        "consumer_lag": rng.integers(0, 100, 30), "p50": rng.uniform(1, 5, 30), "p99": rng.uniform(5, 50, 30),
    })

    async def setup() -> None:
        con = await asyncpg.connect(dsn)
        await con.execute(schema_sql("001_schema.sql"))
        await con.copy_records_to_table("trades", records=[
            (r["ts_event"], r["ts_event"], "binance", r["key"], r["seq"], r["price"], 0.1, False)
            for r in trades.iter_rows(named=True)])
        await con.copy_records_to_table("signals", records=[
            (r["ts_event"], r["ts_event"], "qsf", "BTCUSDT/ETHUSDT", i, "btc_eth_spread", "spread", r["value"],
             orjson.dumps({"corr": r["corr"]}).decode()) for i, r in enumerate(spread.iter_rows(named=True))]
            + [(T0 + 80 * NS + 123_000_000, T0, "qsf", "BTCUSDT/ETHUSDT", 9999, "btc_eth_spread", "divergence",
                0.0061, '{"direction":1}')])
        await con.copy_records_to_table("pipeline_health", records=[
            (r["ts"], "g1", "vm:1", "BtcEthSpread", 3.0, r["events"], r["events"] / 3.0, r["consumer_lag"], r["p50"],
             r["p99"], i % 3, orjson.dumps({"late": i % 3} if i % 3 else {}).decode(), r["ts"] - NS)
            for i, r in enumerate(health.iter_rows(named=True))])
        await con.close()

    run(setup())
    yield dsn, trades, spread, health


def floor(ts: pl.Expr, width_ns: int) -> pl.Expr:
    return (ts - ts % width_ns).cast(pl.Datetime("ns", "UTC"))


def test_prices_are_each_buckets_last_trade(live_db):
    dsn, trades, _, _ = live_db
    width = int(BUCKET_S * NS)
    since = trades["ts_event"].max() - int(WINDOW_S * NS)
    expected = (trades.filter(pl.col("ts_event") >= since).sort("ts_event", "seq")
                .group_by(floor(pl.col("ts_event"), width).alias("bucket"), "key", maintain_order=True)
                .agg(pl.col("price").last(), pl.len().cast(pl.Int64).alias("trades")).sort("bucket", "key"))
    got = L.load_live_prices(dsn, window_s=WINDOW_S, bucket_s=BUCKET_S, timescale=False)
    assert got.equals(expected.select(got.columns))


def test_spread_and_health_series(live_db):
    dsn, _, spread, health = live_db
    width = int(BUCKET_S * NS)
    since = spread["ts_event"].max() - int(WINDOW_S * NS)
    expected = (spread.filter(pl.col("ts_event") >= since)
                .group_by(floor(pl.col("ts_event"), width).alias("bucket"), maintain_order=True)
                .agg(pl.col("value").last().alias("spread"), pl.col("corr").last()).sort("bucket"))
    got = L.load_live_spread(dsn, window_s=WINDOW_S, bucket_s=BUCKET_S, timescale=False)
    assert got.drop("key").equals(expected) and set(got["key"]) == {"BTCUSDT/ETHUSDT"}
    width = 6 * NS
    since = health["ts"].max() - int(WINDOW_S * NS)
    expected = (health.filter(pl.col("ts") >= since)
                .group_by(floor(pl.col("ts"), width).alias("bucket"), maintain_order=True)
                .agg((pl.col("events").sum() / 6.0).alias("events_per_s"), pl.col("consumer_lag").max(),
                     pl.col("p99").max().alias("latency_ms_p99")).sort("bucket"))
    got = L.load_live_health(dsn, window_s=WINDOW_S, bucket_s=6, timescale=False)
    assert_frame_equal(got.select(expected.columns), expected, check_exact=False)  # sum / width: rounding
    dlq = L.load_live_dead_letters(dsn, window_s=1e6)
    assert dlq.to_dicts() == [{"reason": "late", "dead_letters": sum(i % 3 for i in range(30))}]


# TimescaleDB's time_bucket and last() on integer time, written out in plain SQL, so the
# TimescaleDB branch's queries run on the embedded PostgreSQL (which has no extension)
TIMESCALE_STANDINS = """
CREATE FUNCTION time_bucket(width bigint, ts bigint) RETURNS bigint LANGUAGE sql IMMUTABLE
  AS $$ SELECT ts - (((ts % width) + width) % width) $$;
CREATE TYPE last_state AS (v double precision, t bigint);
CREATE FUNCTION last_step(s last_state, v double precision, t bigint) RETURNS last_state LANGUAGE sql IMMUTABLE
  AS $$ SELECT CASE WHEN s IS NULL OR t >= (s).t THEN ROW(v, t)::last_state ELSE s END $$;
CREATE FUNCTION last_value_of(s last_state) RETURNS double precision LANGUAGE sql IMMUTABLE AS $$ SELECT (s).v $$;
CREATE AGGREGATE last(double precision, bigint) (SFUNC = last_step, STYPE = last_state, FINALFUNC = last_value_of);
"""


def test_the_timescale_branch_gives_the_plain_branch_s_series(live_db):
    dsn = live_db[0]

    async def define() -> None:
        con = await asyncpg.connect(dsn)
        try:
            await con.execute(TIMESCALE_STANDINS)
        finally:
            await con.close()

    run(define())
    for load in (L.load_live_prices, L.load_live_spread, L.load_live_health, L.load_live_equity):
        plain = load(dsn, window_s=WINDOW_S, bucket_s=BUCKET_S, timescale=False)
        assert_frame_equal(load(dsn, window_s=WINDOW_S, bucket_s=BUCKET_S, timescale=True), plain)


def test_both_branches_sql():
    ts = L.series_sql("trades", "ts_event", "{last:price} AS price", by="key", timescale=True)
    plain = L.series_sql("trades", "ts_event", "{last:price} AS price", by="key", timescale=False)
    assert "time_bucket($1::bigint, ts_event)" in ts and "last(price, ts_event)" in ts
    assert "time_bucket" not in plain and "last(" not in plain
    assert "array_agg(price ORDER BY ts_event DESC))[1]" in plain and "% $1::bigint" in plain


def test_notebook_headless_shows_the_health_table(live_db, monkeypatch):
    dsn = live_db[0]
    monkeypatch.setenv("QSF_PG_DSN", dsn)
    notebook = resources.files("qsframework.dashboards").joinpath("notebooks/live.py")
    outputs, defs = runpy.run_path(str(notebook))["app"].run()
    latest = fetch(dsn, "SELECT ts, events_per_s, consumer_lag, latency_ms_p99 FROM pipeline_health "
                             "ORDER BY ts DESC LIMIT 1")[0]
    shown = defs["health_latest"].row(0, named=True)
    assert shown["events_per_s"] == latest["events_per_s"] and shown["consumer_lag"] == latest["consumer_lag"]
    assert shown["latency_ms_p99"] == latest["latency_ms_p99"]
    html = "".join(getattr(o, "text", "") for o in outputs if o is not None)
    assert f"{latest['events_per_s']:,.0f}" in html and f"{latest['latency_ms_p99']:.1f} ms" in html
    assert "latest signal: <strong>divergence BTCUSDT/ETHUSDT at 2026-01-05 00:01:20.123000 UTC</strong>" in html
