"""Kafka topics as a :class:`~qsframework.io.Sink`: each kind to its topic (``PREFIX.trades``,
``PREFIX.telemetry`` with the kind in a header, ...), and refused input to ``PREFIX.dlq``.
:meth:`KafkaSink.flush` returns once the broker acknowledged every record sent, and raises
:class:`~qsframework.errors.PublishError` naming how many were lost otherwise."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AsyncExitStack

import pyarrow as pa

from ..io import Checkpoint, Refused, Rejected, Sink
from ..kafka import ProducerConfig, dlq_topic, topic_of
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
        self._exit = AsyncExitStack()

    async def start(self) -> None:
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
