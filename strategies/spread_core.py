"""Core of strategies/btc_eth_spread.py: the legs' windows, the divergence rule, the grid.

Plain typed Python that mypyc compiles to a C extension when the package is installed on
a machine with a C compiler (see setup.py); Python then imports the compiled module in
place of this file, about 3x faster per event. Without a compiler this file runs as it is,
with the same results: both do the same IEEE double operations and call the C library's
``log``, so the per-event path, the compiled core and the batch kernel agree bit for bit.

Keep this module free of imports from the rest of the package, so it compiles alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from math import exp, log, sqrt
from typing import Any

NAN = float("nan")


def _leave(ts: list[Any], j: int, cut: int) -> int:
    """Index of the first trade after ``cut``, searching ``ts`` from index ``j``."""
    n = len(ts)
    while j < n:
        t: int = ts[j]
        if t > cut:
            break
        j += 1
    return j


def _leaves_at(ts: list[Any], j: int, w: int) -> int:
    """Event time after which trade ``j`` leaves the window (-1 if there is none yet:
    check on every event)."""
    if j < len(ts):
        t: int = ts[j]
        return t + w - 1
    return -1

class Window:
    """Running sums of the last ``n`` sample returns of both legs, for their correlation.

    Each push adds the new return and subtracts the one leaving the window, in a fixed
    order, so the batch path (cumulative sums) reproduces the per-event path bit for bit.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.ra: deque[float] = deque(maxlen=n)
        self.rb: deque[float] = deque(maxlen=n)
        self.ok: deque[int] = deque(maxlen=n)  # 1 when both returns exist at that step
        self.sa = 0.0
        self.sb = 0.0
        self.saa = 0.0
        self.sbb = 0.0
        self.sab = 0.0
        self.valid = 0
        self.nza = 0
        self.nzb = 0

    def push(self, ra: float, rb: float, ok: int) -> None:
        ra_o = rb_o = 0.0
        ok_o = 0
        if len(self.ok) == self.n:
            ra_o, rb_o, ok_o = self.ra[0], self.rb[0], self.ok[0]
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

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self.ra, self.rb, self.ok, self.sa, self.sb, self.saa, self.sbb, self.sab,
                 self.valid, self.nza, self.nzb)
        return (Window, (self.n,), state)

    def __setstate__(self, s: tuple[Any, ...]) -> None:
        (self.ra, self.rb, self.ok, self.sa, self.sb, self.saa, self.sbb, self.sab,
         self.valid, self.nza, self.nzb) = s


class SpreadCore:
    """Both legs' recent trades, their lagged prices and the armed/disarmed hysteresis.

    Per leg: its trades' times and prices, oldest first; ``ia``/``ib`` index the first
    trade still inside the window (``ts_event > t - W``), the ones before it have left
    (``trim`` drops them). ``lag_*`` is the price of the last trade to leave, NaN for
    "none yet"; ``na``/``nb`` the event time after which a leg's lag moves next (-1: on
    every event), ``next`` the earlier of the two, ``k = lag_b / lag_a``.
    """

    def __init__(
        self,
        a: str,
        b: str,
        window: int,
        samples: int,
        threshold: float,
        rearm_at: float,
        diverged: Callable[[int, float], None] | None = None,
    ) -> None:
        self.a = a
        self.b = b
        self.w = window
        self.samples = samples
        self.thr = threshold
        self.rearm_at = rearm_at
        self.diverged = diverged
        # trade times and prices, as the int and float objects the events brought (kept
        # as they are: no new objects per trade)
        self.ta: list[Any] = []
        self.pa: list[Any] = []
        self.tb: list[Any] = []
        self.pb: list[Any] = []
        self.ia = 0
        self.ib = 0
        self.la = NAN
        self.lb = NAN
        self.lag_a = NAN
        self.lag_b = NAN
        self.na = -1
        self.nb = -1
        self.next = -1
        self.k = NAN
        self.armed = True
        self.first = 0  # time of the first event
        self.win = Window(samples)  # the last `samples` sample returns
        self.has_prev = False  # prices at the previous grid point (NaN: no trade yet)
        self.prev_a = NAN
        self.prev_b = NAN
        # Fast path: d = ln(x) up to rounding (< 1e-15), x = (la/lb) * (lag_b/lag_a). x well
        # inside the threshold band means no divergence; well outside the re-arm band means
        # no re-arm. Only near a boundary (or while a lag is missing) is d computed exactly.
        margin = 1e-9
        self.fire_lo = exp(-threshold + margin)
        self.fire_hi = exp(threshold - margin)
        self.rearm_lo = exp(-rearm_at - margin)
        self.rearm_hi = exp(rearm_at + margin)

    def on_trade(self, t: tuple[Any, str, Any]) -> None:
        """One trade (ts_event, key, price): the strategy's per-event handler."""
        ts_event, key, px = t
        ts: int = ts_event
        price: float = px
        if key == self.a:
            self.ta.append(ts_event)
            self.pa.append(px)
            self.la = price
        elif key == self.b:
            self.tb.append(ts_event)
            self.pb.append(px)
            self.lb = price
        else:
            return
        if ts > self.next:
            self.advance(ts)
        x = self.la / self.lb * self.k
        if self.armed:
            if self.fire_lo < x < self.fire_hi:
                return
        elif not self.rearm_lo < x < self.rearm_hi:
            return
        self.check(ts)

    def advance(self, now: int) -> None:
        """Trades at or before ``now - W`` leave the window; the last to leave is the lag."""
        cut = now - self.w
        if now > self.na:
            i = self.ia
            j = _leave(self.ta, i, cut)
            self.na = _leaves_at(self.ta, j, self.w)
            if j > i:
                self.lag_a = self.pa[j - 1]
                self.ia = j
        if now > self.nb:
            i = self.ib
            j = _leave(self.tb, i, cut)
            self.nb = _leaves_at(self.tb, j, self.w)
            if j > i:
                self.lag_b = self.pb[j - 1]
                self.ib = j
        self.next = self.na if self.na < self.nb else self.nb
        self.k = self.lag_b / self.lag_a

    def check(self, ts: int) -> None:
        """The exact rule: d from the two legs' log returns, with hysteresis."""
        if self.lag_a != self.lag_a or self.lag_b != self.lag_b:
            return
        d = log(self.la / self.lag_a) - log(self.lb / self.lag_b)
        if self.armed:
            if abs(d) > self.thr:
                self.armed = False
                if self.diverged is not None:
                    self.diverged(ts, d)
        elif abs(d) < self.rearm_at:
            self.armed = True

    def grid(self, T: int) -> float | None:
        """Grid point T (the sample timer): move the window to T, push the legs' sample
        returns, and return the spread at T once it is defined (None before)."""
        if T > self.next:
            self.advance(T)
        self.trim()
        la, lb, prev_a, prev_b = self.la, self.lb, self.prev_a, self.prev_b
        if self.has_prev and prev_a == prev_a and prev_b == prev_b and la == la and lb == lb:
            self.win.push(log(la / prev_a), log(lb / prev_b), 1)
        else:
            self.win.push(0.0, 0.0, 0)
        self.has_prev = True
        self.prev_a = la
        self.prev_b = lb
        if T <= self.first or self.lag_a != self.lag_a or self.lag_b != self.lag_b:
            return None
        return log(la / self.lag_a) - log(lb / self.lag_b)

    def trim(self, keep: int = 4096) -> None:
        """Drop trades that have left the window, once more than ``keep`` have piled up."""
        if self.ia > keep:
            del self.ta[: self.ia]
            del self.pa[: self.ia]
            self.ia = 0
        if self.ib > keep:
            del self.tb[: self.ib]
            del self.pb[: self.ib]
            self.ib = 0

    def load(self, ta: list[int], pa: list[float], tb: list[int], pb: list[float]) -> None:
        """Take the legs' trades still inside the window (the batch path hands them over)."""
        self.ta, self.pa, self.tb, self.pb = ta, pa, tb, pb
        self.ia = self.ib = 0
        self.na = _leaves_at(ta, 0, self.w)
        self.nb = _leaves_at(tb, 0, self.w)
        self.next = self.na if self.na < self.nb else self.nb
        self.k = self.lag_b / self.lag_a

    # pickling (engine snapshots): every attribute but the callback, which belongs to the
    # strategy and is attached again after a restore
    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.a, self.b, self.w, self.samples, self.thr, self.rearm_at)
        state = (
            self.ta, self.pa, self.tb, self.pb, self.ia, self.ib, self.la, self.lb,
            self.lag_a, self.lag_b, self.na, self.nb, self.next, self.k, self.armed,
            self.first, self.win, self.has_prev, self.prev_a, self.prev_b,
        )
        return (SpreadCore, args, state)

    def __setstate__(self, s: tuple[Any, ...]) -> None:
        (
            self.ta, self.pa, self.tb, self.pb, self.ia, self.ib, self.la, self.lb,
            self.lag_a, self.lag_b, self.na, self.nb, self.next, self.k, self.armed,
            self.first, self.win, self.has_prev, self.prev_a, self.prev_b,
        ) = s
