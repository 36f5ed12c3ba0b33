"""The Strategy API: a small class with per-event (and optionally batch) handlers.

A strategy reads time only from ``ctx.now`` (event time), does no I/O and draws random
numbers from ``ctx.rng``; so the same input events always give the same outputs.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import orjson
import pyarrow as pa

from .execution.config import ExecutionConfig
from .execution.records import Fill, Order
from .execution.simulator import Simulator
from .outputs import Outputs
from .params import NoParams
from .timers import TimerQueue

#: ``timers.due`` while the engine has to leave its plain per-event loop (the first order):
#: every event time is past it, so the loop's timer check catches the switch at no extra cost
SWITCH = -(1 << 63)


def attrs_json(attrs: dict[str, Any] | None) -> str | None:
    """Compact JSON with sorted keys (NaN/inf become null): the same text for the same attrs."""
    if attrs is None:
        return None
    return orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def repeat_string(text: str, n: int) -> pa.Array:
    """A string array of ``n`` copies of ``text``, built from buffers."""
    raw = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def attrs_json_column(name: str, values: Sequence[Any]) -> pa.Array:
    """``[attrs_json({name: v}) for v in values]`` as an Arrow string array (same bytes),
    for numeric values (or None).

    One orjson call serializes every value; each comma between two values then becomes
    the end of one object and the start of the next, and the offsets come from the
    commas' positions, so no Python string is made per row.
    """
    n = len(values)
    if not n:
        return pa.array([], pa.string())
    head = attrs_json({name: None})[: -len("null}")].encode()  # b'{"name":'
    body = orjson.dumps(list(values), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    commas = np.flatnonzero(np.frombuffer(body, np.uint8) == ord(","))
    ends = np.empty(n, np.int64)
    ends[:-1], ends[-1] = commas, len(body)  # where each value's text ends in body
    lengths = np.diff(ends, prepend=-1) - 1 + len(head) + 1
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = head + body.replace(b",", b"}" + head) + b"}"
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


class Context:
    """What a strategy sees of the world: event time, timers, emitters, a seeded RNG, and
    its simulated orders and portfolio."""

    __slots__ = ("now", "strategy", "source", "timers", "outputs", "rng", "_seq", "_key_seq", "sim", "switch",
                 "batch")

    def __init__(self, *, strategy: str, seed: int = 0, execution: ExecutionConfig | None = None,
                 per_key: bool = False) -> None:
        self.now: int = 0
        self.strategy = strategy
        self.source = f"qsf:{strategy}"
        self.timers = TimerQueue()
        self.outputs = Outputs()
        self.rng = random.Random(seed)
        self._seq = 0
        #: ``scale = "key"``: output sequence numbers count per key (None: one count for all), so
        #: a key's outputs are the same whichever other keys share its engine
        self._key_seq: dict[str, int] | None = {} if per_key else None
        self.sim = Simulator(execution or ExecutionConfig(), self.outputs, strategy=strategy,
                             source=self.source, reserve_seq=self._reserve_seq)
        #: the strategy just placed its first order: the engine leaves its plain loop
        self.switch = False
        #: while a batch handler runs: the submit times (``at=``) of the orders and cancels
        #: it placed so far; None outside one
        self.batch: list[int] | None = None

    # timers ----------------------------------------------------------------------
    def at(self, when: int, name: str) -> None:
        """Call ``on_timer(name, when)`` once event time moves strictly past ``when``."""
        self.timers.add(when, name)
        self._keep_switch()

    def every(self, period: int, name: str, *, first: int) -> None:
        """Call ``on_timer`` at ``first``, ``first + period``, ... (each once time passes it)."""
        if period <= 0:
            raise ValueError("timer period must be positive")
        self.timers.add(first, name, period)
        self._keep_switch()

    def cancel(self, what: str | int, *, at: int | None = None) -> None:
        """Cancel a timer (``ctx.cancel("name")``) or an order (``ctx.cancel(order_id)``, as
        :meth:`cancel_order`, ``at`` as there)."""
        if isinstance(what, str):
            self.timers.cancel(what)
            self._keep_switch()
        else:
            self.cancel_order(what, at=at)

    def _keep_switch(self) -> None:
        if self.switch:
            self.timers.due = SWITCH

    # orders and portfolio --------------------------------------------------------------
    def order(self, key: str, qty: float, *, price: float | None = None, tag: str = "",
              at: int | None = None) -> int:
        """Place an order: ``qty > 0`` buys, ``< 0`` sells; ``price`` None is a market order,
        else a limit. Submitted at ``now`` (from a batch handler: at ``at``, the ``ts_event``
        of the row whose handling placed it), active from then + latency; returns its id
        (0, 1, 2, ... in submission order)."""
        return self.sim.submit(self._submitted(at), key, qty, price, tag)

    def cancel_order(self, order_id: int, *, at: int | None = None) -> None:
        """Cancel an order; it takes effect at ``now`` (a batch handler: ``at``, as for
        :meth:`order`) + latency unless it filled before."""
        if isinstance(order_id, bool) or not isinstance(order_id, int | np.integer):
            raise ValueError(f"an order id is an int, not {order_id!r}")
        self.sim.cancel(self._submitted(at), int(order_id))

    def _submitted(self, at: int | None) -> int:
        """The event time an order or cancel is placed at: ``now`` in a per-event handler
        (``at``, if given, must say the same), ``at`` in a batch handler, where it is
        required (``now`` there is the last row the handler was given, not the row that
        placed it)."""
        if self.batch is None:
            if at is not None and at != self.now:
                raise ValueError(f"at={at} in a per-event handler, whose orders are placed at "
                                 f"ctx.now ({self.now}): leave at= out (it is for batch handlers)")
            return self.now
        if at is None:
            raise ValueError("an order or cancel from a batch handler needs at=<the ts_event of "
                             "the row whose handling placed it>, and the handler returns the "
                             "number of rows it handled, up to and including that row")
        if isinstance(at, bool) or not isinstance(at, int | np.integer):
            raise ValueError(f"at= is an event time in ns (an int), not {at!r}")
        self.batch.append(int(at))
        return int(at)

    def position(self, key: str) -> float:
        """The filled quantity of ``key`` held (signed; short below zero)."""
        return self.sim.portfolio.positions.get(key, 0.0)

    @property
    def cash(self) -> float:
        return self.sim.portfolio.cash

    @property
    def equity(self) -> float:
        """Cash plus the positions marked at each key's last trade price."""
        return self.sim.portfolio.equity()

    # emitters --------------------------------------------------------------------
    def _next_seq(self, key: str) -> int:
        if self.sim.on_output is not None:  # the equity samples due before now come first
            self.sim.on_output()
        per_key = self._key_seq
        if per_key is not None:
            seq = per_key[key] = per_key.get(key, -1) + 1
            return seq
        self._seq += 1
        return self._seq - 1

    def _reserve_seq(self, n: int, key: str | None = None) -> int:
        """The first of ``n`` consecutive output sequence numbers (of ``key``'s count with
        ``scale = "key"``), taken for rows emitted at once."""
        per_key = self._key_seq
        if per_key is not None and key is not None:
            first = per_key.get(key, 0)
            per_key[key] = first + n
            return first
        self._seq += n
        return self._seq - n

    def signal(
        self,
        key: str,
        name: str,
        value: float | None,
        attrs: dict[str, Any] | None = None,
        *,
        ts: int | None = None,
    ) -> None:
        """Emit a signal at event time ``ts`` (default ``now``)."""
        t = self.now if ts is None else ts
        if value is not None and not math.isfinite(value):
            value = None
        self.outputs.signals.append(
            (t, t, self.source, key, self._next_seq(key), self.strategy, name, value, attrs_json(attrs))
        )

    def signals(
        self,
        key: str,
        name: str,
        ts: Sequence[int] | np.ndarray,
        values: Sequence[float | None] | np.ndarray,
        attrs: Sequence[dict[str, Any] | None] | None = None,
        *,
        attrs_text: Sequence[str | None] | pa.Array | None = None,
    ) -> None:
        """Emit several signals at once, in order (for batch handlers).

        ``attrs_text`` takes attrs already serialized with :func:`attrs_json`.
        """
        n = len(ts)
        if not n:
            return
        t = pa.array(np.asarray(ts, dtype=np.int64))
        v = np.asarray([np.nan if x is None else x for x in values] if not isinstance(values, np.ndarray) else values, dtype=np.float64)
        if attrs_text is None:
            attrs_text = [attrs_json(a) for a in attrs] if attrs is not None else [None] * n
        if self.sim.on_output is not None:
            self.sim.on_output()
        start = self._reserve_seq(n, key)
        self.outputs.signals.extend([
            t,
            t,
            repeat_string(self.source, n),
            repeat_string(key, n),
            pa.array(np.arange(start, start + n, dtype=np.int64)),
            repeat_string(self.strategy, n),
            repeat_string(name, n),
            pa.array(v, mask=~np.isfinite(v)),
            attrs_text if isinstance(attrs_text, pa.Array) else pa.array(attrs_text, pa.string()),
        ])

    def alert(
        self,
        key: str,
        name: str,
        text: str,
        *,
        severity: str = "warning",
        dedup_key: str | None = None,
        ts: int | None = None,
    ) -> None:
        """Emit an alert; ``dedup_key`` (default strategy:key:name:time) lets sinks send it once."""
        t = self.now if ts is None else ts
        dk = dedup_key or f"{self.strategy}:{key}:{name}:{t}"
        self.outputs.alerts.append(
            (t, t, self.source, key, self._next_seq(key), self.strategy, name, severity, text, dk)
        )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Strategy:
    """Base class of strategies.

    Subclasses set ``kinds`` (event kinds they consume), a frozen dataclass ``Params``,
    and handlers named after kinds: ``on_trade(self, event)`` receives one event (a named
    tuple with the kind's fields); an optional ``on_trade_batch(self, batch, fires)``
    receives a ``pyarrow.RecordBatch`` plus the periodic timer fires inside it and must give
    exactly the outputs the per-event path gives. It returns the number of rows it handled
    (None: all); one that orders (``ctx.order(..., at=row's ts_event)``) stops at that row
    and the rest of the run goes per event (:mod:`qsframework.batch_path`).
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ("trade",)
    #: optional projection per kind, e.g. ``{"trade": ("key", "price")}``: only these
    #: fields (plus ``ts_event``) are read and handed to the handlers. Faster; default all.
    fields: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: "named": handlers get named tuples (``t.price``); "tuple": plain tuples in field
    #: order (``ts, key, price = t``), which saves building an object per event.
    rows: ClassVar[Literal["named", "tuple"]] = "named"
    Params: ClassVar[type] = NoParams
    #: how ``qsf process`` scales out over a consumer group (README "Scale-out"). "single": one
    #: engine sees every key (a spread across symbols): one member of a group is active, the
    #: others stand by. "key": each key is independent of the others (outputs, timers, state per
    #: key, no orders): one engine per partition, partitions spread over the members.
    scale: ClassVar[Literal["single", "key"]] = "single"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = _snake(cls.__name__)
        if cls.scale not in ("single", "key"):
            raise TypeError(f'{cls.__name__}.scale must be "single" or "key", not {cls.scale!r}')

    def __init__(self, params: Any, ctx: Context) -> None:
        self.p = params
        self.ctx = ctx

    def keys(self) -> frozenset[str] | None:
        """Event keys this strategy wants (None: all). Sources filter on them, and the
        engine hands the handlers only events with these keys."""
        return None

    def prepare(self) -> None:
        """Called before the clock starts: load tables, set up. Must not emit."""

    def prepare_batch(self) -> None:
        """Called before the clock starts when the batch path will run (and by the warm-up
        process of :mod:`qsframework.warmup`): compile or load its kernels. Must not emit."""

    def batch_ready(self) -> bool:
        """Whether the batch path can run without compiling first (its kernels compiled or in
        the on-disk cache). A strategy whose batch path compiles answers False until then, so
        a small backtest runs per event instead of waiting for a compile."""
        return True

    def batch_min_rows(self) -> int:
        """With path "auto": the fewest rows a batch must have for ``on_<kind>_batch`` to take
        it instead of the per-event handler (0: the engine's threshold alone). A batch handler
        whose set-up grows with the state (it converts the state to arrays and back) raises it
        with the state, so a live micro-batch after a pause does not pay for the whole state."""
        return 0

    def on_start(self) -> None:
        """Called once, before the first event; ``ctx.now`` is that event's time."""

    def on_timer(self, name: str, ts: int) -> None:
        """A timer set with ``ctx.at`` or ``ctx.every`` fired; ``ctx.now == ts``."""

    def on_stop(self) -> None:
        """Called after the last event."""

    def on_fill(self, fill: Fill) -> None:
        """One of the strategy's orders (partly) filled; called right after the handler of
        the trade it filled on."""

    def on_order(self, order: Order) -> None:
        """An order's status changed (accepted, filled, cancelled); called after the handler
        that placed the order, after its fill's ``on_fill``, or when its cancel took effect."""

    def on_restore(self) -> None:
        """Called after a snapshot's state was loaded into this instance (``qsf process
        --state``): re-attach what a snapshot does not keep, such as callbacks."""

