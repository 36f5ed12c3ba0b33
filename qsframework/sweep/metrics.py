"""The metrics a sweep ranks by: the names (and value types) report.json's ``metrics`` has."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import pyarrow as pa

Direction = Literal["max", "min"]


@lru_cache(maxsize=1)
def metric_types() -> dict[str, pa.DataType]:
    """Each metric of :func:`~qsframework.execution.metrics.compute_metrics`, in its order,
    with its column type (taken from a one-sample run, so the list never drifts from the
    definitions): counts as int64, the rest float64."""
    from ..events import EQUITY, FILL
    from ..execution.metrics import compute_metrics

    sample = {"ts_event": 0, "ts_recv": 0, "source": "", "key": "", "seq": 0, "strategy": "",
              "cash": 1.0, "equity": 1.0, "positions": []}
    equity = pa.Table.from_pylist([sample], schema=EQUITY.schema)
    metrics = compute_metrics(equity, FILL.schema.empty_table(), cash=1.0, mark_every_ns=1)
    return {name: pa.int64() if type(v) is int else pa.float64() for name, v in metrics.items()}


def metric_names() -> tuple[str, ...]:
    return tuple(metric_types())


def signed(value: float | int | None, direction: Direction) -> float | None:
    """The objective as a search sees it: larger is better; None when undefined (or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) if direction == "max" else -float(value)
