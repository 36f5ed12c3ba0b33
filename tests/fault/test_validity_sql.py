"""The validity rules' DuckDB form (used by the recording reader) decides as check() does."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.events import TRADE
from qsframework.validity import DEFAULT_FLOOR_NS, TimeBounds, check, sql_check

from ..conftest import T0

NS = 1_000_000_000
prices = st.sampled_from([1.5, 100.0, 0.0, -1.0, float("nan"), float("inf"), float("-inf"), 5e-9])
keys = st.sampled_from(["BTCUSDT", "ETH\x00USDT", "K" * 256, "K" * 257, "é" * 200])
sources = st.sampled_from(["binance", "bin\x00ance"])
times = st.sampled_from([T0, DEFAULT_FLOOR_NS, DEFAULT_FLOOR_NS - 1, 0, -5 * NS])
ahead = st.sampled_from([0, 60 * NS, 60 * NS + 1, -3600 * NS, 3600 * NS])
rows = st.lists(st.tuples(times, ahead, sources, keys, prices, prices), min_size=1, max_size=30)


@settings(max_examples=60)
@given(rows=rows, max_future_s=st.sampled_from([0, 60, 3600]))
def test_sql_rules_reject_exactly_the_rows_check_rejects(rows, max_future_s):
    bounds = TimeBounds(max_future_ns=max_future_s * NS)
    batch = pa.table({
        "ts_event": [r[0] for r in rows],
        "ts_recv": [r[0] - r[1] for r in rows],
        "source": [r[2] for r in rows],
        "key": [r[3] for r in rows],
        "seq": list(range(len(rows))),
        "price": [r[4] for r in rows],
        "qty": [r[5] for r in rows],
        "is_buyer_maker": [True] * len(rows),
    }, schema=TRADE.schema)
    _, invalid = check("trade", batch, bounds)
    expr = sql_check("trade", TRADE.schema, bounds)
    assert expr is not None
    ok = duckdb.sql(f"SELECT ({expr}) AS ok FROM batch").fetchall()  # noqa: S608 - rules' own text
    assert [i for i, (good,) in enumerate(ok) if not good] == [bad.index for bad in invalid]
