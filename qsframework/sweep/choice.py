"""What ``qsf sweep``'s ``--search/--trials/--search-seed`` and ``--ray`` choose: a search
per (fold's) space and an executor, with one clear line for a bad combination."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from .executor import Executor, ProcessExecutor
from .grid import ParamSpace
from .metrics import Direction
from .search import GridSearch, Search

SEARCHES = ("grid", "random", "optuna")
#: ``--ray`` given without an address: a local Ray instance
LOCAL_RAY = "local"


def search_factory(kind: str, *, trials: int | None, seed: int,
                   direction: Direction) -> Callable[[ParamSpace], Search]:
    """A function making a fresh search over a space (a walk-forward makes one per fold)."""
    if kind not in SEARCHES:
        raise UserError(f"--search is one of {', '.join(SEARCHES)}, not {kind!r}")
    if kind == "grid":
        if trials is not None:
            raise UserError("--trials goes with --search random or --search optuna")
        return GridSearch
    if trials is None:
        raise UserError(f"--search {kind} needs --trials N (how many points to run)")
    if trials < 1:
        raise UserError(f"--trials must be at least 1, not {trials}")
    if kind == "random":
        from .optimisers import RandomSearch

        return lambda space: RandomSearch(space, trials, seed)
    try:
        import optuna  # noqa: F401 - the optional extra
    except ImportError:
        raise UserError("--search optuna needs the sweep extra: pip install 'qsframework[sweep]'") from None
    from .optimisers import OptunaSearch

    return lambda space: OptunaSearch(space, trials, seed, direction)


def make_executor(ray: str | None, workers: int | None) -> Executor:
    """The process pool, or Ray tasks when ``--ray`` was given (``LOCAL_RAY``: a local Ray)."""
    if ray is None:
        return ProcessExecutor(workers)
    if workers is not None:
        raise UserError("--workers is for the process pool; with --ray, Ray's CPUs decide")
    from .ray_executor import RayExecutor

    return RayExecutor(None if ray == LOCAL_RAY else ray)
