"""A strategy's simulated portfolio: cash, signed positions, average cost and marks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Portfolio:
    """Cash in the quote currency and a signed position per key (short allowed).

    ``marks`` holds each held key's last trade price: the execution loop takes them from the
    batch's columns when needed (``refresh``, set while it runs, brings them up to the
    current event); equity is cash plus every non-zero position at its mark, summed in key
    order so the same state always gives the same bits.
    """

    __slots__ = ("cash", "positions", "avg_cost", "marks", "refresh", "_held")

    def __init__(self, cash: float) -> None:
        self.cash = float(cash)
        self.positions: dict[str, float] = {}  # non-zero positions only
        self.avg_cost: dict[str, float] = {}  # average entry price of each open position
        self.marks: dict[str, float] = {}
        self.refresh: Callable[[], None] | None = None
        self._held: list[tuple[str, float]] | None = None

    def position(self, key: str) -> float:
        return self.positions.get(key, 0.0)

    def equity(self) -> float:
        """Cash plus the positions at their marks as of now."""
        if self.refresh is not None:
            self.refresh()
        return self.value(self.held())

    def value(self, held: list[tuple[str, float]]) -> float:
        """Cash plus the positions ``held`` (:meth:`held`) at the current marks."""
        total = self.cash
        marks = self.marks
        for key, qty in held:
            total += qty * marks[key]
        return total

    def held(self) -> list[tuple[str, float]]:
        """The non-zero positions in key order (one list until a fill changes them: do not
        change it)."""
        if self._held is None:
            self._held = sorted(self.positions.items())
        return self._held

    def apply(self, key: str, qty: float, price: float, fee: float) -> None:
        """Book a fill: a buy pays ``qty * price + fee``, a sell receives ``|qty| * price - fee``;
        the average cost moves on a fill that adds to the position (average-cost method)."""
        if qty > 0:
            self.cash -= qty * price + fee
        else:
            self.cash += -qty * price - fee
        self._held = None
        before = self.positions.get(key, 0.0)
        after = before + qty
        if after == 0.0:
            del self.positions[key]
            self.avg_cost.pop(key, None)
            return
        self.positions[key] = after
        if before == 0.0 or (before > 0) != (after > 0):  # opened, or reversed through zero
            self.avg_cost[key] = price
        elif (qty > 0) == (before > 0):  # added to the position
            self.avg_cost[key] = (abs(before) * self.avg_cost[key] + abs(qty) * price) / abs(after)

    def state(self) -> dict[str, Any]:
        return {"cash": self.cash, "positions": dict(self.positions),
                "avg_cost": dict(self.avg_cost), "marks": dict(self.marks)}

    def load(self, state: dict[str, Any]) -> None:
        self.cash = state["cash"]
        self.positions, self.avg_cost, self.marks = state["positions"], state["avg_cost"], state["marks"]
        self._held = None
