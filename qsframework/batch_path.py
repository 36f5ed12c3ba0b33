"""The engine's batch path: ``on_<kind>_batch(batch, fires)`` over segments of a batch, and
the hand-over to the per-event execution loop when a batch handler or a timer orders.

A batch is cut into segments at one-shot timers (they fire through ``on_timer`` between
segments) and at long timer catch-ups; each segment goes to the batch handler with the
periodic timer fires inside it. The handler returns the number of rows it handled, ``n``
(None: all). Orders and cancels it placed are submitted at ``at=`` = the ``ts_event`` of
row ``n - 1``, exactly as if ``on_<kind>`` had placed them on that row: the periodic timers
are put back to where the per-event path has them after that row (fires due at or after its
time not taken), and the rest of the batch runs per event with execution
(:func:`~qsframework.execution.loop.run_trading`), as the per-event loop does after its
first order. A handler that returns ``n`` short of the segment without ordering goes on with
the rest on the batch path.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .durations import format_time
from .errors import StrategyError
from .execution.loop import deliver_notices, run_trading
from .timers import NEVER, TimerQueue

if TYPE_CHECKING:
    from .engine import Engine

FIRE_CHUNK = 65_536  # timer fires handed over at a time in a catch-up
#: a timer queue entry: (due time, creation order, name, period; 0 for a one-shot)
Entry = tuple[int, int, str, int]


def rewind(timers: TimerQueue, before: list[Entry], cut: int) -> None:
    """Put the periodic timers that were in ``before`` (the queue before a segment's fires
    were taken) back to what the per-event path leaves after the event at ``cut``: every fire
    due strictly before ``cut`` taken, none after. Timers added or cancelled meanwhile stay so."""
    start = {order: (when, period) for when, order, _, period in before if period}
    heap: list[Entry] = []
    for when, order, name, period in timers._heap:
        if order in start:
            first, period = start[order]
            when = first if first >= cut else first + ((cut - 1 - first) // period + 1) * period
        heap.append((when, order, name, period))
    heapq.heapify(heap)
    timers._heap = heap
    top = heap[0][0] if heap else NEVER
    timers.due = top if top < timers.floor else timers.floor


def run_batch(engine: Engine, kind: str, row: type, batch: pa.RecordBatch, full: pa.RecordBatch,
              one: Any, many: Any) -> None:
    """``batch`` (the strategy's columns; ``full`` with the simulator's too) through the batch
    handler ``many``, handed over to the per-event handler ``one`` at the first order."""
    ctx = engine.ctx
    ts = batch.column(0).to_numpy()
    timers = ctx.timers
    n, pos = len(ts), 0
    while pos < n:
        if engine._fire_before(int(ts[pos])):  # a timer placed the first order: row pos on, per event
            _hand_over(engine, kind, row, batch, full, one, pos, False, "on_timer")
            return
        cut = timers.next_one_shot()
        end = n if cut == NEVER else max(pos + 1, int(np.searchsorted(ts, cut, side="right")))
        last = int(ts[end - 1])
        bound = timers.fire_bound(last, FIRE_CHUNK)
        if bound < last:  # a long catch-up: the rows up to the bound, the rest after
            end = pos + int(np.searchsorted(ts[pos:end], bound, side="right"))
        seg_ts = ts[pos:end]
        before = list(timers._heap)
        fires = timers.periodic_fires(seg_ts, before=int(seg_ts[-1]))
        ctx.now = int(seg_ts[-1])
        part = batch if (pos == 0 and end == n) else batch.slice(pos, end - pos)
        ctx.batch = placed = []
        try:
            handled = many(part, fires)
        except Exception as exc:
            what = f"{kind} rows at {format_time(int(seg_ts[0]))} .. {format_time(int(seg_ts[-1]))}"
            raise engine._failed(f"on_{kind}_batch", exc, what) from exc
        finally:
            ctx.batch = None
        rows = end - pos
        handled = _handled(engine, kind, handled, rows)
        at = int(seg_ts[handled - 1])
        if placed and any(t != at for t in placed):
            raise _misplaced(engine, kind, placed, handled, at)
        if handled < rows:
            rewind(timers, before, at)
        if ctx.switch:  # the handler placed the first order, on row pos + handled - 1
            ctx.now = at
            _hand_over(engine, kind, row, batch, full, one, pos + handled, True,
                       f"on_{kind}_batch")
            return
        pos += handled
        if pos < n:
            engine._spill()


def _handled(engine: Engine, kind: str, handled: Any, rows: int) -> int:
    """The number of rows a batch handler of a ``rows``-row segment said it handled."""
    if handled is None:
        return rows
    if isinstance(handled, bool) or not isinstance(handled, int | np.integer) or not 0 < handled <= rows:
        raise engine._failed(f"on_{kind}_batch", ValueError(
            f"returned {handled!r}: a batch handler returns None (all rows handled) or the "
            f"number of rows it handled, 1 .. {rows} here"))
    return int(handled)


def _misplaced(engine: Engine, kind: str, placed: list[int], handled: int, at: int) -> StrategyError:
    """The error for orders whose ``at=`` is not the time of the last row handled."""
    wrong = next(t for t in placed if t != at)
    return engine._failed(f"on_{kind}_batch", ValueError(
        f"placed an order or cancel at={wrong} but returned {handled}, whose last row is at "
        f"{at}: stop at the row whose handling placed the orders and return its index + 1"))


def _hand_over(engine: Engine, kind: str, row: type, batch: pa.RecordBatch, full: pa.RecordBatch,
               one: Any, start: int, after_handler: bool, where: str) -> None:
    """The first order was placed (by ``where``): rows ``start`` on run per event with
    execution, like the per-event loop's hand-over (and so do all later batches)."""
    missing = [k for k, (handler, _) in engine._handlers.items() if handler is None]
    if missing:
        name = type(engine.strategy).__name__
        raise StrategyError(
            f"{name} placed an order from {where}: once a strategy has ordered it runs per event "
            f"(each trade is matched against its orders), which needs on_{missing[0]}: it has none")
    if after_handler:
        engine.settle_switch()
        deliver_notices(engine)
    if start < batch.num_rows:
        run_trading(engine, kind, row, batch.slice(start), full.slice(start), one)
