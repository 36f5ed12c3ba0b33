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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qsframework import Duration, Strategy, TimerFires
from qsframework.strategy import attrs_json_column


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


class _Window:
    """Running sums of the last ``n`` sample returns of both legs, for their correlation.

    Each push adds the new return and subtracts the one leaving the window, in a fixed
    order, so the batch path (cumulative sums) reproduces the per-event path bit for bit.
    """

    __slots__ = ("n", "ra", "rb", "ok", "sa", "sb", "saa", "sbb", "sab", "valid", "nza", "nzb")

    def __init__(self, n: int) -> None:
        self.n = n
        self.ra: deque[float] = deque(maxlen=n)
        self.rb: deque[float] = deque(maxlen=n)
        self.ok: deque[int] = deque(maxlen=n)  # 1 when both returns exist at that step
        self.sa = self.sb = self.saa = self.sbb = self.sab = 0.0
        self.valid = self.nza = self.nzb = 0

    def push(self, ra: float, rb: float, ok: int) -> None:
        if len(self.ok) == self.n:
            ra_o, rb_o, ok_o = self.ra[0], self.rb[0], self.ok[0]
        else:
            ra_o = rb_o = 0.0
            ok_o = 0
        self.sa += ra - ra_o
        self.sb += rb - rb_o
        self.saa += ra * ra - ra_o * ra_o
        self.sbb += rb * rb - rb_o * rb_o
        self.sab += ra * rb - ra_o * rb_o
        self.valid += ok - ok_o
        self.nza += (ra != 0.0) - (ra_o != 0.0)
        self.nzb += (rb != 0.0) - (rb_o != 0.0)
        self.ra.append(ra)
        self.rb.append(rb)
        self.ok.append(ok)

    def corr(self) -> float | None:
        """Pearson correlation over a full window; None if incomplete or a variance is 0."""
        n = self.n
        if self.valid < n or not self.nza or not self.nzb:
            return None
        sa, sb = self.sa, self.sb
        va = self.saa - sa * sa / n
        vb = self.sbb - sb * sb / n
        if va <= 0.0 or vb <= 0.0:
            return None
        return max(-1.0, min(1.0, (self.sab - sa * sb / n) / sqrt(va * vb)))


class BtcEthSpread(Strategy):
    """Divergence between two symbols' rolling returns, with a sampled spread signal."""

    kinds = ("trade",)
    fields = {"trade": ("key", "price")}
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
        self._legs = pa.array([params.a, params.b], pa.string())
        self._armed = True
        self._first = 0
        self._win = _Window(self._w // self._s)
        self._prev: tuple[float | None, float | None] | None = None  # grid prices at T - sample

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
        """Grid point T: push the sample returns, emit the spread once it is defined."""
        A, B = self._A, self._B
        prev = self._prev
        if prev is not None and None not in prev and A.last is not None and B.last is not None:
            self._win.push(log(A.last / prev[0]), log(B.last / prev[1]), 1)
        else:
            self._win.push(0.0, 0.0, 0)
        self._prev = (A.last, B.last)
        if T <= self._first or A.lag is None or B.lag is None:
            return
        value = log(A.last / A.lag) - log(B.last / B.lag)
        self.ctx.signal(self._pair, "spread", value, {"corr": self._win.corr()}, ts=T)

    # -- batch path ----------------------------------------------------------------
    def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> None:
        ts = batch.column("ts_event").to_numpy()
        price = batch.column("price").to_numpy()
        leg = pc.index_in(batch.column("key"), value_set=self._legs).fill_null(-1).to_numpy()
        # one timeline: the trades carried from earlier batches, then this batch's rows
        c_ts, c_px, c_leg = self._carried()
        nc = len(c_ts)
        L_ts = np.concatenate([c_ts, ts])
        L_px = np.concatenate([c_px, price])
        L_leg = np.concatenate([c_leg, leg])
        pos = np.arange(len(L_ts))
        # position of each leg's last trade at or before every position (-1: none yet)
        fa = np.maximum.accumulate(np.where(L_leg == 0, pos, -1))
        fb = np.maximum.accumulate(np.where(L_leg == 1, pos, -1))
        w = self._w

        rows = np.flatnonzero(leg >= 0) + nc
        q = np.searchsorted(L_ts, L_ts[rows] - w, side="right") - 1  # last position <= t - W
        qa = np.where(q >= 0, fa[q], -1)
        qb = np.where(q >= 0, fb[q], -1)
        ok = (qa >= 0) & (qb >= 0)
        rows, qa, qb = rows[ok], qa[ok], qb[ok]
        pa_, pb_ = L_px[fa[rows]], L_px[fb[rows]]
        la, lb = L_px[qa], L_px[qb]
        ad = np.abs(np.log(pa_ / la) - np.log(pb_ / lb))
        # a last-bit difference between numpy's log and math.log must not flip a decision
        near = np.flatnonzero(
            (np.abs(ad - self._thr) <= 1e-12) | (np.abs(ad - self._rearm_at) <= 1e-12)
        )
        for i in near.tolist():
            ad[i] = abs(log(float(pa_[i]) / float(la[i])) - log(float(pb_[i]) / float(lb[i])))
        above = np.flatnonzero(ad > self._thr)
        below = np.flatnonzero(ad < self._rearm_at)

        divs: list[int] = []  # indices into rows where the strategy fires
        i, armed = 0, self._armed
        while True:
            seq = above if armed else below
            k = int(np.searchsorted(seq, i))
            if k == len(seq):
                break
            i = int(seq[k])
            if armed:
                divs.append(i)
            armed = not armed
            i += 1
        spread = self._sample_batch(fires, nc, L_ts, L_px, fa, fb)

        # emit in per-event order: a fire at position p runs before row p
        done = 0
        fire_pos = spread[0]
        for i in divs:
            row = int(rows[i]) - nc
            upto = int(np.searchsorted(fire_pos, row, side="right"))
            self._emit_spreads(spread, done, upto)
            done = upto
            d_i = log(float(pa_[i]) / float(la[i])) - log(float(pb_[i]) / float(lb[i]))
            self._diverged(int(ts[row]), d_i)
        self._emit_spreads(spread, done, len(fire_pos))
        self._armed = armed
        self._carry(L_ts, L_px, L_leg, fa, fb, int(ts[-1]) - w)

    def _carried(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both legs' carried trades (lag entry, then the window) merged in time order."""
        parts_ts, parts_px, parts_leg = [], [], []
        for code, leg in ((0, self._A), (1, self._B)):
            head_ts = ([leg.lag_ts] if leg.lag is not None else []) + list(leg.ts)
            head_px = ([leg.lag] if leg.lag is not None else []) + list(leg.px)
            parts_ts.append(np.array(head_ts, np.int64))
            parts_px.append(np.array(head_px, np.float64))
            parts_leg.append(np.full(len(head_ts), code, np.int64))
        c_ts = np.concatenate(parts_ts)
        order = np.argsort(c_ts, kind="stable")
        return c_ts[order], np.concatenate(parts_px)[order], np.concatenate(parts_leg)[order]

    def _carry(self, L_ts, L_px, L_leg, fa, fb, cut: int) -> None:
        """Keep what later batches need: per leg, the lag trade at ``cut`` and those after it."""
        q = int(np.searchsorted(L_ts, cut, side="right")) - 1
        for code, leg, f in ((0, self._A, fa), (1, self._B, fb)):
            if f[-1] < 0:
                continue  # no trade of this leg yet
            leg.last = float(L_px[f[-1]])
            lag_pos = int(f[q]) if q >= 0 else -1
            if lag_pos >= 0:
                leg.lag, leg.lag_ts = float(L_px[lag_pos]), int(L_ts[lag_pos])
            after = np.flatnonzero(L_leg[q + 1 :] == code) + q + 1
            leg.ts = deque(L_ts[after].tolist())
            leg.px = deque(L_px[after].tolist())

    def _emit_spreads(self, spread, lo: int, hi: int) -> None:
        _, times, values, attrs = spread
        if hi > lo:
            self.ctx.signals(self._pair, "spread", times[lo:hi], values[lo:hi], attrs_text=attrs[lo:hi])

    def _sample_batch(self, fires: TimerFires, nc: int, L_ts, L_px, fa, fb):
        """Every sample fire of the batch at once; the same arithmetic as ``_sample``."""
        N = len(fires)
        if N == 0:
            return np.empty(0, np.int64), [], [], []
        T, w = fires.times, self._w
        at = fires.pos + nc - 1  # timeline position of the last row at or before T
        ia = np.where(at >= 0, fa[np.maximum(at, 0)], -1)
        ib = np.where(at >= 0, fb[np.maximum(at, 0)], -1)
        has_a, has_b = ia >= 0, ib >= 0
        pA = np.where(has_a, L_px[np.maximum(ia, 0)], np.nan)
        pB = np.where(has_b, L_px[np.maximum(ib, 0)], np.nan)
        # returns between consecutive grid points
        prev = self._prev
        first_ok = prev is not None and None not in prev
        pA0 = np.concatenate([[prev[0] if first_ok else np.nan], pA[:-1]])
        pB0 = np.concatenate([[prev[1] if first_ok else np.nan], pB[:-1]])
        ok = has_a & has_b & ~np.isnan(pA0) & ~np.isnan(pB0)
        ra, rb = np.zeros(N), np.zeros(N)
        idx = np.flatnonzero(ok)
        ra[idx] = list(map(log, (pA[idx] / pA0[idx]).tolist()))
        rb[idx] = list(map(log, (pB[idx] / pB0[idx]).tolist()))
        okr = ok.astype(np.int64)
        # the window's running sums, as _Window.push would update them one by one
        win, n = self._win, self._win.n
        h = len(win.ok)
        c_ra = np.concatenate([np.array(win.ra, np.float64), ra])
        c_rb = np.concatenate([np.array(win.rb, np.float64), rb])
        c_ok = np.concatenate([np.array(win.ok, np.int64), okr])
        old = np.arange(N) + h - n
        has_old = old >= 0
        oi = np.maximum(old, 0)
        ra_o = np.where(has_old, c_ra[oi], 0.0)
        rb_o = np.where(has_old, c_rb[oi], 0.0)
        ok_o = np.where(has_old, c_ok[oi], 0)

        def run(s0: float, d: np.ndarray) -> np.ndarray:
            return np.cumsum(np.concatenate([[s0], d]))[1:]

        sa = run(win.sa, ra - ra_o)
        sb = run(win.sb, rb - rb_o)
        saa = run(win.saa, ra * ra - ra_o * ra_o)
        sbb = run(win.sbb, rb * rb - rb_o * rb_o)
        sab = run(win.sab, ra * rb - ra_o * rb_o)
        valid = win.valid + np.cumsum(okr - ok_o)
        nza = win.nza + np.cumsum((ra != 0.0).astype(np.int64) - (ra_o != 0.0))
        nzb = win.nzb + np.cumsum((rb != 0.0).astype(np.int64) - (rb_o != 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            va = saa - sa * sa / n
            vb = sbb - sb * sb / n
            good = (valid >= n) & (nza > 0) & (nzb > 0) & (va > 0.0) & (vb > 0.0)
            corr = np.minimum(1.0, np.maximum(-1.0, (sab - sa * sb / n) / np.sqrt(va * vb)))
        # carry the window and the last grid prices
        win.ra = deque(c_ra[-n:].tolist(), maxlen=n)
        win.rb = deque(c_rb[-n:].tolist(), maxlen=n)
        win.ok = deque(c_ok[-n:].tolist(), maxlen=n)
        win.sa, win.sb, win.saa, win.sbb, win.sab = (
            float(sa[-1]), float(sb[-1]), float(saa[-1]), float(sbb[-1]), float(sab[-1])
        )
        win.valid, win.nza, win.nzb = int(valid[-1]), int(nza[-1]), int(nzb[-1])
        self._prev = (
            float(pA[-1]) if has_a[-1] else None,
            float(pB[-1]) if has_b[-1] else None,
        )
        # spread values where both lags exist and the grid point is after the first event
        qT = np.searchsorted(L_ts, T - w, side="right") - 1
        ja = np.where(qT >= 0, fa[np.maximum(qT, 0)], -1)
        jb = np.where(qT >= 0, fb[np.maximum(qT, 0)], -1)
        sel = np.flatnonzero((ja >= 0) & (jb >= 0) & (T > self._first))
        qa = (pA[sel] / L_px[ja[sel]]).tolist()
        qb = (pB[sel] / L_px[jb[sel]]).tolist()
        values = [log(x) - log(y) for x, y in zip(qa, qb)]
        attrs = attrs_json_column("corr", np.where(good, corr, np.nan)[sel].tolist())
        return fires.pos[sel], T[sel].tolist(), values, attrs
