"""The BTC/ETH spread rule compiled, behind ``strategies/btc_eth_spread.py``.

``@accelerated`` runs the plain definition's handlers compiled: per event the mypyc core
(``spread_core.py``), per batch the numba kernel (``spread_kernel.py``). Both keep the
fields of the definition's ``State`` dataclass under the same names, and this module maps
them over by name, so the field list is written once, in the definition; a core or kernel
that does not match it fails at import. Both agree with the definition bit for bit.
"""

from __future__ import annotations

import copyreg
import inspect
from dataclasses import MISSING, fields
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from qsframework import TRADE, Context, Strategy, TimerFires
from qsframework.buffers import string_buffers
from qsframework.strategy import attrs_json_column

from . import compiled
from .keycodes import encode_keys
from .spread_kernel import DIVERGENCE, spread_kernel

#: the per-event core (compiled by mypyc when the install had a C compiler)
core = compiled.load("qsframework.strategies.accel.spread_core")

#: a sequence field's array type in the kernel, from its annotation
DTYPES = {"deque[int]": np.int64, "deque[float]": np.float64}
#: the kernel's parameters; the last ones are the state's fields
KERNEL_PARAMS = list(inspect.signature(spread_kernel.py_func).parameters)

S = TypeVar("S", bound=type[Strategy])


class Layout:
    """A State dataclass's field names: scalars (with a default value) and sequences (with
    a factory, each with its array type), and how the core holds them."""

    def __init__(self, state: type) -> None:
        self.names = [f.name for f in fields(state)]
        self.scalars = [f.name for f in fields(state) if f.default is not MISSING]
        self.sequences = {
            f.name: DTYPES[str(f.type)] for f in fields(state) if f.default is MISSING
        }

    def check(self) -> None:
        """The core and the kernel hold exactly these fields, under these names."""
        c = core.SpreadCore("a", "b", 2, 1, 0.1, 0.05)
        held = all(hasattr(c, name) for name in self.scalars)
        if not held or set(c.sequences()) != set(self.sequences):
            raise TypeError("spread_core.SpreadCore does not hold the state dataclass's fields")
        if KERNEL_PARAMS[-len(self.names) :] != self.names:
            raise TypeError("spread_kernel's last parameters are not the state dataclass's fields")

    def values(self, c: Any) -> dict[str, Any]:
        """The state core ``c`` holds, by field name (sequences as lists)."""
        return {**{name: getattr(c, name) for name in self.scalars}, **c.sequences()}

    def pickled(self, c: Any) -> dict[str, Any]:
        """:meth:`values`, sequences as arrays of their types: a window that slid keeps its
        pickled bytes (see :mod:`qsframework.state_pickle`). The legs' trades are converted
        only from where the last snapshot's arrays end: a checkpoint every 5 s of a 60 s
        window converts a twelfth of it (300,000 trades at 5k/s took ~30-100 ms)."""
        memo = c.memo if isinstance(c.memo, dict) else {}
        values = {name: getattr(c, name) for name in self.scalars}
        for (ts, px), start, cut in ((("a_ts", "a_px"), c.ia, c.cut_a), (("b_ts", "b_px"), c.ib, c.cut_b)):
            for name in (ts, px):
                memo[name] = _window_array(getattr(c, name), start, cut, self.sequences[name], memo.get(name))
                values[name] = memo[name][2]
        c.memo = memo
        for name, dtype in self.sequences.items():  # the sample window's returns
            if name not in values:
                values[name] = np.array(getattr(c, name), dtype)
        return values

    def load(self, c: Any, values: dict[str, Any]) -> None:
        """Put ``values`` (by field name, sequences as lists) into core ``c``."""
        for name in self.scalars:
            setattr(c, name, values[name])
        c.load(**{name: values[name] for name in self.sequences})


def _window_array(items: list[Any], start: int, cut: int, dtype: Any,
                  last: tuple[list[Any], int, np.ndarray] | None) -> tuple[list[Any], int, np.ndarray]:
    """``items[start:]`` as an array, with the list and its trades' first place (``cut``
    counts the items trimmed off its front); the array made from the same list ``last``
    time gives the trades both hold."""
    first, end = cut + start, cut + len(items)
    if last is not None and last[0] is items and last[1] <= first and first <= last[1] + len(last[2]) <= end:
        held = last[2][first - last[1]:]
        return items, first, np.concatenate((held, np.array(items[start + len(held):], dtype)))
    return items, first, np.array(items[start:], dtype)


def _core(args: tuple[Any, ...], values: dict[str, Any]) -> Any:
    """A core with ``args`` holding the state ``values`` (what a pickled core becomes;
    sequences as arrays, or lists from an earlier version)."""
    c = core.SpreadCore(*args)
    sequences = c.sequences()
    for name, value in values.items():
        if name not in sequences:
            setattr(c, name, value)
    c.load(**{name: _as_list(values[name]) for name in sequences})
    return c


def _as_list(sequence: Any) -> list[Any]:
    """A sequence as the list the core holds: an array's items as Python ints or floats."""
    return sequence.tolist() if isinstance(sequence, np.ndarray) else list(sequence)


def accelerated(plain: S) -> S:
    """``plain``, the spread strategy's definition, with its handlers run compiled.

    The class returned has the definition's name and behaviour; ``.plain`` is the
    definition itself, which runs as written (the bit-for-bit tests compare the two).
    """
    layout = Layout(plain.State)  # type: ignore[attr-defined]
    layout.check()
    copyreg.pickle(core.SpreadCore, lambda c: (_core, ((c.a, c.b, c.w, c.n, c.thr, c.rearm_at),
                                                       layout.pickled(c))))

    class Accelerated(plain):  # type: ignore[valid-type, misc]
        def __init__(self, params: Any, ctx: Context) -> None:
            super().__init__(params, ctx)
            p, plain_state = self.p, self.s
            # the state, from here on held by the compiled core under the same names
            self.s = core.SpreadCore(p.a, p.b, self.w, self.n, p.threshold, self.rearm_at,
                                     self.diverged)
            layout.load(self.s, {name: getattr(plain_state, name) for name in layout.scalars}
                        | {name: list(getattr(plain_state, name)) for name in layout.sequences})
            self._legs = encode_keys((p.a, p.b))
            c = self.s
            self._band = np.array([c.fire_lo, c.fire_hi, c.rearm_lo, c.rearm_hi])

        @property
        def on_trade(self) -> Any:
            """One trade, as a (ts_event, key, price) tuple: the core's handler, called directly."""
            return self.s.on_trade

        def on_timer(self, name: str, ts: int) -> None:
            value = self.s.grid(ts)
            if value is not None:
                self.ctx.signal(self.pair, "spread", value, {"corr": self.s.corr()}, ts=ts)

        def on_restore(self) -> None:
            self.s.diverged = self.diverged

        def batch_min_rows(self) -> int:
            """The kernel takes the windows' trades as arrays and gives them back as lists on
            every batch (about 0.1 us a trade, the per-event core about 1 us an event): worth
            it from an eighth of them. Live, a poll after a pause stays per event; a backlog
            goes through the kernel."""
            c = self.s
            return (len(c.a_ts) - c.ia + len(c.b_ts) - c.ib) // 8

        def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> None:
            """The rule over a whole batch, compiled: same operations, same bits."""
            args, (kind, ts, value, corr) = self._kernel_args(batch, fires)
            n_out, state = spread_kernel(*args)
            self._emit(kind[:n_out], ts[:n_out], value[:n_out], corr[:n_out])
            self._load(state)

        def _load(self, state: tuple) -> None:
            """The kernel's returned state (its fields in order) into the core."""
            values = dict(zip(layout.names, state))
            layout.load(self.s, values | {name: values[name].tolist() for name in layout.sequences})

        def _kernel_args(self, batch: pa.RecordBatch, fires: TimerFires) -> tuple[list, tuple]:
            """The kernel's arguments for ``batch``, by parameter name, and its output arrays."""
            ts = batch.column("ts_event").to_numpy()
            size = len(ts) + len(fires)
            outs = (np.empty(size, np.int8), np.empty(size, np.int64), np.empty(size),
                    np.empty(size))
            key_offsets, key_data, key_start, _ = string_buffers(batch.column("key"))
            given = {
                "ts": ts, "price": batch.column("price").to_numpy(), "key_offsets": key_offsets,
                "key_data": key_data, "key_start": key_start, "want_offsets": self._legs[0],
                "want_data": self._legs[1], "fire_t": fires.times, "fire_pos": fires.pos,
                "w": self.w, "thr": self.p.threshold, "rearm_at": self.rearm_at, "band": self._band,
                "n": self.n, "out_kind": outs[0], "out_ts": outs[1], "out_val": outs[2],
                "out_corr": outs[3],
            }
            state = layout.values(self.s)
            for name, dtype in layout.sequences.items():
                state[name] = np.array(state[name], dtype)
            return [given[name] if name in given else state[name] for name in KERNEL_PARAMS], outs

        def _emit(self, kind: np.ndarray, ts: np.ndarray, val: np.ndarray,
                  corr: np.ndarray) -> None:
            """The kernel's records in order: runs of spreads in bulk, divergences one by one."""
            if not len(kind):
                return
            starts = np.flatnonzero(np.diff(kind, prepend=-1))
            ends = [*starts[1:].tolist(), len(kind)]
            for lo, hi in zip(starts.tolist(), ends):
                if kind[lo] == DIVERGENCE:
                    for k in range(lo, hi):
                        self.diverged(int(ts[k]), float(val[k]))
                else:
                    self.ctx.signals(
                        self.pair, "spread", ts[lo:hi], val[lo:hi],
                        attrs_text=attrs_json_column("corr", corr[lo:hi].tolist()),
                    )

        def _scratch(self) -> tuple[Any, pa.RecordBatch, TimerFires]:
            """A fresh copy of this strategy, started, and a small batch with a fire for it:
            what the kernel is compiled, or looked up in the cache, with."""
            scratch = type(self)(self.p, Context(strategy=self.name))
            sample = int(self.p.sample)
            batch = pa.RecordBatch.from_pydict(
                {"ts_event": [0, self.w + 2 * sample], "key": [self.p.a, self.p.b],
                 "price": [1.0, 1.0]},
                schema=TRADE.project(tuple(self.fields["trade"]))[0],
            )
            scratch.ctx.now = 0
            scratch.on_start()
            fires = TimerFires(["sample"], np.array([sample], np.int64), np.array([1], np.int64))
            return scratch, batch, fires

        def prepare_batch(self) -> None:
            """Load the compiled kernel (compiling it on first use) on a scratch copy."""
            scratch, batch, fires = self._scratch()
            scratch.on_trade_batch(batch, fires)

        def batch_ready(self) -> bool:
            """Whether the kernel is compiled already or in the cache (then loaded)."""
            scratch, batch, fires = self._scratch()
            return compiled.kernel_ready(spread_kernel, *scratch._kernel_args(batch, fires)[0])

    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(Accelerated, attr, getattr(plain, attr))
    Accelerated.name = plain.name
    Accelerated.plain = plain
    return Accelerated  # type: ignore[return-value]
