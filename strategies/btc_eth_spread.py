"""BTC/ETH divergence: flag when the two legs' rolling log returns part by > threshold.

d(t) = ln(p_a(t)/p_a(t-W)) - ln(p_b(t)/p_b(t-W)) on every trade of either leg, with
hysteresis (fire above ``threshold``, re-arm below ``rearm * threshold``), plus a
``spread`` signal every ``sample`` of event time with the correlation of the legs'
``sample`` log returns over the window. Exact definitions: the README.

This file is the definition, in plain Python: copy it to write your own. ``@accelerated``
runs the same rule compiled (``strategies/accel/``: a mypyc per-event core and a numba
batch kernel, which map their state from :class:`SpreadState` by field name); without
that line the class runs as written, with the same outputs bit for bit, only slower.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from math import isnan, log, sqrt

from qsframework import Context, Duration, Strategy
from qsframework.strategies.accel.spread import accelerated

NAN = float("nan")  # "no such price yet"


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


@dataclass(slots=True, kw_only=True)
class SpreadState:
    """What the rule remembers between events."""

    # each leg's trades inside the window (t - W, t], oldest first
    a_ts: deque[int] = field(default_factory=deque)
    a_px: deque[float] = field(default_factory=deque)
    b_ts: deque[int] = field(default_factory=deque)
    b_px: deque[float] = field(default_factory=deque)
    last_a: float = NAN  # p_a(t): the last price of a
    last_b: float = NAN
    lag_a: float = NAN  # p_a(t - W): the price of the last trade of a to leave the window
    lag_b: float = NAN
    armed: bool = True  # the hysteresis: fires only while armed
    first: int = 0  # time of the first event; the sample grid starts after it
    has_prev: bool = False  # the legs' prices at the previous grid point
    prev_a: float = NAN
    prev_b: float = NAN
    # the last window/sample grid steps: both legs' sample log returns (ok: both existed)
    ra: deque[float] = field(default_factory=deque)
    rb: deque[float] = field(default_factory=deque)
    ok: deque[int] = field(default_factory=deque)
    # their running sums, added to and subtracted from in a fixed order (same bits on every path)
    sa: float = 0.0
    sb: float = 0.0
    saa: float = 0.0
    sbb: float = 0.0
    sab: float = 0.0
    valid: int = 0  # steps where both returns existed
    nza: int = 0  # steps where a moved
    nzb: int = 0


@accelerated
class BtcEthSpread(Strategy):
    """Divergence between two symbols' rolling returns, with a sampled spread signal."""

    kinds = ("trade",)
    fields = {"trade": ("key", "price")}
    rows = "tuple"  # on_trade gets (ts_event, key, price) as a plain tuple
    Params = SpreadParams
    State = SpreadState

    def __init__(self, params: SpreadParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.pair = f"{params.a}/{params.b}"
        self.w = int(params.window)
        self.n = self.w // int(params.sample)  # grid steps in a window
        self.rearm_at = params.rearm * params.threshold
        self.s = SpreadState()

    def keys(self) -> frozenset[str]:
        return frozenset({self.p.a, self.p.b})

    def on_start(self) -> None:
        self.s.first = now = self.ctx.now
        sample = int(self.p.sample)
        # the grid: multiples of sample, from the first at or after the first event
        self.ctx.every(sample, "sample", first=-(-now // sample) * sample)

    def on_trade(self, t: tuple[int, str, float]) -> None:
        ts, key, price = t
        s = self.s
        if key == self.p.a:
            s.a_ts.append(ts)
            s.a_px.append(price)
            s.last_a = price
        elif key == self.p.b:
            s.b_ts.append(ts)
            s.b_px.append(price)
            s.last_b = price
        else:
            return
        self.slide(ts)
        d = self.d()
        if d is None:
            return
        if s.armed and abs(d) > self.p.threshold:
            s.armed = False
            self.diverged(ts, d)
        elif not s.armed and abs(d) < self.rearm_at:
            s.armed = True

    def on_timer(self, name: str, ts: int) -> None:
        """Grid point ``ts``: one sample step of both legs, then the spread signal once defined."""
        s = self.s
        self.slide(ts)
        if s.has_prev and not any(map(isnan, (s.prev_a, s.prev_b, s.last_a, s.last_b))):
            self.step(log(s.last_a / s.prev_a), log(s.last_b / s.prev_b), 1)
        else:
            self.step(0.0, 0.0, 0)
        s.has_prev, s.prev_a, s.prev_b = True, s.last_a, s.last_b
        d = self.d()
        if ts > s.first and d is not None:
            self.ctx.signal(self.pair, "spread", d, {"corr": self.corr()}, ts=ts)

    # -- the maths ---------------------------------------------------------------------
    def slide(self, now: int) -> None:
        """Trades at or before ``now - W`` leave the window; a leg's last to leave is its lag."""
        s, cut = self.s, now - self.w
        while s.a_ts and s.a_ts[0] <= cut:
            s.a_ts.popleft()
            s.lag_a = s.a_px.popleft()
        while s.b_ts and s.b_ts[0] <= cut:
            s.b_ts.popleft()
            s.lag_b = s.b_px.popleft()

    def d(self) -> float | None:
        """ln(p_a(t)/p_a(t-W)) - ln(p_b(t)/p_b(t-W)); None until both legs have a lag."""
        s = self.s
        if isnan(s.lag_a) or isnan(s.lag_b):
            return None
        return log(s.last_a / s.lag_a) - log(s.last_b / s.lag_b)

    def step(self, ra: float, rb: float, ok: int) -> None:
        """One grid step into the window of the last ``n``: the oldest leaves the sums."""
        s = self.s
        ra_o = rb_o = 0.0
        ok_o = 0
        if len(s.ok) == self.n:
            ra_o, rb_o, ok_o = s.ra.popleft(), s.rb.popleft(), s.ok.popleft()
        s.sa += ra - ra_o
        s.sb += rb - rb_o
        s.saa += ra * ra - ra_o * ra_o
        s.sbb += rb * rb - rb_o * rb_o
        s.sab += ra * rb - ra_o * rb_o
        s.valid += ok - ok_o
        s.nza += (ra != 0.0) - (ra_o != 0.0)
        s.nzb += (rb != 0.0) - (rb_o != 0.0)
        s.ra.append(ra)
        s.rb.append(rb)
        s.ok.append(ok)

    def corr(self) -> float | None:
        """Pearson correlation of the legs' returns over a full window; None while the
        window is incomplete or a leg did not move."""
        s, n = self.s, self.n
        if s.valid < n or not s.nza or not s.nzb:
            return None
        va = s.saa - s.sa * s.sa / n
        vb = s.sbb - s.sb * s.sb / n
        if va <= 0.0 or vb <= 0.0:
            return None
        return max(-1.0, min(1.0, (s.sab - s.sa * s.sb / n) / sqrt(va * vb)))

    def diverged(self, ts: int, d: float) -> None:
        p, ctx = self.p, self.ctx
        ctx.signal(self.pair, "divergence", d, {"direction": 1 if d > 0 else -1}, ts=ts)
        ctx.alert(
            self.pair,
            "divergence",
            f"{p.a} vs {p.b}: {p.window} return spread {d:+.3%} (threshold {p.threshold:.3%})",
            severity="warning",
            dedup_key=f"{self.name}:{self.pair}:divergence:{ts}",
            ts=ts,
        )
