"""Walk-forward analysis: per fold, a sweep on the train window chooses the best point by the
objective, and that point alone runs on the following test window (out of sample).

Each fold's train sweep and test point are ordinary sweeps under ``OUT/folds/<NNNN>/train`` and
``.../test`` (so a rerun skips what is finished); ``OUT/walkforward.parquet`` has a row per fold
and ``OUT/oos_equity.parquet`` the stitched out-of-sample equity curve, whose metrics are in
``OUT/walkforward.json`` and the table's ``qsf.stitched`` metadata.

Stitching: the test windows' runs each start with the configured cash; their equity samples
are concatenated in time, each fold's shifted by the PnL the earlier folds made (the money
carries over, the positions' sizes do not compound), and the metrics are recomputed over that
curve and the concatenated fills exactly as a single run's are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..execution.config import ExecutionConfig
from ..execution.metrics import compute_metrics
from ..recording import Recording
from ..validity import DEFAULT_BOUNDS, TimeBounds
from .executor import Executor
from .folds import Fold, Windows, fold_dir, parse_windows, plan_folds
from .grid import ParamSpace, format_value
from .metrics import Direction, metric_names, metric_types, signed
from .point import PointResult
from .run import POINTS, Progress, run_sweep
from .search import GridSearch, Search

TABLE = "walkforward.parquet"
EQUITY = "oos_equity.parquet"
SUMMARY = "walkforward.json"
TS = pa.timestamp("ns", tz="UTC")


@dataclass(frozen=True, kw_only=True)
class FoldResult:
    """A finished fold: the point chosen on train (None when no train point had a defined
    objective) and its out-of-sample metrics (None where undefined or not run)."""

    fold: Fold
    params: dict[str, Any] | None
    train_value: float | int | None
    train_points: int
    point: str | None
    metrics: dict[str, float | int | None]
    events: int
    wall_s: float


def run_walkforward(
    *,
    spec: str,
    recording: str | Path,
    out: str | Path,
    space: ParamSpace,
    windows: Windows,
    executor: Executor,
    make_search: Callable[[ParamSpace], Search] = GridSearch,
    objective: str = "sharpe",
    direction: Direction = "max",
    start: int | None = None,
    end: int | None = None,
    execution: ExecutionConfig | None = None,
    seed: int = 0,
    bounds: TimeBounds = DEFAULT_BOUNDS,
    batch_size: int = 65_536,
    keep: int | None = None,
    folds: list[Fold] | None = None,
    on_start: Callable[[list[Fold]], None] | None = None,
    on_point: Callable[[PointResult, Progress], None] | None = None,
    on_fold: Callable[[FoldResult, int], None] | None = None,
) -> pa.Table:
    """Walk forward over ``recording`` (or ``[start, end)``) and return the per-fold table
    (as written to ``OUT/walkforward.parquet``); ``make_search`` gives each fold's train search
    a fresh start (the full grid by default); ``folds``: as planned from ``windows`` unless
    given; ``keep`` prunes each train sweep's point
    directories as ``qsf sweep --keep``; ``on_start`` learns the folds, ``on_point`` each
    finished point (train and test), ``on_fold`` each fold and the fold count."""
    execution = execution or ExecutionConfig()
    out = Path(out)
    folds = folds or plan_folds(windows, Recording(recording), start=start, end=end)
    if on_start is not None:
        on_start(folds)
    per_fold = getattr(make_search(space), "total", None)
    total = len(folds) * (per_fold + 1) if per_fold is not None else None
    offset = 0

    def counted(result: PointResult, state: Progress) -> None:
        """A point as one of the whole walk-forward's (the train sweeps' and the tests')."""
        if on_point is not None:
            on_point(result, replace(state, done=offset + state.done, total=total))

    common = {"spec": spec, "recording": recording, "executor": executor, "objective": objective,
              "direction": direction, "execution": execution, "seed": seed, "bounds": bounds,
              "batch_size": batch_size, "on_point": counted}
    results = []
    for fold in folds:
        where = fold_dir(out, fold)
        train = run_sweep(out=where / "train", search=make_search(space), start=fold.train_start,
                          end=fold.train_end, keep=keep, **common)  # type: ignore[arg-type]
        offset += train.num_rows
        chosen, value = best_point(train, space, objective, direction)
        test = None
        if chosen is not None:
            one = ParamSpace({name: (v,) for name, v in chosen.items()})
            test = run_sweep(out=where / "test", search=GridSearch(one), start=fold.test_start,
                             end=fold.test_end, **common).to_pylist()[0]  # type: ignore[arg-type]
            offset += 1
        result = FoldResult(
            fold=fold, params=chosen, train_value=value, train_points=train.num_rows,
            point=test["point"] if test else None,
            metrics={m: test[m] if test else None for m in metric_names()},
            events=test["events"] if test else 0, wall_s=test["wall_s"] if test else 0.0,
        )
        results.append(result)
        if on_fold is not None:
            on_fold(result, len(folds))
    stitched = stitch(out, results, execution)
    table = fold_table(results, list(space), objective)
    table = table.replace_schema_metadata({
        "qsf.params": json.dumps(list(space)), "qsf.objective": objective,
        "qsf.direction": direction, "qsf.windows": json.dumps(windows.__dict__),
        "qsf.stitched": json.dumps(stitched["metrics"]),
    })
    _write(out / TABLE, lambda tmp: pq.write_table(table, tmp))
    _write(out / SUMMARY, lambda tmp: tmp.write_text(json.dumps(stitched, indent=2) + "\n"))
    return table


def walk(spec: str, *, recording: str | Path, windows: str, executor: Callable[[], Executor],
         start: int | None = None, end: int | None = None, **options: Any) -> pa.Table:
    """``qsf sweep --walk-forward WINDOWS``: the windows and folds are checked before the
    executor (a Ray instance is slow to start) is made for the run."""
    parsed = parse_windows(windows)
    folds = plan_folds(parsed, Recording(recording), start=start, end=end)
    with executor() as ex:
        return run_walkforward(spec=spec, recording=recording, windows=parsed, folds=folds,
                               executor=ex, start=start, end=end, **options)


def best_point(table: pa.Table, space: ParamSpace, objective: str,
               direction: Direction) -> tuple[dict[str, Any] | None, float | int | None]:
    """The train sweep's best point by the objective (the first asked among equals) with the
    space's own typed values, and its objective; (None, None) when no point has one."""
    best: tuple[float, dict[str, Any]] | None = None
    for row in table.to_pylist():
        value = signed(row[objective], direction)
        if value is not None and (best is None or value > best[0]):
            best = (value, row)
    if best is None:
        return None, None
    row = best[1]
    typed = {name: next(v for v in vals if format_value(v) == row[name]) for name, vals in space.items()}
    return typed, row[objective]


def fold_table(results: list[FoldResult], names: list[str], objective: str) -> pa.Table:
    """``walkforward.parquet``: per fold its windows, chosen parameters, the chosen point's
    train objective, and the out-of-sample metrics of its test window."""
    f = [r.fold for r in results]
    columns: dict[str, pa.Array] = {
        "fold": pa.array([x.fold for x in f], pa.int32()),
        "train_start": pa.array([x.train_start for x in f], TS),
        "train_end": pa.array([x.train_end for x in f], TS),
        "test_start": pa.array([x.test_start for x in f], TS),
        "test_end": pa.array([x.test_end for x in f], TS),
    }
    for name in names:
        columns[name] = pa.array([format_value(r.params[name]) if r.params else None for r in results])
    columns[f"train_{objective}"] = pa.array([r.train_value for r in results], metric_types()[objective])
    columns["train_points"] = pa.array([r.train_points for r in results], pa.int64())
    columns["point"] = pa.array([r.point for r in results], pa.string())
    for name, kind in metric_types().items():
        columns[name] = pa.array([r.metrics[name] for r in results], kind)
    columns["events"] = pa.array([r.events for r in results], pa.int64())
    columns["wall_s"] = pa.array([r.wall_s for r in results], pa.float64())
    return pa.table(columns)


def stitch(out: Path, results: list[FoldResult], execution: ExecutionConfig) -> dict[str, Any]:
    """Concatenate the test windows' equity (each shifted by the earlier folds' PnL) into
    ``OUT/oos_equity.parquet`` and recompute the metrics over it and the folds' fills."""
    equities, fills, folds = [], [], []
    carried = 0.0
    for r in results:
        point = fold_dir(out, r.fold) / "test" / POINTS / r.point if r.point else None
        if point is None or not (point / "equity.parquet").exists():
            continue  # never ordered in this window: no samples, no PnL
        equity = pq.read_table(point / "equity.parquet")
        shifted = pc.add(equity.column("equity"), pa.scalar(carried, pa.float64()))
        equities.append(equity.set_column(equity.schema.get_field_index("equity"), "equity", shifted))
        fills.append(pq.read_table(point / "fills.parquet"))
        folds.append(r.fold.fold)
        carried += equity.column("equity")[-1].as_py() - execution.cash
    metrics: dict[str, Any] = {m: None for m in metric_names()}
    if equities:
        curve = pa.concat_tables(equities)
        metrics = compute_metrics(curve, pa.concat_tables(fills), cash=execution.cash,
                                  mark_every_ns=execution.mark_every_ns)
        curve = curve.append_column("fold", pa.array(
            [k for k, e in zip(folds, equities, strict=True) for _ in range(e.num_rows)], pa.int32()))
        _write(out / EQUITY, lambda tmp: pq.write_table(curve, tmp))
    return {"folds": len(results), "folds_with_orders": len(equities), "metrics": metrics,
            "stitching": "test windows' equity concatenated, each shifted by the earlier folds' "
                         "PnL; metrics recomputed over it and the concatenated fills"}


def summary(table: pa.Table, out: str | Path) -> list[str]:
    """What ``qsf sweep --walk-forward`` prints: a line per fold, then the stitched metrics."""
    from ..durations import format_time

    meta = table.schema.metadata or {}
    names = json.loads(meta[b"qsf.params"])
    objective = meta[b"qsf.objective"].decode()
    lines = []
    for r in pl_rows(table):
        chosen = " ".join(f"{n}={r[n]}" for n in names) if r["point"] else "no point (objective undefined)"
        lines.append(f"fold {r['fold']}: train {format_time(r['train_start'])} .. "
                     f"{format_time(r['train_end'])} -> {chosen}; test .. {format_time(r['test_end'])}: "
                     f"{objective}={_shown(r[objective])} pnl={_shown(r['pnl'])} fills={_shown(r['fills'])}")
    stitched = json.loads(meta[b"qsf.stitched"])
    lines.append(f"out of sample, stitched: {objective}={_shown(stitched[objective])} "
                 f"pnl={_shown(stitched['pnl'])} return={_shown(stitched['return'])} "
                 f"max_drawdown={_shown(stitched['max_drawdown'])} fills={_shown(stitched['fills'])} "
                 f"-> {out}/{TABLE}")
    return lines


def pl_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows with the window bounds as int ns (as datetimes they would need pandas:
    Python's datetime stops at microseconds)."""
    for c in ("train_start", "train_end", "test_start", "test_end"):
        table = table.set_column(table.schema.get_field_index(c), c, pc.cast(table.column(c), pa.int64()))
    return table.to_pylist()


def _shown(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file renamed into place (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
