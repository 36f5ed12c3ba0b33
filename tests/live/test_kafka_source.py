"""The Kafka consumer of ``qsf process`` as a plain Source, and the one publish loop.

``KafkaSource`` runs under :func:`~qsframework.io.pump` like any source: it hands out what
the topic holds (rows with their partition id and offset), refuses bad messages through
``on_reject`` with the reason and where they came from, and commits only what it is told.
``Publisher.send_table`` sends a table and hands back the rows too large for the producer."""

from __future__ import annotations

import asyncio
import time
import uuid

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from qsframework.events import TRADE
from qsframework.io import Rejected, pump
from qsframework.kafka import ensure_topics, kind_headers, start_producer
from qsframework.live import KafkaSource, ProcessConfig
from qsframework.publish import Publisher
from qsframework.testing import ListSink
from qsframework.wire import decode, encode

from ..conftest import make_trades
from ..fault.processes import committed


class _StopAfter(ListSink):
    """Keeps what it gets and stops ``source`` once it holds ``rows`` rows."""

    def __init__(self, source: KafkaSource, rows: int) -> None:
        super().__init__()
        self.source, self.rows = source, rows

    async def write(self, kind, table):
        await super().write(kind, table)
        if sum(t.num_rows for _, t in self.batches) >= self.rows:
            self.source.stop()
        return []


def test_kafka_source_under_pump_hands_out_the_topic_and_commits_only_when_told(stack_endpoints):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"ks{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.trades"
    trades = make_trades(21, 300)
    pairs = encode(trades)
    bad_at = {5: b"{oops", 200: b"[]"}  # offsets of two malformed messages among the trades

    async def publish() -> None:
        await ensure_topics(bootstrap, [topic])
        producer = await start_producer(bootstrap)
        try:
            it = iter(pairs)
            for offset in range(len(pairs) + len(bad_at)):
                key, value = (b"X", bad_at[offset]) if offset in bad_at else next(it)
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())
    source = KafkaSource(ProcessConfig(bootstrap=bootstrap, group=f"g-{prefix}", prefix=prefix), {topic: ("trade",)})
    rejected: list[Rejected] = []

    async def keep(r: Rejected) -> None:
        rejected.append(r)

    source.on_reject = keep
    sink = _StopAfter(source, trades.num_rows)
    asyncio.run(asyncio.wait_for(pump(source, [sink]), 300))  # the bound is a safety net

    got = sink.table("trade")
    good_offsets = [o for o in range(len(pairs) + len(bad_at)) if o not in bad_at]
    assert got.column("_offset").to_pylist() == good_offsets
    assert set(got.column("_part").to_pylist()) == {0}
    assert got.drop_columns(["_part", "_offset"]).equals(trades)  # the partition's order is the recording's
    assert sorted(r.value for r in rejected) == sorted(bad_at.values())
    for r in rejected:
        origin = dict(r.origin)
        assert r.kind == "trade" and r.reason
        assert origin["topic"] == topic.encode() and bad_at[int(origin["offset"])] == r.value
    assert source.stats.consumed == len(pairs) + len(bad_at) and source.stats.rejected == len(bad_at)
    assert committed(bootstrap, f"g-{prefix}", topic) is None  # reading is not committing

    async def commit_what_was_read() -> dict:
        again = KafkaSource(ProcessConfig(bootstrap=bootstrap, group=f"g2-{prefix}", prefix=prefix), {topic: ("trade",)})
        await again.start()
        try:
            while not (await again.poll() or []):  # rows, once the group has assigned the partition
                pass
            offsets = again.checkpoint_offsets({})
            await again.commit(offsets)
            return offsets
        finally:
            await again.close()

    offsets = asyncio.run(asyncio.wait_for(commit_what_was_read(), 300))
    assert offsets[TopicPartition(topic, 0)] == committed(bootstrap, f"g2-{prefix}", topic) > 0


@pytest.mark.parametrize("refuse", [True, False])
def test_send_table_hands_back_the_rows_too_large_for_the_producer(stack_endpoints, refuse):
    bootstrap = stack_endpoints.kafka_bootstrap
    topic = f"st{uuid.uuid4().hex[:8]}.trades"
    trades = make_trades(22, 12)
    keys = trades.column("key").to_pylist()
    keys[4] = "K" * 5000  # one record past the producer's 2 KB request limit
    trades = trades.set_column(trades.schema.get_field_index("key"), "key", pa.array(keys))

    async def send() -> tuple[list, int]:
        await ensure_topics(bootstrap, [topic])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2048)
        await producer.start()
        try:
            pub = Publisher(producer)
            try:
                refused = await pub.send_table(topic, "trade", trades, refuse_oversized=refuse)
            except MessageSizeTooLargeError:
                refused = None
            stats = await pub.flush()
            return refused, stats.acked
        finally:
            await producer.stop()

    refused, acked = asyncio.run(send())
    if refuse:
        assert [r.index for r in refused] == [4]
        assert refused[0].reason.startswith(f"too large for {topic}: ")
        want = pa.concat_tables([trades.slice(0, 4), trades.slice(5)])
    else:  # raised at the oversized row: nothing after it was sent
        assert refused is None
        want = trades.slice(0, 4)
    assert acked == want.num_rows
    values = asyncio.run(_read(bootstrap, topic, want.num_rows))
    table, bad = decode(TRADE, values)
    assert not bad and table.to_pylist() == want.to_pylist()


async def _read(bootstrap: str, topic: str, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"r-{time.time_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 120  # a safety net: the records are acknowledged already
        while len(got) < want and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                assert all(dict(m.headers) == dict(kind_headers("trade")) for m in msgs)
                got.extend(m.value for m in msgs)
    finally:
        await consumer.stop()
    return got


def test_replay_of_an_event_too_large_for_the_producer_is_one_line_naming_the_broker(stack_endpoints, tmp_path):
    """``qsf ingest replay`` stops at a record the producer refuses as too large, with the
    producer's own reason on one line (the replay's message before pump() served it too)."""
    import os
    import subprocess

    from qsframework.recording import RecordingWriter

    from ..conftest import qsf_cmd

    trades = make_trades(23, 20)
    keys = trades.column("key").to_pylist()
    keys[7] = "K" * (1 << 20)  # past the producer's 1 MiB request limit
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades.set_column(trades.schema.get_field_index("key"), "key", pa.array(keys, pa.string())))
    prefix = f"big{uuid.uuid4().hex[:8]}"
    r = subprocess.run([*qsf_cmd(), "ingest", "replay", "--recording", str(tmp_path / "rec"), "--topic-prefix", prefix],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"qsf: error: broker {stack_endpoints.kafka_bootstrap}: ")
    assert "MessageSizeTooLargeError" in r.stderr and "published" not in r.stdout
