"""Run a sweep: drive a :class:`Search` through an :class:`Executor`, each finished point
written atomically under ``OUT/points/<point_id>/``, the table in ``OUT/sweep.parquet``.

A rerun of the same sweep skips the points already finished (their directories exist, or
``--keep`` removed them and the table remembers them); a stop at any moment leaves only
finished points, and a table of them."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from ..execution.config import ExecutionConfig
from ..validity import DEFAULT_BOUNDS, TimeBounds
from .executor import Executor
from .grid import format_value
from .metrics import Direction, metric_names, metric_types, signed
from .point import PointJob, PointResult, finished, point_id
from .search import Search
from .staging import TMP_PREFIX

TABLE = "sweep.parquet"
POINTS = "points"
CACHE = ".cache"
#: the keys a shared decoded recording holds are those of every point of a space up to this
#: size (a larger one decodes every key)
KEYS_OF_POINTS = 4096


@dataclass(kw_only=True)
class Progress:
    """What a sweep has done so far, handed to ``on_point`` after each point."""

    objective: str
    direction: Direction
    total: int | None
    done: int = 0
    skipped: int = 0  # finished by an earlier run
    ran: set[str] = field(default_factory=set)  # the points this run computed
    results: dict[str, PointResult] = field(default_factory=dict)  # in the order asked

    def best(self, n: int = 3) -> list[PointResult]:
        """The ``n`` best points so far by the objective (undefined ones never)."""
        scored = [(signed(r.metrics.get(self.objective), self.direction), i, r)
                  for i, r in enumerate(self.results.values()) if r is not None]
        ranked = sorted(((v, i, r) for v, i, r in scored if v is not None), key=lambda t: (-t[0], t[1]))
        return [r for _, _, r in ranked[:n]]


def run_sweep(
    *,
    spec: str,
    recording: str | Path,
    out: str | Path,
    search: Search,
    executor: Executor,
    objective: str = "sharpe",
    direction: Direction = "max",
    start: int | None = None,
    end: int | None = None,
    execution: ExecutionConfig | None = None,
    seed: int = 0,
    bounds: TimeBounds = DEFAULT_BOUNDS,
    batch_size: int = 65_536,
    keep: int | None = None,
    shared: bool = True,
    on_point: Callable[[PointResult, Progress], None] | None = None,
) -> pa.Table:
    """Run every point ``search`` asks for over ``recording`` and return the sweep table
    (as written to ``OUT/sweep.parquet``); ``keep`` keeps only the best N point directories.

    With ``shared`` the recording is decoded once into ``OUT/.cache`` (memory-mapped by every
    worker; removed once the sweep is complete, kept for a rerun after a stop)."""
    if objective not in metric_names():
        raise UserError(f"unknown objective {objective!r} (metrics: {', '.join(metric_names())})")
    if direction not in ("max", "min"):
        raise UserError(f"the direction is max or min, not {direction!r}")
    if keep is not None and keep < 0:
        raise UserError("--keep must not be negative")
    execution = execution or ExecutionConfig()
    out = Path(out)
    points = out / POINTS
    try:
        points.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out {str(out)!r}: {exc.strerror}") from None
    clean_partial(points)
    pruned = _pruned(out / TABLE)
    state = Progress(objective=objective, direction=direction, total=getattr(search, "total", None))
    names: list[str] = []
    source: str | None = None if shared else str(recording)

    def record(result: PointResult, skipped: bool) -> None:
        state.results[result.point_id] = result
        state.done += 1
        state.skipped += skipped
        if not skipped:
            state.ran.add(result.point_id)
        search.tell(result.params, signed(result.metrics.get(objective), direction))
        write_table(out / TABLE, state, names, pruned=sorted(pruned))
        if on_point is not None:
            on_point(result, state)

    while asked := search.ask(executor.slots if search.adaptive else 1 << 30):
        jobs: list[PointJob] = []
        again: dict[str, int] = {}  # a point asked for twice in a round runs once, told twice
        for params in asked:
            names.extend(k for k in params if k not in names)
            pid = point_id(spec=spec, params=params, start=start, end=end, execution=execution,
                           seed=seed, bounds=bounds)
            if any(job.point_id == pid for job in jobs):
                again[pid] = again.get(pid, 0) + 1
                continue
            state.results.setdefault(pid, None)  # type: ignore[arg-type] - keeps the asked order
            done = finished(points / pid, pid, params) or pruned.get(pid)
            if done is not None:
                record(done, skipped=True)
                continue
            if source is None:
                source = str(_decode(spec, recording, out / CACHE, search, params, start=start, end=end,
                                     execution=execution, bounds=bounds, batch_size=batch_size))
            jobs.append(PointJob(point_id=pid, params=params, spec=spec, source=source, start=start,
                                 end=end, execution=execution, out=str(points / pid), seed=seed,
                                 batch_size=batch_size, bounds=bounds))
        try:
            for result in executor.map(jobs):
                record(result, skipped=False)
                for _ in range(again.get(result.point_id, 0)):
                    search.tell(result.params, signed(result.metrics.get(objective), direction))
        except BaseException:
            executor.close()  # stop the workers before their half-written points are removed
            clean_partial(points)
            for job in jobs:  # finished by a worker, not yet taken in: into the table as well
                if state.results.get(job.point_id) is None:
                    done = finished(points / job.point_id, job.point_id, job.params)
                    if done is not None:
                        state.results[job.point_id] = done
            write_table(out / TABLE, state, names, pruned=sorted(pruned))
            raise
    shutil.rmtree(out / CACHE, ignore_errors=True)  # complete: a rerun reads no recording
    if keep is not None:
        best = {r.point_id for r in state.best(keep)}
        for pid in state.results:
            if pid not in best and (points / pid).exists():
                shutil.rmtree(points / pid)
                pruned[pid] = state.results[pid]
    return write_table(out / TABLE, state, names, pruned=sorted(pruned))


def _decode(spec: str, recording: str | Path, cache: Path, search: Search, params: dict[str, Any], *,
            start: int | None, end: int | None, execution: ExecutionConfig, bounds: TimeBounds,
            batch_size: int) -> Path:
    """Decode what every point reads: the strategy's kinds and columns, the keys of every
    point of the search's space (all keys when it is large or unknown), the time range."""
    from ..engine import Engine
    from .point import strategy
    from .shared import decode

    cls = strategy(spec)
    engine = Engine(cls, overrides=params, execution=execution)
    keys: set[str] | None = set(engine.keys) if engine.keys is not None else None
    space = getattr(search, "space", None)
    if space is None or space.size > KEYS_OF_POINTS:
        keys = None
    else:
        for point in space.points():
            more = Engine(cls, overrides=point, execution=execution).keys if keys is not None else None
            keys = None if more is None or keys is None else keys | set(more)
    return decode(recording, cache, kinds=list(engine.kinds), keys=None if keys is None else sorted(keys),
                  start=start, end=end, bounds=bounds, batch_size=batch_size,
                  columns={k: engine.columns(k) for k in engine.kinds})


def clean_partial(points: Path) -> None:
    """Remove what a stopped run left half-written (``.tmp-*`` point directories)."""
    for tmp in points.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def write_table(path: Path, state: Progress, names: list[str], *, pruned: list[str]) -> pa.Table:
    """``sweep.parquet``: a row per finished point (in the order the search asked for them),
    written to a temporary file and renamed into place."""
    rows = [r for r in state.results.values() if r is not None]
    columns: dict[str, pa.Array] = {"point": pa.array([r.point_id for r in rows], pa.string())}
    for name in names:
        columns[name] = pa.array([format_value(r.params.get(name)) for r in rows])
    for name, kind in metric_types().items():
        columns[name] = pa.array([r.metrics.get(name) for r in rows], kind)
    columns["events"] = pa.array([r.events for r in rows], pa.int64())
    columns["events_per_s"] = pa.array([r.events_per_s for r in rows], pa.float64())
    columns["wall_s"] = pa.array([r.wall_s for r in rows], pa.float64())
    table = pa.table(columns).replace_schema_metadata({
        "qsf.params": json.dumps(names),
        "qsf.objective": state.objective,
        "qsf.direction": state.direction,
        "qsf.pruned": json.dumps(pruned),
    })
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table


def _pruned(path: Path) -> dict[str, PointResult]:
    """The points an earlier run's ``--keep`` removed: finished, their rows in the table."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return {}
    meta = table.schema.metadata or {}
    ids = set(json.loads(meta.get(b"qsf.pruned", b"[]")))
    names = json.loads(meta.get(b"qsf.params", b"[]"))
    out = {}
    for row in table.to_pylist():
        if row["point"] in ids:
            out[row["point"]] = PointResult(
                point_id=row["point"], params={n: row[n] for n in names},
                metrics={m: row.get(m) for m in metric_names()}, events=row["events"],
                events_per_s=row["events_per_s"], wall_s=row["wall_s"])
    return out
