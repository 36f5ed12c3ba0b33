"""Kafka topics, producers and consumers (aiokafka) for the live pipeline.

One topic per event kind (``qsf.trades``, ``qsf.signals``, ``qsf.alerts``, ...) plus
``qsf.dlq``; messages are keyed by the event key, so one key stays in one partition, in
order. Topic creation is explicit and idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .events import KINDS

log = logging.getLogger("qsf.kafka")

DLQ_TOPIC = "qsf.dlq"


def topic_of(kind: str) -> str:
    return KINDS[kind].topic


@dataclass(frozen=True, kw_only=True)
class ProducerConfig:
    """Throughput-minded defaults: wait a little to fill batches, every replica acks."""

    linger_ms: int = 10
    max_batch_size: int = 1 << 20
    compression_type: str | None = None
    acks: str = "all"
    idempotence: bool = True  # used when the broker supports it (Tansu does not)


async def ensure_topics(bootstrap: str, topics: Iterable[str], *, partitions: int = 3) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # created concurrently by someone else: fine
    finally:
        await admin.close()


async def start_producer(bootstrap: str, config: ProducerConfig = ProducerConfig()) -> AIOKafkaProducer:
    """A started producer; idempotence is negotiated (dropped if the broker refuses it)."""
    options = dict(
        bootstrap_servers=bootstrap,
        linger_ms=config.linger_ms,
        max_batch_size=config.max_batch_size,
        compression_type=config.compression_type,
        acks=config.acks,
    )
    if config.idempotence:
        producer = AIOKafkaProducer(enable_idempotence=True, **options)
        try:
            await producer.start()
            return producer
        except KafkaError as exc:
            await producer.stop()
            log.info("broker refuses the idempotent producer (%s); using acks=%s without it", exc, config.acks)
    producer = AIOKafkaProducer(enable_idempotence=False, **options)
    await producer.start()
    return producer
