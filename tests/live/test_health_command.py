"""``qsf health``: exit 0 and one line while a processor works (broker and database answering, a
recent report to pipeline_health); exit 1 with the reason when the broker or the database is
away, no processor reported, or the last one stopped; exit 2 for bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import uuid


from qsframework.kafka import ensure_topics
from qsframework.live.health_check import HealthCheck, judge
from qsframework.wire import encode

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd
from ..fault.processes import wait_for
from .feeds import fetch_made, fresh_database, publish

CHECK = HealthCheck(bootstrap="b:1", dsn="postgresql://x", max_age_s=10.0)
NOW = 1_000 * 10**9


def _report(processor: str, *, reported_s: float, committed_s: float | None, lag: int) -> dict:
    return {"processor": processor, "ts": NOW - int(reported_s * 1e9),
            "last_commit": None if committed_s is None else NOW - int(committed_s * 1e9), "consumer_lag": lag}


def test_one_working_processor_is_enough_and_old_ones_do_not_count():
    dead = _report("h:1", reported_s=3600, committed_s=3600, lag=50)  # an earlier run, or a member that died
    live = _report("h:2", reported_s=1, committed_s=2, lag=10)
    result = judge(CHECK, [dead, live], now_ns=NOW)
    assert result.ok and result.line.startswith("healthy: ") and "h:2 reported 1.0 s ago" in result.line
    assert "h:1" not in result.line
    assert not judge(CHECK, [dead], now_ns=NOW).ok


def test_a_processor_with_lag_must_have_committed_recently():
    stuck = _report("h:1", reported_s=1, committed_s=30, lag=5)
    result = judge(CHECK, [stuck], now_ns=NOW)
    assert not result.ok
    assert result.line == ("unhealthy (any group, max age 10 s): newest report: h:1 reported 1.0 s ago, "
                           "committed 30.0 s ago, lag 5")
    idle = _report("h:1", reported_s=1, committed_s=30, lag=0)  # nothing to commit: fine
    assert judge(CHECK, [idle], now_ns=NOW).ok
    never = _report("h:1", reported_s=1, committed_s=None, lag=3)
    assert "never committed" in judge(CHECK, [never], now_ns=NOW).line and not judge(CHECK, [never], now_ns=NOW).ok


def test_no_report_at_all():
    result = judge(HealthCheck(bootstrap="b:1", dsn="x", group="g", host="box"), [], now_ns=NOW)
    assert result == type(result)(False, "unhealthy: no processor of group g on box has reported to pipeline_health")


def _health(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*qsf_cmd(), "health", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_bad_input_is_one_line_exit_2():
    env = {k: v for k, v in os.environ.items() if k not in ("QSF_PG_DSN", "QSF_KAFKA_BOOTSTRAP")}
    r = subprocess.run([*qsf_cmd(), "health"], capture_output=True, text=True, timeout=120, env=env)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == 'qsf: error: no database: set QSF_PG_DSN (e.g. eval "$(qsf stack up)")\n'
    r = _health("--max-age", "soon", env={"QSF_PG_DSN": "postgresql://x@127.0.0.1:1/x", "QSF_KAFKA_BOOTSTRAP": "b:1"})
    assert r.returncode == 2 and r.stderr.startswith("qsf: error: --max-age: ") and len(r.stderr.splitlines()) == 1


def test_nothing_answering_is_exit_1_naming_both():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _health("--bootstrap", f"127.0.0.1:{port}", "--timeout", "2s",
                env={"QSF_PG_DSN": f"postgresql://x:y@127.0.0.1:{port}/x"})
    assert r.returncode == 1 and r.stderr == ""
    assert r.stdout == (f"unhealthy: broker 127.0.0.1:{port} unreachable (KafkaConnectionError); "
                        f"database unreachable (ConnectionRefusedError)\n")


def test_healthy_while_a_processor_works_and_not_once_it_stopped(stack_endpoints):
    bootstrap = stack_endpoints.kafka_bootstrap
    dsn = fresh_database(stack_endpoints.pg_dsn, "health")
    prefix = f"hc{uuid.uuid4().hex[:8]}"
    group = f"g-{prefix}"
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    asyncio.run(ensure_topics(bootstrap, [f"{prefix}.trades", f"{prefix}.dlq"]))
    r = _health("--group", group, env=env)  # the tables are not even there yet
    assert (r.returncode, r.stdout) == (1, f"unhealthy: no processor of group {group} has reported to pipeline_health\n")
    proc = subprocess.Popen(
        [*qsf_cmd(), "process", SPREAD_SPEC, "--topic-prefix", prefix, "--group", group, "--no-state",
         "--sink", "timescale", "--health-interval", "300ms"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        assert proc.stdout is not None and "group " + group in proc.stdout.readline()
        publish(bootstrap, f"{prefix}.trades", encode(make_trades(7, 300, start=time.time_ns() - 60 * 10**9)))
        rows = "SELECT 1 FROM pipeline_health WHERE group_id = $1 AND last_commit IS NOT NULL LIMIT 1"
        wait_for(lambda: bool(fetch_made(dsn, rows, group)), "a health row after a commit", proc=proc)
        working = _health("--group", group, "--here", env=env)
        other = _health("--group", "nobody", env=env)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert working.returncode == 0, working.stdout
    host = socket.gethostname()
    assert working.stdout.startswith(f"healthy: broker {bootstrap}, database, group {group} on {host}: {host}:{proc.pid} reported ")
    assert (other.returncode, other.stdout) == (1, "unhealthy: no processor of group nobody has reported to pipeline_health\n")
    stopped = _health("--group", group, "--max-age", "1ms", env=env)  # its last report: before it stopped
    assert stopped.returncode == 1
    assert stopped.stdout.startswith(f"unhealthy (group {group}, max age 0.001 s): newest report: {host}:{proc.pid} reported ")


