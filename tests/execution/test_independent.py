"""The simulator checked against an independent recomputation (tests/execution/recompute.py:
DuckDB as-of joins and numpy over the recording's trades, never the simulator): every fill's
time, quantity, price and fee, every order's status, the equity samples and the report's
metrics, for market orders (latency, slippage, fees, with and without max participation),
limit orders and cancels, on the bundled sample and on generated recordings.

Fill prices and fees are compared exactly (one formula each, evaluated in the issue's order of
operations); so are cash and positions (dyadic quantities: every sum is exact). Equity and the
metrics use math.isclose(rel_tol=1e-12): the sum over keys and numpy's pairwise sums are in an
order the rules leave open.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework import Duration
from qsframework.recording import RecordingWriter

from ..conftest import ROOT, T0
from . import recompute as rc
from .traders import ScheduleParams, limit_price

SAMPLE = ROOT / "recordings" / "sample"
SCHEDULED = str(Path(__file__).with_name("traders.py")) + ":Scheduled"
SECOND = 10**9


def schedule(con, p: ScheduleParams) -> list[rc.Order]:
    """The orders Scheduled places: buys on the grid of ``every`` while a later event fires the
    timer, each sold ``hold`` later; limit prices from the key's last price; cancels."""
    first, last = rc.span(con)
    every, keys = int(p.every), p.keys.split(",")
    buys = [(t, keys[i % len(keys)], p.qty)
            for i, t in enumerate(range(-(-first // every) * every, last, every))]
    placed = []
    if not p.limit_bps:
        placed = [*buys, *((t + int(p.hold), k, -q) for t, k, q in buys if t + int(p.hold) < last)]
        return [rc.Order(i, k, t, q) for i, (t, k, q) in enumerate(sorted(placed))]
    priced = rc.last_prices(con, [(k, t) for t, k, _ in buys])
    buys = [b for b, price in zip(buys, priced, strict=True) if price is not None]
    sells = [(t + int(p.hold), k, -q) for t, k, q in buys if t + int(p.hold) < last]
    placed = sorted([*buys, *sells])
    prices = rc.last_prices(con, [(k, t) for t, k, _ in placed])
    cancel = p.cancel_after
    return [rc.Order(i, k, t, q, limit_price(price, q, p.limit_bps),
                     t + int(cancel) if cancel is not None and t + int(cancel) < last else None)
            for i, ((t, k, q), price) in enumerate(zip(placed, prices, strict=True))]


SAMPLE_RUNS = [
    rc.Exec(),
    rc.Exec(latency_ns=250_000_000, slippage_bps=2.5, taker_fee_bps=7.5, cash=50_000.0),
    rc.Exec(latency_ns=3 * SECOND, slippage_bps=10.0, taker_fee_bps=0.0, mark_every_ns=60 * SECOND),
]


@pytest.mark.parametrize("cfg", SAMPLE_RUNS, ids=["defaults", "latency-slippage-fees", "slow"])
def test_market_orders_on_the_sample(tmp_path, cfg):
    con = rc.connect(SAMPLE)
    params = {"every": "10m", "hold": "3m", "qty": "0.5"}
    got = rc.backtest(SCHEDULED, SAMPLE, tmp_path, params, cfg)
    orders = schedule(con, ScheduleParams(every=Duration("10m"), hold=Duration("3m")))
    want = rc.check(got, con, orders, cfg)
    assert len(want) == len(orders) > 30  # every order filled, at market
    assert {f[6] for f in want} == {"taker"}


@pytest.mark.parametrize("cancel", [None, "90s"])
def test_limit_orders_and_cancels_on_the_sample(tmp_path, cancel):
    con = rc.connect(SAMPLE)
    cfg = rc.Exec(latency_ns=100_000_000, maker_fee_bps=2.0)
    params = {"every": "10m", "hold": "3m", "qty": "0.5", "limit_bps": "5"}
    if cancel:
        params["cancel_after"] = cancel
    got = rc.backtest(SCHEDULED, SAMPLE, tmp_path, params, cfg)
    p = ScheduleParams(every=Duration("10m"), hold=Duration("3m"), limit_bps=5.0,
                       cancel_after=Duration(cancel) if cancel else None)
    want = rc.check(got, con, schedule(con, p), cfg)
    assert want and {f[6] for f in want} == {"maker"}
    if cancel:  # some orders were cancelled before a trade went through them
        assert "cancelled" in got["orders"].column("status").to_pylist()


# -- generated recordings ----------------------------------------------------------------
@st.composite
def recordings(draw) -> pa.Table:
    """A few dozen trades of two keys from two sources: ties, quiet gaps, dyadic quantities."""
    n = draw(st.integers(2, 60))
    gaps = draw(st.lists(st.sampled_from([0, 1, 7, 120, 900, 2500]), min_size=n, max_size=n))
    ts, t = [], T0 + draw(st.integers(0, 3000)) * 1_000_000
    for g in gaps:
        t += g * 1_000_000
        ts.append(t)
    keys = draw(st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT"]), min_size=n, max_size=n))
    sources = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    prices = draw(st.lists(st.integers(9_000, 11_000), min_size=n, max_size=n))
    qtys = draw(st.lists(st.integers(1, 256), min_size=n, max_size=n))
    return pa.table({
        "ts_event": pa.array(ts, pa.int64()), "ts_recv": pa.array(ts, pa.int64()),
        "source": sources, "key": keys, "seq": pa.array(range(n), pa.int64()),
        "price": [p / 100 for p in prices], "qty": [q / 64 for q in qtys],
        "is_buyer_maker": [False] * n,
    })


executions = st.builds(
    rc.Exec,
    latency_ns=st.sampled_from([0, 1, 1_000_000, 250_000_000, 1_500_000_000]),
    slippage_bps=st.sampled_from([0.0, 2.5, 10.0]),
    taker_fee_bps=st.sampled_from([0.0, 7.5, 10.0]),
    maker_fee_bps=st.sampled_from([0.0, 2.0, 10.0]),
    cash=st.sampled_from([1_000.0, 100_000.0]),
    mark_every_ns=st.sampled_from([250_000_000, SECOND, 3 * SECOND]),
    max_participation=st.sampled_from([None, None, 1.0, 0.5, 0.25]),
)


def _run_generated(trades: pa.Table, cfg: rc.Exec, p: ScheduleParams,
                   params: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rec"
        with RecordingWriter(rec) as w:
            w.write("trade", trades)
        con = rc.connect(rec)
        orders = schedule(con, p)
        if not orders:  # a recording too short for the schedule: the strategy never ordered
            return
        rc.check(rc.backtest(SCHEDULED, rec, Path(tmp) / "out", params, cfg), con, orders, cfg)


@settings(max_examples=40)
@given(recordings(), executions, st.sampled_from([1, 2]), st.integers(1, 9),
       st.sampled_from([1, 3, 8]))
def test_market_orders_on_generated_recordings(trades, cfg, every_s, hold_tenths, eighths):
    every = every_s * SECOND
    hold = every * hold_tenths // 10
    p = ScheduleParams(every=Duration(f"{every}ns"), hold=Duration(f"{hold}ns"),
                       qty=eighths / 8)
    _run_generated(trades, cfg, p, {"every": f"{every}ns", "hold": f"{hold}ns", "qty": repr(p.qty)})


@settings(max_examples=40)
@given(recordings(), executions.map(lambda c: rc.Exec(**{**c.__dict__, "max_participation": None})),
       st.sampled_from([1.0, 20.0, 200.0]), st.sampled_from([None, 1, 3, 6]))
def test_limit_orders_and_cancels_on_generated_recordings(trades, cfg, bps, cancel_tenths):
    every, hold = 2 * SECOND, 2 * SECOND * 7 // 10
    cancel = None if cancel_tenths is None else 2 * SECOND * cancel_tenths // 10
    p = ScheduleParams(every=Duration(f"{every}ns"), hold=Duration(f"{hold}ns"),
                       qty=0.25, limit_bps=bps,
                       cancel_after=None if cancel is None else Duration(f"{cancel}ns"))
    params = {"every": f"{every}ns", "hold": f"{hold}ns", "qty": "0.25", "limit_bps": repr(bps)}
    if cancel is not None:
        params["cancel_after"] = f"{cancel}ns"
    _run_generated(trades, cfg, p, params)
