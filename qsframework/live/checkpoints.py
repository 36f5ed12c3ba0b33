"""The commit sequence of ``qsf process`` (the commit rule of :mod:`qsframework.io`): wait for
the sinks' writes, flush every sink as part of a numbered checkpoint, save the state snapshot
(its store: the group's Kafka topic, ``--state DIR`` or none), commit the offsets (or the
checkpoint's transaction, see :mod:`.delivery`), let the sinks publish what they staged; and
at a restart, load the snapshot and settle what a crash left staged."""

from __future__ import annotations

import logging
import pickle
import time

from aiokafka import TopicPartition

from ..engine import Engine
from ..io import Checkpoint, Offsets, Sink
from .config import ProcessConfig, ProcessStats
from .kafka_source import KafkaSource
from .pending import Pending
from .delivery import Delivery
from .state import DirState, NoState, StateStore
from .state_topic import TopicState, state_topic
from .writes import SinkWrites

log = logging.getLogger("qsf.process")


class Checkpoints:
    """Numbers checkpoints across restarts (the number is kept in the snapshot) and commits
    at most every ``commit_interval_s``."""

    def __init__(self, config: ProcessConfig, *, source: KafkaSource, sinks: list[Sink], engine: Engine,
                 writes: SinkWrites, stats: ProcessStats) -> None:
        self.cfg = config
        self.source = source
        self.sinks = sinks
        self.engine = engine
        self.writes = writes
        self.stats = stats
        self.number = 0
        self.store = store_of(config)
        self.delivery: Delivery | None = None  # set by the processor once its producer runs
        self._restored: int | None = None  # the state snapshot's checkpoint
        self._checkpointed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0

    async def commit(self, pending: Pending, producer, *, final: bool = False, drain: bool = False) -> None:
        """Commit what the engine has fully consumed, once the sinks hold it.

        At most every ``commit_interval_s`` (always with ``final``/``drain``): wait for the
        sinks' writes so far, take a checkpoint (offsets up to the oldest row still waiting
        behind the watermark; all with ``final``), flush every sink as part of it (durable,
        or staged), save the state snapshot, commit the offsets, and let the sinks publish
        what they staged. Nothing new is released meanwhile, so a checkpoint covers exactly
        the rows its sinks were given.
        """
        if not (final or drain or time.monotonic() - self._last_commit >= self.cfg.commit_interval_s):
            return
        self._last_commit = time.monotonic()
        await self.writes.wait()
        await producer.flush()  # dead letters
        offsets = self.source.checkpoint_offsets({} if final else pending.first_offsets())
        if offsets == self._checkpointed and not self.writes.written:
            return
        self._checkpointed, self.number, self.writes.written = offsets, self.number + 1, False
        checkpoint = Checkpoint(number=self.number,
                                offsets={(tp.topic, tp.partition): off for tp, off in offsets.items()})
        blob = self._state_blob(offsets) if offsets and self.store.keeps else None
        for sink in self.sinks:
            await sink.flush(checkpoint)
        if blob is not None:  # the snapshot first: it is what a restart trusts
            await self.store.save(blob, checkpoint=self.number)
        assert self.delivery is not None
        await self.delivery.commit(offsets)
        if offsets:
            self.stats.commits += 1
        for sink in self.sinks:  # --out parts and --record files: final only now
            await sink.commit(checkpoint)

    # -- state for exact restarts ---------------------------------------------------------
    def _state_blob(self, offsets: dict[TopicPartition, int]) -> bytes:
        """The engine's state as of ``offsets`` (taken now, saved once they are durable)."""
        return pickle.dumps({
            "offsets": {(tp.topic, tp.partition): off for tp, off in offsets.items()},
            **self.source.snapshot(),
            "checkpoint": self.number,
            "engine": self.engine.snapshot(),
        }, protocol=pickle.HIGHEST_PROTOCOL)

    async def load(self) -> None:
        """Resume the engine and the source from the latest snapshot, if there is one."""
        state = await self.store.load()
        if state is None:
            return
        self.engine.restore(state["engine"])
        self.source.restore(state)
        self.number = self._restored = state.get("checkpoint", 0)
        log.info("resuming from checkpoint %d in %s", self.number, self.store.label)

    def settle(self, positions: dict[tuple[str, int], int]) -> None:
        """At the first assignment, before any seek: publish the staged files a crash left
        whose checkpoint is committed (the snapshot's or an earlier one; without a snapshot:
        offsets the resume ``positions`` cover), delete the others: their input is read again."""
        restored = self._restored

        def committed(offsets: Offsets, checkpoint: int) -> bool:
            if restored is not None:  # the snapshot says exactly which checkpoint it is
                return checkpoint <= restored
            return all(positions.get(k, -1) >= o for k, o in offsets.items())

        for sink in self.sinks:
            published, deleted = sink.settle(committed)
            if published or deleted:
                log.info("%s: %d files committed before a crash kept, %d not committed removed",
                         type(sink).__name__, published, deleted)


def store_of(config: ProcessConfig) -> StateStore:
    """The state store ``config.state`` names: the group's topic, a directory, or none."""
    if config.state == "none":
        return NoState()
    if config.state == "kafka":
        return TopicState(config.bootstrap, state_topic(config.prefix, config.group), config.state_key)
    return DirState(config.state)
