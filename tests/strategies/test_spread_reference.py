"""The BTC/ETH spread strategy against an independent computation with Polars as-of joins."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from qsframework.engine import Engine
from qsframework.sim.market import simulate_trades

from ..conftest import make_trades

S = 1_000_000_000


def reference(trades: pa.Table, *, a: str, b: str, W: int, thr: float, rearm: float, sample: int):
    """Issue 2's definition computed column-wise: as-of joins, then a plain hysteresis loop."""
    df = pl.from_arrow(trades).with_row_index("row")
    df = df.filter(pl.col("key").is_in([a, b]))
    e0 = df["ts_event"][0]
    legs = {s: df.filter(pl.col("key") == s).select("ts_event", pl.col("price").alias(f"p_{s}")) for s in (a, b)}
    # p_s(t): last trade of s at or before the current row (in total order)
    cur = df.with_columns(
        [pl.when(pl.col("key") == s).then(pl.col("price")).otherwise(None).forward_fill().alias(f"p_{s}") for s in (a, b)]
    )
    # p_s(t-W): last trade of s with ts_event <= t - W  (backward as-of join)
    lagged = cur.with_columns((pl.col("ts_event") - W).alias("cut"))
    for s in (a, b):
        lagged = lagged.sort("cut").join_asof(
            legs[s].rename({"ts_event": "lts", f"p_{s}": f"l_{s}"}), left_on="cut", right_on="lts", strategy="backward"
        ).drop("lts")
    lagged = lagged.sort("row").drop_nulls([f"l_{a}", f"l_{b}"])
    d = (
        (lagged[f"p_{a}"] / lagged[f"l_{a}"]).log() - (lagged[f"p_{b}"] / lagged[f"l_{b}"]).log()
    ).to_numpy()
    divergences = []
    armed = True
    for ts, x in zip(lagged["ts_event"].to_list(), d.tolist()):
        if armed and abs(x) > thr:
            divergences.append((ts, x))
            armed = False
        elif not armed and abs(x) < rearm * thr:
            armed = True
    # spread at every grid point T strictly after the first event and strictly before the last
    last = df["ts_event"][-1]
    first_T = (e0 // sample + 1) * sample
    grid = pl.DataFrame({"T": np.arange(first_T, last, sample, dtype=np.int64)})
    asof = grid.with_columns((pl.col("T") - W).alias("TW"))
    for s in (a, b):
        leg = legs[s].rename({"ts_event": "lts"})
        asof = asof.join_asof(leg.rename({f"p_{s}": f"now_{s}"}), left_on="T", right_on="lts", strategy="backward").drop("lts")
        asof = asof.sort("TW").join_asof(leg.rename({f"p_{s}": f"lag_{s}"}), left_on="TW", right_on="lts", strategy="backward").drop("lts").sort("T")
    prices = {row["T"]: (row[f"now_{a}"], row[f"now_{b}"]) for row in asof.iter_rows(named=True)}
    n = W // sample
    spreads = []
    for row in asof.drop_nulls([f"lag_{a}", f"lag_{b}"]).iter_rows(named=True):
        T = row["T"]
        value = math.log(row[f"now_{a}"] / row[f"lag_{a}"]) - math.log(row[f"now_{b}"] / row[f"lag_{b}"])
        pts = [_asof_prices(legs, a, b, T - W + k * sample, prices) for k in range(n + 1)]
        pa_ = np.array([p[0] for p in pts], dtype=float)
        pb_ = np.array([p[1] for p in pts], dtype=float)
        ra, rb = np.diff(np.log(pa_)), np.diff(np.log(pb_))
        corr = None if ra.var() == 0 or rb.var() == 0 else float(np.corrcoef(ra, rb)[0, 1])
        spreads.append((T, value, corr))
    return divergences, spreads


def _asof_prices(legs, a, b, t, cache):
    if t in cache:
        return cache[t]
    out = []
    for s in (a, b):
        ts = legs[s]["ts_event"].to_numpy()
        j = np.searchsorted(ts, t, side="right") - 1
        out.append(float(legs[s][f"p_{s}"][int(j)]))
    return tuple(out)


def run_strategy(cls, trades: pa.Table, path: str, **p):
    engine = Engine(cls, overrides={k: str(v) for k, v in p.items()}, path=path)
    for batch in trades.to_batches(max_chunksize=65536):
        engine.process("trade", batch)
    engine.finish()
    return engine.ctx.outputs.signals.drain(), engine.ctx.outputs.alerts.drain()


def check(cls, trades: pa.Table, *, W: int, thr: float, rearm: float, sample: int, a="BTCUSDT", b="ETHUSDT"):
    divs, spreads = reference(trades, a=a, b=b, W=W, thr=thr, rearm=rearm, sample=sample)
    for path in ("event", "batch"):
        signals, alerts = run_strategy(
            cls, trades, path, a=a, b=b, window=f"{W}ns", threshold=thr, rearm=rearm, sample=f"{sample}ns"
        )
        rows = signals.to_pylist()
        got_div = [r for r in rows if r["name"] == "divergence"]
        got_spread = [r for r in rows if r["name"] == "spread"]
        assert [r["ts_event"] for r in got_div] == [t for t, _ in divs]
        for r, (_, x) in zip(got_div, divs):
            assert r["value"] == pytest.approx(x, rel=1e-9, abs=1e-12)
            assert json.loads(r["attrs"]) == {"direction": 1 if x > 0 else -1}
        assert [r["ts_event"] for r in got_spread] == [t for t, _, _ in spreads]
        for r, (_, value, corr) in zip(got_spread, spreads):
            assert r["value"] == pytest.approx(value, rel=1e-9, abs=1e-12)
            got_corr = json.loads(r["attrs"])["corr"]
            if corr is None:
                assert got_corr is None
            else:
                assert got_corr == pytest.approx(corr, abs=1e-9)
        assert alerts.num_rows == len(divs)
        assert len(alerts.column("dedup_key").unique()) == len(divs)
    return divs, spreads


def test_matches_reference_on_simulated_market(spread_cls):
    trades = pa.concat_tables(simulate_trades(["BTCUSDT", "ETHUSDT"], minutes=90, seed=42))
    divs, spreads = check(spread_cls, trades, W=60 * S, thr=0.005, rearm=0.5, sample=S)
    assert divs, "the simulator should produce divergence episodes in 90 minutes"
    assert len(spreads) > 5000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_reference_on_ragged_data(spread_cls, seed):
    """Ties, long gaps, a third symbol, jumps: the edge cases of the definition."""
    trades = make_trades(seed, 4000, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    divs, spreads = check(spread_cls, trades, W=3 * S, thr=0.004, rearm=0.5, sample=S // 2)
    assert divs and spreads


def test_first_event_on_a_grid_point(spread_cls):
    """The sample timer starts strictly after the first event, even when it is on the grid."""
    trades = make_trades(9, 2000, gaps_ms=(0, 0, 1000, 500))  # every time is a multiple of 500 ms
    assert trades.column("ts_event")[0].as_py() % (S // 2) == 0
    check(spread_cls, trades, W=2 * S, thr=0.004, rearm=0.5, sample=S // 2)
