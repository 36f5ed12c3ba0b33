"""Reliability: PostgreSQL goes away mid-stream and comes back; nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid

import asyncpg

from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter
from qsframework.replay import replay
from qsframework.stack import Stack

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd

OVERRIDES = {"window": "2s", "sample": "500ms", "threshold": "0.004"}


def test_postgres_outage_of_10s_mid_stream(tmp_path, spread_cls):
    trades = make_trades(21, 6000, gaps_ms=(0, 1, 5, 10, 20))  # about 50 s of event time
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    span_s = (trades.column("ts_event")[-1].as_py() - trades.column("ts_event")[0].as_py()) / 1e9
    speed = span_s / 24  # the replay takes ~24 s of wall time
    stack = Stack(tmp_path / "stack")  # our own: its PostgreSQL is about to be stopped
    ep = stack.up()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": ep.kafka_bootstrap, "QSF_PG_DSN": ep.pg_dsn}
    proc = None
    try:
        proc = subprocess.Popen(
            [*qsf_cmd(), "process", SPREAD_SPEC, *(f"-p{k}={v}" for k, v in OVERRIDES.items()),
             "--topic-prefix", prefix, "--group", f"g-{prefix}", "--sink", "timescale", "--exit-when-idle", "6"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )

        async def feed_with_outage() -> None:
            feeder = asyncio.create_task(replay(Recording(tmp_path / "rec"), ep.kafka_bootstrap, speed=speed, prefix=prefix))
            await asyncio.sleep(6)
            stack.postgres.stop()  # mid-stream
            assert not stack.postgres.running()
            await asyncio.sleep(10)
            stack.postgres.start()
            await feeder

        asyncio.run(feed_with_outage())
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "processed 6,000 events" in out
        assert "retrying" in err  # the outage did hit the sink, which waited it out

        got_trades, got_signals, got_alerts = asyncio.run(_tables(ep.pg_dsn))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        stack.down(purge=True)
    _assert_equal_to_clean_run(spread_cls, tmp_path / "rec", trades, got_trades, got_signals, got_alerts)


def test_processor_killed_with_sigkill_and_restarted(stack_endpoints, tmp_path, spread_cls):
    """kill -9 mid-stream, start again with the same --state: tables equal a clean run."""
    import signal

    trades = make_trades(22, 6000, gaps_ms=(0, 1, 5, 10, 20))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    span_s = (trades.column("ts_event")[-1].as_py() - trades.column("ts_event")[0].as_py()) / 1e9
    prefix = f"t{uuid.uuid4().hex[:8]}"
    dsn = stack_endpoints.pg_dsn.rsplit("/", 1)[0] + "/" + prefix

    async def create_db() -> None:
        con = await asyncpg.connect(stack_endpoints.pg_dsn)
        try:
            await con.execute(f"CREATE DATABASE {prefix}")
        finally:
            await con.close()

    asyncio.run(create_db())
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap, "QSF_PG_DSN": dsn}
    argv = [*qsf_cmd(), "process", SPREAD_SPEC, *(f"-p{k}={v}" for k, v in OVERRIDES.items()),
            "--topic-prefix", prefix, "--group", f"g-{prefix}", "--sink", "timescale",
            "--state", str(tmp_path / "state")]

    async def feed_and_kill() -> None:
        feeder = asyncio.create_task(replay(Recording(tmp_path / "rec"), stack_endpoints.kafka_bootstrap,
                                            speed=span_s / 16, prefix=prefix))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        await asyncio.sleep(9)  # mid-stream, once it has committed (and snapshotted) at least once
        deadline = time.monotonic() + 30
        while not (tmp_path / "state" / "processor.state").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await feeder

    asyncio.run(feed_and_kill())
    assert (tmp_path / "state" / "processor.state").exists()
    r = subprocess.run([*argv, "--exit-when-idle", "4"], capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr

    got_trades, got_signals, got_alerts = asyncio.run(_tables(dsn))
    _assert_equal_to_clean_run(spread_cls, tmp_path / "rec", trades, got_trades, got_signals, got_alerts)


async def _tables(dsn: str):
    con = await asyncpg.connect(dsn)
    try:
        return (
            await con.fetch("SELECT ts_event, key, seq, price FROM trades ORDER BY ts_event, key, seq"),
            await con.fetch("SELECT ts_event, name, value, attrs FROM signals ORDER BY ts_event, name"),
            await con.fetchval("SELECT count(*) FROM alerts"),
        )
    finally:
        await con.close()


def _assert_equal_to_clean_run(spread_cls, rec, trades, got_trades, got_signals, got_alerts) -> None:
    """The tables hold exactly what a clean run (the backtest of the same recording) gives."""
    clean = run_backtest(spread_cls, Recording(rec), overrides=OVERRIDES)
    expected_trades = list(zip(*(trades.column(c).to_pylist() for c in ("ts_event", "key", "seq", "price"))))
    assert [tuple(r) for r in got_trades] == expected_trades
    sig = clean.tables["signals"].sort_by([("ts_event", "ascending"), ("name", "ascending")])
    cols = ("ts_event", "name", "value", "attrs")
    assert [tuple(r) for r in got_signals] == list(zip(*(sig.column(c).to_pylist() for c in cols)))
    assert got_alerts == clean.alerts > 0
