"""The default state store of ``qsf process``: snapshots in the compacted topic
``PREFIX.state.<group>``, in content-defined chunks, a save sending only the chunks the topic
lacks, never mixed, the latest complete one found whether or not the broker compacted
(hypothesis), and a snapshot larger than any broker's default record limit round-trips
through the real broker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.kafka import start_producer
from qsframework import state_pickle
from qsframework.live.state_topic import CHUNK_AVG_BYTES, Record, TopicState, latest_snapshot, snapshot_records, state_topic
from qsframework.stack import Stack

from ..conftest import live_broker

KEY = "g-test"


AVG = 256  # small chunks, so that small blobs have several


def _compacted(log: list[Record]) -> list[Record]:
    """What log compaction may leave: the last record of each key, in log order (tombstones
    kept, as within delete.retention.ms)."""
    last = {k: i for i, (k, _, _) in enumerate(log)}
    return [r for i, r in enumerate(log) if last[r[0]] == i]


def _save(log: list[Record], blob: bytes, number: int, held: frozenset[bytes]) -> tuple[list[Record], int, set[bytes]]:
    """A save's records as TopicState.save sends them (the new chunks, the header, then the
    tombstones), the header's index, and the snapshot's chunk keys."""
    records, parts = snapshot_records(KEY, blob, checkpoint=number, held=held, avg_bytes=AVG)
    header_at = len(records) - 1
    return records + [(k, None, []) for k in sorted(held - parts)], header_at, parts


@st.composite
def histories(draw):
    """Snapshot saves by successive incarnations of a processor, each possibly cut short (a
    crash) after any of its records; the snapshots share runs of bytes (a window that slid),
    so later saves send only some of their chunks. A restart reads what the log holds and
    numbers on from the last complete snapshot, as the processor does."""
    pieces = draw(st.lists(st.binary(min_size=1, max_size=400), min_size=1, max_size=6))
    log: list[Record] = []
    complete: bytes | None = None
    complete_number = 0
    held: frozenset[bytes] = frozenset()
    for _ in range(draw(st.integers(1, 8))):
        blob = b"".join(draw(st.lists(st.sampled_from(pieces), max_size=12)))
        number = complete_number + 1
        records, header_at, parts = _save(log, blob, number, held)
        cut = draw(st.integers(0, len(records) - 1)) if draw(st.booleans()) else len(records)  # a crash, or not
        log += records[:cut]
        if cut > header_at:  # the header made it: complete, tombstones or not
            complete, complete_number = blob, number
        if cut == len(records):
            held = frozenset(parts)
        else:  # restarted: what the log holds
            found = latest_snapshot(log, KEY)
            held = frozenset(found.live | found.stale)
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


@given(st.binary(min_size=0, max_size=5000))
def test_chunks_are_bounded_and_the_header_comes_last(blob):
    records, parts = snapshot_records(KEY, blob, checkpoint=7, avg_bytes=AVG)
    *chunks, header = records
    assert header[0] == KEY.encode() and b'"checkpoint": 7' in header[1]
    assert all(len(v) <= 4 * AVG for _, v, _ in chunks)
    assert {k for k, _, _ in chunks} == parts
    assert latest_snapshot(records, KEY).blob == blob


def test_a_slid_window_sends_only_the_chunks_around_its_ends():
    """The bytes of a window that lost its oldest and gained new ones: a save sends the new
    bytes and the chunks cut around the two ends (a few, as the cuts fall), never the middle
    the topic holds already; and the snapshot reads back. Fifty windows, seeded."""
    extra = []
    for seed in range(50):
        rng = random.Random(seed)
        data, added = rng.randbytes(rng.randint(20_000, 40_000)), rng.randbytes(rng.randint(1, 4000))
        first, parts = snapshot_records(KEY, data, checkpoint=1, avg_bytes=AVG)
        slid = data[rng.randint(1, 4000):] + added
        second, _ = snapshot_records(KEY, slid, checkpoint=2, held=frozenset(parts), avg_bytes=AVG)
        assert latest_snapshot(first + second, KEY).blob == slid
        extra.append(sum(len(v) for _, v, _ in second[:-1]) - len(added))
    assert max(extra) < 10 * 4 * AVG and sum(extra) / len(extra) < 6 * AVG, extra


def test_a_topic_written_by_the_old_layout_still_loads():
    """Chunks keyed <key>@<checkpoint>/<index> and a header with their count and the whole's
    SHA-256 (before chunks were content-defined); a torn rewrite of the same checkpoint is
    never mixed in, and a newer snapshot takes over."""
    def old(blob: bytes, checkpoint: int, nonce: str, size: int = 4) -> list[Record]:
        count = max(1, -(-len(blob) // size))
        common = [("checkpoint", str(checkpoint).encode()), ("snapshot", nonce.encode())]
        chunks = [(f"{KEY}@{checkpoint}/{i}".encode(), blob[i * size:(i + 1) * size],
                   [("qsf-state", b"chunk"), *common, ("chunk", str(i).encode())]) for i in range(count)]
        header = {"checkpoint": checkpoint, "chunks": count, "bytes": len(blob),
                  "sha256": hashlib.sha256(blob).hexdigest(), "snapshot": nonce}
        return chunks + [(KEY.encode(), json.dumps(header).encode(), [("qsf-state", b"snapshot"), *common])]

    written = old(b"A" * 10, 3, "n1")
    assert latest_snapshot(written, KEY).blob == b"A" * 10
    torn = old(b"B" * 10, 3, "n2")[:1]
    assert latest_snapshot(written + torn, KEY).blob == b"A" * 10
    assert latest_snapshot(_compacted(written + torn), KEY).blob is None  # chunk 0 replaced: never a mix
    found = latest_snapshot(written, KEY)
    newer, _ = snapshot_records(KEY, b"C" * 10, checkpoint=4, held=frozenset(found.live | found.stale))
    assert latest_snapshot(written + newer, KEY).blob == b"C" * 10


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
    # the last one's window slid: 100,000 bytes left it, 50,000 came in
    snapshots.append({**snapshots[-1], "engine": snapshots[-1]["engine"][100_000:] + os.urandom(50_000),
                      "checkpoint": 5})

    async def run():
        writer = TopicState(bootstrap, topic, "g")
        await writer.ensure()
        writer.producer = await start_producer(bootstrap)
        loaded, sent = [], []
        try:
            for snapshot in snapshots:
                before = writer.sent_bytes
                await writer.save(state_pickle.dumps(snapshot), checkpoint=snapshot["checkpoint"])
                sent.append(writer.sent_bytes - before)
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
        return loaded, meta, configs, sent

    loaded, meta, configs, sent = asyncio.run(run())
    assert loaded == snapshots
    assert sent[0] >= 3 << 20 and sent[-1] < 50_000 + 3 * 4 * CHUNK_AVG_BYTES  # the new bytes and the cut ends
    assert len(meta[0]["partitions"]) == 1
    return {e[0]: e[1] for e in configs[0].resources[0][4]}
