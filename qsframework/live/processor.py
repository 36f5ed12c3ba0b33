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
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ..durations import format_time
from ..engine import Engine
from ..errors import UserError, describe
from ..io import Checkpoint, Refused, Sink
from ..kafka import ProducerConfig, dead_letter, dlq_topic, ensure_topics, start_producer, topic_of
from ..latency import LatencyWindow
from ..loader import load_sink
from ..recording import RecordingWriter
from ..shutdown import stop_on_signals
from ..strategy import Strategy
from .config import ProcessConfig, ProcessStats, StrategyFailed
from .dead_letters import DeadLetters
from .kafka_input import KafkaInput, _OnAssign
from .state import load_state, save_state

log = logging.getLogger("qsf.process")


class Processor(KafkaInput):
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
        self._init_input()
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
        self._last_commit = 0.0
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
            from ..sinks.parts import PartsSink

            kinds = {b.kind.name: (name, b.kind.schema) for name, b in self.engine.ctx.outputs.buffers().items()}
            sinks.append(PartsSink(config.out, kinds))
        if config.record is not None:
            from ..sinks.recording import RecordingSink

            sinks.append(RecordingSink(RecordingWriter(config.record), staged=True))
        for name in config.sinks:
            if name == "timescale":
                from ..sinks.postgres import PostgresSink

                if not config.pg_dsn:
                    raise ValueError("the timescale sink needs a database: set QSF_PG_DSN")
                sinks.append(PostgresSink(config.pg_dsn))
            elif name == "telegram":
                from ..sinks.telegram import (
                    MemoryDedupStore,
                    PostgresDedupStore,
                    TelegramConfig,
                    TelegramSink,
                )

                store = PostgresDedupStore(config.pg_dsn) if config.pg_dsn else MemoryDedupStore()
                sinks.append(TelegramSink(TelegramConfig.from_env(), store=store))
            elif name == "kafka":
                from ..sinks.kafka import KafkaSink

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
        asyncio.get_running_loop().set_exception_handler(_quiet_kafka_leftovers)
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
        # before joining the group: compiling a kernel holds the event loop, and with it the
        # consumer's heartbeats (a member silent for its session timeout is evicted)
        self._guarded(self.engine.prepare, "prepare")
        self._dlq = DeadLetters(producer, cfg.prefix)
        consumer.subscribe(list(self.topics), listener=_OnAssign(self))
        await consumer.start()
        for sink in self.sinks:
            await sink.start()
        last_log = idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                batches = await self._poll(consumer)
                if not consumer.assignment():  # still joining the group: not idle, waiting
                    idle_since = time.monotonic()
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
                from ..order import merge_kinds

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
            await self._dlq.send(dead_letter(
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
            if blob is not None:
                save_state(self._state_file(), blob)  # the snapshot first: it is what a restart trusts
            await self._commit_offsets(consumer, offsets)
            self.stats.commits += 1
        for sink in self.sinks:  # --out parts and --record files: final only now
            await sink.commit(checkpoint)

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

    def _load_state(self) -> dict[TopicPartition, int]:
        path = self._state_file()
        state = None if path is None else load_state(path)
        if state is None:
            return {}
        self.engine.restore(state["engine"])
        self._released_upto = state["released_upto"]
        self._part_max = {TopicPartition(*k): v for k, v in state["part_max"].items()}
        self._handled_below = {TopicPartition(*k): v for k, v in state.get("consumed", {}).items()}
        self._checkpoint_no = self._restored_no = state.get("checkpoint", 0)
        log.info("resuming from %s", path)
        return {TopicPartition(*k): v for k, v in state["offsets"].items()}


def _quiet_kafka_leftovers(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """aiokafka shields its commit requests: one still in flight when a stop cuts the commit
    retry short fails later with nobody to hear it. That is expected (the commit is retried
    on restart), so it is one log line, not asyncio's traceback on stderr."""
    exc = context.get("exception")
    if isinstance(exc, KafkaError):
        log.info("%s: %s", context.get("message", "after the stop"), describe(exc))
        return
    loop.default_exception_handler(context)


def install_signal_handlers(processor: Processor) -> None:
    stop_on_signals(processor.stop)

