"""BTC/ETH divergence: flag when the two legs' rolling log returns part by > threshold.

d(t) = ln(p_a(t)/p_a(t-W)) - ln(p_b(t)/p_b(t-W)) on every trade of either leg, with
hysteresis (fire above ``threshold``, re-arm below ``rearm * threshold``), plus a
``spread`` signal every ``sample`` of event time with the correlation of the legs'
``sample`` log returns over the window. Exact definitions: issue 2 and the README.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from qsframework import TRADE, Context, Duration, Strategy, TimerFires, compiled
from qsframework.keycodes import encode_keys, string_buffers
from qsframework.strategies.spread_kernel import DIVERGENCE, kernel_ready, spread_kernel
from qsframework.strategy import attrs_json_column

#: the per-event core (compiled by mypyc when the install had a C compiler)
core = compiled.load("qsframework.strategies.spread_core")


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
        # the legs' windows, lags and the divergence rule live in the core; its on_trade
        # is this strategy's per-event handler
        self._core = core.SpreadCore(
            params.a, params.b, self._w, self._w // self._s, self._thr, self._rearm_at,
            self._diverged,
        )
        self._legs = encode_keys((params.a, params.b))
        c = self._core
        self._band = np.array([c.fire_lo, c.fire_hi, c.rearm_lo, c.rearm_hi])

    def _scratch(self) -> tuple[BtcEthSpread, pa.RecordBatch, TimerFires]:
        """A fresh copy of this strategy, started, and a small batch with a fire for it:
        what the batch kernel is compiled, or looked up in the cache, with."""
        scratch = type(self)(self.p, Context(strategy=self.name))
        ts = [0, self._w + 2 * self._s]
        batch = pa.RecordBatch.from_pydict(
            {"ts_event": ts, "key": [self._a, self._b], "price": [1.0, 1.0]},
            schema=TRADE.project(tuple(self.fields["trade"]))[0],
        )
        scratch.ctx.now = 0
        scratch.on_start()
        fires = TimerFires(["sample"], np.array([self._s], np.int64), np.array([1], np.int64))
        return scratch, batch, fires

    def prepare_batch(self) -> None:
        """Load the compiled batch kernel (compiling it on first use) on a scratch copy."""
        scratch, batch, fires = self._scratch()
        scratch.on_trade_batch(batch, fires)

    def batch_ready(self) -> bool:
        """Whether the batch kernel is compiled already or in the cache (then loaded)."""
        scratch, batch, fires = self._scratch()
        return kernel_ready(spread_kernel, *scratch._kernel_inputs(batch, fires)[1])

    def keys(self) -> frozenset[str]:
        return frozenset({self._a, self._b})

    def on_start(self) -> None:
        self._core.first = now = self.ctx.now
        first = -(-now // self._s) * self._s  # first grid point at or after the first event
        self.ctx.every(self._s, "sample", first=first)

    # -- per-event path ----------------------------------------------------------
    @property
    def on_trade(self):
        """One trade, as a (ts_event, key, price) tuple: the core's handler, called directly."""
        return self._core.on_trade

    def on_restore(self) -> None:
        self._core.diverged = self._diverged

    def on_timer(self, name: str, ts: int) -> None:
        """Grid point ``ts``: the spread signal, once it is defined."""
        value = self._core.grid(ts)
        if value is not None:
            corr = self._core.win.corr()
            self.ctx.signal(self._pair, "spread", value, {"corr": corr}, ts=ts)

    # -- shared by both paths ----------------------------------------------------
    def _diverged(self, ts: int, d: float) -> None:
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

    # -- batch path ----------------------------------------------------------------
    def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> None:
        """The per-event algorithm compiled over a whole batch: same operations, same bits."""
        (f, i, ring, out_kind, out_ts, out_val, out_corr), args = self._kernel_inputs(batch, fires)
        n_out, a_ts, a_px, b_ts, b_px = spread_kernel(*args)
        self._emit(out_kind[:n_out], out_ts[:n_out], out_val[:n_out], out_corr[:n_out])
        # write the state back into the core, where the per-event path keeps it
        c = self._core
        win = c.win
        c.la, c.lb, c.lag_a, c.lag_b = (float(x) for x in f[0:4])
        c.armed = bool(i[0])
        c.load(a_ts[i[1] :].tolist(), a_px[i[1] :].tolist(), b_ts[i[2] :].tolist(), b_px[i[2] :].tolist())
        win.sa, win.sb, win.saa, win.sbb, win.sab = (float(x) for x in f[4:9])
        win.valid, win.nza, win.nzb = int(i[3]), int(i[4]), int(i[5])
        if i[6]:
            c.has_prev = True
            c.prev_a, c.prev_b = float(f[9]), float(f[10])
        h = int(i[7])
        win.ra = deque(ring[0, :h].tolist(), maxlen=win.n)
        win.rb = deque(ring[1, :h].tolist(), maxlen=win.n)
        win.ok = deque(ring[2, :h].astype(np.int64).tolist(), maxlen=win.n)

    def _kernel_inputs(self, batch: pa.RecordBatch, fires: TimerFires) -> tuple[tuple, tuple]:
        """The kernel's state and output arrays (f, i, ring, kind, ts, value, corr), and its
        whole argument list for ``batch``."""
        ts = batch.column("ts_event").to_numpy()
        price = batch.column("price").to_numpy()
        key_offsets, key_data, key_start, _ = string_buffers(batch.column("key"))
        c = self._core
        win = c.win
        f = np.array([
            c.la, c.lb, c.lag_a, c.lag_b,
            win.sa, win.sb, win.saa, win.sbb, win.sab,
            c.prev_a, c.prev_b,
        ])
        i = np.array([
            int(c.armed), 0, 0, win.valid, win.nza, win.nzb,
            int(c.has_prev), len(win.ok),
        ], np.int64)
        ring = np.zeros((3, win.n))
        ring[0, : len(win.ok)] = list(win.ra)
        ring[1, : len(win.ok)] = list(win.rb)
        ring[2, : len(win.ok)] = list(win.ok)
        out_kind = np.empty(len(ts) + len(fires), np.int8)
        out_ts = np.empty(len(ts) + len(fires), np.int64)
        out_val = np.empty(len(ts) + len(fires))
        out_corr = np.empty(len(ts) + len(fires))
        args = (
            ts, price, key_offsets, key_data, key_start, *self._legs,
            np.array(c.ta[c.ia :], np.int64), np.array(c.pa[c.ia :], np.float64),
            np.array(c.tb[c.ib :], np.int64), np.array(c.pb[c.ib :], np.float64),
            fires.times, fires.pos, f, i, ring,
            self._w, self._thr, self._rearm_at, self._band, c.first,
            out_kind, out_ts, out_val, out_corr,
        )
        return (f, i, ring, out_kind, out_ts, out_val, out_corr), args

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
