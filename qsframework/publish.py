"""One Kafka publisher for every command that publishes (replay, Binance, MAVLink).

A record counts as published only once the broker acknowledged it: every send's delivery
future is awaited (at most ``max_in_flight`` outstanding), acknowledged and failed records
are counted, and :meth:`Publisher.flush` raises :class:`PublishError` ("N of M records were
not acknowledged ...") when any was lost, so the command exits non-zero instead of
reporting a success the broker never gave. After the first failure nothing more is sent:
a later record acknowledged after a lost one would leave a hole in the stream's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pyarrow as pa
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from .errors import PublishError, describe
from .io import Refused
from .kafka import ProducerConfig, dead_letter, ensure_topics, kind_headers, start_producer
from .wire import encode

DEFAULT_MAX_IN_FLIGHT = 65_536
_REAP_EVERY = 256  # sends between counts of the decided deliveries (a failure stops the next ones)

# the publisher reports lost records itself, in one line: aiokafka's retry messages reach
# stderr only where logging is set up (-v), not through Python's last-resort handler
logging.getLogger("aiokafka").addHandler(logging.NullHandler())


@dataclass(slots=True)
class PublishStats:
    """What the broker acknowledged: counts, per topic, and the end offset of each partition."""

    sent: int = 0  # records handed to the producer
    acked: int = 0
    failed: int = 0
    first_error: str | None = None
    per_topic: dict[str, int] = field(default_factory=dict)  # acknowledged records
    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset after ours

    def message(self) -> str:
        return (f"{self.sent - self.acked:,} of {self.sent:,} records were not acknowledged "
                f"by the broker (first failure: {self.first_error})")


class Publisher:
    """Sends records through a started producer and accounts for every delivery."""

    def __init__(self, producer: AIOKafkaProducer, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.producer = producer
        self.max_in_flight = max_in_flight
        self.stats = PublishStats()
        self._pending: deque[tuple[str, asyncio.Future]] = deque()

    @property
    def failed(self) -> bool:
        return self.stats.first_error is not None

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Hand one record to the producer; raises :class:`PublishError` once a record failed."""
        st = self.stats
        if st.first_error is not None:
            raise PublishError(st.message())
        st.sent += 1
        try:
            fut = await self.producer.send(topic, value=value, key=key, headers=headers)
        except MessageSizeTooLargeError:  # this record only, refused before it was sent: the caller's to handle
            st.sent -= 1
            raise
        except KafkaError as exc:
            self._fail(exc)
            await self.flush()  # counts the records before it, then raises PublishError
            raise  # not reached
        pending = self._pending
        pending.append((topic, fut))
        if not st.sent % _REAP_EVERY or len(pending) >= self.max_in_flight:
            await self._settle(self.max_in_flight // 2)
            if st.first_error is not None:
                await self.flush()

    async def send_table(self, topic: str, kind: str, table: pa.Table | pa.RecordBatch, *,
                         refuse_oversized: bool = True) -> list[Refused]:
        """Every event of ``table`` (of ``kind``) to ``topic``, keyed by its event key. An
        event too large for the producer is returned as refused with the reason (the others
        are sent), or with ``refuse_oversized=False`` raises its ``MessageSizeTooLargeError``."""
        headers = kind_headers(kind)
        refused: list[Refused] = []
        for i, (key, value) in enumerate(encode(table)):
            try:
                await self.send(topic, value, key=key, headers=headers)
            except MessageSizeTooLargeError as exc:
                if not refuse_oversized:
                    raise
                refused.append(Refused(i, f"too large for {topic}: {exc}"))
        return refused

    async def send_dead_letter(self, topic: str, value: bytes, *, reason: str,
                               headers: Iterable[tuple[str, bytes]] = ()) -> None:
        """A bad message to the DLQ ``topic``, cut to fit, with its ``reason`` header (the
        record :func:`qsframework.kafka.dead_letter` builds, as ``qsf process`` sends it)."""
        letter = dead_letter(reason=reason, value=value)
        await self.send(topic, letter.value, key=letter.key, headers=[*letter.headers, *headers])

    async def flush(self) -> PublishStats:
        """Wait for every record sent so far to be acknowledged or failed; raise
        :class:`PublishError` if any failed (the count is then exact: nothing is in flight)."""
        with contextlib.suppress(KafkaError):  # the outcomes are in the futures, counted below
            await self.producer.flush()
        await self._settle(0)
        if self.failed:
            raise PublishError(self.stats.message())
        return self.stats

    def _reap(self) -> None:
        """Count the deliveries already decided, oldest first (no waiting)."""
        pending, st = self._pending, self.stats
        per_topic, ends = st.per_topic, st.end_offsets
        while pending and pending[0][1].done():
            topic, fut = pending.popleft()
            exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
            if exc is not None:
                self._fail(exc)
                continue
            meta = fut.result()
            st.acked += 1
            per_topic[topic] = per_topic.get(topic, 0) + 1
            tp = (meta.topic, meta.partition)
            if meta.offset >= ends.get(tp, 0):
                ends[tp] = meta.offset + 1

    async def _settle(self, limit: int) -> None:
        """Count outcomes, waiting for the oldest, until at most ``limit`` are outstanding."""
        while True:
            self._reap()
            if len(self._pending) <= limit:
                return
            await asyncio.wait([self._pending[0][1]])

    def _fail(self, exc: BaseException) -> None:
        self.stats.failed += 1
        if self.stats.first_error is None:
            self.stats.first_error = describe(exc)


@asynccontextmanager
async def publishing(bootstrap: str, topics: Iterable[str], *,
                     config: ProducerConfig = ProducerConfig()) -> AsyncIterator[Publisher]:
    """A :class:`Publisher` on a new producer, the ``topics`` created first; the producer
    is stopped on the way out, whatever happened."""
    try:
        await ensure_topics(bootstrap, topics)
        producer = await start_producer(bootstrap, config)
    except KafkaError as exc:
        raise PublishError(f"broker {bootstrap}: {describe(exc)}") from None
    try:
        yield Publisher(producer)
    finally:
        await producer.stop()
