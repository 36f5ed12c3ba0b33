"""BTC/ETH divergence: flag when the two legs' rolling log returns part by > threshold.

d(t) = ln(p_a(t)/p_a(t-W)) - ln(p_b(t)/p_b(t-W)) on every trade of either leg, with
hysteresis (fire above ``threshold``, re-arm below ``rearm * threshold``), plus a
``spread`` signal every ``sample`` of event time with the correlation of the legs'
``sample`` log returns over the window. Exact definitions: issue 2 and the README.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from math import exp, log, sqrt

import numpy as np
import pyarrow as pa

from qsframework import TRADE, Context, Duration, Strategy, TimerFires
from qsframework.strategies.spread_kernel import DIVERGENCE, spread_kernel
from qsframework.keycodes import encode_keys, string_buffers
from qsframework.strategy import attrs_json_column

_NONE = float("nan")


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


def _leave(ts: list[int], i: int, cut: int, w: int) -> tuple[int, int]:
    """Move past the trades at or before ``cut`` (their times ``ts``, from index ``i``).

    Returns the index of the first trade still inside the window and the event time after
    which that trade leaves (-1 when the leg has none yet: check on every event).
    """
    j, n = i, len(ts)
    while j < n and ts[j] <= cut:
        j += 1
    return j, (ts[j] + w - 1 if j < n else -1)


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
    rows = "tuple"  # on_trade gets (ts_event, key, price) as a plain tuple
    Params = SpreadParams

    def __init__(self, params: SpreadParams, ctx) -> None:
        super().__init__(params, ctx)
        self._a, self._b = params.a, params.b
        self._pair = f"{params.a}/{params.b}"
        self._w = int(params.window)
        self._s = int(params.sample)
        self._thr = params.threshold
        self._rearm_at = params.rearm * params.threshold
        # Per leg: its trades' times and prices (plain ints and floats: nothing for the
        # garbage collector to walk), oldest first; _ia/_ib index the first trade still
        # inside the window (ts_event > t - W), the ones before it have left (trimmed on
        # timer fires). NaN stands for "no price yet".
        self._ta: list[int] = []
        self._pa: list[float] = []
        self._tb: list[int] = []
        self._pb: list[float] = []
        self._ia = self._ib = 0
        self._la = self._lb = _NONE  # last prices
        self._lag_a = self._lag_b = _NONE  # prices of the last trades with ts_event <= t - W
        self._na = self._nb = self._next = -1  # event time after which a/b/either lag moves
        self._k = _NONE  # lag_b / lag_a
        # Fast path: d = ln(x) up to rounding (< 1e-15), x = (la/lb) * (lag_b/lag_a). x well
        # inside the threshold band means no divergence; well outside the re-arm band means
        # no re-arm. Only near a boundary (or while a lag is missing) is d computed exactly.
        margin = 1e-9
        self._fire_lo, self._fire_hi = exp(-self._thr + margin), exp(self._thr - margin)
        self._rearm_lo, self._rearm_hi = exp(-self._rearm_at - margin), exp(self._rearm_at + margin)
        self._legs = encode_keys((params.a, params.b))
        self._armed = True
        self._first = 0
        self._win = _Window(self._w // self._s)
        self._prev: tuple[float, float] | None = None  # last prices at grid point T - sample

    def prepare(self) -> None:
        """Load the compiled batch kernel (compiling it on first use) on a scratch copy."""
        scratch = type(self)(self.p, Context(strategy=self.name))
        ts = [0, self._w + 2 * self._s]
        batch = pa.RecordBatch.from_pydict(
            {"ts_event": ts, "key": [self._a, self._b], "price": [1.0, 1.0]},
            schema=TRADE.project(tuple(self.fields["trade"]))[0],
        )
        scratch.ctx.now = 0
        scratch.on_start()
        fires = TimerFires(["sample"], np.array([self._s], np.int64), np.array([1], np.int64))
        scratch.on_trade_batch(batch, fires)

    def keys(self) -> frozenset[str]:
        return frozenset({self._a, self._b})

    def on_start(self) -> None:
        self._first = now = self.ctx.now
        first = -(-now // self._s) * self._s  # first grid point at or after the first event
        self.ctx.every(self._s, "sample", first=first)

    # -- per-event path ----------------------------------------------------------
    def on_trade(self, t) -> None:
        ts, key, price = t  # the declared fields, in schema order: ts_event, key, price
        if key == self._a:
            self._ta.append(ts)
            self._pa.append(price)
            self._la = price
        elif key == self._b:
            self._tb.append(ts)
            self._pb.append(price)
            self._lb = price
        else:
            return
        if ts > self._next:
            self._advance(ts)
        x = self._la / self._lb * self._k
        if self._armed:
            if self._fire_lo < x < self._fire_hi:
                return
        elif not self._rearm_lo < x < self._rearm_hi:
            return
        self._check(ts)

    def on_timer(self, name: str, ts: int) -> None:
        if ts > self._next:
            self._advance(ts)
        if self._ia > 4096:
            del self._ta[: self._ia], self._pa[: self._ia]
            self._ia = 0
        if self._ib > 4096:
            del self._tb[: self._ib], self._pb[: self._ib]
            self._ib = 0
        self._sample(ts)

    def _advance(self, now: int) -> None:
        """Trades at or before ``now - W`` leave the window; the last to leave is the lag."""
        cut, w = now - self._w, self._w
        if now > self._na:
            i = self._ia
            j, self._na = _leave(self._ta, i, cut, w)
            if j > i:
                self._lag_a = self._pa[j - 1]
                self._ia = j
        if now > self._nb:
            i = self._ib
            j, self._nb = _leave(self._tb, i, cut, w)
            if j > i:
                self._lag_b = self._pb[j - 1]
                self._ib = j
        self._next = min(self._na, self._nb)
        self._k = self._lag_b / self._lag_a

    def _check(self, ts: int) -> None:
        """The exact rule: d from the two legs' log returns, with hysteresis."""
        if self._lag_a != self._lag_a or self._lag_b != self._lag_b:
            return
        d = log(self._la / self._lag_a) - log(self._lb / self._lag_b)
        if self._armed:
            if abs(d) > self._thr:
                self._diverged(ts, d)
        elif abs(d) < self._rearm_at:
            self._armed = True

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
        la, lb, prev = self._la, self._lb, self._prev
        if prev is not None and prev[0] == prev[0] and prev[1] == prev[1] and la == la and lb == lb:
            self._win.push(log(la / prev[0]), log(lb / prev[1]), 1)
        else:
            self._win.push(0.0, 0.0, 0)
        self._prev = (la, lb)
        if T <= self._first or self._lag_a != self._lag_a or self._lag_b != self._lag_b:
            return
        value = log(la / self._lag_a) - log(lb / self._lag_b)
        self.ctx.signal(self._pair, "spread", value, {"corr": self._win.corr()}, ts=T)

    # -- batch path ----------------------------------------------------------------
    def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> None:
        """The per-event algorithm compiled over a whole batch: same operations, same bits."""
        ts = batch.column("ts_event").to_numpy()
        price = batch.column("price").to_numpy()
        key_offsets, key_data, key_start, _ = string_buffers(batch.column("key"))
        win, prev = self._win, self._prev
        f = np.array([
            self._la, self._lb, self._lag_a, self._lag_b,
            win.sa, win.sb, win.saa, win.sbb, win.sab,
            _NONE if prev is None else prev[0], _NONE if prev is None else prev[1],
        ])
        i = np.array([
            0, 0, int(self._armed), 0, 0, win.valid, win.nza, win.nzb,
            int(prev is not None), len(win.ok),
        ], np.int64)
        ring = np.zeros((3, win.n))
        ring[0, : len(win.ok)] = list(win.ra)
        ring[1, : len(win.ok)] = list(win.rb)
        ring[2, : len(win.ok)] = list(win.ok)
        out_kind = np.empty(len(ts) + len(fires), np.int8)
        out_ts = np.empty(len(ts) + len(fires), np.int64)
        out_val = np.empty(len(ts) + len(fires))
        out_corr = np.empty(len(ts) + len(fires))
        n_out, a_ts, a_px, b_ts, b_px = spread_kernel(
            ts, price, key_offsets, key_data, key_start, *self._legs,
            np.array(self._ta[self._ia :], np.int64), np.array(self._pa[self._ia :], np.float64),
            np.array(self._tb[self._ib :], np.int64), np.array(self._pb[self._ib :], np.float64),
            fires.times, fires.pos, f, i, ring,
            self._w, self._thr, self._rearm_at, self._first, out_kind, out_ts, out_val, out_corr,
        )
        self._emit(out_kind[:n_out], out_ts[:n_out], out_val[:n_out], out_corr[:n_out])
        # write the state back where the per-event path keeps it (after _emit, which
        # disarms on each divergence as the per-event path does)
        self._la, self._lb, self._lag_a, self._lag_b = (float(x) for x in f[0:4])
        w = self._w
        self._ta, self._pa = a_ts[i[3] :].tolist(), a_px[i[3] :].tolist()
        self._tb, self._pb = b_ts[i[4] :].tolist(), b_px[i[4] :].tolist()
        self._ia = self._ib = 0
        self._na = self._ta[0] + w - 1 if self._ta else -1
        self._nb = self._tb[0] + w - 1 if self._tb else -1
        self._next = min(self._na, self._nb)
        self._k = self._lag_b / self._lag_a
        self._armed = bool(i[2])
        win.sa, win.sb, win.saa, win.sbb, win.sab = (float(x) for x in f[4:9])
        win.valid, win.nza, win.nzb = int(i[5]), int(i[6]), int(i[7])
        if i[8]:
            self._prev = (float(f[9]), float(f[10]))
        h = int(i[9])
        win.ra = deque(ring[0, :h].tolist(), maxlen=win.n)
        win.rb = deque(ring[1, :h].tolist(), maxlen=win.n)
        win.ok = deque(ring[2, :h].astype(np.int64).tolist(), maxlen=win.n)

    def _emit(self, kind: np.ndarray, ts: np.ndarray, val: np.ndarray, corr: np.ndarray) -> None:
        """Emit the kernel's records in order: runs of spreads in bulk, divergences one by one."""
        if not len(kind):
            return
        starts = np.flatnonzero(np.diff(kind, prepend=-1))
        ends = [*starts[1:].tolist(), len(kind)]
        for lo, hi in zip(starts.tolist(), ends):
            if kind[lo] == DIVERGENCE:
                for k in range(lo, hi):
                    self._diverged(int(ts[k]), float(val[k]))
            else:
                self.ctx.signals(
                    self._pair, "spread", ts[lo:hi], val[lo:hi],
                    attrs_text=attrs_json_column("corr", corr[lo:hi].tolist()),
                )
