"""The default state store of ``qsf process``: the engine snapshot in a compacted topic
``PREFIX.state.<group>`` (one partition), the way Kafka Streams and Quix Streams keep their
changelogs, so a processor restarted anywhere with the same group resumes exactly.

A snapshot is written as chunks (each at most ``chunk_bytes``, far below the 1 MiB a broker
accepts by default) keyed ``<key>@<checkpoint>/<index>``, then one header record keyed
``<key>`` naming the checkpoint, the chunk count, the size and a SHA-256 of the whole: a
reader takes the last header whose chunks it has all seen and whose digest matches, so it
never mixes two snapshots, whether the broker compacts (Apache Kafka, Redpanda) or keeps
everything (Tansu). After a header, the chunks of older snapshots get tombstones, so
compaction keeps exactly the latest snapshot. ``<key>`` is the group today; a per-partition
snapshot (scale-out) will use ``<group>/<partition-set>`` beside it in the same topic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import pickle
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from ..errors import describe
from ..kafka import ensure_topics
from ..retry import Backoff
from .state import StateStore

log = logging.getLogger("qsf.process")

#: a chunk fits any broker's default record limit (1 MiB) with room for its key and headers
STATE_CHUNK_BYTES = 512 << 10
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


def snapshot_records(key: str, blob: bytes, *, checkpoint: int, chunk_bytes: int = STATE_CHUNK_BYTES,
                     nonce: str | None = None) -> list[Record]:
    """The records of one snapshot, in the order they must be written: chunks, then the header."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    nonce = nonce or uuid.uuid4().hex
    count = max(1, -(-len(blob) // chunk_bytes))
    common = [("checkpoint", str(checkpoint).encode()), ("snapshot", nonce.encode())]
    records: list[Record] = [
        (chunk_key(key, checkpoint, i), blob[i * chunk_bytes:(i + 1) * chunk_bytes],
         [(_KIND, b"chunk"), *common, ("chunk", str(i).encode())])
        for i in range(count)
    ]
    header = {"checkpoint": checkpoint, "chunks": count, "bytes": len(blob),
              "sha256": hashlib.sha256(blob).hexdigest(), "snapshot": nonce}
    records.append((key.encode(), json.dumps(header).encode(), [(_KIND, b"snapshot"), *common,
                                                                ("chunks", str(count).encode())]))
    return records


def chunk_key(key: str, checkpoint: int, index: int) -> bytes:
    return f"{key}@{checkpoint}/{index}".encode()


@dataclass(slots=True)
class Latest:
    """What reading the topic found: the latest complete snapshot and every other chunk key."""

    checkpoint: int | None = None
    blob: bytes | None = None
    live: set[bytes] = field(default_factory=set)  # the latest snapshot's chunk keys
    stale: set[bytes] = field(default_factory=set)  # other chunk keys (to tombstone)


def latest_snapshot(records: Iterable[Record], key: str) -> Latest:
    """The last snapshot of ``key`` in log order whose header follows all its chunks and whose
    digest matches; chunks of incomplete or older snapshots are listed as stale."""
    head, prefix = key.encode(), f"{key}@".encode()
    chunks: dict[tuple[str, int], tuple[bytes, bytes]] = {}  # (snapshot nonce, index) -> (record key, bytes)
    where: dict[bytes, tuple[str, int]] = {}  # record key -> its chunk's place in ``chunks``
    seen: set[bytes] = set()  # chunk record keys not tombstoned
    found = Latest()
    for rkey, value, headers in records:
        if rkey != head and not rkey.startswith(prefix):
            continue  # another key's snapshot (a later per-partition one)
        meta = {k: v.decode(errors="replace") for k, v in headers}
        if value is None:  # a tombstone: that chunk is gone
            seen.discard(rkey)
            chunks.pop(where.pop(rkey, ("", -1)), None)
        elif meta.get(_KIND) == "chunk" and meta.get("chunk", "").isdigit():
            place = (meta.get("snapshot", ""), int(meta["chunk"]))
            chunks.pop(where.pop(rkey, ("", -1)), None)  # the same key written again: the older is gone
            chunks[place], where[rkey] = (rkey, value), place
            seen.add(rkey)
        elif meta.get(_KIND) == "snapshot":
            blob, parts = _assemble(value, chunks)
            if blob is not None:
                found.checkpoint, found.blob, found.live = int(json.loads(value)["checkpoint"]), blob, set(parts)
                for place in parts.values():  # assembled: no need to hold them twice
                    chunks.pop(place, None)
    found.live &= seen
    found.stale = seen - found.live
    return found


def _assemble(header: bytes, chunks: dict[tuple[str, int], tuple[bytes, bytes]]
              ) -> tuple[bytes | None, dict[bytes, tuple[str, int]]]:
    """The snapshot a header names, if all its chunks were seen and the digest matches, with
    its chunks' record keys and places."""
    try:
        meta = json.loads(header)
        nonce, count, digest = str(meta["snapshot"]), int(meta["chunks"]), str(meta["sha256"])
    except (ValueError, KeyError, TypeError):
        return None, {}
    places = [(nonce, i) for i in range(count)]
    if any(p not in chunks for p in places):
        return None, {}
    blob = b"".join(chunks[p][1] for p in places)
    if hashlib.sha256(blob).hexdigest() != digest:
        return None, {}
    return blob, {chunks[p][0]: p for p in places}


class TopicState(StateStore):
    """Snapshots in ``topic`` under ``key``, sent through the processor's producer (inside its
    transaction in exactly-once mode, so an aborted checkpoint's snapshot is never read)."""

    def __init__(self, bootstrap: str, topic: str, key: str, *, chunk_bytes: int = STATE_CHUNK_BYTES,
                 backoff: Backoff = Backoff(initial_s=0.2)) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.key = key
        self.chunk_bytes = chunk_bytes
        self.backoff = backoff
        self.label = f"Kafka topic {topic}"
        self.producer: AIOKafkaProducer | None = None  # set by the processor before the first save
        self.transactional = False  # the producer's transaction makes a save durable (no retry here)
        self._stale: set[bytes] = set()  # chunk keys of older snapshots, tombstoned with the next one
        self._last: set[bytes] = set()

    async def ensure(self) -> None:
        """Create the topic (compacted, one partition) if it does not exist."""
        await ensure_topics(self.bootstrap, [self.topic], configs=STATE_TOPIC_CONFIG)

    async def load(self) -> dict | None:
        """Read the topic to its end (committed records only) and unpickle the latest
        complete snapshot."""
        found = latest_snapshot(await self._read_all(), self.key)
        self._stale, self._last = found.stale, found.live
        if found.blob is None:
            return None
        return pickle.loads(found.blob)

    async def save(self, blob: bytes, *, checkpoint: int) -> None:
        """Chunks, header, then tombstones for the older snapshots' chunks; acknowledged before
        it returns (or, in a transaction, committed with it). A broker that is away is waited
        for: the offsets are not committed before the snapshot is kept."""
        assert self.producer is not None, "the processor sets the producer first"
        records = snapshot_records(self.key, blob, checkpoint=checkpoint, chunk_bytes=self.chunk_bytes)
        written = {k for k, _, _ in records[:-1]}
        stale = (self._stale | self._last) - written
        records += [(k, None, []) for k in sorted(stale)]
        attempt = 0
        while True:
            try:
                sent = [await self.producer.send(self.topic, key=k, value=v, headers=h, partition=0)
                        for k, v, h in records]
                await asyncio.gather(*sent)
                break
            except KafkaError as exc:
                if self.transactional:
                    raise  # the transaction is lost: the run ends, a restart resumes from the last one
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.warning("saving the state snapshot to %s failed (%s); retrying in %.1f s",
                            self.topic, describe(exc), delay)
                await asyncio.sleep(delay)
        self._stale, self._last = set(), written

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
