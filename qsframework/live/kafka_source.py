"""The Kafka side of ``qsf process`` as a :class:`~qsframework.io.Source`: where each assigned
partition starts (and what a reset log does), decoding and dead-lettering what is consumed,
the watermark over the partitions, recognising rows read again after a restart, and
committing offsets across rebalances."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pyarrow as pa
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)

from ..errors import describe
from ..events import KINDS, get_kind
from ..io import Batch, Rejected, Source
from ..kafka import KIND_HEADER, dead_letter, shares_topic
from ..wire import decode
from .config import LogReset, ProcessConfig, ProcessStats
from .assignors import OnAssign, OneActive
from .dead_letters import DeadLetters
from .watermark import Watermark, tp_name

log = logging.getLogger("qsf.process")

#: at the first assignment, with where each partition will start: settle what a crash left
OnFirstAssignment = Callable[[dict[tuple[str, int], int]], None]
_ASK_END_S = 5.0  # how long at_log_end waits for the broker's answer before counting it as away


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

    def __init__(self, config: ProcessConfig, topics: dict[str, tuple[str, ...]], *,
                 stats: ProcessStats | None = None, on_first_assignment: OnFirstAssignment | None = None) -> None:
        self.cfg = config
        self.topics = topics  # topic -> the subscribed kinds it carries
        self.stats = ProcessStats() if stats is None else stats
        self._on_first_assignment: OnFirstAssignment | None = on_first_assignment
        self.released_upto: int | None = None  # rows with ts_event < this went to the engine
        self._watermark = Watermark(config)
        self._part_ids: dict[TopicPartition, int] = {}  # a small id per partition (the _part column)
        self._next_offset: dict[TopicPartition, int] = {}  # last consumed + 1
        self._resume: dict[TopicPartition, int] = {}  # the state snapshot's offsets
        self._handled_below: dict[TopicPartition, int] = {}  # restored: rows below were handled before
        self._unverified: dict[TopicPartition, tuple[int, str, int]] = {}  # sought, log end not yet seen
        self._fatal: BaseException | None = None  # found by the rebalance listener, raised by poll
        self._stopped = False
        self.consumer: AIOKafkaConsumer | None = None
        #: the group member that commits the offsets (a scale-out worker's is its process's
        #: member, which owns the partition in the group); None: this source's consumer
        self.committer: AIOKafkaConsumer | None = None
        #: where the standby/active lines go (the processor's start-up line's channel)
        self.announce: Callable[[str], None] = log.info
        #: a standby member's partitions arrive (the active one left or died): reload the state
        #: snapshot, which the active member kept writing since this one started
        self.on_takeover: Callable[[], Awaitable[None]] | None = None
        self._standby = False
        self.dlq: DeadLetters | None = None  # set by start()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, dlq: DeadLetters | None = None) -> None:
        """Join the group (each assigned partition is sought, see :meth:`_seek_assigned`).
        Bad and late messages go to ``dlq``, or without one to :attr:`on_reject`."""
        cfg = self.cfg
        self.dlq = dlq
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap, group_id=cfg.group,
            # never reset silently: every assigned partition is sought explicitly (_seek_assigned)
            # and a position the log no longer has is an error or the explicit --on-reset policy
            enable_auto_commit=False, auto_offset_reset="none",
            # big fetches (one partition per topic carries everything) and short waits
            max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20, fetch_max_wait_ms=50,
            # one engine sees every key (scale = "single"): one member gets every partition, the
            # others stand by; a worker of a scaled-out strategy never joins (its member does)
            partition_assignment_strategy=(OneActive,),
            # member ids start with the client id, and OneActive picks the first: the longest
            # running member stays active when another joins (a standby does not take over)
            client_id=f"qsf-{time.time_ns():020d}",
        )
        if cfg.partition is None:
            self.consumer.subscribe(list(self.topics), listener=OnAssign(self))
            await self.consumer.start()
            return
        await self.consumer.start()  # a scale-out worker: its partition, given by its process
        mine = {TopicPartition(topic, cfg.partition) for topic in self.topics}
        self.consumer.assign(list(mine))
        await self._seek_assigned(mine)

    def stop(self) -> None:
        self._stopped = True

    async def close(self) -> None:
        """Leave the group (nothing is committed here)."""
        if self.consumer is not None:
            await self.consumer.stop()

    async def batches(self) -> AsyncIterator[Batch]:
        """Joins the group if :meth:`start` was not called (and then leaves it at the end)."""
        own = self.consumer is None
        if own:
            await self.start()
        try:
            while not self._stopped:
                for batch in await self.poll() or ():
                    yield batch
        finally:
            if own:
                await self.close()

    async def at_log_end(self) -> bool:
        """Whether the broker, asked now, confirms that every assigned partition is read to
        its end: an idle input. False while the broker cannot be reached (an outage is not the
        end of the input: the publisher may be waiting to send more) or more is there to read."""
        consumer = self.consumer
        assert consumer is not None
        tps = list(consumer.assignment())
        if not tps:
            return False
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout=_ASK_END_S)
            positions = [await consumer.position(tp) for tp in tps]
        except (KafkaError, TimeoutError):
            return False
        return all(pos >= ends[tp] for pos, tp in zip(positions, tps))

    def lag(self) -> int:
        """Records between what was consumed and the log ends the last fetches saw, summed
        over the assigned partitions (a partition not consumed yet counts from its start)."""
        consumer = self.consumer
        if consumer is None:
            return 0
        ends = ((tp, consumer.highwater(tp)) for tp in consumer.assignment())
        return sum(max(0, end - self._next_offset.get(tp, 0)) for tp, end in ends if end is not None)

    @property
    def assigned(self) -> bool:
        """Whether the consumer has partitions (False while it joins the group)."""
        return self.consumer is not None and bool(self.consumer.assignment())

    # -- the state snapshot's part ---------------------------------------------------------
    def snapshot(self) -> dict:
        """What a restart needs besides the offsets: the watermark's state and how far each
        partition was consumed (rows below read again are recognised, see :meth:`restore`)."""
        return {
            "part_max": {(tp.topic, tp.partition): v for tp, v in self._watermark.part_max.items()},
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
        self._watermark.part_max = {TopicPartition(*k): v for k, v in state["part_max"].items()}
        self._handled_below = {TopicPartition(*k): v for k, v in state.get("consumed", {}).items()}
        self._resume = {TopicPartition(*k): v for k, v in state["offsets"].items()}

    # -- reading ---------------------------------------------------------------------------
    async def poll(self) -> list[Batch] | None:
        """One fetch (at most ``poll_ms`` of waiting), decoded; None when it brought no
        message (a list, maybe empty, when messages came: bad, late or read before too)."""
        consumer = self.consumer
        assert consumer is not None, "start() first"
        if self._fatal is not None:
            raise self._fatal
        try:
            fetched = await consumer.getmany(timeout_ms=self.cfg.poll_ms, max_records=self.cfg.max_records)
        except NoOffsetForPartitionError:  # fetched before the listener sought it: it is about to
            return None
        except OffsetOutOfRangeError as exc:  # the log was reset under a running consumer
            # (Apache Kafka answers a fetch past the end so; Tansu with an empty fetch: _verify)
            bad = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            starts = await consumer.beginning_offsets(list(bad))
            ends = await consumer.end_offsets(list(bad))
            for tp, offset in bad.items():
                label = "consumed" if tp in self._next_offset else "next"  # as _seek_assigned names it
                _, what, _ = self._unverified.pop(tp, (offset, label, 0))
                self._on_reset(tp, what, offset, starts[tp], ends[tp])
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
            self._watermark.advance(tp, int(table.column("ts_event").to_numpy().max()))
            out.append((kind, table))

    async def _dead_letter(self, tp: TopicPartition, m, reason: str, *, kind: str | None = None) -> None:
        if self.dlq is not None:
            await self.dlq.send(dead_letter(reason=reason, value=m.value, key=m.key, topic=tp.topic,
                                            partition=tp.partition, offset=m.offset, kind=kind))
        else:
            origin = tuple((k, str(v).encode()) for k, v in (("topic", tp.topic), ("partition", tp.partition),
                                                             ("offset", m.offset)))
            await self.reject(Rejected(value=m.value or b"", reason=reason, kind=kind, origin=origin))

    def origin(self, part: int) -> TopicPartition | None:
        """The partition of a ``_part`` id."""
        return next((tp for tp, v in self._part_ids.items() if v == part), None)

    # -- the watermark ---------------------------------------------------------------------
    async def _drop_late(self, tp: TopicPartition, kind: str, table: pa.Table, msgs: list) -> pa.Table:
        """``table`` (decoded from ``msgs``) without rows before the watermark: those read
        again after a restart that were handled before it are skipped; the others are late
        (DLQ, as the original message)."""
        self._watermark.touch(tp)  # rows, even late ones: the partition is active
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

    async def watermark(self) -> int | None:
        """Up to where rows may go to the engine (see :class:`Watermark`); None: not yet."""
        assert self.consumer is not None
        return await self._watermark.value(self.consumer, self._next_offset)

    # -- commits ---------------------------------------------------------------------------
    def checkpoint_offsets(self, pending: dict[int, int]) -> dict[TopicPartition, int]:
        """Per consumed partition, the offset a commit may name: its oldest row still
        ``pending`` (by ``_part`` id) or, with none, the next one to read."""
        return {tp: pending.get(self._part_ids[tp], nxt) for tp, nxt in self._next_offset.items()}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, retrying across rebalances and broker restarts; a reset log is an error."""
        consumer = self.committer or self.consumer
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
        problem = f"{tp_name(tp)}: the {what} offset {offset} is {where} of the log ({bounds}); the broker lost or reset it"
        if self.cfg.on_reset != "earliest":
            raise LogReset(f"{problem}. Nothing was skipped: rerun with --on-reset earliest to read "
                           "the partition from its start, or start afresh with a new --group (its state "
                           "topic starts empty) or a new --state DIR")
        log.warning("%s: reading it from offset %d (--on-reset earliest)", problem, start)
        assert self.consumer is not None
        self.consumer.seek(tp, start)
        self._next_offset.pop(tp, None)
        self._handled_below.pop(tp, None)

    async def _seek_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start each assigned partition where this run left it, else at the state
        snapshot's offset (the group's topic or --state DIR), else at the group's committed offset, else at its start; an
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
            self._watermark.assigned(tp, now)
            if tp in self._next_offset:
                target, what = self._next_offset[tp], "consumed"
            elif tp in self._resume:
                target, what = self._resume[tp], "state snapshot's"
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

