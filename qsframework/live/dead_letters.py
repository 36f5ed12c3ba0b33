"""The processor's dead-letter queue: a bad message must never end the run, whatever the DLQ
does; a record the producer or broker refuses is logged and counted."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError

from ..kafka import DeadLetter, dlq_topic

log = logging.getLogger("qsf.process")


class DeadLetters:
    def __init__(self, producer, prefix: str) -> None:
        self.producer = producer
        self.topic = dlq_topic(prefix)
        self.failures = 0  # dead letters the broker did not take (logged; never fatal)

    async def send(self, letter: DeadLetter) -> None:
        """Send one record to the DLQ (its delivery is checked when it is decided)."""
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
