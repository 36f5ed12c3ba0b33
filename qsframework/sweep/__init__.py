"""Parameter sweeps: a grid (or a search) of backtests run on every core, each point's
outputs equal to a single ``qsf backtest``, the results in one table (``sweep.parquet``).

The package is callable: ``qsframework.sweep(spec, recording=..., out=..., grid=...)`` runs a
sweep and returns its table as a Polars DataFrame (:func:`qsframework.sweep.api.sweep`), while
``qsframework.sweep.run``, ``.grid``, ... stay importable. Names load on first use, so
``import qsframework`` stays light."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_NAMES = {
    "Executor": "executor", "ProcessExecutor": "executor", "ParamSpace": "grid", "parse_grid": "grid",
    "PointJob": "point", "PointResult": "point", "point_id": "point", "run_point": "point",
    "run_sweep": "run", "GridSearch": "search", "Search": "search",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Callable(types.ModuleType):
    """This module, callable as :func:`qsframework.sweep.api.sweep`."""

    def __call__(self, spec: str, **options: Any) -> Any:
        from .api import sweep

        return sweep(spec, **options)


sys.modules[__name__].__class__ = _Callable
