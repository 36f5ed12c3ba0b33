"""``qsf process``: the live engine. Kafka in, the same engine and strategy as the backtest,
outputs to sinks; offsets are committed only once the sinks hold the batch.

Events of all input topics are merged into the engine's total order behind a watermark:
the smallest of the partitions' latest event times, minus the allowed lateness. An event
that arrives after events later than it were processed is late: it is counted and sent to
the DLQ with the reason, never silently reordered. ``--record`` keeps exactly what the
engine consumed, so a backtest of it reproduces the live outputs.

A partition with nothing new for ``idle_timeout_s`` (and nothing left to read) stops holding
the watermark back, and at most ``max_held`` rows wait behind it (the oldest go first past
that): both trade exact parity for progress, and both are counted. Restarts resume from the
committed offsets or the ``--state`` snapshot; a snapshot or committed offset the log no
longer has (a reset log) stops the run unless ``on_reset="earliest"``. A stop request ends
retries within ``stop_grace_s``: what is durable is committed, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)

from .durations import format_time
from .engine import Engine
from .loader import load_sink
from .errors import UserError, describe
from .events import KINDS, get_kind
from .io import Checkpoint, Offsets, Refused, Sink
from .kafka import (
    DEFAULT_PREFIX,
    KIND_HEADER,
    DeadLetter,
    ProducerConfig,
    dead_letter,
    dlq_topic,
    ensure_topics,
    shares_topic,
    start_producer,
    topic_of,
)
from .latency import LatencyWindow
from .order import sort_table
from .recording import RecordingWriter
from .shutdown import stop_on_signals
from .strategy import Strategy
from .validity import DEFAULT_BOUNDS, TimeBounds
from .wire import decode

log = logging.getLogger("qsf.process")


@dataclass(frozen=True, kw_only=True)
class ProcessConfig:
    bootstrap: str
    group: str
    prefix: str = DEFAULT_PREFIX
    lateness_ns: int = 0
    idle_timeout_s: float = 5.0  # a partition quiet (and read to its end) this long stops holding the watermark
    max_held: int = 1_000_000  # rows waiting behind the watermark; past it the oldest are released
    exit_when_idle_s: float | None = None
    out: Path | None = None
    record: Path | None = None
    sinks: tuple[str, ...] = ()
    pg_dsn: str | None = None
    state: Path | None = None  # snapshot directory: a restart resumes exactly from it
    bounds: TimeBounds = DEFAULT_BOUNDS  # events outside them go to the DLQ, not the engine
    on_reset: Literal["fail", "earliest"] = "fail"  # a resume offset the log does not have
    commit_interval_s: float = 1.0  # at most one commit (and --out part) per interval
    stop_grace_s: float = 5.0  # after a stop request, how long work in progress may take
    overrides: dict[str, str] = field(default_factory=dict)
    path: str = "auto"
    poll_ms: int = 200
    max_records: int = 20_000
    log_every_s: float = 5.0


@dataclass(kw_only=True)
class ProcessStats:
    consumed: int = 0
    processed: int = 0
    rejected: int = 0
    late: int = 0
    redelivered: int = 0  # rows read again after a restart that were already handled
    released_early: int = 0  # rows released before the watermark passed them (max_held)
    signals: int = 0
    alerts: int = 0
    commits: int = 0
    interrupted: bool = False  # a stop request cut work in progress short (not committed)
    wall_s: float = 0.0
    first_processed_at: float | None = None  # time.monotonic() of the first and last batch
    last_processed_at: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None


class LogReset(UserError):
    """A resume offset lies outside the partition's log (the broker lost or reset it)."""


class StrategyFailed(UserError):
    """The strategy raised while handling events; nothing of that batch is committed."""


def _tp_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


class _Pending:
    """Consumed rows not yet released to the engine; each keeps its partition and offset
    (columns ``_part``, ``_offset``) so commits never pass an unprocessed row."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}
        self.rows = 0

    def add(self, kind: str, table: pa.Table) -> None:
        if table.num_rows:
            self.tables.setdefault(kind, []).append(table)
            self.rows += table.num_rows

    def take(self, kind: str, upto: int | None) -> pa.Table | None:
        """Remove and return (sorted) the rows with ts_event < ``upto`` (all if None)."""
        parts = self.tables.pop(kind, [])
        if not parts:
            return None
        table = sort_table(pa.concat_tables(parts))
        if upto is None:
            self.rows -= table.num_rows
            return table
        n = int(np.searchsorted(table.column("ts_event").to_numpy(), upto, side="left"))
        if n < table.num_rows:
            self.tables[kind] = [table.slice(n)]
        self.rows -= n
        return table.slice(0, n) if n else None

    def cutoff(self, excess: int, upto: int | None) -> tuple[int, int]:
        """The event time below which the ``excess`` oldest rows wait, and how many rows below
        it the watermark ``upto`` would still hold back."""
        ts = np.concatenate([t.column("ts_event").to_numpy() for parts in self.tables.values() for t in parts])
        cut = int(np.partition(ts, excess - 1)[excess - 1]) + 1
        early = ts < cut if upto is None else (ts >= upto) & (ts < cut)
        return cut, int(early.sum())

    def first_offsets(self) -> dict[int, int]:
        """Per partition id, the smallest offset still pending."""
        out: dict[int, int] = {}
        for parts in self.tables.values():
            for t in parts:
                if not t.num_rows:
                    continue
                grouped = t.group_by("_part").aggregate([("_offset", "min")])
                for part, off in zip(grouped.column("_part").to_pylist(), grouped.column("_offset_min").to_pylist()):
                    out[part] = min(off, out.get(part, off))
        return out


class Processor:
    """One strategy instance on Kafka topics."""

    def __init__(self, strategy_cls: type[Strategy], config: ProcessConfig) -> None:
        self.cfg = config
        self.strategy_name = strategy_cls.__name__
        self.engine = Engine(strategy_cls, overrides=config.overrides, path=config.path)  # type: ignore[arg-type]
        self.engine.on_outputs = self._seal_outputs  # a long timer catch-up packs its outputs as it goes
        self.kinds = list(self.engine.kinds)
        self.topics: dict[str, tuple[str, ...]] = {}  # topic -> the subscribed kinds it carries
        for k in self.kinds:
            topic = topic_of(k, config.prefix)
            self.topics[topic] = (*self.topics.get(topic, ()), k)
        self.stats = ProcessStats()
        self._stop = asyncio.Event()
        self._input_ended = False
        self._pending = _Pending()
        self._part_max: dict[TopicPartition, int] = {}
        self._part_ids: dict[TopicPartition, int] = {}
        self._next_offset: dict[TopicPartition, int] = {}  # last consumed + 1
        self._released_upto: int | None = None  # rows with ts_event < this went to the engine
        self._active_at: dict[TopicPartition, float] = {}  # when each partition last gave rows (or was assigned)
        self._idle: set[TopicPartition] = set()
        self._resume: dict[TopicPartition, int] = {}  # the --state snapshot's offsets
        self._handled_below: dict[TopicPartition, int] = {}  # restored: rows below were handled before
        self._fatal: BaseException | None = None  # found by the rebalance listener, raised by the loop
        self._consumer: AIOKafkaConsumer | None = None
        self._producer = None
        self._latency = LatencyWindow()
        # the sinks' writes run while the next poll is fetched and processed: each poll's
        # rows are written by a task chained after the previous poll's; a checkpoint waits
        # for the chain, then flushes every sink, and only then commits (see qsframework.io)
        self._to_write: list[tuple[str, pa.Table, bool]] = []  # (kind, rows, is an output) of this poll
        self._writes: asyncio.Task | None = None
        self._written = False  # something was written since the last checkpoint
        self._checkpointed: dict[TopicPartition, int] = {}
        self._checkpoint_no = 0  # numbers checkpoints across restarts (kept in the snapshot)
        self._restored_no: int | None = None  # the --state snapshot's checkpoint
        self._settled = False  # --out parts and --record files a crash left are settled at the first assignment
        self._unverified: dict[TopicPartition, tuple[int, str, int]] = {}  # sought, log end not yet seen
        self._last_commit = 0.0
        self._dlq_failures = 0  # dead letters the broker did not take (logged; never fatal)
        # the input rows sinks get are those the engine consumes: the strategy's keys
        keys = self.engine.keys
        self._keys = None if keys is None else pa.array(keys, pa.string())
        self.sinks: list[Sink] = []
        for sink in self._sinks_of(config):
            self.add_sink(sink)

    def add_sink(self, sink: Sink) -> None:
        """Write to ``sink`` too: the outputs and/or the input rows the engine consumed, as
        its ``outputs``/``inputs`` say (see :class:`qsframework.io.Sink`)."""
        self.sinks.append(sink)

    def _sinks_of(self, config: ProcessConfig) -> list[Sink]:
        """The sinks the options ask for: built-in names, or ``file.py:Class`` / ``module:Class``."""
        sinks: list[Sink] = []
        if config.out is not None:
            from .sinks.parts import PartsSink

            kinds = {b.kind.name: (name, b.kind.schema) for name, b in self.engine.ctx.outputs.buffers().items()}
            sinks.append(PartsSink(config.out, kinds))
        if config.record is not None:
            from .sinks.recording import RecordingSink

            sinks.append(RecordingSink(RecordingWriter(config.record), staged=True))
        for name in config.sinks:
            if name == "timescale":
                from .sinks.postgres import PostgresSink

                if not config.pg_dsn:
                    raise ValueError("the timescale sink needs a database: set QSF_PG_DSN")
                sinks.append(PostgresSink(config.pg_dsn))
            elif name == "telegram":
                from .sinks.telegram import MemoryDedupStore, PostgresDedupStore, TelegramConfig, TelegramSink

                store = PostgresDedupStore(config.pg_dsn) if config.pg_dsn else MemoryDedupStore()
                sinks.append(TelegramSink(TelegramConfig.from_env(), store=store))
            elif name == "kafka":
                from .sinks.kafka import KafkaSink

                sinks.append(KafkaSink(config.bootstrap, ["signal", "alert"], prefix=config.prefix))
            else:
                cls = load_sink(name)
                try:
                    sinks.append(cls())
                except Exception as exc:
                    raise UserError(f"--sink {name}: {type(exc).__name__}: {exc}") from None
        return sinks

    def stop(self) -> None:
        self._stop.set()

    def _seal_outputs(self) -> None:
        """Between chunks of a long timer catch-up: pack the outputs so far into Arrow
        chunks (a few times smaller than rows of Python objects); they reach the sinks when
        the batch is done, since the sinks are written from the event loop."""
        for buf in self.engine.ctx.outputs.buffers().values():
            buf.seal()

    def end_of_input(self) -> None:
        """Everything there is to read has been consumed: at the next empty poll, release the
        rows held behind the watermark, commit, and stop (as ``exit_when_idle_s`` does)."""
        self._input_ended = True

    def restart_latency_window(self) -> None:
        """Forget the latency samples so far (e.g. a benchmark's warm-up)."""
        self._latency.clear()

    async def run(self) -> ProcessStats:
        """Process until the input is idle (``exit_when_idle_s``) or :meth:`stop`; a stop lets
        work in progress finish for ``stop_grace_s`` and then cuts it short, uncommitted."""
        t0 = time.monotonic()
        main = asyncio.create_task(self._main(t0))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done():
                await asyncio.wait({main}, timeout=self.cfg.stop_grace_s)
                if not main.done():
                    self.stats.interrupted = True
                    log.info("stop requested while a sink was retrying: what is not durable is not "
                             "committed and will be read again on restart")
                    main.cancel()
            try:
                await main
            except asyncio.CancelledError:
                if not self.stats.interrupted:
                    raise
        finally:
            stopping.cancel()
            if not main.done():  # run() itself was cancelled
                main.cancel()
                await asyncio.wait({main})
            self.stats.wall_s = time.monotonic() - t0
            self.stats.latency_ms_p50 = self._latency.percentile(50)
            self.stats.latency_ms_p99 = self._latency.percentile(99)
            await self._close()
        return self.stats

    async def _main(self, t0: float) -> None:
        cfg = self.cfg
        await ensure_topics(cfg.bootstrap, [*self.topics, dlq_topic(cfg.prefix),
                                            topic_of("signal", cfg.prefix), topic_of("alert", cfg.prefix)])
        self._producer = producer = await start_producer(cfg.bootstrap, ProducerConfig())
        self._consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap, group_id=cfg.group,
            # never reset silently: every assigned partition is sought explicitly (_seek_assigned)
            # and a position the log no longer has is an error or the explicit --on-reset policy
            enable_auto_commit=False, auto_offset_reset="none",
            # big fetches (one partition per topic carries everything) and short waits
            max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20, fetch_max_wait_ms=50,
        )
        self._resume = self._load_state()
        consumer.subscribe(list(self.topics), listener=_OnAssign(self))
        await consumer.start()
        for sink in self.sinks:
            await sink.start()
        self._guarded(self.engine.prepare, "prepare")
        last_log = idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                batches = await self._poll(consumer)
                if not any(batches.values()):
                    idle = time.monotonic() - idle_since
                    if self._input_ended or (cfg.exit_when_idle_s is not None and idle >= cfg.exit_when_idle_s):
                        await self._release(producer, upto=None)  # end of input: everything goes
                        await self._commit(consumer, producer, final=True, drain=True)
                        break
                    await self._release_ready(consumer, producer)  # an idle partition may let rows go
                    await self._commit(consumer, producer)
                    continue
                idle_since = time.monotonic()
                await self._ingest(self._fresh(batches), producer)
                await self._release_ready(consumer, producer)
                await self._commit(consumer, producer)
                if time.monotonic() - last_log >= cfg.log_every_s:
                    last_log = time.monotonic()
                    self._log_progress(consumer, t0)
            else:
                await self._commit(consumer, producer, drain=True)
            self._guarded(self.engine.finish, "on_stop")
            self._flush_outputs()  # whatever on_stop emitted (covered by no input offsets)
            self._schedule_writes(producer, [])
            if self._writes is not None:
                await self._writes
            for sink in self.sinks:  # durable too (a Kafka sink: acknowledged)
                await sink.flush()
        except BaseException:
            await self._abandon()
            raise

    async def _abandon(self) -> None:
        """Failing or cut short: nothing more is committed; what the sinks hold that is not
        committed is dropped (a restart reads its input again)."""
        if self._writes is not None and not self._writes.done():
            self._writes.cancel()
            await asyncio.wait({self._writes})
        self._to_write = []
        for sink in self.sinks:
            try:
                await sink.discard()
            except Exception as exc:  # noqa: BLE001 - the run's own failure is what matters
                log.info("discarding %s: %s: %s", type(sink).__name__, type(exc).__name__, exc)

    async def _close(self) -> None:
        """Close clients; each step is bounded, since a broker or database may be gone."""
        steps = []
        if self._producer is not None:
            steps += [self._producer.flush(), self._consumer.stop() if self._consumer else None, self._producer.stop()]
        steps += [sink.close() for sink in self.sinks]
        deadline = time.monotonic() + self.cfg.stop_grace_s
        for step in steps:
            if step is None:
                continue
            try:
                await asyncio.wait_for(step, timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # closing must not hide why the run ended
                log.info("closing: %s: %s", type(exc).__name__, exc)

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
                    await self._dead_letter(producer, dead_letter(
                        reason="no kind header" if kind is None else f"unknown kind {kind[:40]!r}",
                        value=m.value, key=m.key, topic=tp.topic, partition=tp.partition, offset=m.offset))
            for kind, group in groups.items():  # other kinds on the topic are for other strategies
                await self._ingest_kind(tp, part, kind, group, producer)

    async def _ingest_kind(self, tp: TopicPartition, part: int, kind: str, msgs: list, producer) -> None:
        table, rejected = decode(get_kind(kind), [m.value for m in msgs], bounds=self.cfg.bounds,
                                 now_ns=time.time_ns())
        for r in rejected:
            m = msgs[r.index]
            await self._dead_letter(producer, dead_letter(reason=r.reason, value=m.value, key=m.key, topic=tp.topic,
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
            await self._dead_letter(producer, dead_letter(
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

    async def _release_ready(self, consumer: AIOKafkaConsumer, producer) -> None:
        """Release up to the watermark, and further if more than ``max_held`` rows wait."""
        upto = await self._watermark(consumer)
        excess = self._pending.rows - self.cfg.max_held
        if excess > 0:
            cut, early = self._pending.cutoff(excess, upto)
            if upto is None or cut > upto:
                self.stats.released_early += early
                log.info("%d rows wait behind the watermark (max %d): releasing %d of them early",
                         self._pending.rows, self.cfg.max_held, early)
                upto = cut
        if upto is not None:
            await self._release(producer, upto=upto)

    async def _release(self, producer, *, upto: int | None) -> None:
        """Hand every pending row before ``upto`` to the engine, in total order."""
        if upto is not None and self._released_upto is not None and upto <= self._released_upto:
            return
        tables = {k: t for k in self.kinds if (t := self._pending.take(k, upto)) is not None}
        if tables:
            if len(tables) == 1:
                ((kind, table),) = tables.items()
                merged = [(kind, b) for b in table.to_batches()]
            else:
                from .order import merge_kinds

                merged = list(merge_kinds({k: t.to_batches() for k, t in tables.items()}))
            if self.stats.first_processed_at is None:
                self.stats.first_processed_at = time.monotonic()
            takes_inputs = any(sink.inputs for sink in self.sinks)
            for kind, batch in merged:
                self._process(kind, batch)
                self.stats.processed += batch.num_rows
                if takes_inputs:
                    self._to_write.append((kind, self._consumed(batch), False))
        if upto is not None:
            self._released_upto = upto
        self._flush_outputs()
        if tables:
            self._schedule_writes(producer, [t.column("ts_recv").to_numpy()[-1000:] for t in tables.values()])

    def _consumed(self, batch: pa.RecordBatch) -> pa.Table:
        """The rows of ``batch`` the engine consumes (the strategy's keys), for the sinks."""
        table = pa.Table.from_batches([batch])
        if self._keys is None:
            return table
        return table.filter(pc.is_in(table.column("key"), value_set=self._keys))

    def _process(self, kind: str, batch: pa.RecordBatch) -> None:
        """One batch through the engine; the strategy's exception becomes :class:`StrategyFailed`."""
        ts = batch.column("ts_event")
        first, last = format_time(ts[0].as_py()), format_time(ts[batch.num_rows - 1].as_py())
        self._guarded(lambda: self.engine.process(kind, batch),
                      f"the {kind} event at {first}" if first == last else f"{kind} events {first} .. {last}")

    def _guarded(self, call: Callable[[], object], during: str) -> None:
        """``call`` into the strategy; what it raises becomes one :class:`StrategyFailed` line."""
        try:
            call()
        except UserError as exc:  # the engine's own account of a strategy error
            raise StrategyFailed(str(exc)) from exc
        except Exception as exc:
            raise StrategyFailed(
                f"strategy {self.strategy_name} raised {type(exc).__name__}: {exc} while handling {during}"
            ) from exc

    def _schedule_writes(self, producer, recv: list[np.ndarray]) -> None:
        """This poll's rows to the sinks, in a task chained after the previous poll's."""
        items, self._to_write = self._to_write, []
        if items:
            self._written = True
            self._writes = asyncio.create_task(self._write(self._writes, items, recv, producer))
        elif recv:
            self._durable_now(recv)

    async def _write(self, previous: asyncio.Task | None, items: list[tuple[str, pa.Table, bool]],
                     recv: list[np.ndarray], producer) -> None:
        """Write one poll's rows to every sink that takes them, after the previous poll's
        (in order); rows a sink refuses for their data go to the DLQ with its reason."""
        if previous is not None:
            await previous
        for kind, table, is_output in items:
            for sink in self.sinks:
                if sink.outputs if is_output else sink.inputs:
                    refused = await sink.write(kind, table)
                    if refused:
                        await self._dead_letter_rows(producer, kind, table, refused)
        if recv:
            self._durable_now(recv)

    async def _dead_letter_rows(self, producer, kind: str, table: pa.Table, refused: list[Refused]) -> None:
        """Dead-letter rows of ``table`` by index and reason; input rows keep their origin."""
        parts = {v: tp for tp, v in self._part_ids.items()}
        for r in refused:
            row = table.slice(r.index, 1).to_pylist()[0]
            origin = parts.get(row.pop("_part", -1))
            offset = row.pop("_offset", None)
            await self._dead_letter(producer, dead_letter(
                reason=r.reason, value=orjson.dumps(row), key=str(row["key"]).encode(errors="replace"),
                topic=origin.topic if origin else None, partition=origin.partition if origin else None,
                offset=offset, kind=kind))

    def _durable_now(self, recv: list[np.ndarray]) -> None:
        """Receive-to-durable latency of rows the sinks hold now."""
        self.stats.last_processed_at = time.monotonic()
        now_ns = time.time_ns()
        for ts_recv in recv:
            lat_ms = (now_ns - ts_recv) / 1e6
            # meaningful for live data only (not replays of old recordings): keep the
            # samples received within the last hour
            self._latency.add(lat_ms[(lat_ms >= 0) & (lat_ms < 3.6e6)])

    def _flush_outputs(self) -> None:
        """The outputs emitted so far join this poll's writes."""
        for name, buf in self.engine.ctx.outputs.buffers().items():
            if not len(buf):
                continue
            table = buf.drain()
            self._to_write.append((buf.kind.name, table, True))
            if name == "signals":
                self.stats.signals += table.num_rows
            else:
                self.stats.alerts += table.num_rows

    # -- commits ---------------------------------------------------------------------------
    async def _commit(self, consumer, producer, *, final: bool = False, drain: bool = False) -> None:
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
        if self._writes is not None:
            await self._writes
        await producer.flush()  # dead letters
        pending = {} if final else self._pending.first_offsets()
        offsets = {tp: pending.get(self._part_ids[tp], nxt) for tp, nxt in self._next_offset.items()}
        if offsets == self._checkpointed and not self._written:
            return
        self._checkpointed, self._checkpoint_no, self._written = offsets, self._checkpoint_no + 1, False
        checkpoint = Checkpoint(number=self._checkpoint_no,
                                offsets={(tp.topic, tp.partition): off for tp, off in offsets.items()})
        blob = self._state_blob(offsets) if offsets else None
        for sink in self.sinks:
            await sink.flush(checkpoint)
        if offsets:
            self._save_state(blob)  # the snapshot first: it is what a restart trusts
            await self._commit_offsets(consumer, offsets)
            self.stats.commits += 1
        for sink in self.sinks:  # --out parts and --record files: final only now
            await sink.commit(checkpoint)

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

    # -- state for exact restarts ---------------------------------------------------------
    def _state_file(self) -> Path | None:
        return None if self.cfg.state is None else self.cfg.state / "processor.state"

    def _state_blob(self, offsets: dict[TopicPartition, int]) -> bytes | None:
        """The engine's state as of ``offsets`` (taken now, saved once they are durable)."""
        if self._state_file() is None:
            return None
        return pickle.dumps({
            "offsets": {(tp.topic, tp.partition): off for tp, off in offsets.items()},
            "part_max": {(tp.topic, tp.partition): v for tp, v in self._part_max.items()},
            "released_upto": self._released_upto,
            # consumed up to here: rows below these offsets read again after a restart were
            # either processed or dead-lettered already when their event time is before
            # released_upto (those at or after it were waiting, and wait again)
            "consumed": {(tp.topic, tp.partition): max(nxt, self._handled_below.get(tp, nxt))
                         for tp, nxt in self._next_offset.items()},
            "checkpoint": self._checkpoint_no,
            "engine": self.engine.snapshot(),
        }, protocol=pickle.HIGHEST_PROTOCOL)

    def _save_state(self, blob: bytes | None) -> None:
        path = self._state_file()
        if path is None or blob is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _load_state(self) -> dict[TopicPartition, int]:
        path = self._state_file()
        if path is None or not path.exists():
            return {}
        state = pickle.loads(path.read_bytes())
        self.engine.restore(state["engine"])
        self._released_upto = state["released_upto"]
        self._part_max = {TopicPartition(*k): v for k, v in state["part_max"].items()}
        self._handled_below = {TopicPartition(*k): v for k, v in state.get("consumed", {}).items()}
        self._checkpoint_no = self._restored_no = state.get("checkpoint", 0)
        log.info("resuming from %s", path)
        return {TopicPartition(*k): v for k, v in state["offsets"].items()}

    async def _dead_letter(self, producer, letter: DeadLetter) -> None:
        """Send one record to the DLQ. A bad message must never end the run, whatever the
        DLQ does: a record the producer or broker refuses is logged and counted."""
        try:
            sent = await producer.send(dlq_topic(self.cfg.prefix), key=letter.key, value=letter.value,
                                       headers=letter.headers)
        except KafkaError as exc:
            self._dead_letter_failed(letter, exc)
            return
        sent.add_done_callback(lambda f: self._dead_letter_done(letter, f))

    def _dead_letter_done(self, letter: DeadLetter, sent: asyncio.Future) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            self._dead_letter_failed(letter, sent.exception())  # type: ignore[arg-type]

    def _dead_letter_failed(self, letter: DeadLetter, exc: BaseException) -> None:
        self._dlq_failures += 1
        where = {k: v.decode(errors="replace") for k, v in letter.headers}
        log.error("could not dead-letter a message (%s: %s) from %s offset %s: %s", type(exc).__name__, exc,
                  where.get("topic", "?"), where.get("offset", "?"), where.get("reason", ""))

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

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        try:
            await self.processor._seek_assigned(assigned)
        except Exception as exc:
            self.processor._fatal = exc


def install_signal_handlers(processor: Processor) -> None:
    stop_on_signals(processor.stop)
