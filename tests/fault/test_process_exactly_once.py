"""Exactly-once outputs on Kafka: with ``--sink kafka`` on a broker with transactions, each
checkpoint of ``qsf process`` is one transaction (outputs, dead letters, state snapshot,
consumer offsets), so a processor SIGKILLed at random checkpoints and restarted leaves each
output exactly once for a ``read_committed`` consumer, equal to a backtest. On a broker
without transactions (Tansu) it says it runs at-least-once, and PostgreSQL still ends exact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, TopicPartition

from qsframework.events import get_kind
from qsframework.wire import decode

from ..conftest import live_broker
from .processes import records_in
from .test_process_state import assert_tables_equal_a_clean_run, run_to_the_end, sigkill_rounds, stream


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
    hold = tmp_path / "hold"
    s = stream(stack_endpoints, 61, 8000, QSF_TEST_HOLD=str(hold))
    argv = s.argv("--sink", "kafka", "--sink", f"{Path(__file__).with_name('hold_outputs.py')}:HoldAfterOutputs")
    lines = sigkill_rounds(s, argv, cwds=[tmp_path / "work"] * 5, seed=61, hold=hold)
    r = run_to_the_end(*argv, env=s.env, cwd=tmp_path / "work")
    assert r.returncode == 0, r.stderr
    transactions = live_broker() == "kafka"
    mode = ("delivery: exactly-once (Kafka transactions)" if transactions
            else "delivery: at-least-once + idempotent sinks (broker has no transactions)")
    assert all(mode in line for line in [*lines, r.stdout.splitlines()[0]]), lines
    assert records_in(s.bootstrap, f"{s.prefix}.dlq") == 0
    clean = assert_tables_equal_a_clean_run(s, spread_cls, tmp_path / "rec")
    if not transactions:
        return  # at-least-once: the Kafka outputs may repeat; PostgreSQL (idempotent) is exact, above
    for kind, name in (("signal", "signals"), ("alert", "alerts")):
        committed = _read(s.bootstrap, f"{s.prefix}.{name}", kind, "read_committed")
        expected = clean.tables[name]
        assert committed.num_rows == expected.num_rows > 0
        assert committed.select(expected.column_names).to_pylist() == expected.to_pylist()
    # the held rounds sent outputs that were never committed: aborted, yet in the log
    everything = _read(s.bootstrap, f"{s.prefix}.signals", "signal", "read_uncommitted")
    assert everything.num_rows > clean.tables["signals"].num_rows
