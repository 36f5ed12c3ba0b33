"""The default state store of ``qsf process``: the engine snapshot in a compacted topic
``PREFIX.state.<group>`` (one partition), the way Kafka Streams and Quix Streams keep their
changelogs, so a processor restarted anywhere with the same group resumes exactly.

A snapshot is cut into content-defined chunks (FastCDC: a cut depends on the bytes around it,
so bytes that did not change give the same chunks wherever they moved), each a record keyed
``<key>@<digest>`` (a SHA-256 of its bytes), then one header record keyed ``<key>`` names the
checkpoint and the chunks' digests in order. A save sends only the chunks the topic does not
hold: a strategy's window that slid by 5 s of 60 s sends about a tenth of its snapshot (the
engine pickles so that it does, :mod:`qsframework.state_pickle`). Once the header is
acknowledged, the chunks it does not name get tombstones, so compaction keeps exactly the
latest snapshot. A reader takes the last header whose chunks are all there with their digests
right, so it never mixes two snapshots, whether the broker compacts (Apache Kafka, Redpanda) or
keeps everything (Tansu); topics written by earlier versions (chunks keyed
``<key>@<checkpoint>/<index>``) still load. ``<key>`` is the group, or ``<group>/p<partitions>``
for a scale-out member's snapshot beside it in the same topic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pyfastcdc import FastCDC

from ..errors import describe
from ..kafka import ensure_topics
from ..retry import Backoff
from .state import StateStore

log = logging.getLogger("qsf.process")

#: the chunks' average size: a change costs about one chunk around it; a snapshot is this many
#: records. At most 4x it (64 KiB), far below the 1 MiB a broker accepts by default
CHUNK_AVG_BYTES = 16 << 10
#: compacted, one partition; segments roll often so compaction keeps the topic near one snapshot
STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "60000", "min.cleanable.dirty.ratio": "0.1",
                      "delete.retention.ms": "60000"}
_KIND = "qsf-state"  # header: "chunk" or "snapshot"

Record = tuple[bytes, bytes | None, list[tuple[str, bytes]]]  # key, value (None: a tombstone), headers


def state_topic(prefix: str, group: str) -> str:
    """``PREFIX.state.<group>``, the group made a legal topic name (a digest keeps it unique)."""
    name = f"{prefix}.state.{group}"
    legal = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if legal != name or len(legal) > 240:
        legal = f"{legal[:220]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return legal


def _digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def chunk_key(key: str, digest: str) -> bytes:
    return f"{key}@{digest}".encode()


def snapshot_records(key: str, blob: bytes, *, checkpoint: int, held: frozenset[bytes] = frozenset(),
                     avg_bytes: int = CHUNK_AVG_BYTES) -> tuple[list[Record], set[bytes]]:
    """The records that write one snapshot, in order: its chunks the topic does not hold yet
    (``held``: the chunk keys it holds), then the header naming all of them; and the keys of
    the snapshot's chunks."""
    view = memoryview(blob)
    cuts = FastCDC(avg_bytes, min_size=avg_bytes // 4, max_size=avg_bytes * 4).cut_buf(blob)
    parts = [view[c.offset:c.offset + c.length] for c in cuts]
    digests = [_digest(p) for p in parts]
    common = [("checkpoint", str(checkpoint).encode())]
    records: list[Record] = []
    sent = set(held)
    for digest, part in zip(digests, parts):
        k = chunk_key(key, digest)
        if k not in sent:
            sent.add(k)
            records.append((k, bytes(part), [(_KIND, b"chunk"), *common]))
    header = {"checkpoint": checkpoint, "bytes": len(blob), "parts": digests}
    records.append((key.encode(), json.dumps(header).encode(), [(_KIND, b"snapshot"), *common]))
    return records, {chunk_key(key, d) for d in digests}


@dataclass(slots=True)
class Latest:
    """What reading the topic found: the latest complete snapshot, the keys of its chunks,
    and every other chunk key the topic holds."""

    checkpoint: int | None = None
    blob: bytes | None = None
    live: set[bytes] = field(default_factory=set)  # the latest snapshot's chunk keys
    stale: set[bytes] = field(default_factory=set)  # other chunk keys (to tombstone)


def latest_snapshot(records: Iterable[Record], key: str) -> Latest:
    """The last snapshot of ``key`` in log order whose chunks the log holds (not tombstoned)
    with their digests right; the other chunk keys are stale. (A header of the old layout is
    judged when it comes: a later rewrite of its chunk keys must not be mixed in.)"""
    head, prefix = key.encode(), f"{key}@".encode()
    held: dict[bytes, tuple[bytes, bytes]] = {}  # chunk key -> (bytes, the old layout's snapshot nonce)
    snapshots: list[dict | tuple[int, bytes, set[bytes]]] = []  # headers, or old ones assembled
    for rkey, value, headers in records:
        if rkey.startswith(prefix):
            if value is None:  # a tombstone: that chunk is gone
                held.pop(rkey, None)
            else:
                held[rkey] = (value, next((v for k, v in headers if k == "snapshot"), b""))
        elif rkey == head and value is not None:
            try:
                meta = json.loads(value)
                if "parts" in meta:
                    snapshots.append(meta)
                elif (old := _assemble_old(key, meta, held)) is not None:
                    snapshots.append(old)
            except (ValueError, KeyError, TypeError):
                continue
    found = Latest()
    for snapshot in reversed(snapshots):
        try:
            assembled = _assemble(key, snapshot, held) if isinstance(snapshot, dict) else snapshot
        except (ValueError, KeyError, TypeError):
            continue
        if assembled is not None:
            found.checkpoint, found.blob, found.live = assembled
            break
    found.live &= held.keys()
    found.stale = set(held) - found.live
    return found


def _assemble(key: str, meta: dict, held: dict[bytes, tuple[bytes, bytes]]) -> tuple[int, bytes, set[bytes]] | None:
    """The checkpoint, bytes and chunk keys of the snapshot header ``meta`` names, if its
    chunks are all held with their digests right."""
    digests = [str(d) for d in meta["parts"]]
    keys = [chunk_key(key, d) for d in digests]
    if any(k not in held or _digest(held[k][0]) != d for k, d in zip(keys, digests)):
        return None
    return int(meta["checkpoint"]), b"".join(held[k][0] for k in keys), set(keys)


def _assemble_old(key: str, meta: dict, held: dict[bytes, tuple[bytes, bytes]]) -> tuple[int, bytes, set[bytes]] | None:
    """:func:`_assemble` for the old layout: chunks numbered per checkpoint, each tagged with
    the snapshot's nonce, and a digest of the whole."""
    checkpoint, nonce = int(meta["checkpoint"]), str(meta["snapshot"]).encode()
    keys = [f"{key}@{checkpoint}/{i}".encode() for i in range(int(meta["chunks"]))]
    if any(k not in held or held[k][1] != nonce for k in keys):
        return None
    blob = b"".join(held[k][0] for k in keys)
    if hashlib.sha256(blob).hexdigest() != str(meta["sha256"]):
        return None
    return checkpoint, blob, set(keys)


class TopicState(StateStore):
    """Snapshots in ``topic`` under ``key``, sent through the processor's producer (inside its
    transaction in exactly-once mode, so an aborted checkpoint's snapshot is never read)."""

    def __init__(self, bootstrap: str, topic: str, key: str, *, avg_bytes: int = CHUNK_AVG_BYTES,
                 backoff: Backoff = Backoff(initial_s=0.2)) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.key = key
        self.avg_bytes = avg_bytes
        self.backoff = backoff
        self.label = f"Kafka topic {topic}"
        self.producer: AIOKafkaProducer | None = None  # set by the processor before the first save
        self.transactional = False  # the producer's transaction makes a save durable (no retry here)
        self.held: frozenset[bytes] = frozenset()  # the chunk keys the topic holds (not tombstoned)
        self.sent_bytes = 0  # chunk bytes sent by the saves so far

    async def ensure(self) -> None:
        """Create the topic (compacted, one partition) if it does not exist."""
        await ensure_topics(self.bootstrap, [self.topic], configs=STATE_TOPIC_CONFIG)

    async def load(self) -> dict | None:
        """Read the topic to its end (committed records only) and unpickle the latest
        complete snapshot."""
        found = latest_snapshot(await self._read_all(), self.key)
        self.held = frozenset(found.live | found.stale)
        if found.blob is None:
            return None
        return pickle.loads(found.blob)

    async def save(self, blob: bytes, *, checkpoint: int) -> None:
        """The chunks the topic lacks and the header, acknowledged; then tombstones for the
        chunks no longer named (or, in a transaction, all committed with it). The chunks are
        cut and digested on a worker thread (both let go of the GIL). A broker that is away is
        waited for: the offsets are not committed before the snapshot is kept."""
        assert self.producer is not None, "the processor sets the producer first"
        records, parts = await asyncio.to_thread(snapshot_records, self.key, blob, checkpoint=checkpoint,
                                                 held=self.held, avg_bytes=self.avg_bytes)
        tombstones: list[Record] = [(k, None, []) for k in sorted(self.held - parts)]
        attempt = 0
        while True:
            try:
                await self._send(records)
                await self._send(tombstones)  # only once the header names the chunks kept
                break
            except KafkaError as exc:
                if self.transactional:
                    raise  # the transaction is lost: the run ends, a restart resumes from the last one
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.warning("saving the state snapshot to %s failed (%s); retrying in %.1f s",
                            self.topic, describe(exc), delay)
                await asyncio.sleep(delay)
        self.held = frozenset(parts)
        self.sent_bytes += sum(len(v) for _, v, _ in records[:-1] if v is not None)

    async def _send(self, records: list[Record]) -> None:
        """``records`` in order on the topic's one partition, acknowledged."""
        assert self.producer is not None
        sent = [await self.producer.send(self.topic, key=k, value=v, headers=h, partition=0) for k, v, h in records]
        await asyncio.gather(*sent)

    async def _read_all(self) -> list[Record]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    isolation_level="read_committed", auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20)
        await consumer.start()
        try:
            if self.topic not in await consumer.topics():
                return []
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]  # read_committed: the last stable offset
            await consumer.seek_to_beginning(tp)
            records: list[Record] = []
            while True:  # to the end the fetches report (some brokers' ListOffsets falls short of it)
                fetched = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
                records += [(m.key or b"", m.value, list(m.headers or ())) for m in fetched]
                if not fetched and await consumer.position(tp) >= max(end, consumer.last_stable_offset(tp) or 0):
                    return records
        finally:
            await consumer.stop()
