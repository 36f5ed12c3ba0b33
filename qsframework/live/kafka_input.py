"""The Kafka side of ``qsf process``: where each assigned partition starts (and what a reset
log does), decoding and dead-lettering what is consumed, the watermark over the partitions,
recognising rows read again after a restart, and committing offsets across rebalances."""

from __future__ import annotations

import asyncio
import logging
import time

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
from ..io import Offsets
from ..kafka import KIND_HEADER, dead_letter, shares_topic
from ..wire import decode
from .config import LogReset
from .dead_letters import DeadLetters
from .pending import Pending

log = logging.getLogger("qsf.process")


def _tp_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


class KafkaInput:
    """The partitions' side of :class:`~qsframework.live.processor.Processor`, which runs
    the loop and owns the engine, the sinks and the checkpoints (``cfg``, ``stats``,
    ``topics`` and ``sinks`` are its)."""

    def _init_input(self) -> None:
        self._pending = Pending()  # consumed, waiting behind the watermark
        self._part_max: dict[TopicPartition, int] = {}  # latest event time per partition
        self._part_ids: dict[TopicPartition, int] = {}  # a small id per partition (the _part column)
        self._next_offset: dict[TopicPartition, int] = {}  # last consumed + 1
        self._released_upto: int | None = None  # rows with ts_event < this went to the engine
        self._active_at: dict[TopicPartition, float] = {}  # when each partition last gave rows (or was assigned)
        self._idle: set[TopicPartition] = set()
        self._resume: dict[TopicPartition, int] = {}  # the --state snapshot's offsets
        self._handled_below: dict[TopicPartition, int] = {}  # restored: rows below were handled before
        self._restored_no: int | None = None  # the --state snapshot's checkpoint
        self._settled = False  # --out parts and --record files a crash left are settled at the first assignment
        self._unverified: dict[TopicPartition, tuple[int, str, int]] = {}  # sought, log end not yet seen
        self._fatal: BaseException | None = None  # found by the rebalance listener, raised by the loop
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: DeadLetters  # set once the producer is started

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict:
        if self._fatal is not None:
            raise self._fatal
        try:
            batches = await consumer.getmany(timeout_ms=self.cfg.poll_ms, max_records=self.cfg.max_records)
        except NoOffsetForPartitionError:  # fetched before the listener sought it: it is about to
            return {}
        except OffsetOutOfRangeError as exc:  # the log was reset under a running consumer
            bad = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            starts = await consumer.beginning_offsets(list(bad))
            for tp, offset in bad.items():
                self._on_reset(consumer, tp, "next", offset, starts[tp], consumer.highwater(tp))
            return {}
        if self._fatal is not None:
            raise self._fatal
        self._verify(consumer, batches)
        return batches

    def _fresh(self, batches: dict) -> dict:
        """``batches`` without messages consumed before (a re-delivery after a rebalance)."""
        out = {}
        for tp, msgs in batches.items():
            nxt = self._next_offset.get(tp)
            if msgs and nxt is not None and msgs[0].offset < nxt:
                msgs = [m for m in msgs if m.offset >= nxt]
            out[tp] = msgs
        return out

    # -- steps ---------------------------------------------------------------------------
    async def _ingest(self, batches, producer) -> None:
        for tp, msgs in batches.items():
            if not msgs:
                continue
            self.stats.consumed += len(msgs)
            self._next_offset[tp] = msgs[-1].offset + 1
            part = self._part_ids.setdefault(tp, len(self._part_ids))
            kinds = self.topics[tp.topic]
            if len(kinds) == 1 and not shares_topic(kinds[0]):
                await self._ingest_kind(tp, part, kinds[0], msgs, producer)
                continue
            groups: dict[str, list] = {}  # a shared topic: each message names its kind
            for m in msgs:
                kind = next(((v or b"").decode(errors="replace") for k, v in (m.headers or ()) if k == KIND_HEADER),
                            None)
                if kind in kinds:
                    groups.setdefault(kind, []).append(m)
                elif kind is None or kind not in KINDS:
                    self.stats.rejected += 1
                    await self._dlq.send(dead_letter(
                        reason="no kind header" if kind is None else f"unknown kind {kind[:40]!r}",
                        value=m.value, key=m.key, topic=tp.topic, partition=tp.partition, offset=m.offset))
            for kind, group in groups.items():  # other kinds on the topic are for other strategies
                await self._ingest_kind(tp, part, kind, group, producer)

    async def _ingest_kind(self, tp: TopicPartition, part: int, kind: str, msgs: list, producer) -> None:
        table, rejected = decode(get_kind(kind), [m.value for m in msgs], bounds=self.cfg.bounds,
                                 now_ns=time.time_ns())
        for r in rejected:
            m = msgs[r.index]
            await self._dlq.send(dead_letter(reason=r.reason, value=m.value, key=m.key, topic=tp.topic,
                                                          partition=tp.partition, offset=m.offset, kind=kind))
        self.stats.rejected += len(rejected)
        if not table.num_rows:
            return
        bad = {r.index for r in rejected}
        offsets = [m.offset for i, m in enumerate(msgs) if i not in bad]
        table = table.append_column("_part", pa.array(np.full(table.num_rows, part, np.int32)))
        table = table.append_column("_offset", pa.array(offsets, pa.int64()))
        table = await self._drop_late(tp, kind, table, msgs, producer)
        if table.num_rows:
            self._advance(tp, int(table.column("ts_event").to_numpy().max()))
            self._pending.add(kind, table)

    # -- the watermark ---------------------------------------------------------------------
    async def _drop_late(self, tp: TopicPartition, kind: str, table: pa.Table, msgs: list, producer) -> pa.Table:
        """``table`` (decoded from ``msgs``) without rows before the watermark: those read
        again after a restart that were handled before it are skipped; the others are late
        (DLQ, as the original message)."""
        self._touch(tp)  # rows, even late ones: the partition is active
        if self._released_upto is None:
            return table
        late = table.column("ts_event").to_numpy() < self._released_upto
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
        reason = f"late: event time before the watermark {self._released_upto}"
        for off in table.column("_offset").to_numpy()[late].tolist():
            m = by_offset[off]
            await self._dlq.send(dead_letter(
                reason=reason, value=m.value, key=m.key, topic=tp.topic, partition=tp.partition,
                offset=off, kind=kind))
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

    async def _watermark(self, consumer: AIOKafkaConsumer) -> int | None:
        """The smallest latest event time over the partitions that are not idle, minus the
        lateness (None: nothing may go yet). Idle: nothing new for ``idle_timeout_s`` and read
        to the end. With every partition idle, the latest event time seen."""
        now = time.monotonic()
        holding: list[int] = []
        known: list[int] = []
        for tp in consumer.assignment():
            ts = self._part_max.get(tp)
            if ts is not None:
                known.append(ts)
            if now - self._active_at.get(tp, now) >= self.cfg.idle_timeout_s and await self._caught_up(consumer, tp):
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

    async def _caught_up(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
        end = consumer.highwater(tp)
        if end is None:
            return False
        position = self._next_offset.get(tp)
        if position is None:
            position = await consumer.position(tp)
        return position >= end

    async def _commit_offsets(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit, retrying across rebalances and broker restarts; a reset log is an error."""
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
            self._verify(consumer, {})  # a broker back with an empty log: an error, not a retry
            if self._fatal is not None:
                raise self._fatal
            log.warning("offset commit failed (%s); retrying in %.1f s", failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _verify(self, consumer: AIOKafkaConsumer, batches: dict) -> None:
        """Once a fetch told a newly sought partition's log end (its high watermark), a start
        past it is a reset log: apply the policy (a broker's ListOffsets answer is not relied
        on: some brokers report the last batch's base offset)."""
        for tp, (target, what, start) in list(self._unverified.items()):
            end = consumer.highwater(tp) if tp in consumer.assignment() else None
            if end is None:
                continue
            del self._unverified[tp]
            if target > end:
                batches.pop(tp, None)
                self._on_reset(consumer, tp, what, target, start, end)

    def _on_reset(self, consumer: AIOKafkaConsumer, tp: TopicPartition, what: str, offset: int,
                  start: int, end: int | None) -> None:
        where = "before the start" if offset < start else "past the end"
        bounds = f"offsets {start}..{end}" if end is not None else f"which starts at {start}"
        problem = f"{_tp_name(tp)}: the {what} offset {offset} is {where} of the log ({bounds}); the broker lost or reset it"
        if self.cfg.on_reset != "earliest":
            raise LogReset(f"{problem}. Nothing was skipped: rerun with --on-reset earliest to read "
                           "the partition from its start, or use a new --group and --state")
        log.warning("%s: reading it from offset %d (--on-reset earliest)", problem, start)
        consumer.seek(tp, start)
        self._next_offset.pop(tp, None)
        self._handled_below.pop(tp, None)

    async def _seek_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start each assigned partition where this run left it, else at the --state
        snapshot's offset, else at the group's committed offset, else at its start; an
        offset outside the log follows the reset policy. At the first assignment, before any
        seek (so nothing of this run is staged yet), settle the --out parts and --record files
        a crash left, by one rule for both."""
        consumer = self._consumer
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
        if not self._settled:
            self._settled = True  # once: later assignments find only this run's files
            self._settle({(tp.topic, tp.partition): target for tp, target, _ in targets})
        for tp, target, what in targets:
            if target < starts[tp]:
                self._on_reset(consumer, tp, what, target, starts[tp], None)
            else:
                consumer.seek(tp, target)
                self._unverified[tp] = (target, what, starts[tp])

    def _settle(self, positions: dict[tuple[str, int], int]) -> None:
        """Publish the staged files a crash left whose checkpoint is committed (the --state
        snapshot's or an earlier one; without --state: offsets the resume ``positions``
        cover), delete the others: their input is read again."""
        restored = self._restored_no

        def committed(offsets: Offsets, checkpoint: int) -> bool:
            if restored is not None:  # the snapshot says exactly which checkpoint it is
                return checkpoint <= restored
            return all(positions.get(k, -1) >= o for k, o in offsets.items())

        for sink in self.sinks:
            published, deleted = sink.settle(committed)
            if published or deleted:
                log.info("%s: %d files committed before a crash kept, %d not committed removed",
                         type(sink).__name__, published, deleted)

    def _log_progress(self, consumer, t0: float) -> None:
        lag = 0
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            pos = consumer.last_stable_offset(tp) if hw is None else hw
            lag += max(0, (hw or 0) - (pos or 0))
        rate = self.stats.processed / max(time.monotonic() - t0, 1e-9)
        p99 = self._latency.percentile(99)
        log.info("processed %d events (%.0f/s), lag %d, signals %d, alerts %d%s",
                 self.stats.processed, rate, lag, self.stats.signals, self.stats.alerts,
                 "" if p99 is None else f", p99 latency {p99:.1f} ms")


class _OnAssign(ConsumerRebalanceListener):
    """Seeks each assigned partition (see ``Processor._seek_assigned``). aiokafka only logs a
    listener's exceptions: they are kept for the processing loop to raise."""

    def __init__(self, processor: KafkaInput) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        try:
            await self.processor._seek_assigned(assigned)
        except Exception as exc:
            self.processor._fatal = exc

