"""State without flags: ``qsf process`` keeps its engine snapshot in the compacted topic
``PREFIX.state.<group>`` by default, so a processor SIGKILLed mid-stream and restarted with
no flag at all (also from a fresh working directory, "another machine", sharing only the
group name) ends with exactly the tables and ``--out`` parts of a clean run. Before this, a
restart without ``--state`` lost the strategy's windows (the issue measured 1,681 signals in
PostgreSQL against the backtest's 1,740)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd
from ..live.test_outage import OVERRIDES, _assert_equal_to_clean_run, _tables
from ..live.feeds import fresh_database
from .processes import committed, publish, records_in, wait_for

PARAMS = [f"-p{k}={v}" for k, v in OVERRIDES.items()]


def _start(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """``qsf process`` in ``cwd`` (its own working directory: nothing shared but the broker)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*qsf_cmd(), "process", SPREAD_SPEC, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, cwd=cwd)


def run_to_the_end(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = _start(*args, "--exit-when-idle", "3", env=env, cwd=cwd)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@dataclass(frozen=True)
class Stream:
    """Trades on a topic prefix of their own, one group, a fresh database."""

    trades: pa.Table
    prefix: str
    bootstrap: str
    dsn: str
    env: dict[str, str]

    @property
    def group(self) -> str:
        return f"g-{self.prefix}"

    def argv(self, *extra: str) -> list[str]:
        """The options of every run: the group, PostgreSQL, a commit after every poll."""
        return [*PARAMS, "--topic-prefix", self.prefix, "--group", self.group, "--sink", "timescale",
                "--commit-interval", "0s", *extra]


def stream(stack_endpoints, seed: int, n: int, **env: str) -> Stream:
    bootstrap = stack_endpoints.kafka_bootstrap
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    return Stream(trades=make_trades(seed, n, gaps_ms=(0, 1, 5, 10, 20, 250)), prefix=f"t{uuid.uuid4().hex[:8]}",
                  bootstrap=bootstrap, dsn=dsn, env={"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn, **env})


def sigkill_rounds(s: Stream, argv: list[str], *, cwds: list[Path], seed: int, hold: Path | None = None) -> list[str]:
    """Publish the trades in pieces; for each working directory start the processor there and
    SIGKILL it after a commit at a random offset (every other round, with ``hold`` (see
    hold_outputs.py): once it holds a checkpoint whose outputs went out, uncommitted); the
    first stdout line of each. The rest of the trades are published at the end."""
    rng = random.Random(seed)
    bootstrap, topic, group = s.bootstrap, f"{s.prefix}.trades", s.group
    published, lines = 0, []

    def publish_next(n: int) -> None:
        nonlocal published
        piece = s.trades.slice(published, n)
        publish(bootstrap, s.prefix, "trade", piece)
        published += piece.num_rows

    def commit_reached(target: int) -> Callable[[], bool]:
        return lambda: (committed(bootstrap, group, topic) or 0) >= target

    for i, cwd in enumerate(cwds):
        before = committed(bootstrap, group, topic) or 0
        publish_next(1500)
        proc = _start(*argv, env=s.env, cwd=cwd)
        target = rng.randint(before + 1, published - 200)
        wait_for(commit_reached(target), f"a commit at offset {target}", proc=proc)
        if hold is not None and i % 2:
            held = hold.with_name(hold.name + ".held")
            hold.touch()
            publish_next(300)  # new outputs to hold
            wait_for(held.exists, "a checkpoint held after its outputs went out", proc=proc)
        proc.kill()
        out, _ = proc.communicate()
        lines.append(out.splitlines()[0] if out else "")
        if hold is not None:
            hold.unlink(missing_ok=True)
            hold.with_name(hold.name + ".held").unlink(missing_ok=True)
    publish_next(s.trades.num_rows)
    return lines


def assert_tables_equal_a_clean_run(s: Stream, spread_cls, rec: Path):
    """PostgreSQL holds exactly what the backtest of the trades gives; that backtest."""
    with RecordingWriter(rec) as w:
        w.write("trade", s.trades)
    got_trades, got_signals, got_alerts = asyncio.run(_tables(s.dsn))
    _assert_equal_to_clean_run(spread_cls, rec, s.trades, got_trades, got_signals, got_alerts)
    return run_backtest(spread_cls, Recording(rec), overrides=OVERRIDES)


def test_sigkill_and_restart_without_any_flag_equals_a_clean_run(stack_endpoints, tmp_path, spread_cls):
    s = stream(stack_endpoints, 51, 7000)
    out = tmp_path / "live"
    argv = s.argv("--out", str(out))
    lines = sigkill_rounds(s, argv, cwds=[tmp_path / "work"] * 4, seed=51)
    r = run_to_the_end(*argv, env=s.env, cwd=tmp_path / "work")
    assert r.returncode == 0, r.stderr
    assert "0 late" in r.stdout
    state = f"state: Kafka topic {s.prefix}.state.{s.group}"
    assert all(state in line and "delivery: at-least-once + idempotent sinks (no --sink kafka)" in line
               for line in [*lines, r.stdout.splitlines()[0]]), lines
    assert records_in(s.bootstrap, f"{s.prefix}.dlq") == 0
    clean = assert_tables_equal_a_clean_run(s, spread_cls, tmp_path / "rec")
    assert pq.read_table(out / "signals.parquet").equals(clean.tables["signals"])
    assert pq.read_table(out / "alerts.parquet").equals(clean.tables["alerts"])
    assert not any((tmp_path / "work").iterdir())  # nothing kept in the working directory


def test_a_restart_on_another_machine_resumes_from_the_group_alone(stack_endpoints, tmp_path, spread_cls):
    """Each incarnation in a fresh working directory with nothing but the group name (and
    the broker and database) in common: PostgreSQL ends as a clean run."""
    s = stream(stack_endpoints, 52, 6000)
    sigkill_rounds(s, s.argv(), cwds=[tmp_path / "machine-a", tmp_path / "machine-b"], seed=52)
    r = run_to_the_end(*s.argv(), env=s.env, cwd=tmp_path / "machine-c")
    assert r.returncode == 0, r.stderr
    assert_tables_equal_a_clean_run(s, spread_cls, tmp_path / "rec")


def test_no_state_keeps_no_snapshot_and_says_so(stack_endpoints, tmp_path):
    trades = make_trades(53, 500)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bootstrap = stack_endpoints.kafka_bootstrap
    publish(bootstrap, prefix, "trade", trades)
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap}
    for flag in (["--no-state"], ["--state", "none"]):
        group = f"g-{prefix}-{flag[-1].strip('-')}"
        r = run_to_the_end(*PARAMS, "--topic-prefix", prefix, "--group", group, *flag, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "state: none (--no-state" in r.stdout.splitlines()[0]
        assert r.stdout.splitlines()[0].endswith("checkpoint every 5 s")  # at-least-once's default
        assert records_in(bootstrap, f"{prefix}.state.{group}") == 0
    r = run_to_the_end(*PARAMS, "--topic-prefix", prefix, "--state", str(tmp_path / "s"), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"state: directory {tmp_path / 's'}" in r.stdout.splitlines()[0]
    assert (tmp_path / "s" / "processor.state").is_file()

    r = subprocess.run([*qsf_cmd(), "process", SPREAD_SPEC, "--no-state", "--state", str(tmp_path / "s")],
                       capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "--no-state and --state DIR" in r.stderr
