"""Kafka topics, producers and consumers (aiokafka) for the live pipeline.

One topic per event kind (``qsf.trades``, ``qsf.signals``, ``qsf.alerts``, ...) plus
``qsf.dlq``; messages are keyed by the event key, so one key stays in one partition, in
order. Topic creation is explicit and idempotent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka import errors as Errors
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.transaction import InitProducerIdRequest

from .events import KINDS
from .retry import Backoff

log = logging.getLogger("qsf.kafka")

DEFAULT_PREFIX = "qsf"
DLQ_TOPIC = "qsf.dlq"


def topic_of(kind: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The kind's topic, e.g. ``qsf.trades``; another prefix gives a separate namespace."""
    base = KINDS[kind].topic
    return prefix + base[len(DEFAULT_PREFIX):] if base.startswith(DEFAULT_PREFIX + ".") else base


KIND_HEADER = "kind"


def kind_headers(kind: str) -> list[tuple[str, bytes]]:
    """Message headers naming the event kind (needed on topics several kinds share)."""
    return [(KIND_HEADER, kind.encode())]


def shares_topic(kind: str) -> bool:
    """True if other kinds use the same topic (e.g. the telemetry kinds on qsf.telemetry)."""
    topic = KINDS[kind].topic
    return sum(k.topic == topic for k in KINDS.values()) > 1


def dlq_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.dlq"


# a dead letter must fit in one record whatever it carries: far below the 1 MiB that
# producers (max_request_size) and brokers (message.max.bytes) accept by default
DLQ_MAX_VALUE_BYTES = 512 << 10
DLQ_MAX_KEY_BYTES = 1 << 10
DLQ_MAX_REASON_BYTES = 1 << 10


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A DLQ record: the bad message (cut to fit) and headers saying why and where it came from.

    Headers: ``reason``; ``topic``, ``partition``, ``offset`` of the original where known;
    ``kind`` where known; ``truncated`` when the value or key was cut, listing each cut part
    with its original size in bytes (e.g. ``value=1500000``).
    """

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(*, reason: str, value: bytes | None, key: bytes | None = None, topic: str | None = None,
                partition: int | None = None, offset: int | None = None, kind: str | None = None) -> DeadLetter:
    """The DLQ record for one bad message; a null value (a tombstone) becomes an empty value."""
    value = value or b""
    reason_bytes = reason.encode(errors="replace")
    if len(reason_bytes) > DLQ_MAX_REASON_BYTES:
        reason_bytes = reason_bytes[:DLQ_MAX_REASON_BYTES - 3] + b"..."
    headers = [("reason", reason_bytes)]
    for name, known in (("topic", topic), ("partition", partition), ("offset", offset), ("kind", kind)):
        if known is not None:
            headers.append((name, str(known).encode()))
    cut = []
    if len(value) > DLQ_MAX_VALUE_BYTES:
        cut.append(f"value={len(value)}")
        value = value[:DLQ_MAX_VALUE_BYTES]
    if key is not None and len(key) > DLQ_MAX_KEY_BYTES:
        cut.append(f"key={len(key)}")
        key = key[:DLQ_MAX_KEY_BYTES]
    if cut:
        headers.append(("truncated", ",".join(cut).encode()))
    return DeadLetter(key=key, value=value, headers=headers)


@dataclass(frozen=True, kw_only=True)
class ProducerConfig:
    """Throughput-minded defaults: wait a little to fill batches, every replica acks.

    ``request_timeout_ms`` bounds each request and also each record's delivery (aiokafka
    expires a batch the broker has not acknowledged within it): how long a publisher waits
    before it counts a record as lost when the broker is gone.
    """

    linger_ms: int = 10
    max_batch_size: int = 1 << 20
    compression_type: str | None = None
    acks: str = "all"
    idempotence: bool = True  # used when the broker supports it (Tansu does not)
    # Apache Kafka's delivery.timeout.ms: a record waits this long for a broker that is away
    # (stopped, restarting: a Kafka restart takes 5-40 s on a loaded machine) before it is lost;
    # aiokafka's 40 s lost records of a 20 s outage when the restart took as long again
    request_timeout_ms: int = 120_000
    # a transactional producer's open transaction is aborted by the broker after this long: long
    # enough for a sink outage of a few minutes; a crashed processor's is aborted at its restart
    transaction_timeout_ms: int = 300_000

    def __post_init__(self) -> None:
        if self.request_timeout_ms <= 0:
            raise ValueError("the producer's request timeout must be positive")


async def ensure_topics(bootstrap: str, topics: Iterable[str], *, partitions: int = 1,
                        configs: dict[str, str] | None = None) -> None:
    """Create the topics that do not exist yet (with ``configs``, e.g. ``cleanup.policy``);
    existing ones are left as they are.

    One partition by default: a strategy instance consumes every key of its topics in one
    total order, and a single partition keeps the producer's order end to end.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1, topic_configs=configs or {})
                     for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # created concurrently by someone else: fine
    finally:
        await admin.close()


async def supports_idempotence(bootstrap: str, *, wait_s: float = 30.0) -> bool:
    """Ask the broker for a producer id (what an idempotent producer needs first). A retriable
    answer is asked again with backoff for up to ``wait_s``: a freshly started Apache Kafka
    answers the first request with COORDINATOR_LOAD_IN_PROGRESS, and taking that as a "no"
    left the producer without idempotence (its records then expire in an outage)."""
    return await _grants_producer_id(bootstrap, transactional_id=None, wait_s=wait_s)


async def supports_transactions(bootstrap: str, *, wait_s: float = 30.0) -> bool:
    """Ask the broker for a transaction coordinator and a transactional producer id (what a
    transactional producer needs first); a broker without transactions (Tansu) refuses."""
    return await _grants_producer_id(bootstrap, transactional_id="qsf.probe", wait_s=wait_s)


async def broker_unreachable(bootstrap: str, *, timeout_s: float = 5.0) -> str | None:
    """None when a client gets metadata naming at least one broker within ``timeout_s``, else
    why not (one short phrase: the error's type)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return None if client.cluster.brokers() else "no broker in its metadata"
    except Exception as exc:  # noqa: BLE001 - not there or not ready, whatever the client says
        return type(exc).__name__
    finally:
        await client.close()


async def _grants_producer_id(bootstrap: str, *, transactional_id: str | None, wait_s: float) -> bool:
    """InitProducerId (sent to the transaction coordinator for a transactional id); a
    retriable answer is asked again for up to ``wait_s`` while a fresh broker is still
    loading its coordinators, anything else is a "no"."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + wait_s
    try:
        await client.bootstrap()
        for attempt in itertools.count(1):
            try:
                node = client.get_random_node()
                if transactional_id is not None:
                    node = await asyncio.wait_for(
                        client.coordinator_lookup(CoordinationType.TRANSACTION, transactional_id), timeout=10)
                resp = await asyncio.wait_for(
                    client.send(node, InitProducerIdRequest(transactional_id=transactional_id,
                                                            transaction_timeout_ms=60_000)),
                    timeout=10,
                )
                error = Errors.for_code(resp.error_code)
                if error is Errors.NoError:
                    return True
                if not (error in _RETRIABLE_INIT or error.retriable):
                    return False
            except _RETRIABLE_INIT:
                pass
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_INIT_BACKOFF.delay(attempt))
        return False  # not reached
    except (KafkaError, asyncio.TimeoutError):
        return False
    finally:
        await client.close()


#: what a fresh broker answers while it creates its transaction log: ask again
_RETRIABLE_INIT = (Errors.GroupLoadInProgressError, Errors.CoordinatorNotAvailableError,
                   Errors.NotCoordinatorError, Errors.ConcurrentTransactions)
_INIT_BACKOFF = Backoff(initial_s=0.1, max_s=1.0)


async def start_producer(bootstrap: str, config: ProducerConfig = ProducerConfig(), *,
                         transactional_id: str | None = None) -> AIOKafkaProducer:
    """A started producer; idempotence is negotiated (used only if the broker grants it).
    With ``transactional_id`` (the caller probed :func:`supports_transactions`) it is
    transactional: starting it fences an older producer of the same id and aborts what that
    one left open."""
    idempotent = transactional_id is not None or (config.idempotence and await supports_idempotence(bootstrap))
    if config.idempotence and not idempotent:
        log.info("broker %s does not grant producer ids: producing with acks=%s, not idempotent",
                 bootstrap, config.acks)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=config.linger_ms,
        max_batch_size=config.max_batch_size,
        compression_type=config.compression_type,
        acks=config.acks,
        enable_idempotence=idempotent,
        request_timeout_ms=config.request_timeout_ms,
        transactional_id=transactional_id,
        transaction_timeout_ms=config.transaction_timeout_ms,
    )
    try:
        await producer.start()
    except BaseException:  # e.g. cancelled while connecting: leave no unclosed producer behind
        await producer.stop()
        raise
    return producer
