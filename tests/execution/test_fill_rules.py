"""Each fill rule of issue 12 on a tiny hand-built recording; every expected fill, fee, cash
and equity value is worked out here by plain arithmetic on the trades."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from qsframework import ExecutionConfig
from qsframework.backtest import run_backtest

from .scripted import MS, T0, fills, run, scripted, statuses, write_recording

FEE = 10.0  # the default taker and maker fee, bps


def fee(qty: float, price: float, bps: float = FEE) -> float:
    return abs(qty) * price * bps / 10_000


@pytest.mark.parametrize("latency_ms", [0, 50])
def test_a_market_order_fills_at_the_first_trade_at_or_after_submit_plus_latency(tmp_path, latency_ms):
    lat = latency_ms * MS
    trades = [
        (T0, "BTCUSDT", 100.0, 1.0),              # seq 1: the order is placed here
        (T0, "BTCUSDT", 100.5, 1.0),              # seq 2: same time, after the submitting event
        (T0 + lat - 1, "ETHUSDT", 10.0, 1.0),     # seq 3: another key
        (T0 + lat - 1, "BTCUSDT", 101.0, 1.0),    # seq 4: one ns before it is active
        (T0 + lat, "BTCUSDT", 102.0, 1.0),        # seq 5: exactly active
        (T0 + lat + 7, "BTCUSDT", 103.0, 1.0),
    ]
    if latency_ms == 0:  # seq 3 and 4 would come before the order: drop them
        trades = [trades[0], trades[1], trades[4], trades[5]]
    tables = run(tmp_path, trades, scripted({1: [("buy", "BTCUSDT", 2.0)]}), latency_ns=lat)
    first = 100.5 if latency_ms == 0 else 102.0
    at = T0 if latency_ms == 0 else T0 + lat
    assert fills(tables) == [(at, "BTCUSDT", 0, 2.0, first, fee(2.0, first), "taker")]
    assert statuses(tables) == [(T0, 0, "accepted", 0.0), (at, 0, "filled", 2.0)]


def test_slippage_moves_the_price_against_the_taker_and_cash_pays_fees(tmp_path):
    trades = [(T0, "BTCUSDT", 100.0, 1.0), (T0 + MS, "BTCUSDT", 200.0, 1.0),
              (T0 + 2 * MS, "BTCUSDT", 300.0, 1.0), (T0 + 3 * MS, "BTCUSDT", 250.0, 1.0)]
    script = {1: [("buy", "BTCUSDT", 1.5)], 2: [("sell", "BTCUSDT", 0.5)]}
    tables = run(tmp_path, trades, scripted(script), slippage_bps=25.0, taker_fee_bps=7.5,
                 mark_every_ns=1_000 * MS)
    buy = 200.0 * (1 + 25.0 / 10_000)
    sell = 300.0 * (1 - 25.0 / 10_000)
    assert buy > 200.0 and sell < 300.0
    assert fills(tables) == [
        (T0 + MS, "BTCUSDT", 0, 1.5, buy, fee(1.5, buy, 7.5), "taker"),
        (T0 + 2 * MS, "BTCUSDT", 1, -0.5, sell, fee(0.5, sell, 7.5), "taker"),
    ]
    cash = 100_000.0 - (1.5 * buy + fee(1.5, buy, 7.5))
    cash = cash + (0.5 * sell - fee(0.5, sell, 7.5))
    last = tables["equity"].to_pylist()[-1]
    assert (last["ts_event"], last["cash"], last["equity"]) == (T0 + 3 * MS, cash, cash + 1.0 * 250.0)
    assert last["positions"] == [("BTCUSDT", 1.0)]


def test_a_limit_order_fills_at_its_price_only_on_a_trade_strictly_through_it(tmp_path):
    trades = [
        (T0, "BTCUSDT", 101.0, 1.0),           # seq 1: buy limit 100, sell limit 105
        (T0 + 1 * MS, "BTCUSDT", 100.0, 1.0),  # at the buy limit: no fill
        (T0 + 2 * MS, "BTCUSDT", 105.0, 1.0),  # at the sell limit: no fill
        (T0 + 3 * MS, "BTCUSDT", 99.5, 1.0),   # through the buy limit
        (T0 + 4 * MS, "BTCUSDT", 98.0, 1.0),   # the buy is filled already
        (T0 + 5 * MS, "BTCUSDT", 105.25, 1.0),  # through the sell limit
    ]
    script = {1: [("buy", "BTCUSDT", 2.0, 100.0), ("sell", "BTCUSDT", 3.0, 105.0)]}
    tables = run(tmp_path, trades, scripted(script), maker_fee_bps=2.0, taker_fee_bps=50.0)
    assert fills(tables) == [
        (T0 + 3 * MS, "BTCUSDT", 0, 2.0, 100.0, fee(2.0, 100.0, 2.0), "maker"),
        (T0 + 5 * MS, "BTCUSDT", 1, -3.0, 105.0, fee(3.0, 105.0, 2.0), "maker"),
    ]
    orders = tables["orders"].to_pylist()
    assert [(o["order_id"], o["price"], o["status"]) for o in orders] == [
        (0, 100.0, "accepted"), (1, 105.0, "accepted"), (0, 100.0, "filled"), (1, 105.0, "filled")]


@pytest.mark.parametrize("through_at, filled", [(-1, True), (0, False), (1, False)])
def test_a_cancel_takes_effect_at_cancel_time_plus_latency(tmp_path, through_at, filled):
    lat = 10 * MS
    effective = T0 + MS + lat
    trades = [
        (T0, "BTCUSDT", 101.0, 1.0),                          # seq 1: buy limit 100
        (T0 + MS, "BTCUSDT", 101.0, 1.0),                     # seq 2: cancel it
        (effective + through_at, "BTCUSDT", 99.0, 1.0),       # seq 3: through the limit
        (effective + 20 * MS, "BTCUSDT", 98.0, 1.0),
    ]
    script = {1: [("buy", "BTCUSDT", 1.0, 100.0)], 2: [("cancel", 0)]}
    tables = run(tmp_path, trades, scripted(script), latency_ns=lat)
    if filled:
        assert fills(tables) == [(effective - 1, "BTCUSDT", 0, 1.0, 100.0, fee(1.0, 100.0), "maker")]
        assert statuses(tables) == [(T0, 0, "accepted", 0.0), (effective - 1, 0, "filled", 1.0)]
    else:
        assert fills(tables) == []
        assert statuses(tables) == [(T0, 0, "accepted", 0.0), (effective, 0, "cancelled", 0.0)]


def test_max_participation_shares_each_trade_between_orders_in_id_order(tmp_path):
    trades = [
        (T0, "BTCUSDT", 100.0, 1.0),           # seq 1: buy 1.5 (id 0), sell... buy 1.0 (id 1)
        (T0 + 1 * MS, "BTCUSDT", 101.0, 2.0),  # budget 0.5 x 2 = 1.0: all to order 0
        (T0 + 2 * MS, "BTCUSDT", 102.0, 4.0),  # budget 2.0: 0.5 to order 0, 1.0 to order 1
        (T0 + 3 * MS, "BTCUSDT", 103.0, 8.0),
    ]
    script = {1: [("buy", "BTCUSDT", 1.5), ("sell", "BTCUSDT", 1.0)]}
    tables = run(tmp_path, trades, scripted(script), max_participation=0.5)
    assert fills(tables) == [
        (T0 + MS, "BTCUSDT", 0, 1.0, 101.0, fee(1.0, 101.0), "taker"),
        (T0 + 2 * MS, "BTCUSDT", 0, 0.5, 102.0, fee(0.5, 102.0), "taker"),
        (T0 + 2 * MS, "BTCUSDT", 1, -1.0, 102.0, fee(1.0, 102.0), "taker"),
    ]
    assert statuses(tables) == [(T0, 0, "accepted", 0.0), (T0, 1, "accepted", 0.0),
                                (T0 + 2 * MS, 0, "filled", 1.5), (T0 + 2 * MS, 1, "filled", -1.0)]


def test_a_partly_filled_order_cancelled_keeps_what_filled(tmp_path):
    trades = [(T0, "BTCUSDT", 100.0, 1.0), (T0 + MS, "BTCUSDT", 100.0, 1.0),
              (T0 + 2 * MS, "BTCUSDT", 100.0, 1.0), (T0 + 3 * MS, "BTCUSDT", 100.0, 1.0)]
    script = {1: [("sell", "BTCUSDT", 3.0)], 2: [("cancel", 0)]}
    tables = run(tmp_path, trades, scripted(script), max_participation=0.25)
    assert fills(tables) == [(T0 + MS, "BTCUSDT", 0, -0.25, 100.0, fee(0.25, 100.0), "taker")]
    # the cancel at T0+1ms (latency 0) is applied at the next trade, dated when it took effect
    assert statuses(tables) == [(T0, 0, "accepted", 0.0), (T0 + MS, 0, "cancelled", -0.25)]


def test_orders_from_on_timer_and_on_fill(tmp_path):
    lat = 2 * MS
    trades = [(T0 + i * MS, "BTCUSDT", 100.0 + i, 1.0) for i in (0, 5, 6, 7, 8, 9, 10)]
    # the timer due at T0+5ms fires before the trade at T0+6ms (time moved past it): the buy is
    # submitted at T0+5ms, active at T0+7ms; its fill places a sell at T0+7ms, active at T0+9ms
    strategy = scripted({}, timers={T0 + 5 * MS: [("buy", "BTCUSDT", 1.0)]},
                        on_fill={0: [("sell", "BTCUSDT", 1.0)]})
    tables = run(tmp_path, trades, strategy, latency_ns=lat)
    assert fills(tables) == [
        (T0 + 7 * MS, "BTCUSDT", 0, 1.0, 107.0, fee(1.0, 107.0), "taker"),
        (T0 + 9 * MS, "BTCUSDT", 1, -1.0, 109.0, fee(1.0, 109.0), "taker"),
    ]
    # the fill's on_fill places the sell before its order's "filled" row follows
    assert statuses(tables) == [(T0 + 5 * MS, 0, "accepted", 0.0), (T0 + 7 * MS, 1, "accepted", 0.0),
                                (T0 + 7 * MS, 0, "filled", 1.0), (T0 + 9 * MS, 1, "filled", -1.0)]


def test_an_order_from_on_fill_fills_on_the_next_trade_even_at_the_same_time(tmp_path):
    trades = [(T0, "BTCUSDT", 100.0, 1.0), (T0 + MS, "BTCUSDT", 101.0, 1.0),
              (T0 + MS, "BTCUSDT", 102.0, 1.0)]
    strategy = scripted({1: [("buy", "BTCUSDT", 1.0)]}, on_fill={0: [("sell", "BTCUSDT", 1.0)]})
    tables = run(tmp_path, trades, strategy)
    assert [(f[0], f[2], f[4]) for f in fills(tables)] == [(T0 + MS, 0, 101.0), (T0 + MS, 1, 102.0)]


def test_the_handler_sees_the_position_before_its_trade_fills_and_on_fill_after(tmp_path):
    trades = [(T0, "BTCUSDT", 100.0, 1.0), (T0 + MS, "BTCUSDT", 100.0, 1.0),
              (T0 + 2 * MS, "BTCUSDT", 100.0, 1.0)]
    tables = run(tmp_path, trades, scripted({1: [("buy", "BTCUSDT", 2.0)]}))
    positions = [(s["ts_event"], s["value"]) for s in tables["signals"].to_pylist() if s["name"] != "order"]
    assert positions == [(T0, 0.0), (T0 + MS, 0.0), (T0 + MS, 2.0), (T0 + 2 * MS, 2.0)]
    orders = [(s["ts_event"], s["attrs"]) for s in tables["signals"].to_pylist() if s["name"] == "order"]
    assert orders == [(T0, '{"status":"accepted"}'), (T0 + MS, '{"status":"filled"}')]


def test_equity_is_sampled_on_the_grid_from_the_first_grid_time_and_at_the_last_event(tmp_path):
    trades = [(T0 + 3 * MS, "BTCUSDT", 100.0, 1.0), (T0 + 8 * MS, "ETHUSDT", 10.0, 1.0),
              (T0 + 10 * MS, "BTCUSDT", 100.0, 1.0),  # the buy fills here, at a grid time
              (T0 + 15 * MS, "BTCUSDT", 110.0, 1.0), (T0 + 31 * MS, "BTCUSDT", 90.0, 1.0),
              (T0 + 34 * MS, "ETHUSDT", 11.0, 1.0)]
    # the first order comes late (seq 2): the grid before it is filled in with the initial cash
    tables = run(tmp_path, trades, scripted({2: [("buy", "BTCUSDT", 1.0)]}), mark_every_ns=10 * MS)
    cash = 100_000.0 - (1.0 * 100.0 + fee(1.0, 100.0))
    rows = [(r["ts_event"], r["cash"], r["equity"], r["positions"]) for r in tables["equity"].to_pylist()]
    assert rows == [
        (T0 + 10 * MS, cash, cash + 100.0, [("BTCUSDT", 1.0)]),  # includes the fill at T0+10ms
        (T0 + 20 * MS, cash, cash + 110.0, [("BTCUSDT", 1.0)]),
        (T0 + 30 * MS, cash, cash + 110.0, [("BTCUSDT", 1.0)]),
        (T0 + 34 * MS, cash, cash + 90.0, [("BTCUSDT", 1.0)]),  # the last event, off the grid
    ]
    late = run(tmp_path / "late", trades, scripted({5: [("sell", "ETHUSDT", 1.0)]}), mark_every_ns=10 * MS)
    cash = 100_000.0 + (1.0 * 11.0 - fee(1.0, 11.0))
    rows = [(r["ts_event"], r["cash"], r["equity"]) for r in late["equity"].to_pylist()]
    assert rows == [(T0 + 10 * MS, 100_000.0, 100_000.0), (T0 + 20 * MS, 100_000.0, 100_000.0),
                    (T0 + 30 * MS, 100_000.0, 100_000.0), (T0 + 34 * MS, cash, cash - 11.0)]
    equity_seq = late["equity"].column("seq").to_pylist()
    assert equity_seq == sorted(equity_seq)


def test_a_long_quiet_span_is_sampled_on_every_grid_time(tmp_path):
    """200,000 samples of one state between two trades (built in bulk, written out in chunks)
    and a few single ones around them: every grid time once, in order, with the right state."""
    us = 1_000
    trades = [(T0, "BTCUSDT", 100.0, 1.0), (T0 + 3 * us, "BTCUSDT", 101.0, 1.0),
              (T0 + 200_000 * us + 500, "BTCUSDT", 50.0, 1.0), (T0 + 200_003 * us, "BTCUSDT", 60.0, 1.0)]
    out = tmp_path / "out"
    recording = write_recording(tmp_path / "rec", trades)
    strategy = scripted({1: [("buy", "BTCUSDT", 2.0)]})
    result = run_backtest(strategy, recording, out=out, flush_rows=1_000,
                          execution=ExecutionConfig(mark_every_ns=us))
    equity = pq.read_table(out / "equity.parquet")
    cash = 100_000.0 - (2.0 * 101.0 + fee(2.0, 101.0))
    times = equity.column("ts_event").to_pylist()
    assert times == [T0 + i * us for i in range(200_004)]  # the last trade is on the grid
    assert equity.column("seq").to_pylist() == sorted(equity.column("seq").to_pylist())
    rows = equity.select(["cash", "equity", "positions"]).to_pylist()
    assert rows[:3] == [{"cash": 100_000.0, "equity": 100_000.0, "positions": []}] * 3
    assert rows[3] == rows[200_000] == {"cash": cash, "equity": cash + 2.0 * 101.0,
                                        "positions": [("BTCUSDT", 2.0)]}
    assert rows[200_001] == rows[200_002] == {"cash": cash, "equity": cash + 2.0 * 50.0,
                                              "positions": [("BTCUSDT", 2.0)]}
    assert rows[200_003]["equity"] == cash + 2.0 * 60.0
    assert result.report["outputs"]["equity"] == 200_004


@pytest.mark.parametrize("latency_ms, filled", [(0, False), (2, True)])
def test_a_cancel_from_on_timer_applies_before_the_trade_after_the_timer(tmp_path, latency_ms, filled):
    # the timer due at T0+5ms fires before the trade at T0+6ms: with no latency its cancel is
    # effective at T0+5ms and that trade no longer fills the limit; with 2ms it still does
    lat = latency_ms * MS
    # (no equity sample is due in between: the first grid time is T0+1s)
    trades = [(T0 + MS, "BTCUSDT", 101.0, 1.0), (T0 + 6 * MS, "BTCUSDT", 99.0, 1.0),
              (T0 + 9 * MS, "BTCUSDT", 98.0, 1.0)]
    strategy = scripted({1: [("buy", "BTCUSDT", 1.0, 100.0)]}, timers={T0 + 5 * MS: [("cancel", 0)]})
    tables = run(tmp_path, trades, strategy, latency_ns=lat)
    if filled:
        assert fills(tables) == [(T0 + 6 * MS, "BTCUSDT", 0, 1.0, 100.0, fee(1.0, 100.0), "maker")]
        assert statuses(tables) == [(T0 + MS, 0, "accepted", 0.0), (T0 + 6 * MS, 0, "filled", 1.0)]
    else:
        assert fills(tables) == []
        assert statuses(tables) == [(T0 + MS, 0, "accepted", 0.0), (T0 + 5 * MS, 0, "cancelled", 0.0)]
