"""Kafka topics as a :class:`~qsframework.io.Sink`: each kind to its topic (``PREFIX.trades``,
``PREFIX.telemetry`` with the kind in a header, ...), and refused input to ``PREFIX.dlq``.
:meth:`KafkaSink.flush` returns once the broker acknowledged every record sent, and raises
:class:`~qsframework.errors.PublishError` naming how many were lost otherwise. Given a
transactional producer (:meth:`KafkaSink.share`, as ``qsf process`` does for exactly-once
delivery), its records commit or abort with the checkpoint's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AsyncExitStack

import pyarrow as pa
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ..errors import PublishError, describe
from ..io import Checkpoint, Refused, Rejected, Sink
from ..kafka import ProducerConfig, dlq_topic, ensure_topics, topic_of
from ..publish import Publisher, publishing


class KafkaSink(Sink):
    def __init__(self, bootstrap: str, kinds: Iterable[str], *, prefix: str = "qsf",
                 producer: ProducerConfig = ProducerConfig(), refuse_oversized: bool = True) -> None:
        self.bootstrap = bootstrap
        self.refuse_oversized = refuse_oversized
        self.prefix = prefix
        self.producer = producer
        self.topics = sorted({topic_of(k, prefix) for k in kinds} | {dlq_topic(prefix)})
        self.publisher: Publisher | None = None
        self._shared: AIOKafkaProducer | None = None
        self._exit = AsyncExitStack()

    def share(self, producer: AIOKafkaProducer) -> None:
        """Send through ``producer`` (started and stopped by its owner) instead of one of our own."""
        self._shared = producer

    async def start(self) -> None:
        if self._shared is not None:
            try:
                await ensure_topics(self.bootstrap, self.topics)
            except KafkaError as exc:
                raise PublishError(f"broker {self.bootstrap}: {describe(exc)}") from None
            self.publisher = Publisher(self._shared)
            return
        self.publisher = await self._exit.enter_async_context(
            publishing(self.bootstrap, self.topics, config=self.producer))

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        """Every row to the kind's topic; a row too large for the broker is refused (the
        caller dead-letters it; raised instead with ``refuse_oversized=False``), anything
        else the broker does not take is a :class:`~qsframework.errors.PublishError` at
        :meth:`flush`."""
        assert self.publisher is not None, "start() first"
        refused = await self.publisher.send_table(topic_of(kind, self.prefix), kind, table,
                                                  refuse_oversized=self.refuse_oversized)
        return [Refused(r.index, f"output {r.reason}") for r in refused]

    async def dead_letter(self, rejected: Rejected) -> None:
        """Refused input to the DLQ with its reason (a source's ``on_reject``)."""
        assert self.publisher is not None, "start() first"
        headers = list(rejected.origin)
        if rejected.kind is not None:
            headers.append(("kind", rejected.kind.encode()))
        await self.publisher.send_dead_letter(dlq_topic(self.prefix), rejected.value, reason=rejected.reason,
                                              headers=headers)

    async def flush(self, checkpoint: Checkpoint | None = None) -> None:
        if self.publisher is not None:
            await self.publisher.flush()

    async def close(self) -> None:
        await self._exit.aclose()
