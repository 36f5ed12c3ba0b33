"""``qsframework.sweep(...)``: a sweep from Python (a notebook), its table as a Polars
DataFrame; the same run as ``qsf sweep``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..validity import DEFAULT_BOUNDS, TimeBounds
from .metrics import Direction

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from ..execution.config import ExecutionConfig
    from .executor import Executor
    from .grid import ParamSpace
    from .run import Progress
    from .point import PointResult
    from .search import Search

Grid = Mapping[str, str | Sequence[Any]] | Sequence[str]


def grid_options(grid: Grid) -> list[str]:
    """``{"window": ["30s", "60s"], "threshold": "0.003:0.01:0.001"}`` (or ``-g`` texts as
    they are) -> ``["window=30s,60s", "threshold=0.003:0.01:0.001"]``."""
    if not isinstance(grid, Mapping):
        return [str(g) for g in grid]
    return [f"{name}={values if isinstance(values, str) else ','.join(map(str, values))}"
            for name, values in grid.items()]


def make_search(kind: str, space: ParamSpace, *, trials: int | None, seed: int,
                direction: Direction) -> Search:
    """The search named ``kind``: the grid here, the others from :mod:`.optimisers`."""
    from .search import GridSearch

    if kind == "grid":
        if trials is not None:
            raise UserError("--trials goes with --search random or optuna (a grid runs every point)")
        return GridSearch(space)
    if kind not in ("random", "optuna"):
        raise UserError(f"unknown search {kind!r} (grid, random, optuna)")
    try:
        from . import optimisers  # type: ignore[attr-defined]
    except ImportError as exc:
        raise UserError(f"--search {kind} is not available in this installation: {exc}") from None
    if trials is None or trials < 1:
        raise UserError(f"--search {kind} needs --trials N (N >= 1)")
    if kind == "random":
        return optimisers.RandomSearch(space, trials, seed)
    return optimisers.OptunaSearch(space, trials, seed, direction)


def make_executor(*, workers: int | None, ray: str | bool | None) -> Executor:
    """Worker processes on this machine, or Ray tasks (``ray``: True or "" for a local Ray,
    else a cluster's address)."""
    if ray is None or ray is False:
        from .executor import ProcessExecutor

        if workers is not None and workers < 1:
            raise UserError("--workers must be at least 1")
        return ProcessExecutor(workers=workers or os.cpu_count() or 1)
    try:
        from .ray_executor import RayExecutor  # type: ignore[import-not-found]
    except ImportError as exc:
        raise UserError(f"--ray is not available in this installation: {exc}") from None
    return RayExecutor(address=ray if isinstance(ray, str) and ray else None)


def run(spec: str, *, recording: str | Path, out: str | Path, grid: Grid, workers: int | None = None,
        objective: str = "sharpe", direction: Direction = "max", search: str = "grid",
        trials: int | None = None, ray: str | bool | None = None, start: int | None = None,
        end: int | None = None, execution: ExecutionConfig | None = None, seed: int = 0,
        bounds: TimeBounds = DEFAULT_BOUNDS, batch_size: int = 65_536, keep: int | None = None,
        walk_forward: str | None = None,
        on_start: Callable[[Search], None] | None = None,
        on_point: Callable[[PointResult, Progress], None] | None = None) -> pa.Table:
    """Check everything, then run the sweep; returns its table (``OUT/sweep.parquet``), or
    with ``walk_forward`` (``train=20m,test=5m``) the walk-forward's (``OUT/walkforward.parquet``)."""
    from ..loader import load_strategy
    from .grid import parse_grid
    from .metrics import metric_names
    from .run import run_sweep

    if objective not in metric_names():
        raise UserError(f"unknown objective {objective!r} (metrics: {', '.join(metric_names())})")
    if direction not in ("max", "min"):
        raise UserError(f"the direction is max or min, not {direction!r}")
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if start is not None and end is not None and end <= start:
        raise UserError("--end must be after --start")
    cls = load_strategy(spec)
    options = grid_options(grid)
    if not options:
        raise UserError("no grid: give at least one -g NAME=VALUES")
    space = parse_grid(cls.Params, options, owner=f"strategy {cls.__name__}")
    from .remote import check, is_uri

    if is_uri(recording):  # object storage: read by the decode step alone
        if walk_forward is not None:
            raise UserError("--walk-forward needs a local --recording directory, not a URI")
        check(str(recording))
    elif not Path(recording).is_dir():
        raise UserError(f"recording {str(recording)!r} does not exist or is not a directory")
    chosen = make_search(search, space, trials=trials, seed=seed, direction=direction)
    if walk_forward is not None:
        from .walkforward import walk
        return walk(spec, recording=recording, out=out, space=space, windows=walk_forward,
                    executor=lambda: make_executor(workers=workers, ray=ray),
                    make_search=lambda sp: make_search(search, sp, trials=trials, seed=seed,
                                                       direction=direction),
                    objective=objective, direction=direction, start=start, end=end,
                    execution=execution, seed=seed, bounds=bounds, batch_size=batch_size, keep=keep,
                    on_point=on_point)
    if on_start is not None:
        on_start(chosen)
    with make_executor(workers=workers, ray=ray) as executor:
        return run_sweep(spec=spec, recording=recording, out=out, search=chosen, executor=executor,
                         objective=objective, direction=direction, start=start, end=end,
                         execution=execution, seed=seed, bounds=bounds, batch_size=batch_size,
                         keep=keep, on_point=on_point)


def sweep(spec: str, *, recording: str | Path, out: str | Path, grid: Grid, workers: int | None = None,
          objective: str = "sharpe", direction: Direction = "max", search: str = "grid",
          trials: int | None = None, ray: str | bool | None = None, start: int | str | None = None,
          end: int | str | None = None, execution: ExecutionConfig | None = None, seed: int = 0,
          keep: int | None = None, walk_forward: str | None = None) -> pl.DataFrame:
    """Run a parameter sweep of strategy ``spec`` over ``recording`` into ``out`` and return
    its table (a row per point: parameters, metrics, events, events/s, wall time).

    ``grid``: parameter name -> values (a list, or text as ``-g`` takes it: ``"30s,60s"``,
    ``"0.003:0.01:0.001"``). A rerun with the same arguments skips finished points.
    ``walk_forward`` (``"train=20m,test=5m"``): a walk-forward instead, its per-fold table.
    Example: ``qsframework.sweep("strategies/btc_eth_pairs.py:BtcEthPairs",
    recording="recordings/sample", out="out/sw", grid={"window": ["30s", "60s"]})``"""
    import polars as pl

    from ..durations import parse_time

    def instant(value: int | str | None) -> int | None:
        return parse_time(value) if isinstance(value, str) else value

    table = run(spec, recording=recording, out=out, grid=grid, workers=workers, objective=objective,
                direction=direction, search=search, trials=trials, ray=ray, start=instant(start),
                end=instant(end), execution=execution, seed=seed, keep=keep, walk_forward=walk_forward)
    return pl.from_arrow(table)  # type: ignore[return-value]
