"""Parameter sweeps: a grid (or a search) of backtests run on every core, each point's
outputs equal to a single ``qsf backtest``, the results in one table (``sweep.parquet``).

``qsframework.sweep(...)`` (:func:`qsframework.sweep.api.sweep`) is the notebook entry."""

from .executor import Executor, ProcessExecutor
from .grid import ParamSpace, parse_grid
from .point import PointJob, PointResult, point_id, run_point
from .run import run_sweep
from .search import GridSearch, Search

__all__ = ["Executor", "GridSearch", "ParamSpace", "PointJob", "PointResult", "ProcessExecutor",
           "Search", "parse_grid", "point_id", "run_point", "run_sweep"]
