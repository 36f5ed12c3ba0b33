"""BTC/ETH divergence: flag when the two legs' rolling log returns part by > threshold.

d(t) = ln(p_a(t)/p_a(t-W)) - ln(p_b(t)/p_b(t-W)) on every trade of either leg, with
hysteresis (fire above ``threshold``, re-arm below ``rearm * threshold``), plus a
``spread`` signal every ``sample`` of event time with the correlation of the legs'
``sample`` log returns over the window. Exact definitions: issue 2 and the README.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from math import log, sqrt
from operator import mul

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qsframework import Duration, Strategy, TimerFires


@dataclass(frozen=True, kw_only=True)
class SpreadParams:
    a: str = "BTCUSDT"
    b: str = "ETHUSDT"
    window: Duration = Duration("60s")
    threshold: float = 0.005
    rearm: float = 0.5
    sample: Duration = Duration("1s")

    def check(self) -> None:
        if self.a == self.b:
            raise ValueError("a and b must be different symbols")
        if self.window <= 0 or self.sample <= 0:
            raise ValueError("window and sample must be positive")
        if self.window % self.sample:
            raise ValueError("window must be a whole multiple of sample")
        if not self.threshold > 0:
            raise ValueError("threshold must be positive")
        if not 0 <= self.rearm <= 1:
            raise ValueError("rearm must be between 0 and 1")


class _Leg:
    """One symbol: last price, and the trades of the last window for the lagged price."""

    __slots__ = ("last", "lag", "lag_ts", "ts", "px")

    def __init__(self) -> None:
        self.last: float | None = None
        self.lag: float | None = None  # price of the last trade with ts_event <= cut
        self.lag_ts = 0
        self.ts: deque[int] = deque()  # trades with ts_event > cut, oldest first
        self.px: deque[float] = deque()

    def advance(self, cut: int) -> None:
        ts, px = self.ts, self.px
        while ts and ts[0] <= cut:
            self.lag_ts = ts.popleft()
            self.lag = px.popleft()

    def arrays(self, ts: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Carried trades (lag first) followed by this batch's: (ts, prices, carried count)."""
        head_ts = ([self.lag_ts] if self.lag is not None else []) + list(self.ts)
        head_px = ([self.lag] if self.lag is not None else []) + list(self.px)
        return (
            np.concatenate([np.array(head_ts, np.int64), ts]),
            np.concatenate([np.array(head_px, np.float64), px]),
            len(head_ts),
        )

    def keep(self, ext_ts: np.ndarray, ext_px: np.ndarray, cut: int) -> None:
        """Carry the state of a batch's end: lag at ``cut`` and the trades after it."""
        if len(ext_ts) == 0:
            return
        j = int(np.searchsorted(ext_ts, cut, side="right")) - 1
        self.last = float(ext_px[-1])
        if j >= 0:
            self.lag, self.lag_ts = float(ext_px[j]), int(ext_ts[j])
        self.ts = deque(ext_ts[j + 1 :].tolist())
        self.px = deque(ext_px[j + 1 :].tolist())


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson correlation of two equal-length series; None when a variance is 0."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    dx = [x - mx for x in xs]
    dy = [y - my for y in ys]
    sxx, syy = sum(map(mul, dx, dx)), sum(map(mul, dy, dy))
    if sxx == 0 or syy == 0:
        return None
    return max(-1.0, min(1.0, sum(map(mul, dx, dy)) / sqrt(sxx * syy)))


class BtcEthSpread(Strategy):
    """Divergence between two symbols' rolling returns, with a sampled spread signal."""

    kinds = ("trade",)
    Params = SpreadParams

    def __init__(self, params: SpreadParams, ctx) -> None:
        super().__init__(params, ctx)
        self._a, self._b = params.a, params.b
        self._pair = f"{params.a}/{params.b}"
        self._w = int(params.window)
        self._s = int(params.sample)
        self._thr = params.threshold
        self._rearm_at = params.rearm * params.threshold
        self._A, self._B = _Leg(), _Leg()
        self._armed = True
        self._first = 0
        n = self._w // self._s
        self._grid: deque[tuple[int, float | None, float | None]] = deque(maxlen=n + 1)
        self._ra: deque[float | None] = deque(maxlen=n)
        self._rb: deque[float | None] = deque(maxlen=n)

    def keys(self) -> frozenset[str]:
        return frozenset({self._a, self._b})

    def on_start(self) -> None:
        self._first = now = self.ctx.now
        first = -(-now // self._s) * self._s  # first grid point at or after the first event
        self.ctx.every(self._s, "sample", first=first)

    # -- per-event path ----------------------------------------------------------
    def on_trade(self, t) -> None:
        key = t.key
        if key == self._a:
            leg = self._A
        elif key == self._b:
            leg = self._B
        else:
            return
        ts, price = t.ts_event, t.price
        cut = ts - self._w
        A, B = self._A, self._B
        if A.ts and A.ts[0] <= cut:
            A.advance(cut)
        if B.ts and B.ts[0] <= cut:
            B.advance(cut)
        leg.last = price
        leg.ts.append(ts)
        leg.px.append(price)
        if A.lag is None or B.lag is None:
            return
        d = log(A.last / A.lag) - log(B.last / B.lag)
        if self._armed:
            if abs(d) > self._thr:
                self._diverged(ts, d)
        elif abs(d) < self._rearm_at:
            self._armed = True

    def on_timer(self, name: str, ts: int) -> None:
        cut = ts - self._w
        self._A.advance(cut)
        self._B.advance(cut)
        self._sample(ts)

    # -- shared by both paths ----------------------------------------------------
    def _diverged(self, ts: int, d: float) -> None:
        self._armed = False
        p, ctx = self.p, self.ctx
        ctx.signal(self._pair, "divergence", d, {"direction": 1 if d > 0 else -1}, ts=ts)
        ctx.alert(
            self._pair,
            "divergence",
            f"{p.a} vs {p.b}: {p.window} return spread {d:+.3%} (threshold {p.threshold:.3%})",
            severity="warning",
            dedup_key=f"{self.name}:{self._pair}:divergence:{ts}",
            ts=ts,
        )

    def _sample(self, T: int) -> None:
        """Grid point T: remember the as-of prices, emit the spread once it is defined."""
        A, B = self._A, self._B
        grid = self._grid
        if grid:
            _, pa_prev, pb_prev = grid[-1]
            self._ra.append(log(A.last / pa_prev) if pa_prev is not None and A.last is not None else None)
            self._rb.append(log(B.last / pb_prev) if pb_prev is not None and B.last is not None else None)
        grid.append((T, A.last, B.last))
        if T <= self._first or A.lag is None or B.lag is None:
            return
        corr = None
        ra, rb = self._ra, self._rb
        if grid[0][0] == T - self._w and len(ra) == ra.maxlen and None not in ra and None not in rb:
            corr = pearson(list(ra), list(rb))
        value = log(A.last / A.lag) - log(B.last / B.lag)
        self.ctx.signal(self._pair, "spread", value, {"corr": corr}, ts=T)

    # -- batch path ----------------------------------------------------------------
    def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> None:
        ts = batch.column("ts_event").to_numpy()
        keys = batch.column("key")
        price = batch.column("price").to_numpy()
        is_a = pc.equal(keys, self._a).to_numpy(zero_copy_only=False)
        is_b = pc.equal(keys, self._b).to_numpy(zero_copy_only=False)
        A, B, w = self._A, self._B, self._w
        a_ts, a_px, a_n = A.arrays(ts[is_a], price[is_a])
        b_ts, b_px, b_n = B.arrays(ts[is_b], price[is_b])
        # index (into the leg arrays) of each leg's last trade at or before every row
        a_last = a_n - 1 + np.cumsum(is_a)
        b_last = b_n - 1 + np.cumsum(is_b)

        rows = np.flatnonzero(is_a | is_b)
        cut = ts[rows] - w
        a_lag = np.searchsorted(a_ts, cut, side="right") - 1
        b_lag = np.searchsorted(b_ts, cut, side="right") - 1
        ok = (a_lag >= 0) & (b_lag >= 0)
        rows, a_lag, b_lag = rows[ok], a_lag[ok], b_lag[ok]
        pa_, pb_ = a_px[a_last[rows]], b_px[b_last[rows]]
        la, lb = a_px[a_lag], b_px[b_lag]
        d = np.log(pa_ / la) - np.log(pb_ / lb)
        ad = np.abs(d)
        # a last-bit difference between numpy's log and math.log must not flip a decision
        near = np.flatnonzero(
            (np.abs(ad - self._thr) <= 1e-12) | (np.abs(ad - self._rearm_at) <= 1e-12)
        )
        for i in near.tolist():
            ad[i] = abs(log(float(pa_[i]) / float(la[i])) - log(float(pb_[i]) / float(lb[i])))
        above = np.flatnonzero(ad > self._thr)
        below = np.flatnonzero(ad < self._rearm_at)

        events: list[tuple[int, int, int]] = []  # (row position, order, index)
        i, armed = 0, self._armed
        while True:
            seq = above if armed else below
            k = int(np.searchsorted(seq, i))
            if k == len(seq):
                break
            i = int(seq[k])
            if armed:
                events.append((int(rows[i]), 1, i))
            armed = not armed
            i += 1
        events.extend((int(p), 0, f) for f, p in enumerate(fires.pos.tolist()))
        events.sort()

        # replay emissions in per-event order; the arming state is already known
        for pos, what, i in events:
            if what == 1:
                d_i = log(float(pa_[i]) / float(la[i])) - log(float(pb_[i]) / float(lb[i]))
                self._diverged(int(ts[rows[i]]), d_i)
            else:
                T = int(fires.times[i])
                A.last = float(a_px[a_last[pos - 1]]) if pos and a_last[pos - 1] >= 0 else (
                    float(a_px[a_n - 1]) if a_n else None
                )
                B.last = float(b_px[b_last[pos - 1]]) if pos and b_last[pos - 1] >= 0 else (
                    float(b_px[b_n - 1]) if b_n else None
                )
                j = int(np.searchsorted(a_ts, T - w, side="right")) - 1
                A.lag = float(a_px[j]) if j >= 0 else None
                j = int(np.searchsorted(b_ts, T - w, side="right")) - 1
                B.lag = float(b_px[j]) if j >= 0 else None
                self._sample(T)
        self._armed = armed
        end_cut = int(ts[-1]) - w
        A.keep(a_ts, a_px, end_cut)
        B.keep(b_ts, b_px, end_cut)
