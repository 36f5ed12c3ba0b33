"""Reliability: PostgreSQL goes away mid-stream and comes back; nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import asyncpg

from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter
from qsframework.replay import replay
from qsframework.stack import Stack

from .conftest import SPREAD_SPEC, make_trades, qsf_cmd

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

        async def tables():
            con = await asyncpg.connect(ep.pg_dsn)
            try:
                return (
                    await con.fetch("SELECT ts_event, key, seq, price FROM trades ORDER BY ts_event, key, seq"),
                    await con.fetch("SELECT ts_event, name, value, attrs FROM signals ORDER BY ts_event, name"),
                    await con.fetchval("SELECT count(*) FROM alerts"),
                )
            finally:
                await con.close()

        got_trades, got_signals, got_alerts = asyncio.run(tables())
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        stack.down(purge=True)
    # a clean run: the backtest of the same recording
    clean = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    expected_trades = list(zip(*(trades.column(c).to_pylist() for c in ("ts_event", "key", "seq", "price"))))
    assert [tuple(r) for r in got_trades] == expected_trades
    sig = clean.tables["signals"].sort_by([("ts_event", "ascending"), ("name", "ascending")])
    assert [tuple(r) for r in got_signals] == list(zip(*(sig.column(c).to_pylist() for c in ("ts_event", "name", "value", "attrs"))))
    assert got_alerts == clean.alerts
