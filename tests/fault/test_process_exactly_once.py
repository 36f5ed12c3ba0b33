"""Exactly-once outputs on Kafka: with ``--sink kafka`` on a broker with transactions, each
checkpoint of ``qsf process`` is one transaction (outputs, dead letters, state snapshot,
consumer offsets), so a processor SIGKILLed at random checkpoints and restarted leaves each
output exactly once for a ``read_committed`` consumer, equal to a backtest. On a broker
without transactions (Tansu) it says it runs at-least-once, and PostgreSQL still ends exact."""

from __future__ import annotations

import asyncio
import uuid

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, TopicPartition

from qsframework.backtest import run_backtest
from qsframework.events import get_kind
from qsframework.recording import Recording, RecordingWriter
from qsframework.wire import decode

from ..conftest import live_broker, make_trades
from ..live.test_outage import OVERRIDES, _assert_equal_to_clean_run, _tables
from ..live.test_process import _fresh_database
from .processes import records_in
from .test_process_state import PARAMS, _run_to_the_end, _sigkill_rounds


def _read(bootstrap: str, topic: str, kind: str, isolation: str) -> pa.Table:
    """Every record of partition 0 of ``topic`` a consumer with ``isolation`` sees, decoded."""

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    isolation_level=isolation, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            await consumer.seek_to_beginning(tp)
            values: list[bytes] = []
            while await consumer.position(tp) < end:
                values += [m.value for m in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])]
            return values
        finally:
            await consumer.stop()

    table, rejected = decode(get_kind(kind), asyncio.run(read()), bounds=None)
    assert not rejected
    return table


def test_sigkills_at_random_checkpoints_leave_each_kafka_output_exactly_once(stack_endpoints, tmp_path, spread_cls):
    trades = make_trades(61, 8000, gaps_ms=(0, 1, 5, 10, 20, 250))
    prefix = f"t{uuid.uuid4().hex[:8]}"
    group = f"g-{prefix}"
    bootstrap = stack_endpoints.kafka_bootstrap
    dsn = _fresh_database(stack_endpoints.pg_dsn)
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", group, "--sink", "kafka", "--sink", "timescale",
            "--commit-interval", "0s"]
    lines = _sigkill_rounds(trades=trades, bootstrap=bootstrap, prefix=prefix, argv=argv, env=env,
                            cwds=[tmp_path] * 5, seed=61)
    r = _run_to_the_end(*argv, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    transactions = live_broker() == "kafka"
    mode = ("delivery: exactly-once (Kafka transactions)" if transactions
            else "delivery: at-least-once + idempotent sinks (broker has no transactions)")
    assert all(mode in line for line in [*lines, r.stdout.splitlines()[0]]), lines
    assert records_in(bootstrap, f"{prefix}.dlq") == 0

    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    clean = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    got_trades, got_signals, got_alerts = asyncio.run(_tables(dsn))
    _assert_equal_to_clean_run(spread_cls, tmp_path / "rec", trades, got_trades, got_signals, got_alerts)
    if not transactions:
        return  # at-least-once: the Kafka outputs may repeat; PostgreSQL (idempotent) is exact, above
    for kind, name in (("signal", "signals"), ("alert", "alerts")):
        committed = _read(bootstrap, f"{prefix}.{name}", kind, "read_committed")
        expected = clean.tables[name]
        assert committed.num_rows == expected.num_rows > 0
        assert committed.select(expected.column_names).to_pylist() == expected.to_pylist()
        everything = _read(bootstrap, f"{prefix}.{name}", kind, "read_uncommitted")
        assert everything.num_rows >= committed.num_rows  # aborted transactions' records, if any
