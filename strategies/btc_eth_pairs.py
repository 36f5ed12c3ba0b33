"""BTC/ETH pairs trading on the spread strategy's divergence: bet that the legs converge.

On a ``divergence`` of :class:`~qsframework.strategies.btc_eth_spread.BtcEthSpread` (same
window, threshold and hysteresis) with direction +1 (``a``, BTC, outperformed over the
window) it sells ``notional`` of ``a`` and buys the same notional of ``b`` at market; with -1
the reverse. It flattens both legs when the spread re-arms (|d| < rearm x threshold) or once
``max_hold`` has passed, whichever comes first; one position at a time. Each leg's quantity is
``notional`` over that leg's last trade price at the divergence.

Its batch path is the spread's batch kernel up to the first divergence (which opens the
first position); from the first order on the engine runs it per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from qsframework.strategies.accel.spread_kernel import DIVERGENCE, spread_kernel
from qsframework.strategies.btc_eth_spread import BtcEthSpread, SpreadParams

from qsframework import Context, Duration, TimerFires

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

    def __init__(self, params: PairsParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        #: the quantities of the legs held (or on their way), (a, b); None when flat
        self.legs: tuple[float, float] | None = None

    def on_trade(self, t: tuple[int, str, float]) -> None:
        super().on_trade(t)  # the spread's rule; a divergence opens a position (diverged)
        if self.legs is not None and self.s.armed:  # the spread re-armed: it has closed
            self.ctx.cancel(HOLD)
            self.flatten()

    def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> int | None:
        """The spread's kernel over the batch; at its first divergence (it opens a position:
        the batch path runs only until the first order) stop on that row: the rows before
        its time again on the kernel, those at its time per event up to the diverging one,
        whose ``diverged`` places the orders. Returns the rows handled (None: all)."""
        args, (kind, out_ts, value, corr) = self._kernel_args(batch, fires)
        n_out, state = spread_kernel(*args)  # leaves self.s as it was: applied below
        hits = np.flatnonzero(kind[:n_out] == DIVERGENCE)
        if not len(hits):
            self._emit(kind[:n_out], out_ts[:n_out], value[:n_out], corr[:n_out])
            self._load(state)
            return None
        ts = batch.column("ts_event").to_numpy()
        t = out_ts[hits[0]]
        lo, hi = int(np.searchsorted(ts, t, "left")), int(np.searchsorted(ts, t, "right"))
        early = int(np.searchsorted(fires.pos, lo, "right"))  # the fires before row lo
        if lo:
            super().on_trade_batch(batch.slice(0, lo), TimerFires(
                fires.names[:early], fires.times[:early], fires.pos[:early]))
        else:
            for name, when in zip(fires.names[:early], fires.times[:early].tolist()):
                self.on_timer(name, when)
        keys = batch.column("key").slice(lo, hi - lo).to_pylist()
        prices = batch.column("price").to_numpy()
        for r in range(lo, hi):  # no fires between rows of one time
            self.on_trade((int(ts[r]), keys[r - lo], float(prices[r])))
            if not self.s.armed:
                return r + 1
        raise RuntimeError(f"the spread's kernel and core disagree on the divergence at {t}")

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
        ctx.order(p.a, self.legs[0], tag="open", at=ts)
        ctx.order(p.b, self.legs[1], tag="open", at=ts)
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
