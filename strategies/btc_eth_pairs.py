"""BTC/ETH pairs trading on the spread strategy's divergence: bet that the legs converge.

On a ``divergence`` of :class:`~qsframework.strategies.btc_eth_spread.BtcEthSpread` (same
window, threshold and hysteresis) with direction +1 (``a``, BTC, outperformed over the
window) it sells ``notional`` of ``a`` and buys the same notional of ``b`` at market; with -1
the reverse. It flattens both legs when the spread re-arms (|d| < rearm x threshold) or once
``max_hold`` has passed, whichever comes first; one position at a time. Each leg's quantity is
``notional`` over that leg's last trade price at the divergence.
"""

from __future__ import annotations

from dataclasses import dataclass

from qsframework.strategies.btc_eth_spread import BtcEthSpread, SpreadParams

from qsframework import Context, Duration

HOLD = "max_hold"  # the one-shot timer that ends a position held too long


@dataclass(frozen=True, kw_only=True)
class PairsParams(SpreadParams):
    notional: float = 10_000.0  # quote currency (USDT) per leg
    max_hold: Duration = Duration("30m")

    def check(self) -> None:
        super().check()
        if not self.notional > 0:
            raise ValueError("notional must be positive")
        if self.max_hold <= 0:
            raise ValueError("max_hold must be positive")


class BtcEthPairs(BtcEthSpread):
    """Short the leg that ran ahead, long the one that lagged; out when the spread closes."""

    Params = PairsParams
    #: orders are placed per event (the spread's batch kernel emits a batch's divergences
    #: only after the whole batch), so this strategy runs on the per-event path
    on_trade_batch = None

    def __init__(self, params: PairsParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        #: the quantities of the legs held (or on their way), (a, b); None when flat
        self.legs: tuple[float, float] | None = None

    def on_trade(self, t: tuple[int, str, float]) -> None:
        super().on_trade(t)  # the spread's rule; a divergence opens a position (diverged)
        if self.legs is not None and self.s.armed:  # the spread re-armed: it has closed
            self.ctx.cancel(HOLD)
            self.flatten()

    def on_timer(self, name: str, ts: int) -> None:
        if name == HOLD:
            self.flatten()
        else:
            super().on_timer(name, ts)

    def diverged(self, ts: int, d: float) -> None:
        super().diverged(ts, d)  # the divergence signal and alert
        if self.legs is not None:
            return
        p, s, ctx = self.p, self.s, self.ctx
        direction = 1.0 if d > 0 else -1.0
        self.legs = (-direction * p.notional / s.last_a, direction * p.notional / s.last_b)
        ctx.order(p.a, self.legs[0], tag="open")
        ctx.order(p.b, self.legs[1], tag="open")
        ctx.at(ts + int(p.max_hold), HOLD)

    def flatten(self) -> None:
        """Close both legs at market: the opposite of what was opened, so that legs still on
        their way to a fill net out too."""
        if self.legs is None:
            return
        qa, qb = self.legs
        self.ctx.order(self.p.a, -qa, tag="close")
        self.ctx.order(self.p.b, -qb, tag="close")
        self.legs = None
