"""BtcEthPairs: its backtest on the bundled sample writes fills and metrics, and its orders,
fills, equity and metrics equal an independent recomputation: the spread d from DuckDB as-of
joins and the pairs rule as a plain loop (open on a divergence, close on the re-arm or at
max_hold), then the fills, samples and metrics of tests/execution/recompute.py."""

from __future__ import annotations

import json
import subprocess
import tempfile
from math import log
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qsframework.engine import Engine
from qsframework.loader import load_strategy
from qsframework.recording import RecordingWriter
from qsframework.testing import TableSource, run_strategy

from ..conftest import ROOT, T0, make_trades, qsf_cmd
from ..execution import recompute as rc

SAMPLE = ROOT / "recordings" / "sample"
SPEC = "qsframework.strategies.btc_eth_pairs:BtcEthPairs"
MINUTE = 60 * 10**9


def pairs_orders(con, *, window: int, threshold: float, rearm: float, notional: float,
                 max_hold: int, a: str = "BTCUSDT", b: str = "ETHUSDT") -> list[rc.Order]:
    """The orders the pairs rule places on the recording in ``con``, recomputed."""
    rows = con.execute(f"""
        WITH lasts AS (SELECT key, ts_event, price FROM trades
                       QUALIFY row_number() OVER (PARTITION BY key, ts_event ORDER BY pos DESC) = 1),
             legs AS (SELECT pos, ts_event FROM trades WHERE key IN ('{a}', '{b}'))
        SELECT l.pos, l.ts_event, ca.price, cb.price, la.price, lb.price
        FROM legs l
        ASOF LEFT JOIN (SELECT pos, price FROM trades WHERE key = '{a}') ca ON ca.pos <= l.pos
        ASOF LEFT JOIN (SELECT pos, price FROM trades WHERE key = '{b}') cb ON cb.pos <= l.pos
        ASOF LEFT JOIN (SELECT ts_event, price FROM lasts WHERE key = '{a}') la
            ON la.ts_event <= l.ts_event - {window}
        ASOF LEFT JOIN (SELECT ts_event, price FROM lasts WHERE key = '{b}') lb
            ON lb.ts_event <= l.ts_event - {window}
        ORDER BY l.pos""").fetchall()
    orders: list[rc.Order] = []

    def place(key: str, qty: float, t: int, after: int | None) -> None:
        orders.append(rc.Order(len(orders), key, t, qty, after=after))

    armed, legs, hold = True, None, 0
    for pos, ts, pa_, pb_, la, lb in rows:
        if legs is not None and hold < ts:  # max_hold passed: the timer closes both legs
            place(a, -legs[0], hold, None)
            place(b, -legs[1], hold, None)
            legs = None
        if la is None or lb is None:
            continue
        d = log(pa_ / la) - log(pb_ / lb)
        if armed and abs(d) > threshold:
            armed = False
            if legs is None:
                direction = 1.0 if d > 0 else -1.0
                legs = (-direction * notional / pa_, direction * notional / pb_)
                place(a, legs[0], ts, pos)
                place(b, legs[1], ts, pos)
                hold = ts + max_hold
        elif not armed and abs(d) < rearm * threshold:
            armed = True
        if legs is not None and armed:  # re-armed: the spread closed
            place(a, -legs[0], ts, pos)
            place(b, -legs[1], ts, pos)
            legs = None
    return orders


def test_the_sample_backtest_writes_fills_and_metrics(tmp_path):
    run = subprocess.run([*qsf_cmd(), "backtest", SPEC, "--recording", str(SAMPLE), "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "PnL" in run.stdout and "Sharpe" in run.stdout
    fills = pq.read_table(tmp_path / "fills.parquet")
    report = json.loads((tmp_path / "report.json").read_text())
    assert fills.num_rows > 0 and report["metrics"]["fills"] == fills.num_rows
    assert set(report["metrics"]) == {"pnl", "return", "fees", "fills", "turnover", "max_drawdown",
                                      "sharpe", "sortino", "exposure", "win_rate"}
    # each position is two legs in, two legs out: every open has its close
    orders = pq.read_table(tmp_path / "orders.parquet").to_pylist()
    accepted = [o for o in orders if o["status"] == "accepted"]
    assert [o["tag"] for o in accepted] == ["open", "open", "close", "close"] * (len(accepted) // 4)


@pytest.mark.parametrize("cfg", [rc.Exec(), rc.Exec(latency_ns=50_000_000, slippage_bps=1.0,
                                                     taker_fee_bps=7.5, mark_every_ns=MINUTE)],
                         ids=["defaults", "latency-slippage"])
def test_the_sample_backtest_equals_the_independent_recomputation(tmp_path, cfg):
    con = rc.connect(SAMPLE)
    got = rc.backtest(SPEC, SAMPLE, tmp_path, {}, cfg)
    orders = pairs_orders(con, window=MINUTE, threshold=0.005, rearm=0.5, notional=10_000.0,
                          max_hold=30 * MINUTE)
    assert len(orders) >= 40  # a dozen positions in three hours
    fills = rc.check(got, con, orders, cfg)
    assert len(fills) == len(orders)  # market orders: each fills whole


def test_max_hold_closes_a_position_that_does_not_converge(tmp_path):
    con = rc.connect(SAMPLE)
    params = {"max_hold": "2m", "rearm": "0.05"}
    got = rc.backtest(SPEC, SAMPLE, tmp_path, params, rc.Exec())
    orders = pairs_orders(con, window=MINUTE, threshold=0.005, rearm=0.05, notional=10_000.0,
                          max_hold=2 * MINUTE)
    assert any(o.after is None for o in orders)  # closed by the timer
    rc.check(got, con, orders, rc.Exec())


def test_pairs_never_ordering_pays_and_writes_nothing_new():
    """Below the threshold it never diverges: signals only, no orders, no fills."""
    cls = load_strategy(SPEC)
    out = run_strategy(cls, {"trade": make_trades(5, 3000, start=T0)}, params={"threshold": "5"})
    assert out["signals"].num_rows > 0
    assert out["orders"].num_rows == out["fills"].num_rows == out["equity"].num_rows == 0


def test_bad_parameters_are_one_line(tmp_path):
    run = subprocess.run([*qsf_cmd(), "backtest", SPEC, "--recording", str(SAMPLE), "--out",
                          str(tmp_path), "-p", "notional=-5"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "notional must be positive" in run.stderr


@settings(max_examples=15)
@given(st.integers(0, 2**16), st.sampled_from([2, 10, 45]), st.sampled_from([0, 1, 30_000_000]),
       st.sampled_from([1, 7, 65_536]))
def test_generated_trades_equal_the_recomputation_at_any_batch_size(seed, hold_s, latency, batch):
    """Many positions, closed by the re-arm and by max_hold, on random trades (ties, gaps,
    jumps): orders, fills, equity and metrics as recomputed, whatever the batch size."""
    cfg = rc.Exec(latency_ns=latency, slippage_bps=2.0)
    params = {"window": "5s", "threshold": "0.004", "max_hold": f"{hold_s}s",
              "notional": "1000"}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rec"
        with RecordingWriter(rec) as w:
            w.write("trade", make_trades(seed, 4000, start=T0))
        con = rc.connect(rec)
        orders = pairs_orders(con, window=5 * 10**9, threshold=0.004, rearm=0.5,
                              notional=1000.0, max_hold=hold_s * 10**9)
        assume(orders)
        got = rc.backtest(SPEC, rec, Path(tmp) / "out", params, cfg,
                          extra=["--batch-size", str(batch)])
        rc.check(got, con, orders, cfg)


def test_snapshot_and_restore_with_a_position_open_continues_exactly():
    """The pairs' own state (the legs held, the spread's hysteresis, the max_hold timer) is
    in the engine's snapshot: cut anywhere, restored, the run ends as an uninterrupted one."""
    cls = load_strategy(SPEC)
    params = {"window": "5s", "threshold": "0.004", "max_hold": "20s"}
    cfg = rc.Exec(latency_ns=2_000_000)
    batches = list(TableSource({"trade": make_trades(8, 4000, start=T0)}, batch_size=97))

    def run(part: list, *, engine: Engine | None = None, end: bool = True) -> Engine:
        engine = engine or Engine(cls, overrides=params, path="event", execution=cfg)
        for kind, table in part:
            for batch in table.to_batches():
                engine.process(kind, batch)
        if end:
            engine.finish()
        return engine

    def drain(engine: Engine) -> dict[str, pa.Table]:
        return {n: b.drain() for n, b in engine.ctx.outputs.execution().items()}

    expected = drain(run(batches))
    held = 0
    for cut in range(3, len(batches), 4):
        first = run(batches[:cut], end=False)
        held += first.strategy.legs is not None
        blob = first.snapshot()
        before = drain(first)
        second = Engine(cls, overrides=params, path="event", execution=cfg)
        second.restore(blob)
        after = drain(run(batches[cut:], engine=second))
        for name, table in after.items():
            assert pa.concat_tables([before[name], table]).equals(expected[name]), (cut, name)
    assert held  # some cuts fell inside a position
