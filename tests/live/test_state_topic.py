"""The default state store of ``qsf process``: snapshots in the compacted topic
``PREFIX.state.<group>``, chunked, never mixed, the latest complete one found whether or not
the broker compacted (hypothesis), and a snapshot larger than any broker's default record
limit round-trips through the real broker."""

from __future__ import annotations

import asyncio
import os
import pickle
import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.kafka import start_producer
from qsframework.live.state_topic import Record, TopicState, latest_snapshot, snapshot_records, state_topic
from qsframework.stack import Stack

from ..conftest import live_broker

KEY = "g-test"


def _compacted(log: list[Record]) -> list[Record]:
    """What log compaction may leave: the last record of each key, in log order (tombstones
    kept, as within delete.retention.ms)."""
    last = {k: i for i, (k, _, _) in enumerate(log)}
    return [r for i, r in enumerate(log) if last[r[0]] == i]


@st.composite
def histories(draw):
    """Snapshot writes by successive incarnations of a processor, each possibly cut short
    (a crash) after any of its records; a restart continues numbering from the last complete
    snapshot, as the processor does."""
    log: list[Record] = []
    complete: bytes | None = None
    complete_number = 0
    chunk = draw(st.integers(1, 16))
    for _ in range(draw(st.integers(1, 8))):
        blob = draw(st.binary(min_size=0, max_size=80))
        number = complete_number + 1  # a restart numbers on from the snapshot it resumed from
        records = snapshot_records(KEY, blob, checkpoint=number, chunk_bytes=chunk)
        written = {k for k, _, _ in records[:-1]}
        stale = latest_snapshot(log, KEY).stale - written  # what the writer knows of: tombstoned after the header
        header_at = len(records) - 1
        records += [(k, None, []) for k in sorted(stale)]
        cut = draw(st.integers(0, len(records) - 1)) if draw(st.booleans()) else len(records)  # a crash, or not
        log += records[:cut]
        if cut > header_at:  # the header made it: complete, tombstones or not
            complete, complete_number = blob, number
    if draw(st.booleans()):
        log.append((b"other@1/0", b"x", [("qsf-state", b"chunk")]))  # another key's records are ignored
    return log, complete


@settings(max_examples=300)
@given(histories())
def test_the_latest_complete_snapshot_is_found_compacted_or_not(history):
    log, complete = history
    for records in (log, _compacted(log)):
        found = latest_snapshot(records, KEY)
        assert found.blob == complete


@given(st.binary(min_size=0, max_size=200), st.integers(1, 50))
def test_chunks_are_bounded_and_the_header_comes_last(blob, chunk):
    records = snapshot_records(KEY, blob, checkpoint=7, chunk_bytes=chunk)
    *chunks, header = records
    assert header[0] == KEY.encode() and b'"checkpoint": 7' in header[1]
    assert all(len(v) <= chunk for _, v, _ in chunks)
    assert b"".join(v for _, v, _ in chunks) == blob
    assert len(chunks) == max(1, -(-len(blob) // chunk))


def test_a_torn_snapshot_is_never_mixed_with_the_one_before():
    """A crash after the first chunk of a rewrite of the same checkpoint (same chunk keys):
    the torn chunk must not be read as part of the older snapshot."""
    old = snapshot_records(KEY, b"A" * 10, checkpoint=3, chunk_bytes=4)
    torn = snapshot_records(KEY, b"B" * 10, checkpoint=3, chunk_bytes=4)[:1]
    assert latest_snapshot(old + torn, KEY).blob == b"A" * 10
    # compaction removed A's chunk 0: no snapshot, never a mix
    assert latest_snapshot(_compacted(old + torn), KEY).blob is None


def test_topic_names_are_legal_for_any_group():
    assert state_topic("qsf", "qsf-spread") == "qsf.state.qsf-spread"
    odd = state_topic("qsf", "team a/strategy:1")
    assert odd.startswith("qsf.state.team_a_strategy_1-") and all(c.isalnum() or c in "._-" for c in odd)
    assert odd != state_topic("qsf", "team_a_strategy_1")


def test_a_snapshot_bigger_than_a_record_round_trips_through_the_broker(stack_endpoints):
    """3 MiB of state (a broker's default record limit is 1 MiB; the producer's too) saved,
    then saved again smaller, and read back by a store of its own, as another machine
    would: the latest, exactly; the topic is compacted, with one partition."""
    configs = _round_trip(stack_endpoints.kafka_bootstrap)
    if live_broker() == "kafka":  # Tansu keeps no topic configuration (nor compacts): the reader copes
        assert configs["cleanup.policy"] == "compact"


@pytest.mark.tansu
def test_snapshots_round_trip_on_tansu(tmp_path):
    """Tansu neither compacts nor reports a log end that counts records: every snapshot stays,
    and the reader still finds the latest."""
    broker = Stack(tmp_path / "stack", broker="tansu").broker
    broker.start()
    try:
        _round_trip(broker.bootstrap)
    finally:
        broker.stop()


def _round_trip(bootstrap: str) -> dict[str, str]:
    """Saves of several sizes, each read back by a store of its own; the topic's settings."""
    topic = state_topic(f"t{uuid.uuid4().hex[:8]}", "g")
    snapshots = [{"engine": os.urandom(size), "offsets": {("x", 0): i}, "checkpoint": i}
                 for i, size in enumerate((3 << 20, 1000, 0, 700_000), start=1)]

    async def run():
        writer = TopicState(bootstrap, topic, "g")
        await writer.ensure()
        writer.producer = await start_producer(bootstrap)
        loaded = []
        try:
            for snapshot in snapshots:
                await writer.save(pickle.dumps(snapshot), checkpoint=snapshot["checkpoint"])
                loaded.append(await TopicState(bootstrap, topic, "g").load())
        finally:
            await writer.producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            meta = await admin.describe_topics([topic])
            configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        return loaded, meta, configs

    loaded, meta, configs = asyncio.run(run())
    assert loaded == snapshots
    assert len(meta[0]["partitions"]) == 1
    return {e[0]: e[1] for e in configs[0].resources[0][4]}
