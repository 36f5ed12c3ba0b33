"""The Kafka side of ``qsf process`` as a :class:`~qsframework.io.Source`: where each assigned
partition starts (and what a reset log does), decoding and dead-lettering what is consumed,
the watermark over the partitions, recognising rows read again after a restart, and
committing offsets across rebalances."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pyarrow as pa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)

from ..errors import describe
from ..events import KINDS, get_kind
from ..io import Batch, Source
from ..kafka import KIND_HEADER, dead_letter, shares_topic
from ..wire import decode
from .config import LogReset, ProcessConfig, ProcessStats
from .dead_letters import DeadLetters

log = logging.getLogger("qsf.process")

#: at the first assignment, with where each partition will start: settle what a crash left
OnFirstAssignment = Callable[[dict[tuple[str, int], int]], None]


def _tp_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def lag(consumer: AIOKafkaConsumer) -> int:
    """Records between the consumer's positions and the log ends, over its partitions."""
    total = 0
    for tp in consumer.assignment():
        hw = consumer.highwater(tp)
        pos = consumer.last_stable_offset(tp) if hw is None else hw
        total += max(0, (hw or 0) - (pos or 0))
    return total


class KafkaSource(Source):
    """The subscribed kinds' topics, consumed by one member of ``config.group``.

    :meth:`poll` hands out one fetch as ``(kind, table)`` batches in partition order, each
    table with two more columns: ``_part`` (a small id per partition, see :meth:`origin`) and
    ``_offset``. Undecodable messages and rows later than what was released
    (:attr:`released_upto`) go to the DLQ with the reason, never into a batch; rows read again
    after a restart that were handled before it are skipped. A consumer of this source commits
    :meth:`checkpoint_offsets` with :meth:`commit` only after its sinks flushed (see
    :mod:`qsframework.io`); :meth:`batches` alone never commits.
    """

    def __init__(self, config: ProcessConfig, topics: dict[str, tuple[str, ...]], *, stats: ProcessStats,
                 on_first_assignment: OnFirstAssignment) -> None:
        self.cfg = config
        self.topics = topics  # topic -> the subscribed kinds it carries
        self.stats = stats
        self._on_first_assignment: OnFirstAssignment | None = on_first_assignment
        self.released_upto: int | None = None  # rows with ts_event < this went to the engine
        self._part_max: dict[TopicPartition, int] = {}  # latest event time per partition
        self._part_ids: dict[TopicPartition, int] = {}  # a small id per partition (the _part column)
        self._next_offset: dict[TopicPartition, int] = {}  # last consumed + 1
        self._active_at: dict[TopicPartition, float] = {}  # when each partition last gave rows (or was assigned)
        self._idle: set[TopicPartition] = set()
        self._resume: dict[TopicPartition, int] = {}  # the --state snapshot's offsets
        self._handled_below: dict[TopicPartition, int] = {}  # restored: rows below were handled before
        self._unverified: dict[TopicPartition, tuple[int, str, int]] = {}  # sought, log end not yet seen
        self._fatal: BaseException | None = None  # found by the rebalance listener, raised by poll
        self._stopped = False
        self.consumer: AIOKafkaConsumer | None = None
        self.dlq: DeadLetters | None = None  # set by start()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, dlq: DeadLetters) -> None:
        """Join the group (each assigned partition is sought, see :meth:`_seek_assigned`)."""
        cfg = self.cfg
        self.dlq = dlq
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap, group_id=cfg.group,
            # never reset silently: every assigned partition is sought explicitly (_seek_assigned)
            # and a position the log no longer has is an error or the explicit --on-reset policy
            enable_auto_commit=False, auto_offset_reset="none",
            # big fetches (one partition per topic carries everything) and short waits
            max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20, fetch_max_wait_ms=50,
        )
        self.consumer.subscribe(list(self.topics), listener=_OnAssign(self))
        await self.consumer.start()

    def stop(self) -> None:
        self._stopped = True

    async def close(self) -> None:
        """Leave the group (nothing is committed here)."""
        if self.consumer is not None:
            await self.consumer.stop()

    async def batches(self) -> AsyncIterator[Batch]:
        while not self._stopped:
            for batch in await self.poll() or ():
                yield batch

    @property
    def assigned(self) -> bool:
        """Whether the consumer has partitions (False while it joins the group)."""
        return self.consumer is not None and bool(self.consumer.assignment())

    # -- the --state snapshot's part -------------------------------------------------------
    def snapshot(self) -> dict:
        """What a restart needs besides the offsets: the watermark's state and how far each
        partition was consumed (rows below read again are recognised, see :meth:`restore`)."""
        return {
            "part_max": {(tp.topic, tp.partition): v for tp, v in self._part_max.items()},
            "released_upto": self.released_upto,
            # consumed up to here: rows below these offsets read again after a restart were
            # either processed or dead-lettered already when their event time is before
            # released_upto (those at or after it were waiting, and wait again)
            "consumed": {(tp.topic, tp.partition): max(nxt, self._handled_below.get(tp, nxt))
                         for tp, nxt in self._next_offset.items()},
        }

    def restore(self, state: dict) -> None:
        """Resume from a snapshot (its ``offsets`` and what :meth:`snapshot` gave)."""
        self.released_upto = state["released_upto"]
        self._part_max = {TopicPartition(*k): v for k, v in state["part_max"].items()}
        self._handled_below = {TopicPartition(*k): v for k, v in state.get("consumed", {}).items()}
        self._resume = {TopicPartition(*k): v for k, v in state["offsets"].items()}

    # -- reading ---------------------------------------------------------------------------
    async def poll(self) -> list[Batch] | None:
        """One fetch (at most ``poll_ms`` of waiting), decoded; None when it brought no
        message (a list, maybe empty, when messages came: bad, late or read before too)."""
        consumer = self.consumer
        assert consumer is not None and self.dlq is not None, "start() first"
        if self._fatal is not None:
            raise self._fatal
        try:
            fetched = await consumer.getmany(timeout_ms=self.cfg.poll_ms, max_records=self.cfg.max_records)
        except NoOffsetForPartitionError:  # fetched before the listener sought it: it is about to
            return None
        except OffsetOutOfRangeError as exc:  # the log was reset under a running consumer
            bad = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            starts = await consumer.beginning_offsets(list(bad))
            for tp, offset in bad.items():
                self._on_reset(tp, "next", offset, starts[tp], consumer.highwater(tp))
            return None
        if self._fatal is not None:
            raise self._fatal
        self._verify(fetched)
        if not any(fetched.values()):
            return None
        out: list[Batch] = []
        for tp, msgs in self._fresh(fetched).items():
            if msgs:
                await self._ingest(tp, msgs, out)
        return out

    def _fresh(self, fetched: dict) -> dict:
        """``fetched`` without messages consumed before (a re-delivery after a rebalance)."""
        out = {}
        for tp, msgs in fetched.items():
            nxt = self._next_offset.get(tp)
            if msgs and nxt is not None and msgs[0].offset < nxt:
                msgs = [m for m in msgs if m.offset >= nxt]
            out[tp] = msgs
        return out

    async def _ingest(self, tp: TopicPartition, msgs: list, out: list[Batch]) -> None:
        self.stats.consumed += len(msgs)
        self._next_offset[tp] = msgs[-1].offset + 1
        part = self._part_ids.setdefault(tp, len(self._part_ids))
        kinds = self.topics[tp.topic]
        if len(kinds) == 1 and not shares_topic(kinds[0]):
            await self._ingest_kind(tp, part, kinds[0], msgs, out)
            return
        groups: dict[str, list] = {}  # a shared topic: each message names its kind
        for m in msgs:
            kind = next(((v or b"").decode(errors="replace") for k, v in (m.headers or ()) if k == KIND_HEADER),
                        None)
            if kind in kinds:
                groups.setdefault(kind, []).append(m)
            elif kind is None or kind not in KINDS:
                self.stats.rejected += 1
                await self._dead_letter(tp, m, "no kind header" if kind is None else f"unknown kind {kind[:40]!r}")
        for kind, group in groups.items():  # other kinds on the topic are for other strategies
            await self._ingest_kind(tp, part, kind, group, out)

    async def _ingest_kind(self, tp: TopicPartition, part: int, kind: str, msgs: list, out: list[Batch]) -> None:
        table, rejected = decode(get_kind(kind), [m.value for m in msgs], bounds=self.cfg.bounds,
                                 now_ns=time.time_ns())
        for r in rejected:
            await self._dead_letter(tp, msgs[r.index], r.reason, kind=kind)
        self.stats.rejected += len(rejected)
        if not table.num_rows:
            return
        bad = {r.index for r in rejected}
        offsets = [m.offset for i, m in enumerate(msgs) if i not in bad]
        table = table.append_column("_part", pa.array(np.full(table.num_rows, part, np.int32)))
        table = table.append_column("_offset", pa.array(offsets, pa.int64()))
        table = await self._drop_late(tp, kind, table, msgs)
        if table.num_rows:
            self._advance(tp, int(table.column("ts_event").to_numpy().max()))
            out.append((kind, table))

    async def _dead_letter(self, tp: TopicPartition, m, reason: str, *, kind: str | None = None) -> None:
        assert self.dlq is not None
        await self.dlq.send(dead_letter(reason=reason, value=m.value, key=m.key, topic=tp.topic,
                                        partition=tp.partition, offset=m.offset, kind=kind))

    def origin(self, part: int) -> TopicPartition | None:
        """The partition of a ``_part`` id."""
        return next((tp for tp, v in self._part_ids.items() if v == part), None)

    # -- the watermark ---------------------------------------------------------------------
    async def _drop_late(self, tp: TopicPartition, kind: str, table: pa.Table, msgs: list) -> pa.Table:
        """``table`` (decoded from ``msgs``) without rows before the watermark: those read
        again after a restart that were handled before it are skipped; the others are late
        (DLQ, as the original message)."""
        self._touch(tp)  # rows, even late ones: the partition is active
        if self.released_upto is None:
            return table
        late = table.column("ts_event").to_numpy() < self.released_upto
        if not late.any():
            return table
        below = self._handled_below.get(tp)
        if below is not None:
            again = late & (table.column("_offset").to_numpy() < below)
            if again.any():
                self.stats.redelivered += int(again.sum())
                table, late = table.filter(pa.array(~again)), late[~again]
                if not late.any():
                    return table
        by_offset = {m.offset: m for m in msgs}
        reason = f"late: event time before the watermark {self.released_upto}"
        for off in table.column("_offset").to_numpy()[late].tolist():
            await self._dead_letter(tp, by_offset[off], reason, kind=kind)
        self.stats.late += int(late.sum())
        return table.filter(pa.array(~late))

    def _advance(self, tp: TopicPartition, ts_max: int) -> None:
        """``tp`` gave rows up to ``ts_max``: it holds the watermark there (unless idle)."""
        self._part_max[tp] = max(self._part_max.get(tp, ts_max), ts_max)

    def _touch(self, tp: TopicPartition) -> None:
        """``tp`` gave rows: it is active and holds the watermark again."""
        self._active_at[tp] = time.monotonic()
        if tp in self._idle:
            self._idle.discard(tp)
            log.info("%s is active again: it holds the watermark", _tp_name(tp))

    async def watermark(self) -> int | None:
        """The smallest latest event time over the partitions that are not idle, minus the
        lateness (None: nothing may go yet). Idle: nothing new for ``idle_timeout_s`` and read
        to the end. With every partition idle, the latest event time seen."""
        consumer = self.consumer
        assert consumer is not None
        now = time.monotonic()
        holding: list[int] = []
        known: list[int] = []
        for tp in consumer.assignment():
            ts = self._part_max.get(tp)
            if ts is not None:
                known.append(ts)
            if now - self._active_at.get(tp, now) >= self.cfg.idle_timeout_s and await self._caught_up(tp):
                if tp not in self._idle:
                    self._idle.add(tp)
                    log.info("%s is idle: it no longer holds the watermark", _tp_name(tp))
                continue
            if ts is None:
                return None  # active but nothing yet: its first rows may be the oldest
            holding.append(ts)
        if not known:
            return None
        return (min(holding) if holding else max(known)) - self.cfg.lateness_ns

    async def _caught_up(self, tp: TopicPartition) -> bool:
        assert self.consumer is not None
        end = self.consumer.highwater(tp)
        if end is None:
            return False
        position = self._next_offset.get(tp)
        if position is None:
            position = await self.consumer.position(tp)
        return position >= end

    # -- commits ---------------------------------------------------------------------------
    def checkpoint_offsets(self, pending: dict[int, int]) -> dict[TopicPartition, int]:
        """Per consumed partition, the offset a commit may name: its oldest row still
        ``pending`` (by ``_part`` id) or, with none, the next one to read."""
        return {tp: pending.get(self._part_ids[tp], nxt) for tp, nxt in self._next_offset.items()}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, retrying across rebalances and broker restarts; a reset log is an error."""
        consumer = self.consumer
        assert consumer is not None
        delay = 0.2
        while True:
            try:
                await consumer.commit(offsets)
                return
            except IllegalStateError:  # partitions rebalanced away: theirs is no longer ours to commit
                mine = {tp: off for tp, off in offsets.items() if tp in consumer.assignment()}
                if not mine:
                    return
                if len(mine) < len(offsets):
                    offsets = mine
                    continue
                failure = "partitions are being reassigned"
            except KafkaError as exc:  # CommitFailedError (a rebalance), broker unavailable, ...
                failure = describe(exc)  # short: CommitFailedError's own text names itself, in 600 characters
            self._verify({})  # a broker back with an empty log: an error, not a retry
            if self._fatal is not None:
                raise self._fatal
            log.warning("offset commit failed (%s); retrying in %.1f s", failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- where partitions start, and reset logs -------------------------------------------
    def _verify(self, fetched: dict) -> None:
        """Once a fetch told a newly sought partition's log end (its high watermark), a start
        past it is a reset log: apply the policy (a broker's ListOffsets answer is not relied
        on: some brokers report the last batch's base offset)."""
        consumer = self.consumer
        assert consumer is not None
        for tp, (target, what, start) in list(self._unverified.items()):
            end = consumer.highwater(tp) if tp in consumer.assignment() else None
            if end is None:
                continue
            del self._unverified[tp]
            if target > end:
                fetched.pop(tp, None)
                self._on_reset(tp, what, target, start, end)

    def _on_reset(self, tp: TopicPartition, what: str, offset: int, start: int, end: int | None) -> None:
        where = "before the start" if offset < start else "past the end"
        bounds = f"offsets {start}..{end}" if end is not None else f"which starts at {start}"
        problem = f"{_tp_name(tp)}: the {what} offset {offset} is {where} of the log ({bounds}); the broker lost or reset it"
        if self.cfg.on_reset != "earliest":
            raise LogReset(f"{problem}. Nothing was skipped: rerun with --on-reset earliest to read "
                           "the partition from its start, or use a new --group and --state")
        log.warning("%s: reading it from offset %d (--on-reset earliest)", problem, start)
        assert self.consumer is not None
        self.consumer.seek(tp, start)
        self._next_offset.pop(tp, None)
        self._handled_below.pop(tp, None)

    async def _seek_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start each assigned partition where this run left it, else at the --state
        snapshot's offset, else at the group's committed offset, else at its start; an
        offset outside the log follows the reset policy. At the first assignment, before any
        seek (so nothing of this run is staged yet), hand the starts to
        ``on_first_assignment`` (the processor settles what a crash left)."""
        consumer = self.consumer
        assert consumer is not None
        tps = sorted(assigned)
        starts = await consumer.beginning_offsets(tps)
        now = time.monotonic()
        targets: list[tuple[TopicPartition, int, str]] = []
        for tp in tps:
            self._active_at.setdefault(tp, now)
            if tp in self._next_offset:
                target, what = self._next_offset[tp], "consumed"
            elif tp in self._resume:
                target, what = self._resume[tp], "--state snapshot's"
            else:
                target, what = await consumer.committed(tp), "committed"
            targets.append((tp, starts[tp] if target is None else target, what))
        if self._on_first_assignment is not None:
            first, self._on_first_assignment = self._on_first_assignment, None  # once
            first({(tp.topic, tp.partition): target for tp, target, _ in targets})
        for tp, target, what in targets:
            if target < starts[tp]:
                self._on_reset(tp, what, target, starts[tp], None)
            else:
                consumer.seek(tp, target)
                self._unverified[tp] = (target, what, starts[tp])


class _OnAssign(ConsumerRebalanceListener):
    """Seeks each assigned partition (see ``KafkaSource._seek_assigned``). aiokafka only logs
    a listener's exceptions: they are kept for :meth:`KafkaSource.poll` to raise."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        try:
            await self.source._seek_assigned(assigned)
        except Exception as exc:
            self.source._fatal = exc
