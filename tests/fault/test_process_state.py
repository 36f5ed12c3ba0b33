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
from pathlib import Path

import pyarrow.parquet as pq

from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd
from ..live.test_outage import OVERRIDES, _assert_equal_to_clean_run, _tables
from ..live.test_process import _fresh_database
from .processes import committed, publish, records_in, wait_for

PARAMS = [f"-p{k}={v}" for k, v in OVERRIDES.items()]


def _start(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """``qsf process`` in ``cwd`` (its own working directory: nothing shared but the broker)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*qsf_cmd(), "process", SPREAD_SPEC, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, cwd=cwd)


def _kill_after_a_commit(proc: subprocess.Popen, bootstrap: str, group: str, topic: str, target: int) -> str:
    """SIGKILL ``proc`` once its group committed at least ``target``; its first stdout line."""
    wait_for(lambda: (committed(bootstrap, group, topic) or 0) >= target, f"a commit at offset {target}", proc=proc)
    proc.kill()
    out, _ = proc.communicate()
    return out.splitlines()[0] if out else ""


def _run_to_the_end(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = _start(*args, "--exit-when-idle", "3", env=env, cwd=cwd)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _sigkill_rounds(*, trades, bootstrap: str, prefix: str, argv: list[str], env: dict[str, str],
                    cwds: list[Path], seed: int) -> list[str]:
    """Publish the trades in pieces; for each working directory start the processor there and
    SIGKILL it after a commit at a random offset; the first stdout line of each."""
    rng = random.Random(seed)
    topic, group = f"{prefix}.trades", argv[argv.index("--group") + 1]
    published, lines = 0, []
    for cwd in cwds:
        before = committed(bootstrap, group, topic) or 0
        piece = trades.slice(published, min(1500, trades.num_rows - published))
        publish(bootstrap, prefix, "trade", piece)
        published += piece.num_rows
        proc = _start(*argv, env=env, cwd=cwd)
        lines.append(_kill_after_a_commit(proc, bootstrap, group, topic, rng.randint(before + 1, published - 200)))
    publish(bootstrap, prefix, "trade", trades.slice(published))
    return lines


def test_sigkill_and_restart_without_any_flag_equals_a_clean_run(stack_endpoints, tmp_path, spread_cls):
    trades = make_trades(51, 7000, gaps_ms=(0, 1, 5, 10, 20, 250))
    prefix = f"t{uuid.uuid4().hex[:8]}"
    group = f"g-{prefix}"
    bootstrap = stack_endpoints.kafka_bootstrap
    dsn = _fresh_database(stack_endpoints.pg_dsn)
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    out = tmp_path / "live"
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", group, "--sink", "timescale", "--out", str(out),
            "--commit-interval", "0s"]
    lines = _sigkill_rounds(trades=trades, bootstrap=bootstrap, prefix=prefix, argv=argv, env=env,
                            cwds=[tmp_path / "work"] * 4, seed=51)
    r = _run_to_the_end(*argv, env=env, cwd=tmp_path / "work")
    assert r.returncode == 0, r.stderr
    assert "0 late" in r.stdout
    state = f"state: Kafka topic {prefix}.state.{group}"
    assert all(state in line and "delivery: at-least-once + idempotent sinks (no --sink kafka)" in line
               for line in [*lines, r.stdout.splitlines()[0]]), lines
    assert records_in(bootstrap, f"{prefix}.dlq") == 0

    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    got_trades, got_signals, got_alerts = asyncio.run(_tables(dsn))
    _assert_equal_to_clean_run(spread_cls, tmp_path / "rec", trades, got_trades, got_signals, got_alerts)
    clean = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    assert pq.read_table(out / "signals.parquet").equals(clean.tables["signals"])
    assert pq.read_table(out / "alerts.parquet").equals(clean.tables["alerts"])
    assert not any((tmp_path / "work").iterdir())  # nothing kept in the working directory


def test_a_restart_on_another_machine_resumes_from_the_group_alone(stack_endpoints, tmp_path, spread_cls):
    """Each incarnation in a fresh working directory with nothing but the group name (and
    the broker and database) in common: PostgreSQL ends as a clean run."""
    trades = make_trades(52, 6000, gaps_ms=(0, 1, 5, 10, 20, 250))
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bootstrap = stack_endpoints.kafka_bootstrap
    dsn = _fresh_database(stack_endpoints.pg_dsn)
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--sink", "timescale",
            "--commit-interval", "0s"]
    _sigkill_rounds(trades=trades, bootstrap=bootstrap, prefix=prefix, argv=argv, env=env,
                    cwds=[tmp_path / "machine-a", tmp_path / "machine-b"], seed=52)
    r = _run_to_the_end(*argv, env=env, cwd=tmp_path / "machine-c")
    assert r.returncode == 0, r.stderr
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    got_trades, got_signals, got_alerts = asyncio.run(_tables(dsn))
    _assert_equal_to_clean_run(spread_cls, tmp_path / "rec", trades, got_trades, got_signals, got_alerts)


def test_no_state_keeps_no_snapshot_and_says_so(stack_endpoints, tmp_path):
    trades = make_trades(53, 500)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bootstrap = stack_endpoints.kafka_bootstrap
    publish(bootstrap, prefix, "trade", trades)
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap}
    for flag in (["--no-state"], ["--state", "none"]):
        group = f"g-{prefix}-{flag[-1].strip('-')}"
        r = _run_to_the_end(*PARAMS, "--topic-prefix", prefix, "--group", group, *flag, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "state: none (--no-state" in r.stdout.splitlines()[0]
        assert records_in(bootstrap, f"{prefix}.state.{group}") == 0
    r = _run_to_the_end(*PARAMS, "--topic-prefix", prefix, "--state", str(tmp_path / "s"), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"state: directory {tmp_path / 's'}" in r.stdout.splitlines()[0]
    assert (tmp_path / "s" / "processor.state").is_file()

    r = subprocess.run([*qsf_cmd(), "process", SPREAD_SPEC, "--no-state", "--state", str(tmp_path / "s")],
                       capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "--no-state and --state DIR" in r.stderr
