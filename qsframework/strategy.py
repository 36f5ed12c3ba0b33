"""The Strategy API: a small class with per-event (and optionally batch) handlers.

A strategy reads time only from ``ctx.now`` (event time), does no I/O and draws random
numbers from ``ctx.rng``; so the same input events always give the same outputs.
"""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any, ClassVar

from .outputs import Outputs
from .params import NoParams
from .timers import TimerQueue


def _json(attrs: dict[str, Any] | None) -> str | None:
    if attrs is None:
        return None
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in attrs.items()}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), allow_nan=False)


class Context:
    """What a strategy sees of the world: event time, timers, emitters and a seeded RNG."""

    __slots__ = ("now", "strategy", "source", "timers", "outputs", "rng", "_seq")

    def __init__(self, *, strategy: str, seed: int = 0) -> None:
        self.now: int = 0
        self.strategy = strategy
        self.source = f"qsf:{strategy}"
        self.timers = TimerQueue()
        self.outputs = Outputs()
        self.rng = random.Random(seed)
        self._seq = 0

    # timers ----------------------------------------------------------------------
    def at(self, when: int, name: str) -> None:
        """Call ``on_timer(name, when)`` once event time moves strictly past ``when``."""
        self.timers.add(when, name)

    def every(self, period: int, name: str, *, first: int) -> None:
        """Call ``on_timer`` at ``first``, ``first + period``, ... (each once time passes it)."""
        if period <= 0:
            raise ValueError("timer period must be positive")
        self.timers.add(first, name, period)

    def cancel(self, name: str) -> None:
        self.timers.cancel(name)

    # emitters --------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

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
            (t, t, self.source, key, self._next_seq(), self.strategy, name, value, _json(attrs))
        )

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
            (t, t, self.source, key, self._next_seq(), self.strategy, name, severity, text, dk)
        )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Strategy:
    """Base class of strategies.

    Subclasses set ``kinds`` (event kinds they consume), a frozen dataclass ``Params``,
    and handlers named after kinds: ``on_trade(self, event)`` receives one event (a named
    tuple with the kind's fields); an optional ``on_trade_batch(self, batch, fires)``
    receives a ``pyarrow.RecordBatch`` plus the periodic timer fires inside it and must give
    exactly the outputs the per-event path gives.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ("trade",)
    Params: ClassVar[type] = NoParams

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = _snake(cls.__name__)

    def __init__(self, params: Any, ctx: Context) -> None:
        self.p = params
        self.ctx = ctx

    def keys(self) -> frozenset[str] | None:
        """Event keys this strategy wants (None: all); sources filter on them."""
        return None

    def on_start(self) -> None:
        """Called once, before the first event; ``ctx.now`` is that event's time."""

    def on_timer(self, name: str, ts: int) -> None:
        """A timer set with ``ctx.at`` or ``ctx.every`` fired; ``ctx.now == ts``."""

    def on_stop(self) -> None:
        """Called after the last event."""
