"""The order book of one run: submissions, cancels, matching against trades, equity samples.

The fill rules (exact, so they can be checked independently):

- an order submitted at event time ``t`` is active from ``t + latency``;
- a market order fills at the first trade of its key after the submitting event with
  ``ts_event >= t + latency``, at ``price * (1 + s * slippage_bps / 10**4)`` (``s`` = +1 buy,
  -1 sell), paying the taker fee ``|qty| * fill_price * taker_fee_bps / 10**4``;
- a limit buy fills at its limit on the first such trade priced strictly below it (a sell:
  strictly above), paying the maker fee; it rests until filled or cancelled;
- a cancel takes effect at ``cancel time + latency``; with ``max_participation`` F a trade
  fills at most F x its quantity, shared by the matching orders in id order.

The execution loop (:mod:`qsframework.execution.loop`) calls these in the engine's order.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from ..outputs import Outputs
from ..timers import NEVER, TimerQueue
from .config import ExecutionConfig
from .portfolio import Portfolio
from .records import Order
from .samples import EquityRows

if TYPE_CHECKING:
    from collections.abc import Callable

#: the timers' due time that stops the execution loop at its next event: an order or a cancel
#: changed what the loop must look at (every event time is past it)
WAKE = -(1 << 63)
SAMPLE_CHUNK = 65_536  # equity samples of a quiet span built (and spilled) at a time
#: one matched fill: (order, signed qty, price, fee, liquidity, filled so far, order complete)
Match = tuple["OpenOrder", float, float, float, str, float, bool]


class OpenOrder:
    """An order not yet filled or cancelled."""

    __slots__ = ("id", "key", "qty", "price", "tag", "active", "filled", "sign")

    def __init__(self, id: int, key: str, qty: float, price: float | None, tag: str, active: int) -> None:
        self.id, self.key, self.qty, self.price, self.tag = id, key, qty, price, tag
        self.active = active  # first event time it can fill at
        self.filled = 0.0
        self.sign = 1.0 if qty > 0 else -1.0

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)


class Simulator:
    """Simulated execution of one strategy's orders, writing order/fill/equity rows to
    ``outputs`` with the context's sequence numbers."""

    __slots__ = ("config", "outputs", "strategy", "source", "_reserve", "portfolio", "trading",
                 "refusal", "keys", "on_begin", "spill", "first_ts", "next_id", "open",
                 "books", "cancels", "cancel_due", "sample_due", "due", "notices", "timers",
                 "grid", "on_output")

    def __init__(self, config: ExecutionConfig, outputs: Outputs, *, strategy: str, source: str,
                 reserve_seq: Callable[[int], int]) -> None:
        self.config = config
        self.outputs = outputs
        self.strategy, self.source, self._reserve = strategy, source, reserve_seq
        self.portfolio = Portfolio(config.cash)
        #: the strategy has ordered: orders, fills and equity samples are kept from now on
        self.trading = False
        #: why orders cannot be placed (no trades subscribed), or None
        self.refusal: str | None = None
        self.keys: frozenset[str] | None = None
        #: called at the first order (the engine switches to the execution loop)
        self.on_begin: Callable[[], None] | None = None
        #: called between chunks of a long run of samples (the engine writes its outputs out)
        self.spill: Callable[[], None] | None = None
        self.first_ts: int | None = None  # the run's first event time (grid start)
        self.next_id = 0
        self.open: dict[int, OpenOrder] = {}
        self.books: dict[str, list[OpenOrder]] = {}  # open orders per key (if any), in id order
        self.cancels: deque[tuple[int, int]] = deque()  # (effective time, order id)
        self.cancel_due = NEVER
        self.sample_due = NEVER  # the next grid time to sample, once an event after it arrives
        #: an event after this needs a sample or a cancel: min(sample_due, cancel_due - 1)
        self.due = NEVER
        self.notices: list[Order] = []  # on_order calls not delivered yet
        #: the engine's timers, woken (due = WAKE) by an order or a cancel while trading
        self.timers: TimerQueue | None = None
        #: equity samples not in the outputs yet: flush()
        self.grid = EquityRows(source=source, strategy=strategy)
        #: called before an order's or a signal's row takes its seq (set by the execution
        #: loop: the equity samples due before now, which it builds in bulk, come first)
        self.on_output: Callable[[], None] | None = None

    # -- from the strategy's context -------------------------------------------------
    def submit(self, now: int, key: str, qty: float, price: float | None, tag: str) -> int:
        """Place an order submitted at event time ``now`` (the submitting row's)."""
        if self.refusal is not None:
            raise ValueError(self.refusal)
        if not isinstance(key, str):
            raise ValueError(f"an order's key must be a string, not {key!r}")
        if self.keys is not None and key not in self.keys:
            raise ValueError(f"order for {key!r}, which is not among the strategy's keys()")
        qty = float(qty)
        if qty == 0 or not math.isfinite(qty):
            raise ValueError(f"an order's qty must be a non-zero finite number, not {qty}")
        if price is not None:
            price = float(price)
            if not (math.isfinite(price) and price > 0):
                raise ValueError(f"a limit price must be a positive finite number, not {price}")
        if not self.trading:
            self.begin()
        oid = self.next_id
        self.next_id += 1
        order = OpenOrder(oid, key, qty, price, str(tag), now + self.config.latency_ns)
        self.open[oid] = order
        # the status row first: its seq comes after the grid samples due before now, which the
        # execution loop builds in bulk only while no order is open (``on_output``)
        self._status(order, now, "accepted")
        self.books.setdefault(key, []).append(order)
        self._wake()
        return oid

    def cancel(self, now: int, order_id: int) -> None:
        """Ask to cancel ``order_id``; it takes effect at ``now + latency`` if still open then."""
        if not 0 <= order_id < self.next_id:
            raise ValueError(f"no order {order_id} (ids so far: 0 .. {self.next_id - 1})")
        if order_id in self.open:
            self.cancels.append((now + self.config.latency_ns, order_id))
            self.cancel_due = self.cancels[0][0]
            self._redue()
            self._wake()

    def _wake(self) -> None:
        """Stop the execution loop at its next event (it runs the plain loop while no order
        is open, checking only the timers' due time)."""
        if self.timers is not None:
            self.timers.floor = self.timers.due = WAKE

    def begin(self) -> None:
        """The first order: samples start at the first grid time of the run."""
        self.trading = True
        m = self.config.mark_every_ns
        first = self.first_ts if self.first_ts is not None else 0
        self.sample_due = -(-first // m) * m
        self._redue()
        if self.on_begin is not None:
            self.on_begin()

    # -- from the execution loop -----------------------------------------------------
    def apply_cancels(self, ts: int) -> None:
        """Cancel the orders whose cancel took effect at or before ``ts``."""
        cancels = self.cancels
        while cancels and cancels[0][0] <= ts:
            when, oid = cancels.popleft()
            order = self.open.pop(oid, None)
            if order is not None:
                book = self.books[order.key]
                book.remove(order)
                if not book:
                    del self.books[order.key]
                self._status(order, when, "cancelled")
        self.cancel_due = cancels[0][0] if cancels else NEVER
        self._redue()

    def match(self, book: list[OpenOrder], ts: int, price: float, qty: float) -> list[Match]:
        """The fills of a trade (``price``, ``qty``) at ``ts`` against ``book``'s active orders;
        the orders' filled quantities move now, the portfolio when :meth:`settle` books them."""
        cfg = self.config
        budget = None if cfg.max_participation is None else cfg.max_participation * abs(qty)
        fills: list[Match] = []
        done = False
        for order in book:
            if order.active > ts:
                break  # later orders were submitted later: not active either
            limit = order.price
            if limit is None:
                fill_price = price * (1 + order.sign * cfg.slippage_bps / 10_000)
                liquidity, bps = "taker", cfg.taker_fee_bps
            elif (price < limit) if order.sign > 0 else (price > limit):
                fill_price, liquidity, bps = limit, "maker", cfg.maker_fee_bps
            else:
                continue
            rest = order.qty - order.filled
            if budget is None or budget >= abs(rest):
                fill_qty, complete = rest, True
                if budget is not None:
                    budget -= abs(rest)
            else:
                fill_qty, complete = order.sign * budget, False
                budget = 0.0
            order.filled = order.qty if complete else order.filled + fill_qty
            fee = abs(fill_qty) * fill_price * bps / 10_000
            fills.append((order, fill_qty, fill_price, fee, liquidity, order.filled, complete))
            if complete:
                done = True
                del self.open[order.id]
            if budget is not None and budget <= 0:
                break
        if done:
            book[:] = [o for o in book if o.id in self.open]
            if not book:
                del self.books[fills[0][0].key]
        return fills

    def book_fill(self, ts: int, key: str, fill: Match) -> None:
        """Book one fill: cash, position and average cost, and its fill row."""
        order, qty, price, fee, liquidity, _, _ = fill
        self.portfolio.apply(key, qty, price, fee)
        self.outputs.fills.append(
            (ts, ts, self.source, key, self._reserve(1), self.strategy, order.id, qty, price, fee, liquidity)
        )

    def order_done(self, ts: int, fill: Match) -> None:
        """The status row of an order a fill completed."""
        self._status(fill[0], ts, "filled")

    def _status(self, order: OpenOrder, ts: int, status: str) -> None:
        if self.on_output is not None:
            self.on_output()
        self.outputs.orders.append(
            (ts, ts, self.source, order.key, self._reserve(1), self.strategy, order.id, order.qty,
             order.price, order.tag, status, order.filled)
        )
        self.notices.append(
            Order(ts, order.key, order.id, order.qty, order.price, order.tag, status, order.filled)  # type: ignore[arg-type]
        )

    def sample_before(self, ts: int) -> None:
        """Equity samples at the grid times before ``ts``, all with the state of the event
        before ``ts`` (the per-event path calls this at the first event past a grid time, so
        nothing changed since the first of them)."""
        t, m = self.sample_due, self.config.mark_every_ns
        if 0 < ts - t <= m:  # one grid time: the common case, in short
            self.sample_due = due = t + m
            cancel = self.cancel_due - 1
            self.due = due if due < cancel else cancel
            self._sample(t)
            return
        p = self.portfolio
        held = p.held()
        self.sample_span(self.grid_before(ts), p.value(held))

    def grid_before(self, ts: int) -> np.ndarray:
        """The grid times not sampled yet before ``ts`` (none once ``ts <= sample_due``)."""
        t, m = self.sample_due, self.config.mark_every_ns
        n = (ts - 1 - t) // m + 1 if ts > t else 0
        return t + m * np.arange(n, dtype=np.int64)

    def sample_span(self, times: np.ndarray, equity: np.ndarray | float,
                    bounds: np.ndarray | None = None) -> None:
        """Samples at the next grid ``times`` (from ``grid_before``), no fill among them, with
        ``equity`` per sample (or one value for all). ``bounds``, when the span covers more
        than one quiet gap between events, is each sample's row bound (equal within a gap).

        A gap of more than ``SAMPLE_CHUNK`` samples goes ``SAMPLE_CHUNK`` at a time with
        ``spill`` between, so memory does not grow with it; the seqs are taken first, for
        the whole span, as the single samples would have taken them."""
        n = len(times)
        if not n:
            return
        self.sample_due = int(times[-1]) + self.config.mark_every_ns
        self._redue()
        p = self.portfolio
        first = self._reserve(n)
        cuts = _cuts(n, bounds) if n > SAMPLE_CHUNK and self.spill is not None else []
        at = 0
        for cut in [*cuts, n]:
            part = equity if isinstance(equity, float) else equity[at:cut]
            self.grid.span(times[at:cut], first + at, p.cash, part, p.held())
            if cut < n:
                self.spill()  # type: ignore[misc]
            at = cut

    def finish(self, last_ts: int) -> None:
        """End of the run: the grid samples up to the last event, and one at it."""
        if self.trading:
            self.sample_before(last_ts + 1)
            if last_ts % self.config.mark_every_ns:
                self._sample(last_ts)
            self.flush()

    def flush(self) -> None:
        """The samples kept so far into the outputs, as Arrow columns (cheaper than a row
        each); the engine calls it before anyone reads the outputs."""
        if self.grid:
            self.grid.flush(self.outputs.equity)

    def _sample(self, t: int) -> None:
        p = self.portfolio
        held = p.held()
        self.grid.singles.append((t, self._reserve(1), p.cash, p.value(held), held))

    # -- state -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "portfolio": self.portfolio.state(), "trading": self.trading, "first_ts": self.first_ts,
            "next_id": self.next_id, "open": list(self.open.values()), "cancels": list(self.cancels),
            "sample_due": self.sample_due, "notices": list(self.notices),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.portfolio.load(state["portfolio"])
        self.trading, self.first_ts, self.next_id = state["trading"], state["first_ts"], state["next_id"]
        self.open = {o.id: o for o in state["open"]}
        self.books = {}
        for order in state["open"]:
            self.books.setdefault(order.key, []).append(order)
        self.cancels = deque(state["cancels"])
        self.cancel_due = self.cancels[0][0] if self.cancels else NEVER
        self.sample_due, self.notices = state["sample_due"], list(state["notices"])
        self._redue()

    def _redue(self) -> None:
        self.due = min(self.sample_due, self.cancel_due - 1)


def _cuts(n: int, bounds: np.ndarray | None) -> list[int]:
    """Where a span of ``n`` samples is cut for ``spill``: every ``SAMPLE_CHUNK`` samples into
    each gap (samples with the same row bound), before the gap's end."""
    if bounds is None:
        return list(range(SAMPLE_CHUNK, n, SAMPLE_CHUNK))
    starts = np.flatnonzero(np.diff(bounds)) + 1
    edges = [0, *starts.tolist(), n]
    return [c for lo, hi in pairwise(edges) for c in range(lo + SAMPLE_CHUNK, hi, SAMPLE_CHUNK)]
