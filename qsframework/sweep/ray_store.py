"""What moves through Ray's object store instead of a shared filesystem: the decoded
recording (put once per sweep, read zero-copy by every worker) and each point's files
(returned by the task, written under ``OUT/points/<id>/`` by the driver)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .point import PointJob, PointResult, run_point
from .shared import MANIFEST, hold
from .staging import staged_dir

#: a point's files: path relative to its directory -> contents
Files = dict[str, bytes]


def pack(decoded: str | Path) -> dict[str, np.ndarray]:
    """The decoded recording's files as arrays for ``ray.put`` (memory-mapped here, so the
    store's copy is the only one; workers get them zero-copy as read-only arrays)."""
    return {p.name: np.frombuffer(pa.memory_map(str(p), "r").read_buffer(), np.uint8)
            for p in sorted(Path(decoded).iterdir()) if p.is_file()}


def run_task(job: PointJob, recording: dict[str, np.ndarray] | None) -> tuple[PointResult, Files | None]:
    """A point on a Ray worker: the decoded recording from the store (when given), the point's
    files written to a temporary directory of the worker's and returned."""
    if recording is not None:
        hold(job.source, recording)
    if job.out is None:
        return run_point(job), None
    with tempfile.TemporaryDirectory(prefix="qsf-point-") as tmp:
        local = Path(tmp) / Path(job.out).name
        result = run_point(replace(job, out=str(local)))
        files = {str(p.relative_to(local)): p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file()}
    return result, files


def write_point(out: str | Path, files: Files) -> None:
    """A point's files under ``out``, written whole or not at all as a process-pool worker
    writes them (a point directory always holds a finished point)."""
    with staged_dir(Path(out)) as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)


def stored(ray: Any, source: str) -> Any:
    """The ObjectRef of the decoded recording at ``source``, None for a recording directory
    (read by path: the workers need it at the same path)."""
    return ray.put(pack(source)) if (Path(source) / MANIFEST).is_file() else None
