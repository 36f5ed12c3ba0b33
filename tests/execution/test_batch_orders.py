"""Orders from batch handlers: the per-event and batch paths give the same orders, fills,
equity, metrics and signals, for the pairs strategy and a trader of our own, whatever the
batch size, run after run; the batch path's mistakes are one-line errors."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings, strategies as st

from qsframework import ExecutionConfig
from qsframework.engine import Engine
from qsframework.errors import StrategyError
from qsframework.execution.metrics import compute_metrics
from qsframework.loader import load_strategy
from qsframework.recording import RecordingWriter
from qsframework.testing import TableSource, run_strategy

from ..conftest import ROOT, T0, make_trades, qsf_cmd
from ..strategies.test_btc_eth_pairs import pairs_orders
from . import recompute as rc
from .batch_traders import BatchOnly, EventOnly, Stepper

SAMPLE = ROOT / "recordings" / "sample"
PAIRS = "qsframework.strategies.btc_eth_pairs:BtcEthPairs"
OUTPUTS = ("signals", "alerts", "orders", "fills", "equity")
RUNS = [("event", 1), ("event", 7), ("event", 65_536), ("batch", 1), ("batch", 7),
        ("batch", 65_536), ("auto", 7), ("auto", 65_536)]


def run(cls, trades: pa.Table, *, path: str, batch_size: int, params: dict | None = None,
        config: ExecutionConfig) -> tuple[dict[str, pa.Table], object]:
    """A backtest of ``trades`` as ``run_strategy`` does it; the outputs and the strategy."""
    engine = Engine(cls, overrides=params, path=path, execution=config)  # type: ignore[arg-type]
    engine.prepare()
    for kind, table in TableSource({"trade": trades}, batch_size=batch_size):
        for batch in table.to_batches():
            engine.process(kind, batch)
    engine.finish()
    outputs = engine.ctx.outputs
    return ({name: buf.drain() for name, buf in (outputs.buffers() | outputs.execution()).items()},
            engine.strategy)


def metrics(out: dict[str, pa.Table], config: ExecutionConfig) -> dict | None:
    if not out["equity"].num_rows:
        return None
    return compute_metrics(out["equity"], out["fills"], cash=config.cash,
                           mark_every_ns=config.mark_every_ns)


def assert_same(got: dict[str, pa.Table], want: dict[str, pa.Table], config: ExecutionConfig) -> None:
    for name in OUTPUTS:
        assert got[name].equals(want[name]), name
    assert metrics(got, config) == metrics(want, config)


@settings(max_examples=6, deadline=None)
# the per-event reference once put grid samples after an order placed between them and their
# event (the order joined the book before its row's seq was taken)
@example(seed=479, latency_ms=0, every=7, pause=0, from_timer=False, limit_bps=0.5)
@given(seed=st.integers(0, 2**16), latency_ms=st.sampled_from([0, 1, 250]),
       every=st.sampled_from([3, 7, 31]), pause=st.sampled_from([0, 13, 200]),
       from_timer=st.booleans(), limit_bps=st.sampled_from([0.5, 5.0]))
def test_a_batch_handler_s_orders_equal_the_per_event_path(seed, latency_ms, every, pause,
                                                          from_timer, limit_bps):
    """Orders placed from the batch handler at data-dependent rows (market and limit), the
    run handed over per event there, periodic timers in the batch and a one-shot timer that
    may order first: everything equals the per-event run, any batch size, any path."""
    config = ExecutionConfig(latency_ns=latency_ms * 1_000_000, slippage_bps=1.0, mark_every_ns=500_000_000)
    params = {"every": every, "pause": pause, "from_timer": from_timer, "limit_bps": limit_bps}
    trades = make_trades(seed, 1500, start=T0 + 123_456_789)
    want, _ = run(EventOnly, trades, path="event", batch_size=65_536, params=params, config=config)
    assert want["fills"].num_rows > 0  # the strategy traded: the parity below is about orders
    for path, size in RUNS:
        got, strategy = run(Stepper, trades, path=path, batch_size=size, params=params, config=config)
        assert_same(got, want, config)
    # the last run (auto, one batch) went through the batch handler up to the first order
    assert strategy.returns and (from_timer or strategy.returns[-1][2])


def test_the_batch_handler_hands_over_mid_batch_and_is_not_called_again():
    config = ExecutionConfig(latency_ns=20_000_000)
    params = {"every": 11, "pause": 0}
    trades = make_trades(3, 2000, start=T0)
    got, strategy = run(Stepper, trades, path="batch", batch_size=65_536, params=params, config=config)
    want, _ = run(EventOnly, trades, path="event", batch_size=65_536, params=params, config=config)
    assert_same(got, want, config)
    [(handled, rows, ordered)] = strategy.returns  # one call, stopped at the ordering row
    assert ordered and rows == 2000 and 30 <= handled < rows
    accepted = [o for o in got["orders"].to_pylist() if o["status"] == "accepted"]
    row = trades.slice(handled - 1, 1).to_pylist()[0]
    assert [(o["ts_event"], o["key"], o["qty"], o["tag"]) for o in accepted[:2]] == [
        (row["ts_event"], row["key"], 0.2, "open"), (row["ts_event"], row["key"], -0.1, "limit")]
    assert round(row["price"] * 100) % 11 == 0  # the data-dependent row, found independently


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), hold_s=st.sampled_from([2, 10, 45]),
       latency_ms=st.sampled_from([0, 30]))
def test_pairs_batch_path_equals_its_per_event_path(seed, hold_s, latency_ms):
    cls = load_strategy(PAIRS)
    config = ExecutionConfig(latency_ns=latency_ms * 1_000_000, slippage_bps=2.0)
    params = {"window": "5s", "threshold": "0.004", "max_hold": f"{hold_s}s", "notional": "1000"}
    trades = make_trades(seed, 1500, start=T0)
    want, _ = run(cls, trades, path="event", batch_size=65_536, params=params, config=config)
    assert want["fills"].num_rows > 0
    for path, size in RUNS:
        got, _ = run(cls, trades, path=path, batch_size=size, params=params, config=config)
        assert_same(got, want, config)


@pytest.mark.parametrize("size", [7, 65_536])
def test_pairs_batch_path_equals_the_independent_recomputation(tmp_path, size):
    """``--path batch`` on generated trades: every order, fill, sample and metric as the
    DuckDB recomputation of the pairs rule and the fill rules has them."""
    cfg = rc.Exec(latency_ns=30_000_000, slippage_bps=2.0)
    params = {"window": "5s", "threshold": "0.004", "max_hold": "10s", "notional": "1000"}
    rec = tmp_path / "rec"
    with RecordingWriter(rec) as w:
        w.write("trade", make_trades(11, 4000, start=T0))
    con = rc.connect(rec)
    orders = pairs_orders(con, window=5 * 10**9, threshold=0.004, rearm=0.5, notional=1000.0,
                          max_hold=10 * 10**9)
    assert orders
    got = rc.backtest(PAIRS, rec, tmp_path / "out", params, cfg,
                      extra=["--path", "batch", "--batch-size", str(size)])
    rc.check(got, con, orders, cfg)


def test_pairs_cli_batch_path_equals_event_path_on_the_sample(tmp_path):
    results = {}
    for path in ("event", "batch"):
        out = tmp_path / path
        proc = subprocess.run([*qsf_cmd(), "backtest", PAIRS, "--recording", str(SAMPLE),
                               "--out", str(out), "--path", path],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "report.json").read_text())
        results[path] = ({name: pq.read_table(out / f"{name}.parquet")
                          for name in ("signals", "orders", "fills", "equity")}, report["metrics"])
    (event_files, event_metrics), (batch_files, batch_metrics) = results["event"], results["batch"]
    assert event_files["fills"].num_rows >= 40
    for name, table in event_files.items():
        assert batch_files[name].equals(table), name
    assert batch_metrics == event_metrics


def test_an_order_from_a_batch_handler_without_at_is_one_line():
    class NoAt(Stepper):
        def open(self, key, price, ts):
            self.ordered = True
            self.ctx.order(key, 0.2)

    with pytest.raises(StrategyError) as err:
        run_strategy(NoAt, {"trade": make_trades(1, 500)}, path="batch")
    text = str(err.value)
    assert "\n" not in text and "on_trade_batch" in text and "needs at=" in text


def test_an_order_at_another_row_than_the_one_returned_is_one_line():
    class Late(Stepper):
        def on_trade_batch(self, batch, fires):
            ts = batch.column("ts_event").to_numpy()
            self.ctx.order("BTCUSDT", 1.0, at=int(ts[0]))
            return None  # but it handled all rows

    with pytest.raises(StrategyError, match="stop at the row whose handling placed the orders") as err:
        run_strategy(Late, {"trade": make_trades(1, 500)}, path="batch")
    assert "\n" not in str(err.value)


def test_at_in_a_per_event_handler_must_be_the_event_s_time():
    class Off(EventOnly):
        def open(self, key, price, ts):
            self.ordered = True
            self.ctx.order(key, 0.2, at=ts + 1)

    with pytest.raises(StrategyError, match="per-event handler") as err:
        run_strategy(Off, {"trade": make_trades(1, 500)}, path="event")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("returned", [0, -1, 10**9, "3", 2.0])
def test_a_bad_count_of_rows_handled_is_one_line(returned):
    class Bad(Stepper):
        def on_trade_batch(self, batch, fires):
            return returned

    with pytest.raises(StrategyError, match="returns None .all rows handled. or the number") as err:
        run_strategy(Bad, {"trade": make_trades(1, 500)}, path="batch")
    assert "\n" not in str(err.value)


def test_a_batch_handler_ordering_without_a_per_event_handler_is_one_line():
    with pytest.raises(StrategyError, match="runs per event .* needs on_trade: it has none") as err:
        run_strategy(BatchOnly, {"trade": make_trades(1, 500)}, path="batch")
    assert "\n" not in str(err.value) and "on_trade_batch" in str(err.value)


def test_pairs_cli_batch_path_with_a_bad_parameter_is_still_one_line():
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([*qsf_cmd(), "backtest", PAIRS, "--recording", str(SAMPLE),
                               "--out", str(Path(tmp) / "o"), "--path", "batch",
                               "-p", "notional=0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "notional must be positive" in proc.stderr


def test_a_cancel_from_a_batch_handler_takes_effect_as_from_the_row():
    class Cancels(Stepper):
        def open(self, key, price, ts):
            super().open(key, price, ts)
            self.ctx.cancel(self.resting, at=ts)  # effective at ts + latency
            self.resting = None

    config = ExecutionConfig(latency_ns=40_000_000)
    trades = make_trades(9, 1200, start=T0)
    want, _ = run(Cancels, trades, path="event", batch_size=7, params={}, config=config)
    got, strategy = run(Cancels, trades, path="batch", batch_size=65_536, params={}, config=config)
    assert_same(got, want, config)
    assert strategy.returns[-1][2]  # the batch handler placed the orders and the cancel
    limit = [o for o in got["orders"].to_pylist() if o["order_id"] == 1]
    accepted_at = limit[0]["ts_event"]
    assert [(o["status"], o["ts_event"]) for o in limit] == [
        ("accepted", accepted_at), ("cancelled", accepted_at + 40_000_000)]
