"""A strategy whose batch handler orders, for the per-event/batch parity tests.

:class:`Stepper` counts trades and signals every 5th; a periodic ``tick`` timer signals the
count so far. At the first trade (after ``after`` trades) whose price in cents is a multiple
of ``every`` (a data-dependent row) it places a market buy and a limit sell of that key;
with ``from_timer`` a one-shot timer places a market order first. Once trading, the
per-event handlers go on ordering: every 97th trade, on ``tick`` (flatten), on fills (a
limit unwind), and cancel the resting limit after 50 more trades.

``on_trade_batch`` does the same over a batch: it stops at the row that orders, or at every
``pause``-th trade (returning the rows handled without ordering: the engine goes on with
the rest on the batch path), emitting in the per-event order the row signals and the tick
fires placed before that row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from qsframework import Context, Strategy, TimerFires

SECOND = 1_000_000_000


@dataclass(frozen=True, kw_only=True)
class StepParams:
    after: int = 30
    every: int = 7  # order on a trade whose price in cents is a multiple of this
    pause: int = 0  # the batch handler also stops every this many trades (0: never)
    tick_ms: int = 700
    from_timer: bool = False
    limit_bps: float = 5.0


class Stepper(Strategy):
    kinds = ("trade",)
    fields = {"trade": ("key", "price")}
    Params = StepParams

    def __init__(self, params: StepParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.count = 0
        self.ordered = False
        self.resting: int | None = None
        self.rest_until = 0
        #: rows handed back by the batch handler: (rows handled, rows given, ordered)
        self.returns: list[tuple[int, int, bool]] = []

    def on_start(self) -> None:
        tick = self.p.tick_ms * 1_000_000
        self.ctx.every(tick, "tick", first=-(-self.ctx.now // tick) * tick)
        if self.p.from_timer:
            self.ctx.at(self.ctx.now + 3 * SECOND, "buy")

    # -- per event -------------------------------------------------------------------
    def triggers(self, count: int, price: float) -> bool:
        return not self.ordered and count >= self.p.after and round(price * 100) % self.p.every == 0

    def on_trade(self, t) -> None:
        self.count += 1
        ctx = self.ctx
        if self.count % 5 == 0:
            ctx.signal(t.key, "n", float(self.count))
        if self.triggers(self.count, t.price):
            self.open(t.key, t.price, t.ts_event)
        elif self.ordered:
            self.trade(t)

    def open(self, key: str, price: float, ts: int) -> None:
        """The first position: a market buy and a resting limit sell above the price."""
        self.ordered = True
        self.ctx.order(key, 0.2, tag="open", at=ts)
        limit = price * (1 + self.p.limit_bps / 10_000)
        self.resting = self.ctx.order(key, -0.1, price=limit, tag="limit", at=ts)
        self.rest_until = self.count + 50

    def trade(self, t) -> None:
        ctx = self.ctx
        if self.count % 97 == 0:
            ctx.order(t.key, 0.05 if ctx.position(t.key) <= 0 else -0.05, tag="97")
        if self.resting is not None and self.count >= self.rest_until:
            ctx.cancel(self.resting)
            self.resting = None

    def on_timer(self, name: str, ts: int) -> None:
        ctx = self.ctx
        if name == "buy":
            ctx.order("ETHUSDT", 0.3, tag="timer")
            return
        ctx.signal("tick", "tick", float(self.count), ts=ts)
        if ctx.sim.trading and (ts // (self.p.tick_ms * 1_000_000)) % 4 == 0:
            for key in ("BTCUSDT", "ETHUSDT"):
                if ctx.position(key):
                    ctx.order(key, -ctx.position(key), tag="flatten")

    def on_fill(self, fill) -> None:
        self.ctx.signal(fill.key, "fill", fill.qty, {"cash": self.ctx.cash, "equity": self.ctx.equity})
        if fill.liquidity == "maker":
            self.ctx.order(fill.key, -fill.qty / 2, price=fill.price * 0.999, tag="unwind")

    def on_order(self, order) -> None:
        self.ctx.signal(order.key, "order", float(order.order_id), {"status": order.status})

    # -- per batch -------------------------------------------------------------------
    def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> int | None:
        ts = batch.column("ts_event").to_numpy()
        price = batch.column("price").to_numpy()
        keys = batch.column("key").to_pylist()
        n = len(ts)
        counts = self.count + np.arange(1, n + 1)
        stop = np.zeros(n, bool)
        if not self.ordered:
            stop |= (counts >= self.p.after) & (np.round(price * 100).astype(np.int64) % self.p.every == 0)
        if self.p.pause:
            stop |= counts % self.p.pause == 0
        hits = np.flatnonzero(stop)
        end = int(hits[0]) + 1 if len(hits) else n
        # in the per-event order: the fires placed before row r (pos <= r), then row r
        events = [(2 * p, int(t)) for p, t in zip(fires.pos.tolist(), fires.times.tolist())
                  if p <= end - 1]
        events += [(2 * r + 1, r) for r in range(end) if counts[r] % 5 == 0]
        for place, x in sorted(events):
            if place % 2 == 0:  # a tick after place // 2 rows
                self.ctx.signal("tick", "tick", float(self.count + place // 2), ts=x)
            else:
                self.ctx.signal(keys[x], "n", float(counts[x]), ts=int(ts[x]))
        self.count += end
        ordered = bool(len(hits)) and self.triggers(int(counts[end - 1]), float(price[end - 1]))
        if ordered:
            self.open(keys[end - 1], float(price[end - 1]), int(ts[end - 1]))
        self.returns.append((end, n, ordered))
        return None if end == n and not ordered else end


class EventOnly(Stepper):
    """The same strategy without a batch handler (the reference runs)."""

    name = "stepper"  # the same outputs' source and strategy columns

    on_trade_batch = None  # type: ignore[assignment]


class BatchOnly(Stepper):
    """Its batch handler orders, but it has no per-event handler to go on with."""

    on_trade = None  # type: ignore[assignment]
