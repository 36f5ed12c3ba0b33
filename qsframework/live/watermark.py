"""The watermark over the assigned partitions: up to which event time rows may go to the
engine in total order, with partitions that went quiet no longer holding it back."""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from .config import ProcessConfig

log = logging.getLogger("qsf.process")


def tp_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


class Watermark:
    """Per partition, the latest event time it gave and when it last gave rows."""

    def __init__(self, config: ProcessConfig) -> None:
        self.cfg = config
        self.part_max: dict[TopicPartition, int] = {}  # latest event time per partition
        self._active_at: dict[TopicPartition, float] = {}  # when each partition last gave rows (or was assigned)
        self._idle: set[TopicPartition] = set()

    def assigned(self, tp: TopicPartition, now: float) -> None:
        """``tp`` was assigned: its idle time counts from now (or from its last rows)."""
        self._active_at.setdefault(tp, now)

    def advance(self, tp: TopicPartition, ts_max: int) -> None:
        """``tp`` gave rows up to ``ts_max``: it holds the watermark there (unless idle)."""
        self.part_max[tp] = max(self.part_max.get(tp, ts_max), ts_max)

    def touch(self, tp: TopicPartition) -> None:
        """``tp`` gave rows: it is active and holds the watermark again."""
        self._active_at[tp] = time.monotonic()
        if tp in self._idle:
            self._idle.discard(tp)
            log.info("%s is active again: it holds the watermark", tp_name(tp))

    async def value(self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> int | None:
        """The smallest latest event time over the partitions that are not idle, minus the
        lateness (None: nothing may go yet). Idle: nothing new for ``idle_timeout_s`` and read
        to the end (``positions``: the next offset to read, where one was consumed). With
        every partition idle, the latest event time seen."""
        now = time.monotonic()
        holding: list[int] = []
        known: list[int] = []
        for tp in consumer.assignment():
            ts = self.part_max.get(tp)
            if ts is not None:
                known.append(ts)
            if (now - self._active_at.get(tp, now) >= self.cfg.idle_timeout_s
                    and await _caught_up(consumer, tp, positions.get(tp))):
                if tp not in self._idle:
                    self._idle.add(tp)
                    log.info("%s is idle: it no longer holds the watermark", tp_name(tp))
                continue
            if ts is None:
                return None  # active but nothing yet: its first rows may be the oldest
            holding.append(ts)
        if not known:
            return None
        return (min(holding) if holding else max(known)) - self.cfg.lateness_ns


async def _caught_up(consumer: AIOKafkaConsumer, tp: TopicPartition, position: int | None) -> bool:
    end = consumer.highwater(tp)
    if end is None:
        return False
    if position is None:
        position = await consumer.position(tp)
    return position >= end
