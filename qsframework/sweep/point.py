"""One point of a sweep: a backtest with one set of parameters, written atomically under
``OUT/points/<point_id>/`` (the files of ``qsf backtest --out`` plus ``params.json``).

:func:`run_point` is a plain top-level function, so a process pool or Ray can run it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..execution.config import ExecutionConfig
from ..validity import DEFAULT_BOUNDS, TimeBounds
from .grid import format_value
from .staging import staged_dir

PARAMS_FILE = "params.json"
REPORT_FILE = "report.json"


@dataclass(frozen=True, kw_only=True)
class PointJob:
    """What a worker needs to run one point (``source``: the shared decoded recording, or the
    recording directory; ``out``: the point's directory, None to keep nothing on disk)."""

    point_id: str
    params: dict[str, Any]
    spec: str
    source: str
    start: int | None
    end: int | None
    execution: ExecutionConfig
    out: str | None
    seed: int = 0
    batch_size: int = 65_536
    bounds: TimeBounds = field(default=DEFAULT_BOUNDS)
    #: the strategy file's text, for a worker that may not have the file (a Ray cluster's)
    code: str | None = None


@dataclass(frozen=True, kw_only=True)
class PointResult:
    """A finished point: its metrics (None where undefined or the strategy never ordered)."""

    point_id: str
    params: dict[str, Any]
    metrics: dict[str, float | int | None]
    events: int
    events_per_s: float
    wall_s: float


def point_id(*, spec: str, params: dict[str, Any], start: int | None, end: int | None,
             execution: ExecutionConfig, seed: int = 0, bounds: TimeBounds = DEFAULT_BOUNDS) -> str:
    """12 hex digits of sha256 over the canonical JSON of what decides a point's outputs:
    the same command finds the same ids, so a rerun skips finished points."""
    doc = {
        "spec": spec,
        "params": {k: format_value(v) for k, v in sorted(params.items())},
        "start": start,
        "end": end,
        "execution": asdict(execution),
        "seed": seed,
        "bounds": [bounds.max_future_ns, bounds.floor_ns],
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@lru_cache(maxsize=4)
def strategy(spec: str) -> type:
    from ..loader import load_strategy

    return load_strategy(spec)


@lru_cache(maxsize=2)
def open_source(source: str) -> Any:
    """The recording a point reads: the shared decoded one (a directory holding
    ``decoded.json``) or a recording directory; kept open across the worker's points."""
    from .shared import SharedRecording, is_shared

    if is_shared(source):
        return SharedRecording(source)
    from ..recording import Recording

    return Recording(source)


def strategy_of(job: PointJob) -> type:
    """The job's strategy class: from its spec, or from the file's text it carries (written
    once per machine under the temporary directory, named by its content)."""
    if job.code is None:
        return strategy(job.spec)
    from ..loader import spec_file

    file = spec_file(job.spec)
    assert file is not None, "code comes with file specs only"
    digest = hashlib.sha256(job.code.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "qsf-strategies" / digest / file.name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}")
        part.write_text(job.code)
        os.replace(part, path)
    return strategy(f"{path}:{job.spec.rpartition(':')[2]}")


def run_point(job: PointJob) -> PointResult:
    """Run one point; its files go to a temporary directory renamed to ``job.out`` once
    complete, so a point directory always holds a finished point."""
    from ..backtest import run_backtest

    cls = strategy_of(job)
    recording = open_source(job.source)
    try:
        with staged_dir(Path(job.out)) if job.out is not None else nullcontext() as tmp:
            result = run_backtest(
                cls, recording, out=tmp, overrides=dict(job.params), start=job.start, end=job.end,
                batch_size=job.batch_size, seed=job.seed, spec=job.spec, bounds=job.bounds,
                execution=job.execution,
            )
            if tmp is not None:
                params = {k: format_value(v) for k, v in job.params.items()}
                (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
    except UserError as exc:  # name the point: which parameters made the strategy fail
        where = " ".join(f"{k}={format_value(v)}" for k, v in job.params.items())
        raise type(exc)(f"point {job.point_id} ({where}): {exc}") from None
    return result_of(job.point_id, job.params, result.report)


def result_of(pid: str, params: dict[str, Any], report: dict[str, Any]) -> PointResult:
    """A point's result from its report (as written in report.json)."""
    from .metrics import metric_names

    metrics = report.get("metrics") or {}
    return PointResult(
        point_id=pid, params=params,
        metrics={name: metrics.get(name) for name in metric_names()},
        events=int(report["events_in"]),
        events_per_s=float(report.get("events_per_s") or 0.0),
        wall_s=float(report["wall_s"]),
    )


def finished(point_dir: Path, pid: str, params: dict[str, Any]) -> PointResult | None:
    """The result of a point finished by an earlier run (its directory is complete once it
    exists: it was renamed into place), else None."""
    try:
        report = json.loads((point_dir / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return result_of(pid, params, report)
