"""compute_metrics against hand-computed cases: a known equity curve (drawdown, Sharpe,
Sortino, exposure), known fills (turnover, fees, win rate by average cost, with a position
that flips sign and one that goes flat and reopens), and every case where a metric is None."""

from __future__ import annotations

import json
import subprocess
from math import isclose, sqrt
from pathlib import Path

import pyarrow as pa
import pytest

from qsframework.execution.metrics import compute_metrics
from qsframework.recording import RecordingWriter

from ..conftest import T0, make_trades, qsf_cmd

DAY = 86_400 * 10**9
SCHEDULED = str(Path(__file__).with_name("traders.py")) + ":Scheduled"
POSITIONS = pa.map_(pa.string(), pa.float64())
KEYS = ("pnl", "return", "fees", "fills", "turnover", "max_drawdown", "sharpe", "sortino",
        "exposure", "win_rate")


def equity(values: list[float], positions: list[dict[str, float]] | None = None) -> pa.Table:
    """Equity samples one day apart (the spec's schema; cash is not read by the metrics)."""
    n = len(values)
    positions = positions if positions is not None else [{}] * n
    ts = [i * DAY for i in range(n)]
    return pa.table({
        "ts_event": pa.array(ts, pa.int64()), "ts_recv": pa.array(ts, pa.int64()),
        "source": ["qsf:s"] * n, "key": ["portfolio"] * n, "seq": pa.array(range(n), pa.int64()),
        "strategy": ["s"] * n, "cash": pa.array(values, pa.float64()),
        "equity": pa.array(values, pa.float64()),
        "positions": pa.array([list(p.items()) for p in positions], POSITIONS),
    })


def fills(rows: list[tuple[str, float, float, float]]) -> pa.Table:
    """Fills (key, qty, price, fee) in the order they happened."""
    n = len(rows)
    return pa.table({
        "ts_event": pa.array(range(n), pa.int64()), "ts_recv": pa.array(range(n), pa.int64()),
        "source": ["qsf:s"] * n, "key": [r[0] for r in rows], "seq": pa.array(range(n), pa.int64()),
        "strategy": ["s"] * n, "order_id": pa.array(range(n), pa.int64()),
        "qty": pa.array([r[1] for r in rows], pa.float64()),
        "price": pa.array([r[2] for r in rows], pa.float64()),
        "fee": pa.array([r[3] for r in rows], pa.float64()),
        "liquidity": ["taker"] * n,
    })


NO_FILLS = fills([])


def test_a_known_equity_curve():
    # returns 0.1, -0.1, 0.2, -0.05: 100 -> 110 -> 99 -> 118.8 -> 112.86
    curve = [100.0, 110.0, 99.0, 118.8, 112.86]
    held = [{}, {"BTCUSDT": 1.0}, {"BTCUSDT": 1.0}, {}, {"ETHUSDT": -2.0, "BTCUSDT": 0.5}]
    m = compute_metrics(equity(curve, held), NO_FILLS, cash=100.0, mark_every_ns=DAY)
    assert list(m) == list(KEYS)
    assert isclose(m["pnl"], 12.86, rel_tol=1e-12)
    assert isclose(m["return"], 0.1286, rel_tol=1e-12)
    # peaks 100, 110, 110, 118.8, 118.8: falls 0, 0, 11/110 = 0.1, 0, 5.94/118.8 = 0.05
    assert isclose(m["max_drawdown"], 0.1, rel_tol=1e-12)
    # mean 0.0375; deviations 0.0625, -0.1375, 0.1625, -0.0875: squares sum to 0.056875
    assert isclose(m["sharpe"], 0.0375 / sqrt(0.056875 / 3) * sqrt(365), rel_tol=1e-12)
    # downside: 0.1^2 + 0.05^2 = 0.0125 over 4 returns
    assert isclose(m["sortino"], 0.0375 / sqrt(0.0125 / 4) * sqrt(365), rel_tol=1e-12)
    assert m["exposure"] == 3 / 5
    assert (m["fees"], m["fills"], m["turnover"], m["win_rate"]) == (0.0, 0, 0.0, None)


def test_periods_per_year_follow_the_sampling():
    curve = [100.0, 110.0, 99.0, 118.8, 112.86]
    daily = compute_metrics(equity(curve), NO_FILLS, cash=100.0, mark_every_ns=DAY)
    secondly = compute_metrics(equity(curve), NO_FILLS, cash=100.0, mark_every_ns=10**9)
    assert isclose(secondly["sharpe"], daily["sharpe"] * sqrt(86_400), rel_tol=1e-12)
    assert isclose(secondly["sortino"], daily["sortino"] * sqrt(86_400), rel_tol=1e-12)


def test_drawdown_is_the_largest_fall_from_a_running_peak_not_the_last():
    # falls: 20/100 = 0.2 (to 80), then a new peak 150 and a fall to 135 = 0.1
    m = compute_metrics(equity([100.0, 80.0, 150.0, 135.0]), NO_FILLS, cash=100.0,
                        mark_every_ns=DAY)
    assert isclose(m["max_drawdown"], 0.2, rel_tol=1e-12)
    assert isclose(m["pnl"], 35.0, rel_tol=1e-12)


def test_a_curve_that_never_falls_has_no_drawdown_and_no_sortino():
    m = compute_metrics(equity([100.0, 200.0, 300.0]), NO_FILLS, cash=100.0, mark_every_ns=DAY)
    assert m["max_drawdown"] == 0.0
    assert m["sortino"] is None  # no downside
    # returns 1.0 and 0.5: mean 0.75, std sqrt(2 x 0.25^2 / 1)
    assert isclose(m["sharpe"], 0.75 / sqrt(0.125) * sqrt(365), rel_tol=1e-12)
    assert m["exposure"] == 0.0


def test_known_fills_turnover_fees_and_win_rate_by_average_cost():
    rows = [
        ("BTCUSDT", 2.0, 100.0, 0.2),     # long 2 @ 100
        ("BTCUSDT", 2.0, 110.0, 0.22),    # long 4 @ 105 (average cost)
        ("BTCUSDT", -1.0, 104.0, 0.104),  # closes 1: 1 x (104 - 105) = -1, a loss
        ("BTCUSDT", -5.0, 120.0, 0.6),    # flips: closes 3: 3 x 15 = +45, a win; short 2 @ 120
        ("ETHUSDT", -3.0, 50.0, 0.15),    # short 3 @ 50 (another key, its own cost)
        ("ETHUSDT", 1.0, 40.0, 0.04),     # closes 1 short: 1 x (40 - 50) x -1 = +10, a win
        ("BTCUSDT", 2.0, 125.0, 0.25),    # closes the short 2: 2 x 5 x -1 = -10, a loss; flat
        ("BTCUSDT", 1.0, 90.0, 0.09),     # reopens long 1 @ 90 (not the old costs)
        ("BTCUSDT", -1.0, 95.0, 0.095),   # closes 1: +5, a win
        ("ETHUSDT", 2.0, 50.0, 0.1),      # closes 2 short at cost: 0, not a win
    ]
    m = compute_metrics(equity([100.0]), fills(rows), cash=100.0, mark_every_ns=DAY)
    assert m["fills"] == 10
    assert isclose(m["turnover"], 200 + 220 + 104 + 600 + 150 + 40 + 250 + 90 + 95 + 100,
                   rel_tol=1e-12)
    assert isclose(m["fees"], 0.2 + 0.22 + 0.104 + 0.6 + 0.15 + 0.04 + 0.25 + 0.09 + 0.095 + 0.1,
                   rel_tol=1e-12)
    assert m["win_rate"] == 3 / 6  # six closing fills, three with a positive realised PnL


def test_a_flip_that_ends_short_costs_the_new_side_at_the_flip_price():
    rows = [("BTCUSDT", 1.0, 100.0, 0.0),    # long 1 @ 100
            ("BTCUSDT", -3.0, 90.0, 0.0),    # closes 1 at a loss (-10); short 2 @ 90
            ("BTCUSDT", 1.0, 80.0, 0.0),     # closes 1 short: +10, a win (cost 90, not 100)
            ("BTCUSDT", 1.0, 95.0, 0.0)]     # closes the last: -5, a loss
    m = compute_metrics(equity([100.0]), fills(rows), cash=100.0, mark_every_ns=DAY)
    assert m["win_rate"] == 1 / 3


def test_undefined_metrics_are_none():
    one = compute_metrics(equity([100.0]), NO_FILLS, cash=100.0, mark_every_ns=DAY)
    assert (one["sharpe"], one["sortino"], one["win_rate"]) == (None, None, None)
    assert (one["pnl"], one["return"], one["max_drawdown"], one["exposure"]) == (0.0, 0.0, 0.0, 0.0)
    two = compute_metrics(equity([100.0, 90.0]), NO_FILLS, cash=100.0, mark_every_ns=DAY)
    assert (two["sharpe"], two["sortino"]) == (None, None)  # one return is no dispersion
    flat = compute_metrics(equity([100.0, 100.0, 100.0]), NO_FILLS, cash=100.0, mark_every_ns=DAY)
    assert (flat["sharpe"], flat["sortino"]) == (None, None)  # std 0, no downside
    steady = compute_metrics(equity([100.0, 200.0, 400.0]), NO_FILLS, cash=100.0,
                             mark_every_ns=DAY)
    assert steady["sharpe"] is None  # every return 1.0: std 0
    opened = compute_metrics(equity([100.0]), fills([("BTCUSDT", 1.0, 10.0, 0.01)]), cash=100.0,
                             mark_every_ns=DAY)
    assert opened["win_rate"] is None  # no closing fill
    broke = compute_metrics(equity([0.0, 0.0]), NO_FILLS, cash=0.0, mark_every_ns=DAY)
    assert (broke["return"], broke["max_drawdown"], broke["sharpe"]) == (None, None, None)


def test_metrics_are_plain_json_values():
    rows = [("BTCUSDT", 0.5, 100.0, 0.05), ("BTCUSDT", -0.5, 101.0, 0.0505)]
    m = compute_metrics(equity([100.0, 99.0, 100.4], [{}, {"BTCUSDT": 0.5}, {}]), fills(rows),
                        cash=100.0, mark_every_ns=DAY)
    assert all(type(m[k]) is float for k in KEYS if k != "fills") and type(m["fills"]) is int
    assert json.loads(json.dumps(m, allow_nan=False)) == m


def test_no_samples_is_a_caller_error():
    with pytest.raises(ValueError, match="at least one equity sample"):
        compute_metrics(equity([]), NO_FILLS, cash=100.0, mark_every_ns=DAY)


def test_a_run_with_undefined_metrics_ends_with_its_summary_not_a_traceback(tmp_path):
    """--cash 0 leaves return, drawdown and Sharpe undefined (None): the run still ends well
    (or is refused in one line), never with a traceback."""
    rec = tmp_path / "rec"
    with RecordingWriter(rec) as w:
        w.write("trade", make_trades(3, 2000, start=T0))
    run = subprocess.run([*qsf_cmd(), "backtest", SCHEDULED, "--recording", str(rec), "--out",
                          str(tmp_path / "out"), "--cash", "0", "-p", "every=5s", "-p", "hold=2s"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in run.stderr, run.stderr
    if run.returncode == 2:  # refused: one line
        assert run.stderr.startswith("qsf: error: ") and run.stderr.count("\n") == 1
    else:
        assert run.returncode == 0, run.stderr
        metrics = json.loads((tmp_path / "out" / "report.json").read_text())["metrics"]
        assert (metrics["return"], metrics["max_drawdown"], metrics["sharpe"]) == (None, None, None)


def test_exposure_counts_non_zero_positions_in_any_chunking():
    held = [{}, {"BTCUSDT": 0.0}, {"BTCUSDT": 1.0}, {"ETHUSDT": 0.0, "BTCUSDT": -2.0}, {}, {"X": 3.0}]
    table = equity([100.0] * 6, held)
    # the same samples as a slice and in several chunks: offsets into a shared values array
    sliced = pa.concat_tables([equity([100.0] * 2, [{"Y": 1.0}, {}]), table]).slice(2)
    chunked = pa.concat_tables([table.slice(0, 2), table.slice(2, 3), table.slice(5)])
    nulls = table.set_column(8, "positions", pa.array([None, *[list(p.items()) for p in held[1:]]],
                                                      POSITIONS))
    for t in (table, sliced, chunked, nulls):
        assert compute_metrics(t, NO_FILLS, cash=100.0, mark_every_ns=DAY)["exposure"] == 3 / 6
