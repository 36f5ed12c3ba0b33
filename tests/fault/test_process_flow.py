"""qsf process under faults: idle inputs, rows piling up behind the watermark, a strategy
that raises, sinks that keep failing when a stop comes, a refused bot token, no broker."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qsframework.events import GAP
from qsframework.latency import LatencyWindow
from qsframework.loader import load_strategy
from qsframework.live import ProcessConfig, Processor
from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter
from qsframework.stack import Stack

from ..fakes.botapi import BotApiServer
from ..conftest import SPREAD_SPEC, T0, make_trades
from ..live.test_outage import OVERRIDES, _tables
from .processes import STRATEGIES, committed, publish, records_in, rows_in, run_process, start_process, state_offsets, wait_for

PARAMS = [f"-p{k}={v}" for k, v in OVERRIDES.items()]
TWO_TOPICS = f"{STRATEGIES}:TradesAndGaps"
FAILS_AT = f"{STRATEGIES}:FailsAt"


def gaps(*ts_ms: int) -> pa.Table:
    n = len(ts_ms)
    ts = [T0 + t * 1_000_000 for t in ts_ms]
    return pa.table({"ts_event": ts, "ts_recv": ts, "source": ["binance"] * n, "key": ["BTCUSDT"] * n,
                     "seq": list(range(n)), "first_id": [10 * i + 1 for i in range(n)],
                     "last_id": [10 * i + 5 for i in range(n)], "filled": [0] * n}, schema=GAP.schema)


def test_an_idle_topic_stops_holding_the_watermark_back(stack_endpoints, tmp_path):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"t{uuid.uuid4().hex[:8]}"
    trades = make_trades(51, 600, start=T0 + 1_000_000_000)
    publish(bootstrap, prefix, "gap", gaps(0, 1, 2))  # then the gaps topic goes quiet
    publish(bootstrap, prefix, "trade", trades)
    ts = trades.column("ts_event").to_numpy()
    expected = 3 + int((ts < ts.max()).sum())  # the latest trades wait for a later event
    out = tmp_path / "live"
    proc = start_process(TWO_TOPICS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--out", str(out),
                         "--idle-timeout", "2s", "-v", env={"QSF_KAFKA_BOOTSTRAP": bootstrap})
    try:
        wait_for(lambda: rows_in(out / "signals.parquet") >= expected, f"{expected} signals", proc=proc, limit_s=120)
        publish(bootstrap, prefix, "gap", gaps(500))  # active again, but behind the watermark
        wait_for(lambda: records_in(bootstrap, f"{prefix}.dlq") >= 1, "the late gap on the DLQ", proc=proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"{prefix}.gaps[0] is idle: it no longer holds the watermark" in stderr
    assert f"{prefix}.gaps[0] is active again" in stderr
    assert f"processed {expected:,} events" in stdout and "1 late" in stdout
    assert rows_in(out / "signals.parquet") == expected


def test_past_max_held_the_oldest_rows_are_released(stack_endpoints, tmp_path):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"t{uuid.uuid4().hex[:8]}"
    trades = make_trades(52, 600, start=T0 + 1_000_000_000)
    publish(bootstrap, prefix, "gap", gaps(0))  # never idle below: it holds the watermark at T0
    publish(bootstrap, prefix, "trade", trades)
    out = tmp_path / "live"
    proc = start_process(TWO_TOPICS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--out", str(out),
                         "--idle-timeout", "1h", "--max-held", "100", env={"QSF_KAFKA_BOOTSTRAP": bootstrap})
    try:
        wait_for(lambda: rows_in(out / "signals.parquet") >= 501, "500 trades released early", proc=proc, limit_s=120)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    signals = pq.read_table(out / "signals.parquet")
    released = [v for n, v in zip(signals.column("name").to_pylist(), signals.column("value").to_pylist()) if n == "trade"]
    assert 500 <= len(released) < trades.num_rows
    assert released == [float(s) for s in trades.column("seq").to_pylist()[:len(released)]]  # the oldest, in order
    # the watermark never passed T0: every event processed was released early
    assert f"processed {signals.num_rows:,} events (0 rejected, 0 late, {signals.num_rows:,} released early (--max-held))" in stdout


def test_a_strategy_error_is_one_line_and_its_batch_is_not_committed(stack_endpoints, tmp_path):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"t{uuid.uuid4().hex[:8]}"
    trades = make_trades(53, 2000)
    bad = trades.column("seq")[1500].as_py()
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap}
    out, state, rec = tmp_path / "live", tmp_path / "state", tmp_path / "rec"
    argv = ["--topic-prefix", prefix, "--group", f"g-{prefix}", "--out", str(out), "--state", str(state),
            "--record", str(rec)]
    publish(bootstrap, prefix, "trade", trades.slice(0, 1000))
    proc = start_process(FAILS_AT, *argv, "-p", f"fail_at={bad}", env=env)
    try:
        wait_for(lambda: state_offsets(state).get((f"{prefix}.trades", 0), 0) >= 900, "a commit", proc=proc)
        publish(bootstrap, prefix, "trade", trades.slice(1000))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("qsf: error: ") and "Traceback" not in stderr
    assert "FailsAt" in stderr and f"ZeroDivisionError: cannot divide trade {bad}" in stderr
    assert "nothing of this batch was committed" in stderr and "-v shows the traceback" in stderr
    assert state_offsets(state)[(f"{prefix}.trades", 0)] <= 1500

    # fixed, it resumes where the last commit left it: every trade exactly once, in order
    r = run_process(FAILS_AT, *argv, "--exit-when-idle", "2", env=env)
    assert r.returncode == 0, r.stderr
    values = pq.read_table(out / "signals.parquet").column("value").to_pylist()
    assert values == [float(s) for s in trades.column("seq").to_pylist()]
    recorded = pa.Table.from_batches(list(Recording(rec).stream("trade")))
    assert recorded.equals(trades)  # what the engine consumed, each trade once

    verbose = run_process(FAILS_AT, "--topic-prefix", prefix, "--group", f"v-{prefix}", "--exit-when-idle", "2",
                          "-p", f"fail_at={bad}", "-v", env=env)
    assert verbose.returncode == 2
    assert "Traceback" in verbose.stderr and "ZeroDivisionError" in verbose.stderr


def test_a_strategy_error_in_on_stop_is_one_line(stack_endpoints, tmp_path):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"t{uuid.uuid4().hex[:8]}"
    publish(bootstrap, prefix, "trade", make_trades(55, 300))
    r = run_process(FAILS_AT, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--exit-when-idle", "2",
                    "-p", "fail_on_stop=true", env={"QSF_KAFKA_BOOTSTRAP": bootstrap})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "FailsAt" in r.stderr and "RuntimeError: no summary today" in r.stderr and "on_stop" in r.stderr


def test_sigterm_while_telegram_keeps_failing_stops_within_seconds_and_commits_nothing(stack_endpoints, tmp_path,
                                                                                       spread_cls):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"t{uuid.uuid4().hex[:8]}"
    trades = make_trades(15, 3000)
    publish(bootstrap, prefix, "trade", trades)
    token = "123456:TEST-token-secret"
    with BotApiServer(token) as bot:
        bot.fail_next([500] * 1000)  # Telegram is down for good
        env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": "", "QSF_TELEGRAM_TOKEN": token,
               "QSF_TELEGRAM_CHAT_ID": "42", "QSF_TELEGRAM_API": bot.url}
        proc = start_process(SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}",
                             "--sink", "telegram", env=env)
        try:
            wait_for(lambda: len(bot.requests) >= 2, "a retried sendMessage", proc=proc)
            proc.send_signal(signal.SIGTERM)
            # before this change the stop waited for every retry (90-100 s), then a traceback
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and token not in stderr
    assert "stopped while a sink was retrying" in stderr
    # nothing at or after the trade of the first alert (which never went out) is committed
    assert (committed(bootstrap, f"g-{prefix}", f"{prefix}.trades") or 0) < _first_alert_row(spread_cls, trades, tmp_path)


def test_sigterm_while_postgres_is_away_stops_within_seconds_and_commits_only_what_is_durable(tmp_path):
    trades = make_trades(54, 4000)
    stack = Stack(tmp_path / "stack")  # our own: its PostgreSQL is about to be stopped
    ep = stack.up()
    try:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        topic = f"{prefix}.trades"
        env = {"QSF_KAFKA_BOOTSTRAP": ep.kafka_bootstrap, "QSF_PG_DSN": ep.pg_dsn}
        argv = [*PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--sink", "timescale"]
        publish(ep.kafka_bootstrap, prefix, "trade", trades.slice(0, 2000))
        log = tmp_path / "stderr.log"
        proc = start_process(SPREAD_SPEC, *argv, env=env, stderr=log)
        try:
            wait_for(lambda: (committed(ep.kafka_bootstrap, f"g-{prefix}", topic) or 0) >= 1900, "a commit", proc=proc)
            stack.postgres.stop()
            before = committed(ep.kafka_bootstrap, f"g-{prefix}", topic)
            publish(ep.kafka_bootstrap, prefix, "trade", trades.slice(2000))
            wait_for(lambda: "retrying" in log.read_text(), "a retried write", proc=proc)
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=60)  # before: it waited for the database
        finally:
            proc.kill()
        stderr = log.read_text()
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr and "stopped while a sink was retrying" in stderr
        assert committed(ep.kafka_bootstrap, f"g-{prefix}", topic) == before  # nothing not durable

        stack.postgres.start()
        r = run_process(SPREAD_SPEC, *argv, "--exit-when-idle", "2", env=env)
        assert r.returncode == 0, r.stderr
        got = asyncio.run(_tables(ep.pg_dsn))
    finally:
        stack.down(purge=True)
    # a restart without --state starts a fresh strategy: the trades table is what must be whole
    assert [tuple(r) for r in got[0]] == list(zip(*(trades.column(c).to_pylist() for c in ("ts_event", "key", "seq", "price"))))


def test_a_refused_bot_token_is_one_line(stack_endpoints, tmp_path, spread_cls):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"t{uuid.uuid4().hex[:8]}"
    trades = make_trades(15, 3000)
    publish(bootstrap, prefix, "trade", trades)
    with BotApiServer("123456:the-real-token") as bot:
        env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": "", "QSF_TELEGRAM_TOKEN": "999:a-wrong-token",
               "QSF_TELEGRAM_CHAT_ID": "42", "QSF_TELEGRAM_API": bot.url}
        r = run_process(SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}",
                        "--sink", "telegram", "--exit-when-idle", "2", env=env)
    assert r.returncode == 2
    assert r.stderr == ("qsf: error: --sink telegram: Telegram refused sendMessage: error 401: Unauthorized "
                        "(check the bot token in QSF_TELEGRAM_TOKEN) (nothing of this batch was committed)\n")
    assert (committed(bootstrap, f"g-{prefix}", f"{prefix}.trades") or 0) < _first_alert_row(spread_cls, trades, tmp_path)


def _first_alert_row(spread_cls, trades: pa.Table, tmp_path) -> int:
    """How many trades (in order) come up to the event of the backtest's first alert."""
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    alerts = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES).tables["alerts"]
    assert alerts.num_rows > 0
    first = alerts.column("ts_event")[0].as_py()
    return int((trades.column("ts_event").to_numpy() <= first).sum())


def test_no_broker_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_process(SPREAD_SPEC, "--bootstrap", f"127.0.0.1:{port}", env={})
    assert r.returncode == 2
    assert r.stderr == f"qsf: error: cannot reach the broker at 127.0.0.1:{port} (is it running? see qsf stack up)\n"


def test_progress_says_nothing_of_latency_without_samples(caplog):
    async def lines() -> list[str]:
        proc = Processor(load_strategy(FAILS_AT), ProcessConfig(bootstrap="127.0.0.1:1", group="g"))
        with caplog.at_level(logging.INFO, logger="qsf.process"):
            proc._log_progress(proc.source.lag(), time.monotonic())  # never started: nothing assigned
            proc._latency.add(np.array([4.0, 6.0]))
            proc._log_progress(proc.source.lag(), time.monotonic())
        return [r.getMessage() for r in caplog.records]

    quiet, measured = asyncio.run(lines())
    assert "latency" not in quiet and "nan" not in quiet
    assert measured.endswith(", p99 latency 6.0 ms")


def test_latency_window_is_bounded_and_gives_the_recent_percentiles():
    rng = np.random.default_rng(7)
    window = LatencyWindow(size=1000)
    assert window.percentile(99) is None  # no samples: no figure (never nan)
    samples = rng.exponential(20.0, 25_000)
    for chunk in np.array_split(samples, 37):
        window.add(chunk)
    assert len(window) == 1000
    recent = samples[-1000:]
    for q in (50, 99):
        assert window.percentile(q) == float(np.percentile(recent, q))
    window.add(samples[:5000])  # more than the window at once: the last 1000 of them
    assert window.percentile(50) == float(np.percentile(samples[4000:5000], 50))


def test_restarting_the_latency_window_with_a_size_keeps_every_sample_of_the_measurement():
    async def measured() -> tuple[float | None, float | None, int]:
        proc = Processor(load_strategy(FAILS_AT), ProcessConfig(bootstrap="127.0.0.1:1", group="g"))
        proc._latency.add(np.full(70_000, 900.0))  # the warm-up: forgotten
        proc.restart_latency_window(samples=200_000)
        for chunk in np.array_split(samples, 53):
            proc._latency.add(chunk)
        return proc._latency.percentile(50), proc._latency.percentile(99), len(proc._latency)

    samples = np.random.default_rng(3).exponential(20.0, 150_000)  # more than the default ring holds
    p50, p99, n = asyncio.run(measured())
    assert n == len(samples)
    assert (p50, p99) == (float(np.percentile(samples, 50)), float(np.percentile(samples, 99)))
