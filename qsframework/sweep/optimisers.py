"""Searches beyond the full grid: seeded random sampling and Optuna's TPE (ask/tell).

Both draw only points of the grid (a parameter's values as ``-g`` gave them), so every trial is
a point a grid sweep would run too, with the same point id, outputs and metrics. Both are
deterministic for a seed when told in the order they asked (as the sweep driver does).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping, Sequence
from decimal import Decimal
from math import prod
from typing import Any

from ..errors import UserError
from .search import Search

#: proposals of points already run, in a row, before Optuna is handed an unseen point instead
MAX_REPEATS = 32


def _points(space: Mapping[str, Sequence[Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    names = list(space)
    values = [tuple(space[n]) for n in names]
    if any(not v for v in values):
        raise ValueError("every parameter of the space needs at least one value")
    return names, values


def _at(names: list[str], values: list[tuple[Any, ...]], index: int) -> dict[str, Any]:
    """The grid point number ``index`` in row-major order (the last parameter varies fastest)."""
    point: dict[str, Any] = {}
    for name, vals in zip(reversed(names), reversed(values), strict=True):
        index, i = divmod(index, len(vals))
        point[name] = vals[i]
    return {n: point[n] for n in names}


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps({k: repr(v) for k, v in params.items()}, sort_keys=True)


def _check_trials(trials: int) -> None:
    if trials < 1:
        raise ValueError(f"trials must be at least 1, not {trials}")


class RandomSearch(Search):
    """``trials`` distinct grid points drawn uniformly with ``random.Random(seed)`` (all of the
    grid when it has fewer points); the grid is never listed, so a huge space costs nothing."""

    adaptive = False  # the draw is known up front

    def __init__(self, space: Mapping[str, Sequence[Any]], trials: int, seed: int = 0) -> None:
        _check_trials(trials)
        self.names, self.values = _points(space)
        size = prod(len(v) for v in self.values)
        self.trials = self.total = min(trials, size)
        self._order = random.Random(seed).sample(range(size), self.trials)
        self._next = 0
        self.told: dict[str, float | None] = {}

    def ask(self, n: int) -> list[dict[str, Any]]:
        batch = self._order[self._next:self._next + max(n, 0)]
        self._next += len(batch)
        return [_at(self.names, self.values, i) for i in batch]

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        self.told[_key(params)] = value


def _steps(vals: tuple[Any, ...]) -> Decimal | None:
    """The common step of an evenly spaced ascending numeric list (a ``lo:hi:step`` range), or
    None (then the parameter is categorical)."""
    if len(vals) < 3 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return None
    exact = [Decimal(repr(float(v))) if isinstance(v, float) else Decimal(int(v)) for v in vals]
    step = exact[1] - exact[0]
    if step <= 0 or any(b - a != step for a, b in itertools.pairwise(exact)):
        return None
    return step


class _Dimension:
    """One parameter as an Optuna distribution, and the grid value of a suggestion."""

    def __init__(self, vals: tuple[Any, ...]) -> None:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        self.vals = vals
        step = _steps(vals)
        self.step = step
        if step is None:
            # plain values stay themselves (Optuna stores them); others (durations) by position
            self.plain = all(type(v) in (str, int, float, bool) or v is None for v in vals)
            choices = vals if self.plain else tuple(range(len(vals)))
            self.dist: Any = CategoricalDistribution(choices)
        elif all(isinstance(v, int) for v in vals):
            self.dist = IntDistribution(int(vals[0]), int(vals[-1]), step=int(step))
        else:
            self.dist = FloatDistribution(float(vals[0]), float(vals[-1]), step=float(step))

    def value(self, suggested: Any) -> Any:
        """The grid's own value for Optuna's suggestion (a float step drifts: snap to the grid)."""
        if self.step is None:
            return suggested if self.plain else self.vals[suggested]
        i = round((Decimal(repr(float(suggested))) - Decimal(repr(float(self.vals[0])))) / self.step)
        return self.vals[min(max(i, 0), len(self.vals) - 1)]

    def internal(self, value: Any) -> Any:
        """What Optuna expects for ``value`` (to hand it an unseen point)."""
        if self.step is None:
            return value if self.plain else self.vals.index(value)
        return int(value) if isinstance(self.dist.low, int) else float(value)


class OptunaSearch(Search):
    """Optuna's TPE sampler (seeded) through the ask/tell API over the grid's points: ranges as
    int/float distributions with their step, lists as categorical. At most ``trials`` distinct
    points run (the grid's size at most); a suggestion of a point already run is told its known
    value without running it again. ``direction`` (``max``/``min``) is the study's, so its values
    are the metric's own; a ``tell`` gets the value signed larger-is-better, None = failed."""

    def __init__(self, space: Mapping[str, Sequence[Any]], trials: int, seed: int = 0,
                 direction: str = "max") -> None:
        try:
            import optuna
        except ImportError:
            raise UserError("--search optuna needs the sweep extra: "
                            "pip install 'qsframework[sweep]'") from None

        _check_trials(trials)
        if direction not in ("max", "min"):
            raise ValueError(f"direction must be max or min, not {direction!r}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.names, self.values = _points(space)
        self.dims = {n: _Dimension(v) for n, v in zip(self.names, self.values, strict=True)}
        self.size = prod(len(v) for v in self.values)
        self.trials = self.total = min(trials, self.size)
        self.sign = 1.0 if direction == "max" else -1.0
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, self.trials // 3)))
        self.study = optuna.create_study(direction="maximize" if direction == "max" else "minimize",
                                         sampler=sampler)
        self._rng = random.Random(seed)
        self._asked = 0
        self._pending: dict[str, list[Any]] = {}  # point -> its open trials (first one runs)
        self.told: dict[str, float | None] = {}

    def _tell_trial(self, trial: Any, value: float | None) -> None:
        from optuna.trial import TrialState

        if value is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, self.sign * value)

    def _unseen(self) -> dict[str, Any]:
        """A point neither run nor running, drawn with the seeded generator."""
        while True:
            point = _at(self.names, self.values, self._rng.randrange(self.size))
            key = _key(point)
            if key not in self.told and key not in self._pending:
                return point

    def ask(self, n: int) -> list[dict[str, Any]]:
        dists = {name: d.dist for name, d in self.dims.items()}
        batch: list[dict[str, Any]] = []
        repeats = 0
        while len(batch) < n and self._asked < self.trials:
            if repeats >= MAX_REPEATS:
                point = self._unseen()
                self.study.enqueue_trial({k: self.dims[k].internal(v) for k, v in point.items()})
                repeats = 0
            trial = self.study.ask(dists)
            point = {name: d.value(trial.params[name]) for name, d in self.dims.items()}
            key = _key(point)
            if key in self.told:
                self._tell_trial(trial, self.told[key])
                repeats += 1
            elif key in self._pending:
                self._pending[key].append(trial)
                repeats += 1
            else:
                self._pending[key] = [trial]
                self._asked += 1
                batch.append(point)
                repeats = 0
        return batch

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        key = _key(params)
        self.told[key] = value
        for trial in self._pending.pop(key, []):
            self._tell_trial(trial, value)
