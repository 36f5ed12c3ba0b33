"""The sweep table (``sweep.parquet`` of ``qsf sweep --out DIR``) and its heatmap cells."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ..errors import UserError

#: the table's columns that are neither parameters nor metrics
RUN_COLUMNS = ("point", "events", "events_per_s", "wall_s")


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """A sweep: its table, parameter and metric names, objective and direction (max|min)."""

    dir: Path
    table: pl.DataFrame
    params: tuple[str, ...]
    metrics: tuple[str, ...]
    objective: str | None
    direction: str


def load_sweep(dir: str | Path) -> Sweep:
    """Read ``DIR/sweep.parquet`` and its ``qsf.*`` metadata (parameter names, objective)."""
    path = Path(dir) / "sweep.parquet"
    if not path.is_file():
        raise UserError(f"sweep dir {dir}: no sweep.parquet (not a qsf sweep --out directory)")
    try:
        meta = pq.read_schema(path).metadata or {}
        table = pl.read_parquet(path)
        params = tuple(json.loads(meta.get(b"qsf.params", b"[]")))
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise UserError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None
    missing = [p for p in params if p not in table.columns]
    if missing:
        raise UserError(f"{path}: parameter columns {missing} are missing")
    metrics = tuple(c for c in table.columns if c not in params and c not in RUN_COLUMNS)
    objective = meta.get(b"qsf.objective")
    direction = meta.get(b"qsf.direction", b"max").decode()
    return Sweep(dir=Path(dir), table=table, params=params, metrics=metrics,
                 objective=objective.decode() if objective else None,
                 direction=direction if direction in ("max", "min") else "max")


def heatmap_cells(sweep: Sweep, *, x: str, y: str, metric: str) -> pl.DataFrame:
    """One row per (x, y) pair of parameter values: the best METRIC over the other parameters
    (highest when the sweep maximises, lowest when it minimises) and how many points it covers."""
    col = pl.col(metric).cast(pl.Float64)
    best = col.max() if sweep.direction == "max" else col.min()
    return (sweep.table.group_by(x, y).agg(best.alias(metric), pl.len().alias("points"))
            .sort(x, y))
