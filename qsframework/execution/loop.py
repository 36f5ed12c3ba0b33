"""The engine's per-event loop once a strategy has ordered: trades matched against its
orders, fills booked and handed to ``on_fill``, equity sampled on the grid.

Per trade event ``e`` of key ``k``: the grid samples before ``e``; the timers due before
``e``; the cancels effective at or before ``e``; ``e`` matched against ``k``'s active orders
(submitted before ``e``); ``e``'s handler (it still sees the position before those fills);
the pending ``on_order`` calls; then per fill: booked, its row, ``on_fill``, and the order's
status row and ``on_order`` when it completed. Other kinds skip the matching.

The per-event cost between the events that matter is the plain loop's: while no order is
open, trades run the plain per-event loop, stopped by the timers' one due time, into which
the next effective cancel is folded (``TimerQueue.floor``) and which an order or a cancel
lowers (``Simulator._wake``); only then are the notices delivered, the cancels applied. The
grid samples of such a stretch are built afterwards in bulk (:meth:`Market.sample_before`):
cash and positions did not change (no fill without an open order), and each held key's mark
at a grid time is its last price at or before it in the batch's columns. They are built
before anything that comes after them: a stop, an output taking its sequence number
(``Simulator.on_output``), ``ctx.equity()``, the end of a chunk. While orders are open, each
trade is checked against its key's book and the loop stops at every grid time. The marks
(each held key's last price) are taken from the batch's columns when needed (a sample,
``ctx.equity()``, the batch's end), not stored per event.
"""

from __future__ import annotations

from operator import length_hint
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import EVENT_CHUNK, event_chunks, pylists, rows
from ..durations import format_time
from ..errors import StrategyError
from ..timers import NEVER
from .records import Fill
from .samples import Held
from .simulator import SAMPLE_CHUNK, WAKE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..engine import Engine


def row_at(hi: int, lead: Iterator[Any]) -> int:
    """The row a per-event loop is on: the last one taken from :func:`~qsframework.columns.rows`
    of a chunk ending at row ``hi`` whose first column's iterator is ``lead`` (what is left of
    it tells where the loop is, at no cost per event)."""
    return hi - 1 - length_hint(lead)


def deliver_notices(engine: Engine) -> None:
    """Call ``on_order`` for every status change not delivered yet, in order."""
    notices = engine.sim.notices
    on_order = engine.strategy.on_order
    while notices:
        order = notices.pop(0)
        try:
            on_order(order)
        except Exception as exc:
            what = f"order {order.order_id} {order.status} at {format_time(order.ts_event)}"
            raise engine._failed("on_order", exc, what) from exc


def _settle(engine: Engine, ts: int, key: str, fills: list) -> None:
    """Book ``fills`` of the trade at ``ts``: rows, ``on_fill`` and the completed orders."""
    sim, on_fill = engine.sim, engine.strategy.on_fill
    for match in fills:
        sim.book_fill(ts, key, match)
        order, qty, price, fee, liquidity, _, complete = match
        try:
            on_fill(Fill(ts, key, order.id, qty, price, fee, liquidity))
        except Exception as exc:
            what = f"fill of order {order.id} at {format_time(ts)} (ts_event {ts})"
            raise engine._failed("on_fill", exc, what) from exc
        if complete:
            sim.order_done(ts, match)
        deliver_notices(engine)


def _arrive(engine: Engine, ts: int) -> None:
    """An event at ``ts`` arrives: the grid samples before it, then the timers due before it."""
    if ts > engine.sim.sample_due:
        engine.sim.sample_before(ts)
    if ts > engine.ctx.timers.due:
        engine._fire_before(ts)
    engine.ctx.now = ts


class Market:
    """A trade batch's key, price and qty, read only at the events that matter: the trades
    matched against open orders, and the marks (each held key's last price before a point).
    A chunk's values are the strategy's own lists when it reads the column, else made once
    needed; the batch's numpy columns are made once a span of samples needs them."""

    __slots__ = ("full", "shared", "makers", "values", "sim", "ctx", "portfolio", "lo", "hi",
                 "lead", "before", "seen", "times", "ts", "prices")

    def __init__(self, engine: Engine, full: pa.RecordBatch, names: list[str]) -> None:
        self.full = full
        self.shared = {name: names.index(name) for name in ("key", "price", "qty") if name in names}
        self.makers: dict[str, Callable[[int, int], list]] = {}
        self.values: dict[str, list] = {}  # the current chunk's lists
        self.times: list[int] = []  # the current chunk's event times
        self.sim, self.ctx = engine.sim, engine.ctx
        self.portfolio = engine.sim.portfolio
        self.lo = self.hi = 0  # the current chunk, and the iterator telling how many rows are left
        self.lead: Iterator[Any] = iter(())
        self.before = 0  # 1 while the loop is between events (the current row not arrived)
        self.seen = 0  # the held keys' marks are those as of this row
        self.ts: np.ndarray | None = None  # the batch's times and prices, as numpy
        self.prices: np.ndarray | None = None

    def chunk(self, lo: int, hi: int, lists: list[list], lead: Iterator[Any]) -> None:
        """Rows [lo, hi) come next, as ``lists`` (the strategy's columns)."""
        self.lo, self.hi, self.lead, self.times = lo, hi, lead, lists[0]
        self.values = {name: lists[i] for name, i in self.shared.items()}

    def column(self, name: str) -> list:
        values = self.values.get(name)
        if values is None:
            make = self.makers.get(name)
            if make is None:
                make = self.makers[name] = pylists(self.full.column(name))
            values = self.values[name] = make(self.lo, self.hi)
        return values

    def trade(self, i: int) -> tuple[str, float, float]:
        """Key, price and qty of row ``i``."""
        j = i - self.lo
        return self.column("key")[j], self.column("price")[j], self.column("qty")[j]

    def mark(self, end: int) -> None:
        """The held keys' marks as of row ``end`` (exclusive): each one's last price before
        it, looked for back to the row the marks were last brought up to (in the batch's
        columns when that row is in an earlier chunk)."""
        seen = self.seen
        if end <= seen:
            return
        positions = self.portfolio.positions
        if not positions:
            self.seen = end
            return
        if seen < self.lo:
            self.values_at(np.array([end]), self.portfolio.held())
            return
        self.seen = end
        keys, prices, marks = self.column("key"), self.column("price"), self.portfolio.marks
        need = set(positions)
        for j in range(end - 1 - self.lo, seen - 1 - self.lo, -1):
            key = keys[j]
            if key in need:
                marks[key] = prices[j]
                need.discard(key)
                if not need:
                    break

    def refresh(self) -> None:
        """The marks as of the current event (for ``ctx.equity()``), the samples before it
        first."""
        self.catch_up()
        self.mark(row_at(self.hi, self.lead) + 1 - self.before)

    def catch_up(self) -> None:
        """The grid samples before ``now`` while no order is open (``Simulator.on_output``:
        before an output's seq). With orders open the loop samples at its stops, and what
        a stop delivers first (notices, a timer's first order) comes before its samples."""
        sim, now = self.sim, self.ctx.now
        if now > sim.sample_due and not sim.books:
            # the current row (in its handler, or next to arrive after a timer's): samples that
            # all follow the row before it take the cheap path (a strategy emitting on its own
            # timer every grid step, like the spread's sampling, pays no bulk call per signal)
            self.sample_before(now, row_at(self.hi, self.lead))

    def sample_before(self, ts: int, row: int = -1) -> None:
        """The grid samples before ``ts`` while no order is open. When they all follow the
        event before ``row`` (the row at ``ts``, if known) they see the state as of ``row``:
        one by one, as with orders open. Else in bulk: cash and positions are those of now,
        each held key's mark at a grid time its last price at or before it (rows from
        ``seen`` on; before them, its mark as of ``seen``)."""
        sim = self.sim
        if ts <= sim.sample_due:
            return
        if row > self.lo:
            previous = self.times[row - 1 - self.lo]
        else:
            previous = int(self.full.column("ts_event")[row - 1].as_py()) if row > 0 else sim.sample_due
        if row >= 0 and previous <= sim.sample_due:
            self.mark(row)
            sim.sample_before(ts)
            return
        ts_col = self.ts
        if ts_col is None:
            ts_col = self.ts = self.full.column("ts_event").to_numpy()
        times = sim.grid_before(ts)
        p = self.portfolio
        held = p.held()
        if not held and len(times) <= SAMPLE_CHUNK:
            sim.sample_span(times, p.cash)
            return
        bounds = np.searchsorted(ts_col, times, side="right")  # the rows at or before each
        sim.sample_span(times, self.values_at(bounds, held) if held else p.cash, bounds)

    def values_at(self, bounds: np.ndarray, held: Held) -> np.ndarray:
        """Cash plus the ``held`` positions at their marks as of each row bound (ascending,
        from ``seen`` on): the same float operations, in the same key order, as
        :meth:`~qsframework.execution.portfolio.Portfolio.value`. The marks move on to the
        last bound."""
        p = self.portfolio
        total = np.full(len(bounds), p.cash)
        lo, end = self.seen, int(bounds[-1])
        if self.prices is None:
            self.prices = self.full.column("price").to_numpy(zero_copy_only=False)
        keys = self.full.column("key").slice(lo, end - lo)
        for key, qty in held:
            mark = p.marks[key]
            mine = np.flatnonzero(pc.equal(keys, key).to_numpy(zero_copy_only=False))
            if len(mine):
                mine += lo
                last = np.searchsorted(mine, bounds) - 1  # the key's last row before each bound
                marks = self.prices[mine[last]]
                if last[0] < 0:
                    marks = np.where(last >= 0, marks, mark)
                total += qty * marks
                p.marks[key] = float(marks[-1])
            else:
                total += qty * mark
        self.seen = end
        return total


def _stop(engine: Engine, market: Market, i: int, ts: int) -> None:
    """Before trade row ``i`` at ``ts``: the notices the last handler left, the grid samples,
    the timers and the cancels due; then the timers' due time again, with the simulator's
    folded in (without the grid while no order is open: those samples are built in bulk)."""
    sim, timers = engine.sim, engine.ctx.timers
    books = sim.books
    market.before = 1
    if sim.notices:
        deliver_notices(engine)
    if ts > sim.sample_due:
        if books:
            market.mark(i)  # the samples see the events before ts
            sim.sample_before(ts)
        else:
            market.sample_before(ts, i)
    if timers._heap and timers._heap[0][0] < ts:
        engine._fire_before(ts)
    if ts >= sim.cancel_due:
        sim.apply_cancels(ts)
    market.before = 0
    due = sim.due if books else sim.cancel_due - 1
    timers.floor = due
    top = timers._heap[0][0] if timers._heap else NEVER
    timers.due = top if top < due else due


def _trade(engine: Engine, market: Market, i: int, ts: int, event: Any, handler: Any) -> None:
    """Trade row ``i`` (``event``) with orders open: matched against its key's book, then
    its handler, the notices and the fills."""
    sim = engine.sim
    engine.ctx.now = ts
    key, price, qty = market.trade(i)
    book = sim.books.get(key)
    fills = sim.match(book, ts, price, qty) if book is not None else None
    handler(event)
    if sim.notices:
        deliver_notices(engine)
    if fills:
        sim.portfolio.marks[key] = price  # the key may be held from now on: its mark
        _settle(engine, ts, key, fills)


def run_trading(engine: Engine, kind: str, row: type, batch: pa.RecordBatch, full: pa.RecordBatch,
                handler: Any) -> None:
    """Run ``batch`` (the strategy's columns; ``full`` also has key, price and qty) per event
    with execution."""
    engine.settle_switch()
    if handler is None:
        name = type(engine.strategy).__name__
        raise StrategyError(f"{name} places orders, which needs per-event handlers: it has no on_{kind}")
    named = engine.strategy.rows == "named"
    try:
        if kind == "trade":
            _run_trades(engine, row, batch, full, handler, named=named)
        else:
            _run_others(engine, kind, row, batch, handler, named=named)
    finally:
        engine.sim.flush()  # the batch's samples, before anyone reads the outputs


def _run_others(engine: Engine, kind: str, row: type, batch: pa.RecordBatch, handler: Any, *,
                named: bool) -> None:
    """Events of a kind other than trades: nothing to match."""
    notices = engine.sim.notices
    event = None
    try:
        for _, _, events in event_chunks(batch, row, named=named):
            for event in events:
                _arrive(engine, event[0])
                handler(event)
                if notices:
                    deliver_notices(engine)
    except Exception as exc:  # the loop stopped in a handler, on `event`
        engine._handler_failed(exc, kind, batch, event)


def _run_trades(engine: Engine, row: type, batch: pa.RecordBatch, full: pa.RecordBatch,
                handler: Any, *, named: bool) -> None:
    """The trades of ``batch``: the plain loop while no order is open, stopped at the next
    due time; per event against the books while orders are open."""
    ctx, sim = engine.ctx, engine.sim
    timers, books, portfolio = ctx.timers, sim.books, sim.portfolio
    market = Market(engine, full, batch.schema.names)
    portfolio.refresh = market.refresh
    sim.on_output = market.catch_up
    timers.floor = timers.due = WAKE  # the first event looks at everything
    columns = [pylists(c) for c in batch.columns]
    n = batch.num_rows
    event = None
    try:
        for lo in range(0, n, EVENT_CHUNK):
            hi = min(n, lo + EVENT_CHUNK)
            lists = [values(lo, hi) for values in columns]
            events, lead = rows(lists, row, named=named)
            market.chunk(lo, hi, lists, lead)
            while True:
                if not books:  # the plain loop: one compare per event
                    for event in events:
                        ts = event[0]
                        if ts > timers.due:
                            i = row_at(hi, lead)
                            _stop(engine, market, i, ts)
                            if books:  # an order is open: this event and on, per event
                                _trade(engine, market, i, ts, event, handler)
                                break
                        ctx.now = ts
                        handler(event)
                    else:
                        break
                else:
                    for event in events:
                        i = row_at(hi, lead)
                        ts = event[0]
                        if ts > timers.due:
                            _stop(engine, market, i, ts)
                        _trade(engine, market, i, ts, event, handler)
                        if not books:
                            break
                    else:
                        break
            if books:
                market.mark(hi)  # the next chunk's marks start from these
        if n and not books:  # the samples that see the batch's marks, then the marks
            market.sample_before(columns[0](n - 1, n)[0])
            market.mark(n)
        if sim.notices:  # the last handler's
            deliver_notices(engine)
    except Exception as exc:  # the loop stopped in a handler, on `event`
        engine._handler_failed(exc, "trade", batch, event)
    finally:
        portfolio.refresh = sim.on_output = None
