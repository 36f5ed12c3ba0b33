"""``qsf process`` of a ``scale = "key"`` strategy: one engine per assigned partition, so
several processes in one consumer group split the partitions and the union of their outputs
is a single process's.

The process joins the group with one *member* consumer that only takes part in the group (its
partitions are paused: it never fetches). For each partition number N it is assigned (N of
every input topic: the key's kinds meet in one engine, :class:`~.assignors.KeyRanges`), it
runs a *worker*: a :class:`~.processor.Processor` reading those partitions by manual
assignment, with its own snapshot ``<group>/p<N>`` in the group's state topic, its own
transactional id (``PREFIX.process.<group>/p<N>``, which fences a dead owner's producer when
the partition moves) and its offsets committed in the group through the member. On a
rebalance the member hands every worker over before the group reassigns (commit and
snapshot, no ``on_stop``); a newly assigned partition's worker resumes from its snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from ..kafka import ensure_topics, topic_of
from ..strategy import Strategy
from .assignors import KeyRanges
from .checkpoints import store_of
from .delivery import delivery_mode
from .config import ProcessConfig, ProcessStats
from .processor import Processor

log = logging.getLogger("qsf.process")
_SUMMED = tuple(f.name for f in dataclasses.fields(ProcessStats) if f.type in ("int", int))


class ScaledOut:
    """The member of ``config.group`` and one :class:`Processor` per assigned partition."""

    def __init__(self, strategy_cls: type[Strategy], config: ProcessConfig, *,
                 announce: Callable[[str], None] | None = None) -> None:
        self.cls = strategy_cls
        self.cfg = config
        self.announce = announce or log.info
        self.topics = sorted({topic_of(kind, config.prefix) for kind in strategy_cls.kinds})
        self.member: AIOKafkaConsumer | None = None
        self.workers: dict[int, tuple[Processor, asyncio.Task]] = {}
        self.stats = ProcessStats()  # the sums over every worker this process ran
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Hand every partition over (commit, snapshot) and leave the group: the other members
        take the partitions, a restart resumes them."""
        self._stop.set()

    def worker_config(self, partition: int) -> ProcessConfig:
        """Partition ``partition``'s worker: its own ``--out``/``--record``/``--state``
        subdirectory ``p<N>`` (two workers never write the same files)."""
        cfg = self.cfg

        def own(path: Path | None) -> Path | None:
            return None if path is None else path / f"p{partition}"

        state = own(cfg.state) if isinstance(cfg.state, Path) else cfg.state
        return dataclasses.replace(cfg, partition=partition, out=own(cfg.out), record=own(cfg.record), state=state)

    async def run(self) -> ProcessStats:
        """Until :meth:`stop`, or with ``exit_when_idle_s`` until every worker of this
        process's partitions ended idle and the group consumed every partition; a worker's
        failure ends the run (after the others handed over)."""
        cfg = self.cfg
        await ensure_topics(cfg.bootstrap, self.topics)
        self.member = member = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap, group_id=cfg.group, enable_auto_commit=False,
            partition_assignment_strategy=(KeyRanges,))
        member.subscribe(self.topics, listener=_Rebalance(self))
        mode = await delivery_mode(cfg)
        self.announce(f"{self.cls.__name__}: group {cfg.group}, scale = key: one engine per assigned partition "
                      f"of {', '.join(self.topics)}, state: {store_of(cfg).label} under {cfg.group}/p<N>, "
                      f"delivery: {mode.describe()}")
        await member.start()
        try:
            while not self._stop.is_set():
                await member.getmany(timeout_ms=cfg.poll_ms)  # keeps the membership; nothing is fetched
                for _, task in self.workers.values():
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if (cfg.exit_when_idle_s is not None and self.workers
                        and all(task.done() for _, task in self.workers.values()) and await self._group_consumed()):
                    break
        finally:
            await self._hand_over(set(self.workers))
            await member.stop()  # leave the group: the others take the partitions now
        return self.stats

    async def _group_consumed(self) -> bool:
        """Whether the group committed every partition of the input topics to its end: with
        ``exit_when_idle_s`` a member whose partitions are idle stays while another's (a dead
        member's, not yet reassigned) wait, so the members that exit leave nothing unread."""
        member = self.member
        assert member is not None
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(member.partitions_for_topic(t) or ())]
        try:
            ends = await member.end_offsets(tps)
            for tp in tps:
                if ((await member.committed(tp)) or 0) < ends[tp]:
                    return False
            return True
        except KafkaError:  # the broker away: not known to be consumed
            return False

    def _start(self, partitions: set[int]) -> None:
        assert self.member is not None
        for n in sorted(partitions - set(self.workers)):
            proc = Processor(self.cls, self.worker_config(n))
            proc.source.committer = self.member  # the group's offsets, committed by its member
            self.workers[n] = (proc, asyncio.create_task(proc.run(), name=f"partition {n}"))
        self.announce(f"partitions assigned: {', '.join(map(str, sorted(partitions))) or 'none'}")

    async def _hand_over(self, partitions: set[int]) -> None:
        """Stop the workers of ``partitions`` (an idle one has ended already) and add their
        counts to :attr:`stats`."""
        for n in partitions:  # all at once: they commit concurrently
            proc, task = self.workers[n]
            if not task.done():
                proc.hand_over()
        for n in sorted(partitions):
            proc, task = self.workers.pop(n)
            try:
                await asyncio.wait({task})
            finally:
                self._add(proc.stats)

    def _add(self, stats: ProcessStats) -> None:
        total = self.stats
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        total.interrupted |= stats.interrupted
        total.delivery, total.state_store = total.delivery or stats.delivery, total.state_store or stats.state_store
        total.wall_s = max(total.wall_s, stats.wall_s)
        for name in ("latency_ms_p50", "latency_ms_p99"):  # the slowest partition's
            mine, theirs = getattr(total, name), getattr(stats, name)
            if theirs is not None:
                setattr(total, name, theirs if mine is None else max(mine, theirs))


class _Rebalance(ConsumerRebalanceListener):
    """Hands the workers over before the group reassigns (the eager protocol revokes every
    partition first), and starts a worker per partition after; the member never fetches."""

    def __init__(self, owner: ScaledOut) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        await self.owner._hand_over(set(self.owner.workers))

    async def on_partitions_assigned(self, assigned) -> None:
        owner = self.owner
        assert owner.member is not None
        owner.member.pause(*assigned)
        owner._start({tp.partition for tp in assigned})
