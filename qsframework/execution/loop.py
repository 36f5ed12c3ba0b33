"""The engine's per-event loop once a strategy has ordered: trades matched against its
orders, fills booked and handed to ``on_fill``, equity sampled on the grid.

Per trade event ``e`` of key ``k``: the grid samples before ``e``; the timers due before
``e``; the cancels effective at or before ``e``; ``e`` matched against ``k``'s active orders
(submitted before ``e``); ``e``'s handler (it still sees the position before those fills);
the pending ``on_order`` calls; then per fill: booked, its row, ``on_fill``, and the order's
status row and ``on_order`` when it completed. Other kinds skip the matching.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..columns import event_chunks, pylists
from ..durations import format_time
from ..errors import StrategyError
from .records import Fill

if TYPE_CHECKING:
    from ..engine import Engine

class Switch(Exception):
    """Raised by the engine's timer check at the first order: the rest of the batch, from the
    current event on, goes to :func:`run_trading`. ``after_handler``: the order came from the
    previous event's handler (not from a timer due before the current event)."""

    def __init__(self, after_handler: bool) -> None:
        super().__init__()
        self.after_handler = after_handler


def deliver_notices(engine: Engine) -> None:
    """Call ``on_order`` for every status change not delivered yet, in order."""
    notices = engine.sim.notices
    on_order = engine.strategy.on_order
    while notices:
        order = notices.pop(0)
        try:
            on_order(order)
        except Exception as exc:
            what = f"order {order.order_id} {order.status} at {format_time(order.ts_event)}"
            raise engine._failed("on_order", exc, what) from exc


def _settle(engine: Engine, ts: int, key: str, fills: list) -> None:
    """Book ``fills`` of the trade at ``ts``: rows, ``on_fill`` and the completed orders."""
    sim, on_fill = engine.sim, engine.strategy.on_fill
    for match in fills:
        sim.book_fill(ts, key, match)
        order, qty, price, fee, liquidity, _, complete = match
        try:
            on_fill(Fill(ts, key, order.id, qty, price, fee, liquidity))
        except Exception as exc:
            what = f"fill of order {order.id} at {format_time(ts)} (ts_event {ts})"
            raise engine._failed("on_fill", exc, what) from exc
        if complete:
            sim.order_done(ts, match)
        deliver_notices(engine)


def _arrive(engine: Engine, ts: int) -> None:
    """An event at ``ts`` arrives: the grid samples before it, then the timers due before it."""
    if ts > engine.sim.sample_due:
        engine.sim.sample_before(ts)
    if ts > engine.ctx.timers.due:
        engine._fire_before(ts)
    engine.ctx.now = ts


def run_trading(engine: Engine, kind: str, row: type, batch: pa.RecordBatch, full: pa.RecordBatch,
                handler: Any) -> None:
    """Run ``batch`` (the strategy's columns; ``full`` also has key, price and qty) per event
    with execution."""
    engine.settle_switch()
    if handler is None:
        name = type(engine.strategy).__name__
        raise StrategyError(f"{name} places orders, which needs per-event handlers: it has no on_{kind}")
    ctx, sim = engine.ctx, engine.sim
    timers, fire = ctx.timers, engine._fire_before
    books, marks, notices = sim.books, sim.portfolio.marks, sim.notices
    market = [pylists(full.column(name)) for name in ("key", "price", "qty")] if kind == "trade" else None
    event = None
    try:
        for lo, hi, events in event_chunks(batch, row, named=engine.strategy.rows == "named"):
            if market is None:  # not a trade: nothing to match
                for event in events:
                    _arrive(engine, event[0])
                    handler(event)
                    if notices:
                        deliver_notices(engine)
                continue
            keys, prices, qtys = (values(lo, hi) for values in market)
            for event, key, price, qty in zip(events, keys, prices, qtys):
                ts = event[0]  # as _arrive, and the cancels after the timers: the hot path
                if ts > sim.due:  # a sample or a cancel is due
                    if ts > sim.sample_due:
                        sim.sample_before(ts)
                    if ts > timers.due:
                        fire(ts)
                    if ts >= sim.cancel_due:
                        sim.apply_cancels(ts)
                elif ts > timers.due:
                    fire(ts)
                    if ts >= sim.cancel_due:  # a timer's cancel, effective already
                        sim.apply_cancels(ts)
                ctx.now = ts
                marks[key] = price
                if key in books:  # the key has open orders
                    fills = sim.match(books[key], ts, price, qty)
                    handler(event)
                    if notices:
                        deliver_notices(engine)
                    if fills:
                        _settle(engine, ts, key, fills)
                else:
                    handler(event)
                    if notices:
                        deliver_notices(engine)
    except Exception as exc:  # the loop stopped in a handler, on `event`
        engine._handler_failed(exc, kind, batch, event)
