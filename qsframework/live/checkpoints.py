"""The commit sequence of ``qsf process`` (the commit rule of :mod:`qsframework.io`): wait for
the sinks' writes, flush every sink as part of a numbered checkpoint, save the state snapshot
(its store: the group's Kafka topic, ``--state DIR`` or none), commit the offsets (or the
checkpoint's transaction, see :mod:`.delivery`), let the sinks publish what they staged; and
at a restart, load the snapshot and settle what a crash left staged."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import TopicPartition

from .. import state_pickle
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
    at most every :attr:`interval_s`."""

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
        self._inflight: asyncio.Future | None = None  # the checkpoint being made final beside the loop
        self._finishing: asyncio.Task | None = None  # its last step (after the sinks' flush)

    async def commit(self, pending: Pending, producer, *, final: bool = False, drain: bool = False) -> None:
        """Commit what the engine has fully consumed, once the sinks hold it.

        At most every :attr:`interval_s` (always with ``final``/``drain``): take a
        checkpoint (offsets up to the oldest row still waiting behind the watermark; all with
        ``final``) and the engine's snapshot as of it; once the sinks' writes scheduled before
        it are done, flush every sink as part of it (durable, or staged), save the snapshot,
        commit the offsets, and let the sinks publish what they staged. A checkpoint covers
        exactly the rows its sinks were given before it.

        At-least-once, the processor goes on polling and processing meanwhile (the checkpoint
        is a barrier among the writes, see :mod:`.writes`; the next one waits for it, which
        holds the processor back when a sink is slow). In a transaction (exactly-once) and
        with ``final``/``drain`` it waits for the whole checkpoint.
        """
        if self.writes.failed():
            await self.writes.wait()  # a sink's failure ends the run
        if self._inflight is not None and self._inflight.done():
            await self._settled()
        assert self.delivery is not None
        if not (final or drain or time.monotonic() - self._last_commit >= self.interval_s):
            return
        self._last_commit = time.monotonic()
        wait = final or drain or self.delivery.transactional
        if wait:
            await self.writes.wait()
        await self._settled()  # one checkpoint at a time
        offsets = self.source.checkpoint_offsets({} if final else pending.first_offsets())
        if offsets == self._checkpointed and not self.writes.written:
            return
        self._checkpointed, self.number, self.writes.written = offsets, self.number + 1, False
        checkpoint = Checkpoint(number=self.number,
                                offsets={(tp.topic, tp.partition): off for tp, off in offsets.items()})
        blob = self._state_blob(offsets) if offsets and self.store.keeps else None
        if wait:
            await self._flush(checkpoint)
            await self._finish(checkpoint, offsets, blob, producer)
            return
        done = self._inflight = asyncio.get_running_loop().create_future()

        async def at_barrier() -> None:  # in the writer, once the rows before it are written
            await self._flush(checkpoint)
            finish = self._finishing = asyncio.create_task(self._finish(checkpoint, offsets, blob, producer))
            finish.add_done_callback(lambda task: _settle(done, task))

        self.writes.barrier(at_barrier).passed.add_done_callback(lambda barrier: barrier.cancelled() and done.cancel())

    @property
    def interval_s(self) -> float:
        """``commit_interval_s``, or the delivery mode's default."""
        assert self.delivery is not None
        return self.delivery.mode.commit_interval_s(self.cfg.commit_interval_s)

    async def _flush(self, checkpoint: Checkpoint) -> None:
        for sink in self.sinks:
            await sink.flush(checkpoint)

    async def _finish(self, checkpoint: Checkpoint, offsets: dict[TopicPartition, int], blob: bytes | None,
                      producer) -> None:
        """The flushed checkpoint made final: dead letters acknowledged, the snapshot saved (what
        a restart trusts), the offsets committed (or the transaction), the staged files published."""
        await producer.flush()  # dead letters
        if blob is not None:
            await self.store.save(blob, checkpoint=checkpoint.number)
        assert self.delivery is not None
        await self.delivery.commit(offsets)
        if offsets:
            self.stats.commits += 1
        for sink in self.sinks:  # --out parts and --record files: final only now
            await sink.commit(checkpoint)

    async def _settled(self) -> None:
        """Until the checkpoint under way (if any) is final; raises its failure."""
        inflight = self._inflight
        if inflight is None:
            return
        if not inflight.done():
            await asyncio.wait({inflight, *([self.writes.task] if self.writes.task else [])},
                               return_when=asyncio.FIRST_COMPLETED)
            if self.writes.failed():
                await self.writes.wait()  # the writer's failure, not its cancelled barrier
        self._inflight = None
        await inflight

    async def cancel(self) -> None:
        """The run failed or was cut short: the checkpoint under way is not made final."""
        inflight, self._inflight = self._inflight, None
        finishing, self._finishing = self._finishing, None
        if finishing is not None and not finishing.done():
            finishing.cancel()
            await asyncio.wait({finishing})
        if inflight is not None and inflight.done() and not inflight.cancelled():
            inflight.exception()  # the run's own failure is raised elsewhere; this one is heard
        elif inflight is not None:
            inflight.cancel()

    # -- state for exact restarts ---------------------------------------------------------
    def _state_blob(self, offsets: dict[TopicPartition, int]) -> bytes:
        """The engine's state as of ``offsets`` (taken now, saved once they are durable)."""
        return state_pickle.dumps({
            "offsets": {(tp.topic, tp.partition): off for tp, off in offsets.items()},
            **self.source.snapshot(),
            "checkpoint": self.number,
            "engine": self.engine.snapshot(),
        })

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


def _settle(done: asyncio.Future, task: asyncio.Task) -> None:
    """``done`` as ``task`` ended."""
    if done.done():
        return
    if task.cancelled():
        done.cancel()
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(None)
