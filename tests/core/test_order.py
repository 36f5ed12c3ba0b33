"""Merging per-kind streams into the one total order (ts_event, source, key, kind, seq)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework import define_kind
from qsframework.events import TRADE
from qsframework.order import is_sorted, merge_kinds, sort_table

from ..conftest import make_trades

TICK = define_kind("test_tick", [("level", pa.float64())])


def ticks(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = 1_000_000_000 + np.cumsum(rng.choice([0, 0, 1, 2, 5], n)) * 1_000_000
    t = pa.table(
        {"ts_event": ts, "ts_recv": ts, "source": rng.choice(["binance", "clock"], n).tolist(),
         "key": rng.choice(["BTCUSDT", "ETHUSDT", "Z"], n).tolist(), "seq": np.arange(n), "level": rng.random(n)},
        schema=TICK.schema,
    )
    return sort_table(t)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**31), n1=st.integers(0, 300), n2=st.integers(0, 300),
       b1=st.integers(1, 50), b2=st.integers(1, 50))
def test_merge_equals_full_sort(seed, n1, n2, b1, b2):
    trades = make_trades(seed, n1, gaps_ms=(0, 0, 1, 2, 5), start=1_000_000_000) if n1 else TRADE.empty()
    tk = ticks(seed + 1, n2) if n2 else TICK.empty()
    merged = list(merge_kinds({"trade": trades.to_batches(b1), "test_tick": tk.to_batches(b2)}))
    got = [(k, *r) for k, b in merged for r in zip(*(b.column(c).to_pylist() for c in ("ts_event", "source", "key", "seq")))]
    expected = sorted(
        [(r[0], r[1], r[2], "trade", r[3]) for r in zip(*(trades.column(c).to_pylist() for c in ("ts_event", "source", "key", "seq")))]
        + [(r[0], r[1], r[2], "test_tick", r[3]) for r in zip(*(tk.column(c).to_pylist() for c in ("ts_event", "source", "key", "seq")))]
    )
    assert [(g[1], g[2], g[3], g[0], g[4]) for g in got] == expected
    assert all(b.num_rows > 0 for _, b in merged)


def test_is_sorted_detects_tie_order():
    t = make_trades(1, 200, gaps_ms=(0, 1))
    assert is_sorted(t)
    swapped = t.take(pa.array([1, 0] + list(range(2, 200))))
    assert not is_sorted(swapped)  # distinct rows swapped, tied in ts_event or not
    tie = next(i for i, (a, b) in enumerate(zip(t.column("ts_event").to_pylist(), t.column("ts_event").to_pylist()[1:])) if a == b)
    order = list(range(200))
    order[tie], order[tie + 1] = order[tie + 1], order[tie]
    assert not is_sorted(t.take(pa.array(order)))
