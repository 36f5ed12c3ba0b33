"""Event-time timers: a timer due at T fires once event time moves strictly past T."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

NEVER = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class TimerFires:
    """Periodic timer fires inside one batch, for a vectorized handler.

    ``times[i]`` is when timer ``names[i]`` was due; ``pos[i]`` is the number of rows of
    the batch at or before that time: the fire happens after row ``pos[i] - 1`` and before
    row ``pos[i]``. Fires are in the order the per-event path would run them.
    """

    names: list[str]
    times: np.ndarray
    pos: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


NO_FIRES = TimerFires([], np.empty(0, np.int64), np.empty(0, np.int64))


class TimerQueue:
    """Pending timers in due order; ``due`` is the earliest due time (``NEVER`` if none).

    Ties between timers due at the same time go by creation order, for periodic ones too.
    ``floor`` caps ``due`` when timers are added or cancelled: the execution loop folds its
    own next due time into it, so its per-event check stays the plain loop's one compare.
    """

    __slots__ = ("_heap", "_count", "due", "floor")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, int]] = []
        self._count = 0
        self.due = NEVER
        self.floor = NEVER

    def add(self, when: int, name: str, period: int = 0) -> None:
        heapq.heappush(self._heap, (int(when), self._count, name, int(period)))
        self._count += 1
        top = self._heap[0][0]
        self.due = top if top < self.floor else self.floor

    def cancel(self, name: str) -> None:
        self._heap = [t for t in self._heap if t[2] != name]
        heapq.heapify(self._heap)
        self.due = min(self._heap[0][0], self.floor) if self._heap else self.floor

    def pop_before(self, ts: int) -> tuple[int, str] | None:
        """Remove and return the next timer due strictly before ``ts``; periodic ones re-arm."""
        heap = self._heap
        if not heap or heap[0][0] >= ts:
            return None
        when, order, name, period = heap[0]
        if period:  # re-arm in place: one sift instead of a pop and a push
            heapq.heapreplace(heap, (when + period, order, name, period))
        else:
            heapq.heappop(heap)
        self.due = heap[0][0] if heap else NEVER
        return when, name

    def next_one_shot(self) -> int:
        """Due time of the earliest one-shot timer (``NEVER`` if none)."""
        return min((t[0] for t in self._heap if not t[3]), default=NEVER)

    def fire_bound(self, before: int, limit: int) -> int:
        """The latest time ``b <= before`` such that at most ``limit`` periodic fires are due
        strictly before ``b`` (more only when more timers than ``limit`` share one due time).

        Lets a long catch-up be handed over in chunks of bounded size, computed from the
        timers' due times and periods without listing the fires.
        """
        periodic = [(t[0], t[3]) for t in self._heap if t[3] and t[0] < before]
        limit = max(limit, len(periodic))

        def count(b: int) -> int:
            return sum((b - 1 - when) // period + 1 for when, period in periodic if when < b)

        if count(before) <= limit:
            return before
        lo, hi = min(w for w, _ in periodic) + 1, before  # count(lo) <= limit < count(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(mid) <= limit:
                lo = mid
            else:
                hi = mid
        return lo

    def periodic_fires(self, ts: np.ndarray, before: int) -> TimerFires:
        """Take every periodic fire due strictly before ``before`` (one-shots excluded).

        ``ts`` are the batch's event times, used to place each fire. The queue is advanced
        past the fires it returns, exactly as popping them one by one would.
        """
        if not self._heap or self.due >= before:
            return NO_FIRES
        names: list[str] = []
        times: list[np.ndarray] = []
        rest: list[tuple[int, int, str, int]] = []
        for when, _order, name, period in sorted(self._heap, key=lambda t: t[1]):
            if period and when < before:
                n = (before - 1 - when) // period + 1
                times.append(when + period * np.arange(n, dtype=np.int64))
                names.extend([name] * n)
                rest.append((when + n * period, _order, name, period))
            else:
                rest.append((when, _order, name, period))
        if not names:
            return NO_FIRES
        self._heap = rest
        heapq.heapify(self._heap)
        self.due = self._heap[0][0] if self._heap else NEVER
        if len(times) == 1:  # one timer fired: its times are already in order
            fire_times = times[0]
        else:
            # order of the per-event path: by due time, then by timer creation (heap tie-break)
            all_times = np.concatenate(times)
            order = np.argsort(all_times, kind="stable")
            names = [names[i] for i in order.tolist()]
            fire_times = all_times[order]
        return TimerFires(
            names, fire_times, np.searchsorted(ts, fire_times, side="right").astype(np.int64)
        )
