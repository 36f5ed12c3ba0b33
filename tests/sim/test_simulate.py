"""Tests of the seeded market simulator (qsframework.sim.market)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.events import TRADE
from qsframework.sim.market import DEFAULT_START_NS, estimate_rate, simulate_trades, symbol_spec

NS_S = 1_000_000_000
PAIR = ["BTCUSDT", "ETHUSDT"]


def run(symbols=PAIR, **kw) -> list[pa.Table]:
    return list(simulate_trades(symbols, **kw))


def cat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables).combine_chunks()


def columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in table.column_names}


def assert_sorted(table: pa.Table) -> None:
    c = columns(table)
    order = np.lexsort((c["seq"], c["key"].astype(str), c["source"].astype(str), c["ts_event"]))
    assert np.array_equal(order, np.arange(table.num_rows)), (
        "rows not in (ts_event, source, key, seq) order"
    )


def assert_invariants(
    tables: list[pa.Table], start_ns: int, minutes: float, chunk_seconds: int
) -> None:
    end_ns = start_ns + round(minutes * 60e9)
    chunk_ns = chunk_seconds * NS_S
    assert len(tables) == -(-(end_ns - start_ns) // chunk_ns)
    for i, t in enumerate(tables):
        assert t.schema.equals(TRADE.schema)
        assert_sorted(t)
        ts = t.column("ts_event").to_numpy()
        lo, hi = start_ns + i * chunk_ns, min(start_ns + (i + 1) * chunk_ns, end_ns)
        assert ts.size == 0 or (ts[0] >= lo and ts[-1] < hi), f"chunk {i} leaves [{lo}, {hi})"
    all_ = cat(tables)
    assert sum(col.null_count for col in all_.columns) == 0
    c = columns(all_)
    assert (c["ts_event"] % 1_000_000 == 0).all()
    assert (c["source"] == "binance").all()
    lat = c["ts_recv"] - c["ts_event"]
    assert (lat >= 1_000_000).all() and (lat < NS_S).all()
    assert (c["price"] > 0).all() and (c["qty"] > 0).all()
    assert np.allclose(c["price"] * 100, np.round(c["price"] * 100), rtol=0, atol=1e-6)
    for key in np.unique(c["key"]):
        seq = c["seq"][c["key"] == key]
        assert (np.diff(seq) == 1).all(), f"{key} trade ids are not consecutive"


def last_prices(table: pa.Table, key: str, grid: np.ndarray) -> np.ndarray:
    """Log price of the last ``key`` trade at or before each time of ``grid``."""
    mask = is_key(table, key)
    ts = table.column("ts_event").to_numpy()[mask]
    px = table.column("price").to_numpy()[mask]
    idx = np.searchsorted(ts, grid, side="right") - 1
    assert idx[0] >= 0
    return np.log(px[idx])


def is_key(table: pa.Table, key: str) -> np.ndarray:
    return table.column("key").to_numpy(zero_copy_only=False) == key


@pytest.fixture(scope="module")
def six_hours() -> pa.Table:
    return cat(run(minutes=360, seed=7))


# --- arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbols", "kw", "match"),
    [
        ([], {"minutes": 1, "seed": 0}, "at least one symbol"),
        (PAIR, {"minutes": 0, "seed": 0}, "minutes must be positive"),
        (PAIR, {"minutes": -3, "seed": 0}, "minutes must be positive"),
        (PAIR, {"minutes": float("inf"), "seed": 0}, "finite"),
        (PAIR, {"minutes": float("nan"), "seed": 0}, "finite"),
        (PAIR, {"minutes": 1, "seed": -1}, "seed"),
        (PAIR, {"minutes": 1, "seed": 0, "chunk_seconds": 0}, "chunk_seconds"),
        (["BTCUSDT", "btcusdt"], {"minutes": 1, "seed": 0}, "repeat"),
        (["BTCUSDT", ""], {"minutes": 1, "seed": 0}, "non-empty"),
    ],
)
def test_bad_arguments_raise_value_error(symbols, kw, match):
    with pytest.raises(ValueError, match=match):
        simulate_trades(symbols, **kw)  # raises at the call, before iteration


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="seed"):
        simulate_trades(PAIR, minutes=1, seed=1.5)
    with pytest.raises(TypeError, match="minutes"):
        simulate_trades(PAIR, minutes="5", seed=1)


def test_estimate_rate():
    assert estimate_rate(PAIR) == pytest.approx(40.0)
    assert estimate_rate(["BTCUSDT", "SOLUSDT"]) == pytest.approx(30.0)
    with pytest.raises(ValueError):
        estimate_rate([])


# --- shape of the output ---------------------------------------------------------------


def test_schema_sorting_and_chunk_partition():
    tables = run(["SOLUSDT", "ETHUSDT", "BTCUSDT"], minutes=25, seed=1, chunk_seconds=300)
    assert len(tables) == 5
    assert_invariants(tables, DEFAULT_START_NS, 25, 300)
    keys = set(cat(tables).column("key").to_pylist())
    assert keys == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def test_ties_in_time_exist_and_are_ordered_by_key_then_seq():
    t = cat(run(minutes=10, seed=2))
    ts = t.column("ts_event").to_numpy()
    keys = t.column("key").to_numpy(zero_copy_only=False)
    same = ts[1:] == ts[:-1]
    assert same.any(), "no trades share a millisecond"
    assert (same & (keys[1:] != keys[:-1])).any(), "no ties across symbols"
    assert_sorted(t)


def test_trade_ids_continue_across_chunks_with_distinct_bases():
    tables = run(minutes=30, seed=3, chunk_seconds=60)
    assert len(tables) == 30
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for t in tables:
        for key in ("BTCUSDT", "ETHUSDT"):
            seq = t.column("seq").to_numpy()[is_key(t, key)]
            if seq.size:
                if key in last:
                    assert seq[0] == last[key] + 1, f"{key} ids jump at a chunk boundary"
                first.setdefault(key, int(seq[0]))
                last[key] = int(seq[-1])
    assert 2_999_000_000 < first["BTCUSDT"] < 3_001_000_000
    assert abs(first["BTCUSDT"] - first["ETHUSDT"]) > 10_000_000


def test_sellers_trade_at_the_bid_below_buyers():
    t = cat(run(minutes=20, seed=4))
    c = columns(t)
    seller = c["is_buyer_maker"]
    assert 0.4 < seller.mean() < 0.6
    # Within one symbol and millisecond the quotes are the same: every seller-initiated
    # trade (at the bid or below) is cheaper than every buyer-initiated one (ask or above).
    group = np.unique(
        np.stack([c["ts_event"], np.unique(c["key"], return_inverse=True)[1]]),
        axis=1,
        return_inverse=True,
    )[1]
    n = group.max() + 1
    max_sell = np.full(n, -np.inf)
    min_buy = np.full(n, np.inf)
    np.maximum.at(max_sell, group[seller], c["price"][seller])
    np.minimum.at(min_buy, group[~seller], c["price"][~seller])
    both = np.isfinite(max_sell) & np.isfinite(min_buy)
    assert both.sum() > 50
    assert (max_sell[both] < min_buy[both]).all()


def test_quantities_are_lognormal_on_the_lot_grid():
    t = cat(run(minutes=20, seed=5))
    for key, median, lot in (("BTCUSDT", 0.002, 1e-5), ("ETHUSDT", 0.03, 1e-4)):
        qty = t.column("qty").to_numpy()[is_key(t, key)]
        assert median / 1.5 < np.median(qty) < median * 1.5
        lots = qty / lot
        assert np.allclose(lots, np.round(lots), rtol=0, atol=1e-6)
        assert qty.min() >= lot
        assert np.quantile(qty, 0.99) > 10 * median  # heavy right tail


def test_unknown_symbols_get_stable_prices_from_the_name():
    spec = symbol_spec("FOOUSDT")
    assert spec == symbol_spec("FOOUSDT")
    assert symbol_spec("BARUSDT").price != spec.price
    assert 20 <= spec.price < 2000 and spec.rate == 5.0
    first = cat(run(["FOOUSDT"], minutes=1, seed=9)).column("price")[0].as_py()
    assert abs(first / spec.price - 1) < 0.01


def digest(symbols: list[str], minutes: float, seed: int) -> str:
    h = hashlib.sha256()
    for t in simulate_trades(symbols, minutes=minutes, seed=seed):
        for col in t.columns:
            for buf in col.combine_chunks().buffers():
                if buf is not None:
                    h.update(buf)
    return h.hexdigest()


def test_output_does_not_depend_on_python_hash_seed():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests.sim.test_simulate import digest; "
        "print(digest(['FOOUSDT', 'BTCUSDT'], 3, 11))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], env=env, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == digest(["FOOUSDT", "BTCUSDT"], 3, 11)


# --- determinism ---------------------------------------------------------------------


def test_same_arguments_give_equal_tables():
    a = run(minutes=12, seed=42, chunk_seconds=120)
    b = run(minutes=12, seed=42, chunk_seconds=120)
    assert len(a) == len(b) == 6
    assert all(x.equals(y) for x, y in zip(a, b, strict=True))


def test_different_seed_or_start_gives_different_tables():
    a = cat(run(minutes=5, seed=1))
    assert not a.equals(cat(run(minutes=5, seed=2)))
    c = cat(run(minutes=5, seed=1, start_ns=DEFAULT_START_NS + 86_400 * NS_S))
    assert not np.array_equal(
        a.column("price").to_numpy()[:100], c.column("price").to_numpy()[:100]
    )


def test_rows_do_not_depend_on_chunking_symbol_order_or_length():
    base = cat(run(minutes=17.5, seed=8, chunk_seconds=600))
    assert cat(run(minutes=17.5, seed=8, chunk_seconds=7)).equals(base)
    assert cat(run(["ETHUSDT", "BTCUSDT"], minutes=17.5, seed=8, chunk_seconds=1000)).equals(base)
    longer = cat(run(minutes=40, seed=8))
    assert longer.slice(0, base.num_rows).equals(base)
    assert longer.column("ts_event")[base.num_rows].as_py() >= DEFAULT_START_NS + 17.5 * 60 * NS_S


def test_unaligned_start_gives_millisecond_times_inside_the_range():
    start = DEFAULT_START_NS + 123_456_789
    tables = run(["BTCUSDT"], minutes=0.5, seed=6, start_ns=start, chunk_seconds=10)
    assert_invariants(tables, start, 0.5, 10)
    assert cat(tables).num_rows > 100


@settings(max_examples=25, deadline=None)
@given(
    symbols=st.lists(
        st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT", "X", "DOGEUSDT"]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    minutes=st.floats(min_value=0.01, max_value=8),
    seed=st.integers(min_value=0, max_value=2**63),
    chunk_seconds=st.integers(min_value=1, max_value=700),
    offset_ns=st.integers(min_value=-(10**12), max_value=10**12),
)
def test_invariants_hold_for_any_arguments(symbols, minutes, seed, chunk_seconds, offset_ns):
    start = DEFAULT_START_NS + offset_ns
    tables = run(symbols, minutes=minutes, seed=seed, start_ns=start, chunk_seconds=chunk_seconds)
    assert_invariants(tables, start, minutes, chunk_seconds)


# --- realism -------------------------------------------------------------------------


def test_btc_rate_is_plausible_over_half_an_hour():
    t = cat(run(minutes=30, seed=10))
    rate = is_key(t, "BTCUSDT").sum() / 1800
    assert 10 < rate < 60


def test_rates_over_hours_are_near_the_targets_and_bursty(six_hours):
    t = six_hours
    ts = t.column("ts_event").to_numpy()
    for key, target in (("BTCUSDT", 25.0), ("ETHUSDT", 15.0)):
        sec = (ts[is_key(t, key)] - DEFAULT_START_NS) // NS_S
        per_second = np.bincount(sec, minlength=6 * 3600)
        assert target / 2 < per_second.mean() < target * 2
        assert (per_second > 8 * target).sum() >= 10, f"{key} has no bursts"
        assert np.median(per_second) < per_second.mean()  # skewed by bursts


def test_one_minute_returns_are_correlated(six_hours):
    grid = DEFAULT_START_NS + np.arange(1, 360) * 60 * NS_S
    r = np.diff(np.stack([last_prices(six_hours, k, grid) for k in PAIR]), axis=1)
    # The divergence episodes dominate the tails (Pearson ~0.1-0.45 over 6 h); the rank
    # correlation reflects the ~0.8 of the diffusive part in ordinary minutes.
    assert np.corrcoef(r)[0, 1] > 0
    ranks = np.argsort(np.argsort(r, axis=1), axis=1)
    assert np.corrcoef(ranks)[0, 1] > 0.4
    # Typical (median absolute) 1-minute moves match ~50% / ~65% annualised volatility.
    vol = np.median(np.abs(r), axis=1) / 0.6745 * np.sqrt(365 * 1440)
    assert 0.3 < vol[0] < 0.8 and 0.4 < vol[1] < 1.0


def test_divergence_episodes_cross_the_threshold(six_hours):
    grid = DEFAULT_START_NS + np.arange(1, 6 * 3600) * NS_S
    lp = np.stack([last_prices(six_hours, k, grid) for k in PAIR])
    ret60 = lp[:, 60:] - lp[:, :-60]
    diff = np.abs(ret60[0] - ret60[1])
    assert diff.max() > 0.005
    assert np.median(diff) < 0.001 and np.quantile(diff, 0.9) < 0.005  # quiet most of the time
    # Separate crossings (re-armed below half the threshold): a few per hour, not constant.
    above = diff > 0.005
    below = diff < 0.0025
    crossings, armed = 0, True
    for i in np.flatnonzero(above | below):
        if above[i] and armed:
            crossings, armed = crossings + 1, False
        elif below[i]:
            armed = True
    assert 2 <= crossings <= 60
