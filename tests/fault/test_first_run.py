"""The first backtest on a fresh machine does not wait for a compile: a small input on a
cold batch path runs per event while a detached process warms the cache for the next run."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qsframework.engine import COLD_ROWS, Engine
from qsframework.recording import RecordingWriter
from qsframework.sim.market import simulate_trades
from qsframework.strategy import Strategy

from ..conftest import SPREAD_SPEC, run_qsf as qsf


def wait_for_warm_up(lock: str) -> None:
    """Block until the warm-up process holding ``lock`` has exited (it holds it while it runs);
    the bound is only a safety net."""
    fd = os.open(lock, os.O_RDWR)
    try:
        waiter = threading.Thread(target=fcntl.flock, args=(fd, fcntl.LOCK_EX), daemon=True)
        waiter.start()
        waiter.join(600)
        assert not waiter.is_alive(), "the warm-up process did not finish"
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    rec = tmp_path_factory.mktemp("first_run") / "rec"
    with RecordingWriter(rec, rows_per_file=5_000) as w:
        for table in simulate_trades(["BTCUSDT", "ETHUSDT"], minutes=6, seed=5):
            w.write("trade", table)
    return rec


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_first_run_goes_per_event_and_the_next_finds_the_batch_path_warm(recording, tmp_path):
    """Run from a folder with a qsframework/ of its own (a checkout beside an installed
    package), which the warm-up process must not import in place of the installed one."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    checkout = tmp_path / "checkout"
    (checkout / "qsframework").mkdir(parents=True)
    (checkout / "qsframework" / "__init__.py").write_text("raise ImportError('not installed')\n")
    args = ("--recording", str(recording), "-p", "window=30s")
    first = qsf("backtest", SPREAD_SPEC, *args, "--out", str(tmp_path / "first"), env=env,
                cwd=checkout)
    assert first.returncode == 0, first.stderr
    cold = report(tmp_path / "first")
    assert cold["path"] == "event"
    assert "compiles in the background" in first.stdout
    lock = cold["warm_up"]
    assert lock is not None and Path(lock).is_relative_to(tmp_path / "cache")
    wait_for_warm_up(lock)
    cached = list((tmp_path / "cache" / "qsf" / "numba").rglob("spread_kernel.spread_kernel*.nbc"))
    assert cached, "the warm-up left no compiled spread kernel in the user cache"

    second = qsf("backtest", SPREAD_SPEC, *args, "--out", str(tmp_path / "second"), env=env,
                 cwd=checkout)
    assert second.returncode == 0, second.stderr
    warm = report(tmp_path / "second")
    assert warm["path"] == "batch" and warm["warm_up"] is None
    assert warm["outputs"] == cold["outputs"] and cold["outputs"]["signals"] > 0
    for name in ("signals", "alerts"):
        assert pq.read_table(tmp_path / "second" / f"{name}.parquet").equals(
            pq.read_table(tmp_path / "first" / f"{name}.parquet")), name


def test_an_explicit_batch_path_compiles_in_the_foreground(recording, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    r = qsf("backtest", SPREAD_SPEC, "--recording", str(recording), "--path", "batch",
            "--out", str(tmp_path / "out"), env=env)
    assert r.returncode == 0, r.stderr
    got = report(tmp_path / "out")
    assert got["path"] == "batch" and got["warm_up"] is None


NEVER_READY = '''
from dataclasses import dataclass
from pathlib import Path

from qsframework import Strategy


@dataclass(frozen=True, kw_only=True)
class Params:
    marker: str = ""


class NeverReady(Strategy):
    """A batch path whose warm-up always fails (after leaving a marker file)."""

    Params = Params

    def on_trade(self, t):
        self.ctx.signal(t.key, "price", t.price)

    def on_trade_batch(self, batch, fires):
        for t in batch.to_pylist():
            self.ctx.signal(t["key"], "price", t["price"], ts=t["ts_event"])

    def batch_ready(self):
        return False

    def prepare_batch(self):
        Path(self.p.marker).write_text("warm-up ran")
        raise RuntimeError("no compiler here")
'''


def test_a_failing_warm_up_is_silent(recording, tmp_path):
    """The run is unaffected; the warm-up ran (with the run's parameters) and failed unseen,
    so the next run is cold again and tries again."""
    (tmp_path / "never_ready.py").write_text(NEVER_READY)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    spec = f"{tmp_path / 'never_ready.py'}:NeverReady"
    for run in ("first", "second"):
        marker = tmp_path / f"marker-{run}"
        r = qsf("backtest", spec, "--recording", str(recording), "-p", f"marker={marker}",
                "--out", str(tmp_path / run), env=env)
        assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
        got = report(tmp_path / run)
        assert got["path"] == "event" and got["outputs"]["signals"] == got["events_in"] > 0
        wait_for_warm_up(got["warm_up"])
        assert marker.read_text() == "warm-up ran"


class Toy(Strategy):
    """A batch path that is compiled only once ``prepare_batch`` ran."""

    def __init__(self, params, ctx) -> None:
        super().__init__(params, ctx)
        self.compiled = 0

    def on_trade(self, t) -> None:
        pass

    def on_trade_batch(self, batch, fires) -> None:
        pass

    def batch_ready(self) -> bool:
        return self.compiled > 0

    def prepare_batch(self) -> None:
        self.compiled += 1


@pytest.mark.parametrize(("path", "rows", "batch", "compiles", "cold"), [
    ("auto", 1_000, False, 0, True),            # small and cold: per event, warm it later
    ("auto", COLD_ROWS - 1, False, 0, True),
    ("auto", COLD_ROWS, True, 1, False),        # big: the compile pays for itself
    ("auto", None, True, 1, False),             # size unknown (live): as before
    ("batch", 1_000, True, 1, False),           # asked for: compiled in the foreground
    ("event", 1_000, False, 0, False),
])
def test_prepare_chooses_the_path_by_readiness_and_size(path, rows, batch, compiles, cold):
    engine = Engine(Toy, path=path)
    engine.prepare(rows=rows)
    assert (engine.uses_batch_path, engine.strategy.compiled, engine.cold) == (batch, compiles, cold)


def test_a_ready_batch_path_is_kept_for_a_small_input():
    engine = Engine(Toy, path="auto")
    engine.strategy.compiled = 1
    engine.prepare(rows=10)
    assert engine.uses_batch_path and not engine.cold and engine.strategy.compiled == 2
