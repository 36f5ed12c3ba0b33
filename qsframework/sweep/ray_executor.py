"""Points as Ray tasks: a local Ray instance, or a cluster (``ray://head:10001``).

Each task is :func:`~qsframework.sweep.point.run_point` on a :class:`PointJob`, so a point's
files are those of a process-pool sweep bit for bit. The recording is shared by path: the
workers need the strategy file, the recording and the sweep's ``--out`` at the same paths
(one machine, or shared storage on a cluster; see the README's "Sweeps on a Ray cluster").
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import UserError
from .executor import Executor
from .point import PointJob, PointResult, run_point

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
        self._task = ray.remote(num_cpus=1, max_retries=0)(run_point)
        self._running: list[Any] = []

    def map(self, jobs: Sequence[PointJob]) -> Iterator[PointResult]:
        ray = self._ray
        self._running = [self._task.remote(job) for job in jobs]
        while self._running:
            done, self._running = ray.wait(self._running, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # the point's own error, as a pool raises it
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BaseException):
                    raise cause from None
                raise

    def close(self) -> None:
        """Cancel the points under way; stop Ray when this executor started it."""
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running = []
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
