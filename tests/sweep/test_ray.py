"""Sweeps on Ray: one local Ray instance for the module; the same sweep run as Ray tasks (in
this process, and by ``qsf sweep --ray ADDRESS`` joining that instance) writes the process
pool's table and point files, the workers reading the decoded recording from the object store."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray  # the ray extra, which the test extra pulls in

from qsframework.durations import parse_time
from qsframework.execution.config import ExecutionConfig
from qsframework.loader import load_strategy
from qsframework.sweep.executor import ProcessExecutor
from qsframework.sweep.grid import parse_grid
from qsframework.sweep.point import PointJob, point_id
from qsframework.sweep.ray_executor import RayExecutor
from qsframework.sweep.run import _decode, run_sweep
from qsframework.sweep.search import GridSearch
from qsframework.validity import DEFAULT_BOUNDS

from ..conftest import ROOT
from .conftest import PAIRS, qsf
from .same import same_points, same_sweep

SAMPLE = ROOT / "recordings" / "sample"
END = "2026-01-05T00:30:00Z"
GRID = ["threshold=0.001,0.002", "window=30s,60s"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, no dashboard) for every test here."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def sweep_with(executor, out: Path):
    space = parse_grid(load_strategy(PAIRS).Params, GRID)
    with executor:
        return run_sweep(spec=PAIRS, recording=str(SAMPLE), out=out, search=GridSearch(space),
                         executor=executor, end=parse_time(END))


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool")
    sweep_with(ProcessExecutor(2), out)
    return out


def test_ray_sweep_equals_the_process_pool_sweep(local_ray, pool_sweep, tmp_path):
    executor = RayExecutor(None)  # joins this process's Ray instance
    assert executor.slots == 2
    sweep_with(executor, tmp_path)
    assert ray.is_initialized()  # it did not start it, so it leaves it running
    same_sweep(pool_sweep, tmp_path)


def test_cli_ray_address_equals_the_process_pool_sweep(local_ray, pool_sweep, tmp_path):
    run = qsf("sweep", PAIRS, "--recording", SAMPLE, "--out", tmp_path, "--end", END,
              *(a for g in GRID for a in ("-g", g)), "--ray", local_ray)
    assert run.returncode == 0, run.stderr
    same_sweep(pool_sweep, tmp_path)


def test_a_strategy_file_the_workers_lack_goes_with_the_tasks(local_ray, tmp_path):
    """A relative strategy path names the driver's file: the workers (whose working directory is
    another) get its text with each task, and the points equal a process-pool sweep's."""
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(PAIRS.rpartition(":")[0], mine / "pairs_copy.py")
    args = ("sweep", "mine/pairs_copy.py:BtcEthPairs", "--recording", SAMPLE, "--end", END,
            *(a for g in GRID for a in ("-g", g)))
    pool = qsf(*args, "--out", tmp_path / "pool", "--workers", "2", cwd=tmp_path)
    assert pool.returncode == 0, pool.stderr
    run = qsf(*args, "--out", tmp_path / "ray", "--ray", local_ray, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    same_sweep(tmp_path / "pool", tmp_path / "ray")


def test_cli_ray_unreachable_address_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = qsf("sweep", PAIRS, "--recording", SAMPLE, "--out", tmp_path, "--end", END,
              "-g", "threshold=0.001", "--ray", f"127.0.0.1:{port}")
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("qsf: error: cannot connect to Ray")
    assert "Traceback" not in run.stderr


def test_ray_workers_read_the_recording_from_the_object_store(local_ray, pool_sweep, tmp_path):
    """The decoded recording is put in the store, then its directory is removed: the points
    still run (no worker opens OUT/.cache) and the driver writes the pool sweep's files."""
    space = parse_grid(load_strategy(PAIRS).Params, GRID)
    search, end, execution = GridSearch(space), parse_time(END), ExecutionConfig()
    grid = search.ask(1 << 30)
    decoded = _decode(PAIRS, str(SAMPLE), tmp_path / "cache", search, grid[0], start=None, end=end,
                      execution=execution, bounds=DEFAULT_BOUNDS, batch_size=65_536)
    jobs = [PointJob(point_id=(pid := point_id(spec=PAIRS, params=p, start=None, end=end,
                                               execution=execution)),
                     params=p, spec=PAIRS, source=str(decoded), start=None, end=end,
                     execution=execution, out=str(tmp_path / "points" / pid)) for p in grid]
    (tmp_path / "points").mkdir()
    with RayExecutor(None) as executor:
        executor.put(str(decoded))
        shutil.rmtree(tmp_path / "cache")
        results = {r.point_id: r for r in executor.map(jobs)}
    assert not decoded.exists()
    same_points(pool_sweep, tmp_path)
    table = {row["point"]: row for row in pq.read_table(pool_sweep / "sweep.parquet").to_pylist()}
    assert set(results) == set(table)
    for pid, result in results.items():
        assert result.events == table[pid]["events"]
        assert result.metrics == {k: table[pid][k] for k in result.metrics}
