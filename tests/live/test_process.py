"""qsf process: live on the embedded broker, with the backtest's engine and strategy."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid

import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer

from qsframework.kafka import ensure_topics, start_producer
from qsframework.recording import Recording, RecordingWriter
from qsframework.replay import replay
from qsframework.backtest import run_backtest
from qsframework.wire import encode

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd
from ..fault.processes import committed, wait_for
from .feeds import fresh_database

PARAMS = ["-p", "window=2s", "-p", "sample=500ms", "-p", "threshold=0.004"]
OVERRIDES = {"window": "2s", "sample": "500ms", "threshold": "0.004"}


def process(prefix: str, tmp_path, *extra: str, env_bootstrap: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": env_bootstrap}
    return subprocess.run(
        [*qsf_cmd(), "process", SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}",
         "--out", str(tmp_path / "live"), "--record", str(tmp_path / "rec-live"), *extra],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def replay_and_process(bootstrap: str, tmp_path, seed: int, n: int, spread_cls):
    """Record `n` trades of three symbols, replay them onto `bootstrap`, run `qsf process` until
    idle, and check its outputs equal the backtest's; returns the backtest."""
    trades = make_trades(seed, n, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(replay(Recording(tmp_path / "rec"), bootstrap, prefix=prefix))
    r = process(prefix, tmp_path, "--exit-when-idle", "2", env_bootstrap=bootstrap)
    assert r.returncode == 0, r.stderr
    assert f"processed {trades.num_rows:,} events" in r.stdout
    backtest = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    assert backtest.signals > 0 and backtest.alerts > 0
    for name in ("signals", "alerts"):
        assert pq.read_table(tmp_path / "live" / f"{name}.parquet").equals(backtest.tables[name])
    return backtest


def test_live_outputs_equal_the_backtest_and_the_record_reproduces_them(stack_endpoints, tmp_path, spread_cls):
    backtest = replay_and_process(stack_endpoints.kafka_bootstrap, tmp_path, 11, 4000, spread_cls)
    again = run_backtest(spread_cls, Recording(tmp_path / "rec-live"), overrides=OVERRIDES)
    assert again.tables["signals"].equals(backtest.tables["signals"])
    assert again.tables["alerts"].equals(backtest.tables["alerts"])


def test_malformed_messages_go_to_the_dlq_and_the_rest_is_processed(stack_endpoints, tmp_path, spread_cls):
    trades = make_trades(12, 1500)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    bad = [b"{oops", b'{"ts_event": "soon"}', b"[]"]

    async def publish() -> None:
        await ensure_topics(stack_endpoints.kafka_bootstrap, [f"{prefix}.trades", f"{prefix}.dlq"])
        producer = await start_producer(stack_endpoints.kafka_bootstrap)
        try:
            pairs = encode(trades)
            for i, (key, value) in enumerate(pairs):
                if i in (10, 500, 1000):
                    await producer.send(f"{prefix}.trades", key=b"X", value=bad[(i // 500)])
                await producer.send(f"{prefix}.trades", key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())
    r = process(prefix, tmp_path, "--exit-when-idle", "2", env_bootstrap=stack_endpoints.kafka_bootstrap)
    assert r.returncode == 0, r.stderr
    assert "3 rejected" in r.stdout
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    expected = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    assert pq.read_table(tmp_path / "live" / "signals.parquet").equals(expected.tables["signals"])

    async def read_dlq() -> list[tuple[bytes, dict]]:
        consumer = AIOKafkaConsumer(f"{prefix}.dlq", bootstrap_servers=stack_endpoints.kafka_bootstrap,
                                    group_id=f"dlq-{prefix}", auto_offset_reset="earliest")
        await consumer.start()
        got = []
        try:
            deadline = time.monotonic() + 20
            while len(got) < 3 and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=300)).values():
                    got.extend((m.value, dict(m.headers)) for m in msgs)
        finally:
            await consumer.stop()
        return got

    dlq = asyncio.run(read_dlq())
    assert sorted(v for v, _ in dlq) == sorted(bad)
    reasons = {v: h["reason"].decode() for v, h in dlq}
    assert "malformed JSON" in reasons[b"{oops"] and "ts_event" in reasons[b'{"ts_event": "soon"}']
    assert all(h["topic"] == f"{prefix}.trades".encode() for _, h in dlq)


def test_sigterm_stops_cleanly(stack_endpoints, tmp_path):
    trades = make_trades(13, 2000)
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(replay(Recording(tmp_path / "rec"), stack_endpoints.kafka_bootstrap, prefix=prefix))
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    proc = subprocess.Popen(
        [*qsf_cmd(), "process", SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}",
         "--out", str(tmp_path / "live")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    # once it has consumed the topic (all but the rows at the latest event time, which
    # wait for a later event) and committed it
    wait_for(lambda: (committed(stack_endpoints.kafka_bootstrap, f"g-{prefix}", f"{prefix}.trades") or 0) >= 1900,
             "a commit of the whole topic", proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # a clean stop publishes every committed part (readable footers)
    assert pq.read_table(tmp_path / "live" / "signals.parquet").num_rows > 0


def test_timescale_sink_is_complete_and_idempotent(stack_endpoints, tmp_path, spread_cls):
    import asyncpg

    trades = make_trades(14, 3000)
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(replay(Recording(tmp_path / "rec"), stack_endpoints.kafka_bootstrap, prefix=prefix))
    dsn = fresh_database(stack_endpoints.pg_dsn, "sink")
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap, "QSF_PG_DSN": dsn}

    def run(group: str) -> None:
        r = subprocess.run(
            [*qsf_cmd(), "process", SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", group,
             "--sink", "timescale", "--exit-when-idle", "2"],
            capture_output=True, text=True, env=env, timeout=180,
        )
        assert r.returncode == 0, r.stderr

    async def tables() -> dict[str, list]:
        con = await asyncpg.connect(dsn)
        try:
            return {
                "trades": await con.fetch("SELECT ts_event, key, seq, price FROM trades ORDER BY ts_event, key, seq"),
                "signals": await con.fetch("SELECT ts_event, name, value, attrs FROM signals ORDER BY ts_event, name"),
                "alerts": await con.fetch("SELECT dedup_key FROM alerts ORDER BY dedup_key"),
            }
        finally:
            await con.close()

    run(f"g1-{prefix}")
    first = asyncio.run(tables())
    expected = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    assert [tuple(r) for r in first["trades"]] == list(zip(*(trades.column(c).to_pylist() for c in ("ts_event", "key", "seq", "price"))))
    sig = expected.tables["signals"].sort_by([("ts_event", "ascending"), ("name", "ascending")])
    assert [tuple(r) for r in first["signals"]] == list(zip(*(sig.column(c).to_pylist() for c in ("ts_event", "name", "value", "attrs"))))
    assert len(first["alerts"]) == expected.alerts > 0
    run(f"g2-{prefix}")  # a second group re-delivers everything: nothing may be doubled
    assert asyncio.run(tables()) == first


def test_telegram_sink_sends_each_alert_once_across_redeliveries(stack_endpoints, tmp_path, spread_cls):
    from ..fakes.botapi import BotApiServer

    trades = make_trades(15, 3000)
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(replay(Recording(tmp_path / "rec"), stack_endpoints.kafka_bootstrap, prefix=prefix))
    dsn = fresh_database(stack_endpoints.pg_dsn, "sink")
    token = "123456:TEST-token-secret"
    expected = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    assert expected.alerts > 0
    sent_after: list[int] = []
    with BotApiServer(token) as bot:
        env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap, "QSF_PG_DSN": dsn,
               "QSF_TELEGRAM_TOKEN": token, "QSF_TELEGRAM_CHAT_ID": "42", "QSF_TELEGRAM_API": bot.url}
        for group in ("g1", "g2"):  # the second group re-delivers every alert: none is sent again
            r = subprocess.run(
                [*qsf_cmd(), "process", SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"{group}-{prefix}",
                 "--sink", "telegram", "--exit-when-idle", "2", "-v"],
                capture_output=True, text=True, env=env, timeout=240,
            )
            assert r.returncode == 0, r.stderr
            assert token not in r.stderr and token not in r.stdout
            sent_after.append(len(bot.texts()))
        texts = bot.texts()
    assert sent_after[0] == sent_after[1] > 0
    # every alert is covered exactly once: as its own message or counted in a "+N more" summary
    single = [t for t in texts if "divergence" in t.splitlines()[0]]
    summaries = [int(t.split("+", 1)[1].split(" ", 1)[0]) for t in texts if t.startswith("+")]
    assert len(single) + sum(summaries) == expected.alerts
