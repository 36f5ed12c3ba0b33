"""The processor's dead-letter queue: a bad message must never end the run, whatever the DLQ
does; a record the producer or broker refuses is logged and counted."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiokafka.errors import KafkaError

from ..kafka import DeadLetter, dlq_topic

log = logging.getLogger("qsf.process")


class DeadLetters:
    def __init__(self, producer, prefix: str) -> None:
        self.producer = producer
        self.topic = dlq_topic(prefix)
        self.failures = 0  # dead letters the broker did not take (logged; never fatal)
        self.by_reason: Counter[str] = Counter()  # records sent, by reason_class (pipeline_health)

    async def send(self, letter: DeadLetter) -> None:
        """Send one record to the DLQ (its delivery is checked when it is decided)."""
        self.by_reason[reason_class(dict(letter.headers).get("reason", b"").decode(errors="replace"))] += 1
        try:
            sent = await self.producer.send(self.topic, key=letter.key, value=letter.value, headers=letter.headers)
        except KafkaError as exc:
            self._failed(letter, exc)
            return
        sent.add_done_callback(lambda f: self._done(letter, f))

    def _done(self, letter: DeadLetter, sent: asyncio.Future) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            self._failed(letter, sent.exception())  # type: ignore[arg-type]

    def _failed(self, letter: DeadLetter, exc: BaseException) -> None:
        self.failures += 1
        where = {k: v.decode(errors="replace") for k, v in letter.headers}
        log.error("could not dead-letter a message (%s: %s) from %s offset %s: %s", type(exc).__name__, exc,
                  where.get("topic", "?"), where.get("offset", "?"), where.get("reason", ""))


def reason_class(reason: str) -> str:
    """A dead letter's reason without its particulars, to count by: the text before the first
    ``": "`` or a ``" bad value "`` (``late: event time before the watermark 17...`` -> ``late``,
    ``field 'price' has a bad value 'x'`` -> ``field 'price' has a bad value``)."""
    head = reason.split(": ", 1)[0]
    cut = head.find(" bad value ")
    return head if cut < 0 else head[:cut + len(" bad value")]
