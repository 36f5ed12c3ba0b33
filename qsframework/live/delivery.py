"""How a checkpoint of ``qsf process`` becomes final on Kafka, and which guarantee that gives.

Exactly-once (``--sink kafka`` on a broker with transactions): one transactional producer
carries the outputs, the dead letters, the state snapshot records and the consumer offsets
(``send_offsets_to_transaction``); each checkpoint commits that transaction, so a consumer
with ``isolation_level="read_committed"`` sees each output once, whatever crashed. Its
``transactional_id`` is derived from the group (and, once processors scale out, the
partition set), so a restarted processor fences its zombie and aborts what that one left open.

At-least-once otherwise: offsets are committed after every sink's flush and the sinks are
idempotent (natural keys), so a replay after a crash adds no duplicates where a sink can
recognise them (PostgreSQL, Telegram); Kafka outputs may then repeat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaProducer, TopicPartition

from ..kafka import supports_transactions
from .config import ProcessConfig
from .kafka_source import KafkaSource

log = logging.getLogger("qsf.process")

Mode = Literal["exactly-once", "at-least-once"]


#: the default time between checkpoints (``--commit-interval``). Exactly-once, a checkpoint's
#: Kafka outputs are read downstream only once its transaction commits, so checkpoints are
#: frequent (Kafka Streams: 100 ms); at-least-once, nothing waits for them but ``--out`` parts,
#: and each costs the engine snapshot (Quix Streams: 5 s; Kafka Streams: 30 s)
COMMIT_INTERVAL_S: dict[Mode, float] = {"exactly-once": 1.0, "at-least-once": 5.0}


@dataclass(frozen=True, kw_only=True)
class DeliveryMode:
    mode: Mode
    why: str  # what decided it, for the start-up line

    def commit_interval_s(self, configured: float | None) -> float:
        """``configured`` (``--commit-interval``), or this mode's default."""
        return COMMIT_INTERVAL_S[self.mode] if configured is None else configured

    def describe(self) -> str:
        """E.g. ``exactly-once (Kafka transactions)``."""
        sinks = "" if self.mode == "exactly-once" else " + idempotent sinks"
        return f"{self.mode}{sinks} ({self.why})"


async def delivery_mode(config: ProcessConfig) -> DeliveryMode:
    """Exactly-once where it means something and the broker can: ``--sink kafka`` and transactions."""
    if "kafka" not in config.sinks:
        return DeliveryMode(mode="at-least-once", why="no --sink kafka")
    if await supports_transactions(config.bootstrap):
        return DeliveryMode(mode="exactly-once", why="Kafka transactions")
    return DeliveryMode(mode="at-least-once", why="broker has no transactions")


def transactional_id(config: ProcessConfig, state_key: str) -> str:
    """One per state key (the group today, ``<group>/<partition-set>`` with scale-out): the
    same id after a restart is what fences the previous incarnation."""
    return f"{config.prefix}.process.{state_key}"


class Delivery:
    """Ends checkpoints: a committed transaction, or the consumer's offset commit."""

    def __init__(self, mode: DeliveryMode, *, producer: AIOKafkaProducer, source: KafkaSource, group: str) -> None:
        self.mode = mode
        self.producer = producer
        self.source = source
        self.group = group

    @property
    def transactional(self) -> bool:
        return self.mode.mode == "exactly-once"

    async def begin(self) -> None:
        """Open the first transaction (exactly-once): every record from here on belongs to one."""
        if self.transactional:
            await self.producer.begin_transaction()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Make the checkpoint final: offsets (if any) committed with the open transaction and
        the next one opened, or the offsets committed by the consumer (after its retries)."""
        if not self.transactional:
            if offsets:
                await self.source.commit(offsets)
            return
        consumer = self.source.consumer
        mine = {tp: off for tp, off in offsets.items() if consumer is None or tp in consumer.assignment()}
        if mine:
            await self.producer.send_offsets_to_transaction(mine, self.group)
        await self.producer.commit_transaction()
        await self.producer.begin_transaction()

    async def abort(self) -> None:
        """The run failed or was cut short: what the open transaction holds is never read."""
        if self.transactional:
            txn = self.producer._txn_manager  # noqa: SLF001 - aiokafka has no public "in transaction?"
            if txn is not None and txn.is_in_transaction():
                await self.producer.abort_transaction()
