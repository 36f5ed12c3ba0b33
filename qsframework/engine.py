"""The engine: one code path from ordered events to a strategy and its outputs.

Backtest and live feed it the same way: ``process(kind, batch)`` with batches in the
total order of :mod:`qsframework.order`. The per-event path calls ``on_<kind>(event)``
per row; the batch path calls ``on_<kind>_batch(batch, fires)`` and must agree with it.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import UserError
from .events import conform, get_kind
from .params import build_params
from .strategy import Context, Strategy
from .timers import NEVER

Path = Literal["auto", "event", "batch"]
SMALL_BATCH = 512
EVENT_CHUNK = 4096  # rows turned into Python objects at a time on the per-event path


def _pylists(col: pa.Array) -> Callable[[int, int], list]:
    """Python values of rows [lo, hi) of an Arrow column, by the fastest exact route."""
    t = col.type
    if col.null_count:
        return lambda lo, hi: col.slice(lo, hi - lo).to_pylist()
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        values = col.to_numpy(zero_copy_only=False)
        return lambda lo, hi: values[lo:hi].tolist()
    if pa.types.is_string(t) and len(col) >= 64:
        # few distinct values (keys, sources): build each string once, then pick them by
        # index, which also hands the strategy the same str object for the same key
        enc = pc.dictionary_encode(col)
        if len(enc.dictionary) * 8 <= len(col):
            strings = np.empty(len(enc.dictionary), dtype=object)
            strings[:] = enc.dictionary.to_pylist()
            index = enc.indices.to_numpy()
            return lambda lo, hi: strings[index[lo:hi]].tolist()
    return lambda lo, hi: col.slice(lo, hi - lo).to_pylist()


class Engine:
    """Runs one strategy instance over ordered event batches."""

    def __init__(
        self,
        strategy_cls: type[Strategy],
        *,
        params: Any = None,
        overrides: dict[str, Any] | None = None,
        path: Path = "auto",
        seed: int = 0,
        small_batch: int = SMALL_BATCH,
    ) -> None:
        if params is None:
            params = build_params(
                strategy_cls.Params, overrides or {}, owner=f"strategy {strategy_cls.__name__}"
            )
        self.ctx = Context(strategy=strategy_cls.name, seed=seed)
        self.strategy = strategy_cls(params, self.ctx)
        self.params = params
        self.path = path
        self.kinds = tuple(strategy_cls.kinds)
        # "auto" hands batches below small_batch rows to the per-event handler (same
        # outputs, and cheaper than setting up a vectorized pass for a few rows: live
        # micro-batches); "batch" always takes the batch handler
        self._small = small_batch if path == "auto" else 0
        keys = self.strategy.keys()
        self._key_set = pa.array(sorted(keys), pa.string()) if keys is not None else None
        self._started = False
        self.events_in = 0
        self._schemas: dict[str, tuple[pa.Schema, type]] = {}
        for kind in self.kinds:
            fields = strategy_cls.fields.get(kind)
            if fields is not None and self._key_set is not None:
                fields = tuple(dict.fromkeys([*fields, "key"]))
            self._schemas[kind] = get_kind(kind).project(fields)
        self._handlers = self._bind()

    def _bind(self) -> dict[str, tuple[Any, Any]]:
        """Each kind's per-event and batch handlers, as the path allows."""
        handlers: dict[str, tuple[Any, Any]] = {}
        name = type(self.strategy).__name__
        for kind in self.kinds:
            one = getattr(self.strategy, f"on_{kind}", None)
            many = getattr(self.strategy, f"on_{kind}_batch", None)
            if self.path == "event":
                many = None
            elif self.path == "batch" and many is None:
                raise UserError(f"{name} has no on_{kind}_batch: use --path event or auto")
            if many is None and one is None:
                raise UserError(f"{name} subscribes to {kind} but has no on_{kind}")
            handlers[kind] = (one, many)
        return handlers

    @property
    def uses_batch_path(self) -> bool:
        return any(many is not None for _, many in self._handlers.values())

    def prepare(self) -> float:
        """Let the strategy compile or load what it needs; returns the seconds it took."""
        t0 = time.perf_counter()
        self.strategy.prepare()
        return time.perf_counter() - t0

    def columns(self, kind: str) -> list[str]:
        """The fields of ``kind`` this strategy reads (sources may read only these)."""
        return list(self._schemas[kind][0].names)

    @property
    def keys(self) -> list[str] | None:
        return None if self._key_set is None else self._key_set.to_pylist()

    # -- feeding -----------------------------------------------------------------
    def process(self, kind: str, batch: pa.RecordBatch, *, filtered: bool = False) -> None:
        """Process one batch of ``kind`` events that follows all earlier ones in total order."""
        handlers = self._handlers.get(kind)
        if handlers is None or batch.num_rows == 0:
            return
        schema, row = self._schemas[kind]
        batch = conform(batch, get_kind(kind), schema)
        if self._key_set is not None and not filtered:
            batch = batch.filter(pc.is_in(batch.column("key"), value_set=self._key_set))
            if batch.num_rows == 0:
                return
        if not self._started:
            self._started = True
            self.ctx.now = int(batch.column(0)[0].as_py())
            self.strategy.on_start()
        self.events_in += batch.num_rows
        one, many = handlers
        if many is None or (batch.num_rows < self._small and one is not None):
            self._run_events(row, batch, one)
        else:
            self._run_batch(batch, many)

    # -- state -------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The strategy's and context's state, to resume exactly where this engine is."""
        ctx, timers = self.ctx, self.ctx.timers
        state = {k: v for k, v in self.strategy.__dict__.items() if k not in ("ctx", "p")}
        return pickle.dumps({
            "strategy": state,
            "timers": (list(timers._heap), timers._count, timers.due),
            "seq": ctx._seq,
            "rng": ctx.rng.getstate(),
            "now": ctx.now,
            "started": self._started,
            "events_in": self.events_in,
        }, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        """Resume from :meth:`snapshot` of an engine running the same strategy and parameters."""
        snap = pickle.loads(blob)
        self.strategy.__dict__.update(snap["strategy"])
        ctx, timers = self.ctx, self.ctx.timers
        timers._heap, timers._count, timers.due = snap["timers"]
        ctx._seq, ctx.now = snap["seq"], snap["now"]
        ctx.rng.setstate(snap["rng"])
        self._started, self.events_in = snap["started"], snap["events_in"]
        self.strategy.on_restore()
        self._handlers = self._bind()  # handlers may be bound to restored objects

    def finish(self) -> None:
        """End of input: no timer fires after the last event."""
        if self._started:
            self.strategy.on_stop()

    # -- paths -------------------------------------------------------------------
    def _fire_before(self, ts: int) -> None:
        ctx, timers, on_timer = self.ctx, self.ctx.timers, self.strategy.on_timer
        while (fire := timers.pop_before(ts)) is not None:
            ctx.now = fire[0]
            on_timer(fire[1], fire[0])

    def _run_events(self, row: type, batch: pa.RecordBatch, handler: Any) -> None:
        columns = [_pylists(c) for c in batch.columns]
        named = self.strategy.rows == "named"
        ctx = self.ctx
        timers = ctx.timers
        fire = self._fire_before
        n = batch.num_rows
        # a few thousand rows at a time: their Python objects are made, used and freed
        # while still in the CPU cache, and freed memory is reused for the next rows
        for lo in range(0, n, EVENT_CHUNK):
            hi = min(n, lo + EVENT_CHUNK)
            events = zip(*[values(lo, hi) for values in columns])
            if named:
                events = map(partial(tuple.__new__, row), events)
            for event in events:
                ts = event[0]
                if ts > timers.due:
                    fire(ts)
                ctx.now = ts
                handler(event)

    def _run_batch(self, batch: pa.RecordBatch, handler: Any) -> None:
        ts = batch.column(0).to_numpy()
        timers = self.ctx.timers
        n, pos = len(ts), 0
        while pos < n:
            self._fire_before(int(ts[pos]))
            cut = timers.next_one_shot()
            end = n if cut == NEVER else max(pos + 1, int(np.searchsorted(ts, cut, side="right")))
            seg_ts = ts[pos:end]
            fires = timers.periodic_fires(seg_ts, before=int(seg_ts[-1]))
            self.ctx.now = int(seg_ts[-1])
            handler(batch if (pos == 0 and end == n) else batch.slice(pos, end - pos), fires)
            pos = end
