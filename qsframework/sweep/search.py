"""How a sweep chooses its points: :class:`GridSearch` takes every point of the grid
(``RandomSearch`` and ``OptunaSearch`` are in :mod:`qsframework.sweep.optimisers`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .grid import ParamSpace


class Search(ABC):
    """Asks for points and is told their objective (signed: larger is better)."""

    #: whether later points depend on earlier results (then a sweep asks for a few at a
    #: time, as many as run at once); a grid is known up front
    adaptive: bool = True
    #: how many points it will ask for in all, when known (for the progress bar)
    total: int | None = None

    @abstractmethod
    def ask(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` points to run next; an empty list when the search is finished."""

    @abstractmethod
    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """The objective of a finished point (None: undefined for it)."""


class GridSearch(Search):
    """Every point of the grid, in order (the last parameter varying fastest)."""

    adaptive = False

    def __init__(self, space: ParamSpace) -> None:
        self.space = space
        self.total = space.size
        self._points = space.points()

    def ask(self, n: int) -> list[dict[str, Any]]:
        out = []
        for point in self._points:
            out.append(point)
            if len(out) >= n:
                break
        return out

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """A grid does not learn."""
