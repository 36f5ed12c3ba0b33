"""Strategies that trade on a fixed schedule, for the independent checks of the simulator.

:class:`Scheduled` buys ``qty`` every ``every`` of event time (on the grid of multiples of
``every``), rotating over ``keys``, and sells the same quantity ``hold`` later; with
``limit_bps`` > 0 both are limit orders ``limit_bps`` through the key's last price (a buy
below, a sell above), cancelled ``cancel_after`` after they were placed when that is set.
Its orders depend only on the schedule and the trades, never on a fill, so a test can
recompute them (and every fill) from the recording alone. Timer times never coincide as
long as 0 < cancel_after < hold < every.
"""

from __future__ import annotations

from dataclasses import dataclass

from qsframework import Context, Duration, Strategy


@dataclass(frozen=True, kw_only=True)
class ScheduleParams:
    keys: str = "BTCUSDT,ETHUSDT"
    every: Duration = Duration("10m")
    hold: Duration = Duration("3m")
    qty: float = 0.5
    limit_bps: float = 0.0  # 0: market orders
    cancel_after: Duration | None = None  # limit orders only


def limit_price(last: float, qty: float, bps: float) -> float:
    """A buy ``bps`` below the last price, a sell ``bps`` above it."""
    return last * (1.0 - bps / 10_000.0) if qty > 0 else last * (1.0 + bps / 10_000.0)


class Scheduled(Strategy):
    """Buys on a grid and sells ``hold`` later, at market or with limit orders."""

    kinds = ("trade",)
    fields = {"trade": ("key", "price")}
    Params = ScheduleParams

    def __init__(self, params: ScheduleParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.symbols = params.keys.split(",")
        self.last: dict[str, float] = {}
        self.buys = 0

    def on_start(self) -> None:
        every = int(self.p.every)
        self.ctx.every(every, "buy", first=-(-self.ctx.now // every) * every)

    def on_trade(self, t) -> None:
        self.last[t.key] = t.price

    def on_timer(self, name: str, ts: int) -> None:
        what, _, arg = name.partition(":")
        if what == "buy":
            key = self.symbols[self.buys % len(self.symbols)]
            self.buys += 1
            if self.place(key, self.p.qty):
                self.ctx.at(ts + int(self.p.hold), f"sell:{key}")
        elif what == "sell":
            self.place(arg, -self.p.qty)
        elif what == "cancel":
            self.ctx.cancel(int(arg))

    def place(self, key: str, qty: float) -> bool:
        """Market, or limit when ``limit_bps`` is set (only once the key has a price)."""
        p = self.p
        if not p.limit_bps:
            self.ctx.order(key, qty, tag="scheduled")
            return True
        if key not in self.last:
            return False
        order_id = self.ctx.order(key, qty, price=limit_price(self.last[key], qty, p.limit_bps),
                                  tag="scheduled")
        if p.cancel_after is not None:
            self.ctx.at(self.ctx.now + int(p.cancel_after), f"cancel:{order_id}")
        return True
