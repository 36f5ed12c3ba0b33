"""The engine: one code path from ordered events to a strategy and its outputs.

Backtest and live feed it windows of the total order of :mod:`qsframework.order` holding
several kinds (``process_window``, :mod:`qsframework.walk`), which give the outputs of the
window's runs of one kind fed to ``process(kind, batch)`` one by one. The per-event path
calls ``on_<kind>(event)`` per row; the batch path calls ``on_<kind>_batch(batch, fires)``
and must agree with it (:mod:`qsframework.batch_path`, which also hands a batch over to the
per-event execution loop when its handler places the first order).

Exact duplicates (a row equal to the one before it of its kind in ``ts_event``, ``source``,
``key`` and ``seq``: in total order they are adjacent) are dropped and counted on both paths.
Timer catch-up over a long quiet span runs in chunks of at most ``FIRE_CHUNK`` fires, with
``on_outputs`` called between chunks, so memory does not grow with the span.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import state_pickle
from .batch_path import FIRE_CHUNK, run_batch
from .durations import format_time
from .errors import StrategyError, UserError
from .columns import EVENT_CHUNK, pylists, rows
from .duplicates import drop as drop_duplicates
from .events import ORDER_COLUMNS, conform, get_kind
from .execution.config import ExecutionConfig
from .execution.loop import deliver_notices, row_at, run_trading
from .params import build_params
from .strategy import SWITCH, Context, Strategy
from .timers import NEVER
from .window import Window

Path = Literal["auto", "event", "batch"]
SMALL_BATCH = 512
#: below this many input rows a batch path that must compile first is skipped for the
#: per-event path: at ~2M events/s it is done before a first compile (~5-15 s) would be
COLD_ROWS = 10_000_000


def _failed(cls: type[Strategy], handler: str, exc: Exception, what: str = "") -> StrategyError:
    """The one-line error for an exception the strategy's ``handler`` raised (on ``what``)."""
    text = " ".join(str(exc).split()) or "(no message)"
    where = f" on {what}" if what else ""
    return StrategyError(
        f"strategy {cls.__name__} ({cls.name}) failed in {handler}{where}: "
        f"{type(exc).__name__}: {text}"
    )


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
        on_outputs: Callable[[], None] | None = None,
        execution: ExecutionConfig | None = None,
    ) -> None:
        if params is None:
            params = build_params(
                strategy_cls.Params, overrides or {}, owner=f"strategy {strategy_cls.__name__}"
            )
        self.ctx = Context(strategy=strategy_cls.name, seed=seed, execution=execution,
                           per_key=strategy_cls.scale == "key")
        self.sim = self.ctx.sim
        self.sim.on_begin = self._begin_trading
        self.sim.spill = self._spill
        self.sim.timers = self.ctx.timers
        if "trade" not in strategy_cls.kinds:
            self.sim.refusal = (f"orders need trades: {strategy_cls.__name__} does not subscribe "
                                "to trade events (kinds)")
        elif strategy_cls.scale == "key":  # a portfolio spans keys: its orders, fills, equity too
            self.sim.refusal = (f"orders need one engine over every key: {strategy_cls.__name__} declares "
                                'scale = "key" (independent keys); declare scale = "single" to order')
        try:
            self.strategy = strategy_cls(params, self.ctx)
        except Exception as exc:
            raise _failed(strategy_cls, "__init__", exc) from exc
        self.params = params
        self.path = path
        self.kinds = tuple(strategy_cls.kinds)
        # "auto" hands batches below small_batch rows to the per-event handler (same
        # outputs, and cheaper than setting up a vectorized pass for a few rows: live
        # micro-batches); "batch" always takes the batch handler
        self._small = small_batch if path == "auto" else 0
        try:
            keys = self.strategy.keys()
        except Exception as exc:
            raise _failed(strategy_cls, "keys", exc) from exc
        self._key_set = pa.array(sorted(keys), pa.string()) if keys is not None else None
        self.sim.keys = frozenset(keys) if keys is not None else None
        self._started = False
        #: prepare() chose the per-event path because the batch path was not compiled yet
        self.cold = False
        self.events_in = 0
        self.duplicates = 0  # exact duplicates dropped
        #: called between chunks of a long timer catch-up, e.g. to write outputs out
        self.on_outputs = on_outputs
        self._spilling = False
        self._last: dict[str, tuple[int, int, str, str]] = {}  # per kind: ts, seq, source, key
        self._schemas: dict[str, tuple[pa.Schema, type]] = {}
        self._inputs: dict[str, pa.Schema] = {}  # what process() needs: the fields + order columns
        for kind in self.kinds:
            fields = strategy_cls.fields.get(kind)
            if fields is not None and self._key_set is not None:
                fields = tuple(dict.fromkeys([*fields, "key"]))
            self._schemas[kind] = get_kind(kind).project(fields)
            # trades also carry what the simulator matches on, read or not by the strategy
            extra = ("price", "qty") if kind == "trade" else ()
            self._inputs[kind] = get_kind(kind).project(
                None if fields is None else tuple(dict.fromkeys([*fields, *ORDER_COLUMNS, *extra]))
            )[0]
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

    def prepare(self, *, rows: int | None = None) -> float:
        """Let the strategy load what it needs and compile its batch path; returns the seconds.

        With path "auto" and fewer than :data:`COLD_ROWS` ``rows`` to come, a batch path that
        would compile first (``batch_ready()`` False) gives way to the per-event path, which
        gives the same outputs sooner; ``cold`` then tells the caller to warm it for next time.
        """
        t0 = time.perf_counter()
        self._call("prepare")
        if self.uses_batch_path:
            small = self.path == "auto" and rows is not None and rows < COLD_ROWS
            if small and not self._call("batch_ready"):
                self.path, self.cold = "event", True
                self._handlers = self._bind()
            else:
                self._call("prepare_batch")
        return time.perf_counter() - t0

    def _call(self, hook: str) -> Any:
        """The strategy's ``hook()``; what it raises becomes the one-line StrategyError."""
        try:
            return getattr(self.strategy, hook)()
        except Exception as exc:
            raise self._failed(hook, exc) from exc

    def columns(self, kind: str) -> list[str]:
        """The fields of ``kind`` the engine needs (sources may read only these): those the
        strategy reads plus the order columns, which the duplicate check compares."""
        return list(self._inputs[kind].names)

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
        batch = conform(batch, get_kind(kind), self._inputs[kind])
        if self._key_set is not None and not filtered:
            batch = batch.filter(pc.is_in(batch.column("key"), value_set=self._key_set))
            if batch.num_rows == 0:
                return
        batch = full = self._drop_duplicates(kind, batch)[0]
        if batch.num_rows == 0:
            return
        if batch.num_columns != len(schema):
            batch = batch.select(schema.names)
        if not self._started:
            self._start(int(batch.column(0)[0].as_py()))
        self.events_in += batch.num_rows
        self._dispatch(kind, row, batch, full, handlers)

    def process_window(self, window: Window, *, filtered: bool = False) -> None:
        """Process a window of several kinds that follows all earlier events in total order:
        the same outputs as its runs one by one through :meth:`process`, walked in one pass
        (:mod:`qsframework.walk`)."""
        from .walk import process_window

        process_window(self, window, filtered=filtered)

    def _start(self, ts: int) -> None:
        """The first event, at ``ts``: ``on_start``."""
        self._started = True
        self.ctx.now = self.sim.first_ts = ts
        try:
            self.strategy.on_start()
        except Exception as exc:
            raise self._failed("on_start", exc) from exc
        if self.ctx.switch:
            self.settle_switch()
            deliver_notices(self)

    def _dispatch(self, kind: str, row: type, batch: pa.RecordBatch, full: pa.RecordBatch,
                  handlers: tuple[Any, Any]) -> None:
        """Hand ``batch`` (ready: conformed, filtered, without duplicates) to its handler."""
        one, many = handlers
        if self.sim.trading:
            run_trading(self, kind, row, batch, full, one)
        elif many is None or (one is not None and batch.num_rows < self._small_rows()):
            self._run_events(kind, row, batch, full, one)
        else:
            run_batch(self, kind, row, batch, full, one, many)
        if self.ctx.switch:  # the first order came from the batch's last event
            self.settle_switch()
            deliver_notices(self)

    def _small_rows(self) -> int:
        """Below this many rows a batch goes to the per-event handler: with path "auto" the
        engine's ``small_batch`` or the strategy's :meth:`~Strategy.batch_min_rows`."""
        return max(self._small, self.strategy.batch_min_rows()) if self._small else 0

    def _begin_trading(self) -> None:
        """The first order: the per-event loop hands over to the execution loop at its next
        timer check (see :data:`~qsframework.strategy.SWITCH`)."""
        self.ctx.switch = True
        self.ctx.timers.due = SWITCH

    def settle_switch(self) -> None:
        """Timers as they were before :meth:`_begin_trading` (and without the execution
        loop's floor)."""
        timers = self.ctx.timers
        self.ctx.switch = False
        timers.floor = NEVER
        timers.due = timers._heap[0][0] if timers._heap else NEVER

    def _drop_duplicates(self, kind: str, batch: pa.RecordBatch
                         ) -> tuple[pa.RecordBatch, np.ndarray | None]:
        """``batch`` without its exact duplicates (:func:`~qsframework.duplicates.drop`),
        and the mask of the rows kept (None: all)."""
        batch, kept, count = drop_duplicates(self._last, kind, batch)
        self.duplicates += count
        return batch, kept

    def _failed(self, handler: str, exc: Exception, what: str = "") -> StrategyError:
        return _failed(type(self.strategy), handler, exc, what)

    def _handler_failed(self, exc: Exception, kind: str, batch: pa.RecordBatch, event: Any) -> None:
        """Raise what ``on_<kind>`` raised on ``event`` as the one-line StrategyError (as is
        when it is one already, or came from ``on_outputs``)."""
        if event is None or self._spilling or isinstance(exc, StrategyError):
            raise exc
        ts, names = event[0], batch.schema.names
        key = f" {event[names.index('key')]}" if "key" in names else ""
        what = f"{kind}{key} at {format_time(ts)} (ts_event {ts})"
        raise self._failed(f"on_{kind}", exc, what) from exc

    # -- state -------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The strategy's and context's state, to resume exactly where this engine is."""
        ctx, timers = self.ctx, self.ctx.timers
        state = {k: v for k, v in self.strategy.__dict__.items() if k not in ("ctx", "p")}
        return state_pickle.dumps({
            "strategy": state,
            "timers": (list(timers._heap), timers._count, timers.due),
            "seq": ctx._seq,
            "key_seq": ctx._key_seq,
            "rng": ctx.rng.getstate(),
            "now": ctx.now,
            "started": self._started,
            "events_in": self.events_in,
            "duplicates": self.duplicates,
            "last": self._last,
            "sim": self.sim.state(),
        })

    def restore(self, blob: bytes) -> None:
        """Resume from :meth:`snapshot` of an engine running the same strategy and parameters."""
        snap = pickle.loads(blob)
        self.strategy.__dict__.update(snap["strategy"])
        ctx, timers = self.ctx, self.ctx.timers
        timers._heap, timers._count, timers.due = snap["timers"]
        ctx._seq, ctx.now = snap["seq"], snap["now"]
        if ctx._key_seq is not None:
            ctx._key_seq = dict(snap.get("key_seq") or {})
        ctx.rng.setstate(snap["rng"])
        self._started, self.events_in = snap["started"], snap["events_in"]
        self.duplicates, self._last = snap.get("duplicates", 0), snap.get("last", {})
        if "sim" in snap:
            self.sim.load(snap["sim"])
        self.strategy.on_restore()
        self._handlers = self._bind()  # handlers may be bound to restored objects

    def finish(self) -> None:
        """End of input: no timer fires after the last event."""
        if self._started:
            last = self.ctx.now
            try:
                self.strategy.on_stop()
            except Exception as exc:
                raise self._failed("on_stop", exc) from exc
            if self.sim.trading:
                self.settle_switch()
                deliver_notices(self)
                self.sim.finish(last)

    # -- paths -------------------------------------------------------------------
    def _fire_before(self, ts: int) -> bool:
        """Run every timer due strictly before ``ts``, one by one (``on_outputs`` every
        ``FIRE_CHUNK`` fires). True when the strategy has placed its first order (in the
        last handler, or in one of these timers): the per-event loop hands the event at
        ``ts`` and the rest over to the execution loop, which fires the timers left."""
        ctx, timers, on_timer = self.ctx, self.ctx.timers, self.strategy.on_timer
        if ctx.switch:  # the last handler placed the first order: its notices come first
            self.settle_switch()
            deliver_notices(self)
            return True
        count = 0
        while (fire := timers.pop_before(ts)) is not None:
            ctx.now = fire[0]
            try:
                on_timer(fire[1], fire[0])
            except Exception as exc:
                raise self._failed(
                    "on_timer", exc, f"timer {fire[1]!r} at {format_time(fire[0])} (ts {fire[0]})"
                ) from exc
            if ctx.switch:
                return True
            count += 1
            if count == FIRE_CHUNK:
                count = 0
                self._spill()
        return False

    def _spill(self) -> None:
        """Let ``on_outputs`` take the outputs so far (its errors are not the strategy's)."""
        self.sim.flush()
        if self.on_outputs is not None:
            self._spilling = True
            self.on_outputs()
            self._spilling = False

    def _run_events(self, kind: str, row: type, batch: pa.RecordBatch, full: pa.RecordBatch,
                    handler: Any) -> None:
        """The plain per-event loop (no order placed yet); at the first order, the event the
        loop is on and the rest of the batch go to the execution loop."""
        ctx = self.ctx
        timers = ctx.timers
        fire = self._fire_before
        named = self.strategy.rows == "named"
        columns = [pylists(c) for c in batch.columns]
        n = batch.num_rows
        event, at = None, n
        try:
            for lo in range(0, n, EVENT_CHUNK):
                hi = min(n, lo + EVENT_CHUNK)
                events, lead = rows([values(lo, hi) for values in columns], row, named=named)
                for event in events:
                    ts = event[0]
                    if ts > timers.due and fire(ts):  # the strategy ordered
                        at = row_at(hi, lead)
                        break
                    ctx.now = ts
                    handler(event)
                if at < n:
                    break
        except Exception as exc:  # the loop stopped in the handler, on `event`
            self._handler_failed(exc, kind, batch, event)
        if at < n:
            run_trading(self, kind, row, batch.slice(at), full.slice(at), handler)
