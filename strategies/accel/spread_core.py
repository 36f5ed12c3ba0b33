"""The BTC/ETH spread rule per event, compiled: the accelerated ``on_trade`` and grid step.

Plain typed Python that mypyc compiles to a C extension when the package is installed on
a machine with a C compiler (see setup.py); Python then imports the compiled module in
place of this file, about 3x faster per event. Without a compiler this file runs as it is,
with the same results. It keeps the fields of ``SpreadState`` (strategies/btc_eth_spread.py)
under the same names, as native attributes, so ``spread.py`` maps them over by name; it
adds only what makes it fast: head indices instead of popping the legs' trades, the time
the window next moves, and a ratio test that skips the logs well inside the band. It does
the same IEEE double operations and calls the C library's ``log``, so it agrees with the
plain definition and the batch kernel bit for bit.

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


class SpreadCore:
    """SpreadState's fields as native attributes, and the rule over them.

    Per leg its trades' times and prices (``a_ts``/``a_px``, ``b_ts``/``b_px``), oldest
    first; ``ia``/``ib`` index the first one still inside the window, the ones before it
    have left (``trim`` drops them). ``na``/``nb`` is the event time after which a leg's
    lag moves next (-1: on every event), ``next`` the earlier of the two, ``k`` is
    ``lag_b / lag_a``. ``ra``/``rb``/``ok`` and the sums are the last ``n`` sample returns.
    """

    def __init__(
        self,
        a: str,
        b: str,
        window: int,
        n: int,
        threshold: float,
        rearm_at: float,
        diverged: Callable[[int, float], None] | None = None,
    ) -> None:
        self.a = a
        self.b = b
        self.w = window
        self.n = n
        self.thr = threshold
        self.rearm_at = rearm_at
        self.diverged = diverged
        # trade times and prices, as the int and float objects the events brought (kept
        # as they are: no new objects per trade)
        self.a_ts: list[Any] = []
        self.a_px: list[Any] = []
        self.b_ts: list[Any] = []
        self.b_px: list[Any] = []
        self.ia = 0
        self.ib = 0
        self.last_a = NAN
        self.last_b = NAN
        self.lag_a = NAN
        self.lag_b = NAN
        self.armed = True
        self.first = 0
        self.has_prev = False
        self.prev_a = NAN
        self.prev_b = NAN
        self.ra: deque[float] = deque(maxlen=n)
        self.rb: deque[float] = deque(maxlen=n)
        self.ok: deque[int] = deque(maxlen=n)
        self.sa = 0.0
        self.sb = 0.0
        self.saa = 0.0
        self.sbb = 0.0
        self.sab = 0.0
        self.valid = 0
        self.nza = 0
        self.nzb = 0
        self.na = -1
        self.nb = -1
        self.next = -1
        self.k = NAN
        # trades trim() took off the front of each leg's lists (load() makes new lists): a
        # list index plus it is a trade's place in its leg, which lets a snapshot reuse the
        # arrays of the one before for the trades still held (spread.py: Layout.pickled)
        self.cut_a = 0
        self.cut_b = 0
        self.memo: Any = None
        # Fast path: d = ln(x) up to rounding (< 1e-15), x = (last_a/last_b) * (lag_b/lag_a).
        # x well inside the threshold band means no divergence; well outside the re-arm band
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
            self.a_ts.append(ts_event)
            self.a_px.append(px)
            self.last_a = price
        elif key == self.b:
            self.b_ts.append(ts_event)
            self.b_px.append(px)
            self.last_b = price
        else:
            return
        if ts > self.next:
            self.advance(ts)
        x = self.last_a / self.last_b * self.k
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
            j = _leave(self.a_ts, i, cut)
            self.na = _leaves_at(self.a_ts, j, self.w)
            if j > i:
                self.lag_a = self.a_px[j - 1]
                self.ia = j
        if now > self.nb:
            i = self.ib
            j = _leave(self.b_ts, i, cut)
            self.nb = _leaves_at(self.b_ts, j, self.w)
            if j > i:
                self.lag_b = self.b_px[j - 1]
                self.ib = j
        self.next = self.na if self.na < self.nb else self.nb
        self.k = self.lag_b / self.lag_a

    def check(self, ts: int) -> None:
        """The exact rule: d from the two legs' log returns, with hysteresis."""
        if self.lag_a != self.lag_a or self.lag_b != self.lag_b:
            return
        d = log(self.last_a / self.lag_a) - log(self.last_b / self.lag_b)
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
        la, lb, prev_a, prev_b = self.last_a, self.last_b, self.prev_a, self.prev_b
        if self.has_prev and prev_a == prev_a and prev_b == prev_b and la == la and lb == lb:
            self.push(log(la / prev_a), log(lb / prev_b), 1)
        else:
            self.push(0.0, 0.0, 0)
        self.has_prev = True
        self.prev_a = la
        self.prev_b = lb
        if T <= self.first or self.lag_a != self.lag_a or self.lag_b != self.lag_b:
            return None
        return log(la / self.lag_a) - log(lb / self.lag_b)

    def push(self, ra: float, rb: float, ok: int) -> None:
        """One sample step of both legs: add the new returns, subtract the ones leaving."""
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

    def trim(self, keep: int = 4096) -> None:
        """Drop trades that have left the window, once more than ``keep`` have piled up."""
        if self.ia > keep:
            del self.a_ts[: self.ia]
            del self.a_px[: self.ia]
            self.cut_a += self.ia
            self.ia = 0
        if self.ib > keep:
            del self.b_ts[: self.ib]
            del self.b_px[: self.ib]
            self.cut_b += self.ib
            self.ib = 0

    def sequences(self) -> dict[str, list[Any]]:
        """The legs' trades inside the window and the sample window's returns, as lists."""
        return {
            "a_ts": self.a_ts[self.ia :], "a_px": self.a_px[self.ia :],
            "b_ts": self.b_ts[self.ib :], "b_px": self.b_px[self.ib :],
            "ra": list(self.ra), "rb": list(self.rb), "ok": list(self.ok),
        }

    def load(self, a_ts: list[Any], a_px: list[Any], b_ts: list[Any], b_px: list[Any],
             ra: list[float], rb: list[float], ok: list[int]) -> None:
        """Take the legs' trades inside the window and the sample window's returns (after
        the scalar fields were set): what the batch path and a restore hand over."""
        self.a_ts, self.a_px, self.b_ts, self.b_px = a_ts, a_px, b_ts, b_px
        self.ia = self.ib = 0
        self.cut_a = self.cut_b = 0
        self.memo = None
        self.ra = deque(ra, maxlen=self.n)
        self.rb = deque(rb, maxlen=self.n)
        self.ok = deque(ok, maxlen=self.n)
        self.na = _leaves_at(a_ts, 0, self.w)
        self.nb = _leaves_at(b_ts, 0, self.w)
        self.next = self.na if self.na < self.nb else self.nb
        self.k = self.lag_b / self.lag_a
