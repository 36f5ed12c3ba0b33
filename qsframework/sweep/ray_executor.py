"""Points as Ray tasks: a local Ray instance, or a cluster (``ray://head:10001``).

Each task is :func:`~qsframework.sweep.point.run_point` on a :class:`PointJob`, so a point's
files are those of a process-pool sweep bit for bit. The decoded recording goes into Ray's
object store once and each task returns its point's files, which the driver writes under
``OUT/points/``: the workers share no filesystem with the driver (they need qsframework; a
strategy file's text goes with each task; see the README's "Sweeps on a Ray cluster").
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from ..errors import UserError
from ..loader import spec_file
from .executor import Executor
from .point import PointJob, PointResult
from .ray_store import run_task, stored, write_point

#: CPUs of a local Ray instance started here (the machine's cores by default)
LOCAL_CPUS = os.cpu_count() or 2
#: seconds to reach a cluster's GCS port before giving up (Ray itself would retry for minutes)
CONNECT_S = 15.0


def _reachable(address: str) -> None:
    """A ``HOST:PORT`` GCS address must accept a connection (Ray would wait minutes for one)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
    except OSError as exc:
        raise UserError(f"cannot connect to Ray at {address!r}: {exc.strerror or exc}") from None


def strategy_code(spec: str) -> str | None:
    """The text of the strategy file a ``file.py:Class`` spec names (None for ``module:Class``):
    a cluster's workers need not have the file, at its path or at all (a relative path is the
    driver's), so it goes with each task."""
    file = spec_file(spec)
    if file is None:
        return None
    try:
        return file.read_text()
    except OSError as exc:
        raise UserError(f"strategy file {str(file)!r}: {exc.strerror or exc}") from None


class RayExecutor(Executor):
    """Runs points as Ray tasks, one CPU each. ``address``: None starts a local Ray
    instance (or joins the one this process already runs), ``"auto"`` joins the local
    cluster started by ``ray start``, ``ray://host:10001`` a remote cluster's client server."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("--ray needs the ray extra: pip install 'qsframework[ray]'") from None
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            options: dict[str, Any] = {}  # Ray Client (ray://) takes none: the server's init
            if address is None:
                options = {"num_cpus": num_cpus or LOCAL_CPUS, "include_dashboard": False,
                           "log_to_driver": False, "configure_logging": False}
            elif not address.startswith("ray://"):
                options = {"log_to_driver": False, "configure_logging": False}
                if address != "auto":
                    _reachable(address)
            try:
                with warnings.catch_warnings():  # Ray's own warnings would precede our one line
                    warnings.simplefilter("ignore")
                    # "local": a new instance, even where `ray start` ran (or left its address)
                    ray.init(address=address or "local", **options)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"cannot connect to Ray at {address!r}: {exc}") from None
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1, max_retries=0)(run_task)
        self._running: dict[Any, PointJob] = {}
        self._stored: dict[str, Any] = {}  # decoded recording's path -> its ObjectRef
        self._code: dict[str, str | None] = {}  # strategy spec -> its file's text, read once

    def put(self, source: str) -> Any:
        """The decoded recording at ``source`` in the object store (put once per executor)."""
        if source not in self._stored:
            self._stored[source] = stored(self._ray, source)
        return self._stored[source]

    def _with_code(self, job: PointJob) -> PointJob:
        """``job`` carrying its strategy file's text (read once per spec)."""
        if job.spec not in self._code:
            self._code[job.spec] = strategy_code(job.spec)
        code = self._code[job.spec]
        return job if code is None or job.code is not None else replace(job, code=code)

    def map(self, jobs: Sequence[PointJob]) -> Iterator[PointResult]:
        ray = self._ray
        self._running = {self._task.remote(self._with_code(job), self.put(job.source)): job for job in jobs}
        while self._running:
            done, _ = ray.wait(list(self._running), num_returns=1)
            job = self._running.pop(done[0])
            try:
                result, files = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # the point's own error, as a pool raises it
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BaseException):
                    raise cause from None
                raise
            if files is not None and job.out is not None:
                write_point(job.out, files)
            yield result

    def close(self) -> None:
        """Cancel the points under way; stop Ray when this executor started it."""
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running = {}
        self._stored = {}
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
