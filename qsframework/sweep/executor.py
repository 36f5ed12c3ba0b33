"""Where a sweep's points run: :class:`ProcessExecutor`, a pool of worker processes on this
machine (``RayExecutor`` in :mod:`qsframework.sweep.ray_executor` runs them on Ray)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from .point import PointJob, PointResult, run_point


class Executor(ABC):
    """Runs points; ``map`` yields their results as they finish, in any order."""

    #: how many points it runs at once (an adaptive search asks for this many at a time)
    slots: int = 1

    @abstractmethod
    def map(self, jobs: Sequence[PointJob]) -> Iterator[PointResult]:
        """Run ``jobs``, yielding each result as its point finishes."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (at once, a point under way is abandoned)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _worker_init() -> None:
    """Ctrl-C reaches the whole process group: the parent alone decides, the workers go on
    until it stops them (so a point is never half-written by an interrupted worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessExecutor(Executor):
    """``workers`` processes (default: every core), started once and kept for every point:
    a worker loads the strategy and opens the recording once, not per point."""

    def __init__(self, workers: int | None = None) -> None:
        workers = workers or os.cpu_count() or 1
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.slots = workers
        # forkserver: workers do not inherit the parent's threads (DuckDB's, the progress bar's)
        self._ctx = multiprocessing.get_context("forkserver")
        self._pool: Any = None

    def map(self, jobs: Sequence[PointJob]) -> Iterator[PointResult]:
        if not jobs:
            return
        if self._pool is None:
            self._pool = self._ctx.Pool(self.slots, initializer=_worker_init)
        yield from self._pool.imap_unordered(run_point, jobs, chunksize=1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
