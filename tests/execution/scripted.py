"""Tiny hand-built recordings and a strategy that follows a script, for the fill-rule tests.

A script maps a trade's ``seq`` to what the strategy does in that trade's handler:
``("buy"|"sell", key, qty[, limit])`` places an order, ``("cancel", order_id)`` cancels one.
The strategy reports what it saw as signals: ``pos`` (the position its handler saw),
``fill`` (the position ``on_fill`` saw) and ``order`` (each ``on_order`` status).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from qsframework import ExecutionConfig, Strategy
from qsframework.backtest import run_backtest
from qsframework.events import TRADE
from qsframework.recording import Recording, RecordingWriter

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, a multiple of every grid used here
MS = 1_000_000
FILL_COLUMNS = ["ts_event", "key", "order_id", "qty", "price", "fee", "liquidity"]


def write_recording(root: Path, trades: list[tuple[int, str, float, float]]) -> Recording:
    """A recording of ``trades`` given as ``(ts_event, key, price, qty)``; seq = 1, 2, ..."""
    n = len(trades)
    ts = [t[0] for t in trades]
    table = pa.table({
        "ts_event": ts, "ts_recv": ts, "source": ["test"] * n, "key": [t[1] for t in trades],
        "seq": list(range(1, n + 1)), "price": [t[2] for t in trades], "qty": [t[3] for t in trades],
        "is_buyer_maker": [False] * n,
    }, schema=TRADE.schema)
    with RecordingWriter(root) as writer:
        writer.write("trade", table)
    return Recording(root)


def act(strategy: Strategy, action: tuple) -> None:
    ctx = strategy.ctx
    if action[0] == "cancel":
        ctx.cancel(action[1])
    else:
        side, key, qty, *limit = action
        ctx.order(key, qty if side == "buy" else -qty, price=limit[0] if limit else None, tag=side)


def scripted(script: dict[int, list[tuple]], *, timers: dict[int, list[tuple]] | None = None,
             on_fill: dict[int, list[tuple]] | None = None) -> type[Strategy]:
    """A strategy acting per ``script`` (by trade seq), ``timers`` (by due time: set in
    on_start, acting in on_timer) and ``on_fill`` (by order id: acting when it fills)."""
    timers, on_fill_script = timers or {}, on_fill or {}

    class Scripted(Strategy):
        def on_start(self) -> None:
            for when in timers:
                self.ctx.at(when, str(when))

        def on_timer(self, name: str, ts: int) -> None:
            for action in timers[int(name)]:
                act(self, action)

        def on_trade(self, t: Any) -> None:
            self.ctx.signal(t.key, "pos", self.ctx.position(t.key))
            for action in script.get(t.seq, ()):
                act(self, action)

        def on_fill(self, fill: Any) -> None:
            self.ctx.signal(fill.key, "fill", self.ctx.position(fill.key))
            for action in on_fill_script.pop(fill.order_id, ()):
                act(self, action)

        def on_order(self, order: Any) -> None:
            self.ctx.signal(order.key, "order", order.order_id, {"status": order.status})

    return Scripted


def run(tmp_path: Path, trades: list[tuple[int, str, float, float]], strategy: type[Strategy],
        **settings: Any) -> dict[str, pa.Table]:
    """Back-test ``strategy`` over ``trades`` with the execution ``settings``; the tables."""
    recording = write_recording(tmp_path / "rec", trades)
    result = run_backtest(strategy, recording, execution=ExecutionConfig(**settings))
    return result.tables


def fills(tables: dict[str, pa.Table]) -> list[tuple]:
    return [tuple(r.values()) for r in tables["fills"].select(FILL_COLUMNS).to_pylist()]


def statuses(tables: dict[str, pa.Table]) -> list[tuple]:
    """(ts_event, order_id, status, filled) of every order row."""
    rows = tables["orders"].select(["ts_event", "order_id", "status", "filled"]).to_pylist()
    return [tuple(r.values()) for r in rows]
