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
latest state snapshot (by default in the group's compacted topic ``PREFIX.state.<group>``,
see :mod:`.state_topic`), else from the committed offsets; a snapshot or committed offset the
log no longer has (a reset log) stops the run unless ``on_reset="earliest"``. With ``--sink
kafka`` on a broker with transactions, each checkpoint is one transaction (:mod:`.delivery`).
A stop request ends retries within ``stop_grace_s``: what is durable is committed, nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ..durations import format_time
from ..engine import Engine
from ..errors import UserError, describe
from ..io import Sink
from ..kafka import ProducerConfig, dlq_topic, ensure_topics, start_producer, topic_of
from ..latency import LatencyWindow
from ..order import merge_windows
from ..sinks.kafka import KafkaSink
from ..shutdown import stop_on_signals
from ..strategy import Strategy
from ..window import Window
from .checkpoints import Checkpoints
from .config import ProcessConfig, ProcessStats, StrategyFailed
from .dead_letters import DeadLetters
from .delivery import Delivery, delivery_mode, transactional_id
from .health import health_sink
from .kafka_source import KafkaSource
from .pending import Pending
from .report import write_report
from .sink_options import OUTPUT_KINDS, sinks_of
from .state_topic import TopicState
from .writes import SinkWrites

if TYPE_CHECKING:
    from .scale_out import ScaledOut

log = logging.getLogger("qsf.process")
_COUNTED = ("signals", "alerts", "orders", "fills")  # output buffers counted in ProcessStats


class Processor:
    """One strategy instance on Kafka topics: a :class:`KafkaSource` in, the engine, a list
    of sinks out, and the commit sequence between them (:class:`Checkpoints`)."""

    def __init__(self, strategy_cls: type[Strategy], config: ProcessConfig, *,
                 announce: Callable[[str], None] | None = None) -> None:
        self.cfg = config
        self.announce = announce or log.info  # the start-up line: state store and delivery mode
        self.strategy_name = strategy_cls.__name__
        self.engine = Engine(strategy_cls, overrides=config.overrides, path=config.path,  # type: ignore[arg-type]
                             execution=config.execution)
        self.engine.on_outputs = self._seal_outputs  # a long timer catch-up packs its outputs as it goes
        self.kinds = list(self.engine.kinds)
        self.topics: dict[str, tuple[str, ...]] = {}  # topic -> the subscribed kinds it carries
        for k in self.kinds:
            topic = topic_of(k, config.prefix)
            self.topics[topic] = (*self.topics.get(topic, ()), k)
        self.stats = ProcessStats()
        self._stop = asyncio.Event()
        self._handover = False  # stopping to hand the partitions over: the strategy does not stop
        self._input_ended = False
        self._pending = Pending()  # consumed, waiting behind the watermark
        self._producer = None
        self._latency = LatencyWindow()
        self.sinks: list[Sink] = []
        self.source = KafkaSource(config, self.topics, stats=self.stats,
                                  on_first_assignment=lambda positions: self._checkpoints.settle(positions))
        self.source.announce = self.announce  # standby/active lines (scale = "single")
        self.source.on_takeover = lambda: self._checkpoints.load()  # a standby resumes from the latest snapshot
        # the sinks' writes run while the next poll is fetched and processed; a checkpoint is a
        # barrier among them: the sinks are flushed once the rows before it are written, and
        # only then is it committed (see qsframework.io), while the processor goes on
        self._writes = SinkWrites(self.sinks, source=self.source, stats=self.stats, latency=self._latency)
        self._checkpoints = Checkpoints(config, source=self.source, sinks=self.sinks, engine=self.engine,
                                        writes=self._writes, stats=self.stats)
        # the input rows sinks get are those the engine consumes: the strategy's keys
        keys = self.engine.keys
        self._keys = None if keys is None else pa.array(keys, pa.string())
        for sink in sinks_of(config, self.engine):
            self.add_sink(sink)
        health = health_sink(config, strategy=self.strategy_name, stats=self.stats, latency=self._latency,
                             source=self.source)
        if health is not None:  # pipeline_health rows: started, committed and closed as a sink
            self.add_sink(health)

    def add_sink(self, sink: Sink) -> None:
        """Write to ``sink`` too: the outputs and/or the input rows the engine consumed, as
        its ``outputs``/``inputs`` say (see :class:`qsframework.io.Sink`)."""
        self.sinks.append(sink)

    def stop(self) -> None:
        self._stop.set()

    def hand_over(self) -> None:
        """Stop at the next poll, committing what was processed, without ending the strategy
        (no ``on_stop``): another engine resumes from this one's snapshot (a rebalance)."""
        self._handover = True
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

    @property
    def latency(self) -> LatencyWindow:
        """Receive-to-durable latency (ms) of the events made durable, in that order."""
        return self._latency

    def restart_latency_window(self, *, samples: int | None = None) -> None:
        """Forget the latency samples so far (e.g. a benchmark's warm-up); ``samples``: how
        many to hold from now on (a measurement's every row, not only the most recent)."""
        self._latency.clear(size=samples)

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
        if self.cfg.out is not None:  # the run's metrics, over every published part (restarts included)
            self.stats.metrics = write_report(self.cfg.out, strategy=self.strategy_name, execution=self.cfg.execution,
                                              stats=self.stats)
        return self.stats

    async def _main(self, t0: float) -> None:
        cfg = self.cfg
        await ensure_topics(cfg.bootstrap, [*self.topics, dlq_topic(cfg.prefix),
                                            *(topic_of(kind, cfg.prefix) for kind in OUTPUT_KINDS)])
        producer = await self._start_delivery()
        await self._checkpoints.load()
        # before joining the group: compiling a kernel holds the event loop, and with it the
        # consumer's heartbeats (a member silent for its session timeout is evicted)
        self._guarded(self.engine.prepare, "prepare")
        source, commit = self.source, self._checkpoints.commit
        await source.start(DeadLetters(producer, cfg.prefix))
        for sink in self.sinks:
            await sink.start()
        delivery = self._checkpoints.delivery
        assert delivery is not None
        await delivery.begin()
        _freeze_start_up_heap()
        last_log = idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                batches = await source.poll()
                if not source.assigned:  # still joining the group: not idle, waiting
                    idle_since = time.monotonic()
                if batches is None:
                    idle = time.monotonic() - idle_since
                    if cfg.exit_when_idle_s is not None and idle >= cfg.exit_when_idle_s and not await source.at_log_end():
                        idle_since, idle = time.monotonic(), 0.0  # the broker away, or more to read: not idle
                    if self._input_ended or (cfg.exit_when_idle_s is not None and idle >= cfg.exit_when_idle_s):
                        self._release(upto=None)  # end of input: everything goes
                        await commit(self._pending, producer, final=True, drain=True)
                        break
                    await self._release_ready()  # an idle partition may let rows go
                    await commit(self._pending, producer)
                    continue
                idle_since = time.monotonic()
                for kind, table in batches:
                    self._pending.add(kind, table)
                await self._release_ready()
                await commit(self._pending, producer)
                if time.monotonic() - last_log >= cfg.log_every_s:
                    last_log = time.monotonic()
                    self._log_progress(source.lag(), t0)
            else:
                await commit(self._pending, producer, drain=True)
                if self._handover:
                    return
            self._guarded(self.engine.finish, "on_stop")
            self._flush_outputs()  # whatever on_stop emitted (covered by no input offsets)
            self._writes.schedule([])
            await self._writes.wait()
            for sink in self.sinks:  # durable too (a Kafka sink: acknowledged)
                await sink.flush()
            await delivery.commit({})  # exactly-once: on_stop's outputs are a transaction too
        except BaseException:
            await self._abandon()
            raise

    async def _start_delivery(self) -> AIOKafkaProducer:
        """The producer (transactional for exactly-once), the state store on it, and the
        start-up line saying where state is kept and which guarantee is in force."""
        cfg, checkpoints = self.cfg, self._checkpoints
        mode = await delivery_mode(cfg)
        store = checkpoints.store
        tx_id = transactional_id(cfg, cfg.state_key) if mode.mode == "exactly-once" else None
        self._producer = producer = await start_producer(cfg.bootstrap, ProducerConfig(), transactional_id=tx_id)
        checkpoints.delivery = Delivery(mode, producer=producer, source=self.source, group=cfg.group)
        if isinstance(store, TopicState):
            await store.ensure()
            store.producer, store.transactional = producer, tx_id is not None
        if tx_id is not None:
            for sink in self.sinks:
                if isinstance(sink, KafkaSink):
                    sink.share(producer)
        self.stats.delivery, self.stats.state_store = mode.describe(), store.label
        self.announce(f"{self.strategy_name}: group {cfg.group}, state: {store.label}, delivery: {mode.describe()}, "
                      f"checkpoint every {mode.commit_interval_s(cfg.commit_interval_s):g} s")
        return producer

    async def _abandon(self) -> None:
        """Failing or cut short: nothing more is committed; what the sinks hold that is not
        committed is dropped (a restart reads its input again)."""
        await self._writes.cancel()
        await self._checkpoints.cancel()
        delivery = self._checkpoints.delivery
        if delivery is not None:
            try:
                await delivery.abort()
            except Exception as exc:  # noqa: BLE001 - the run's own failure is what matters
                log.info("aborting the transaction: %s: %s", type(exc).__name__, exc)
        for sink in self.sinks:
            try:
                await sink.discard()
            except Exception as exc:  # noqa: BLE001 - the run's own failure is what matters
                log.info("discarding %s: %s: %s", type(sink).__name__, type(exc).__name__, exc)

    async def _close(self) -> None:
        """Close clients; each step is bounded, since a broker or database may be gone."""
        steps = []
        if self._producer is not None:
            steps += [self._producer.flush(), self.source.close(), self._producer.stop()]
        steps += [sink.close() for sink in self.sinks]
        deadline = time.monotonic() + self.cfg.stop_grace_s
        for step in steps:
            try:
                await asyncio.wait_for(step, timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # closing must not hide why the run ended
                log.info("closing: %s: %s", type(exc).__name__, exc)

    async def _release_ready(self) -> None:
        """Release up to the watermark, and further if more than ``max_held`` rows wait."""
        upto = await self.source.watermark()
        excess = self._pending.rows - self.cfg.max_held
        if excess > 0:
            cut, early = self._pending.cutoff(excess, upto)
            if upto is None or cut > upto:
                self.stats.released_early += early
                log.info("%d rows wait behind the watermark (max %d): releasing %d of them early",
                         self._pending.rows, self.cfg.max_held, early)
                upto = cut
        if upto is not None:
            self._release(upto=upto)

    def _release(self, *, upto: int | None) -> None:
        """Hand every pending row before ``upto`` to the engine, in total order."""
        released = self.source.released_upto
        if upto is not None and released is not None and upto <= released:
            return
        tables = {k: t for k in self.kinds if (t := self._pending.take(k, upto)) is not None}
        if tables:
            if self.stats.first_processed_at is None:
                self.stats.first_processed_at = time.monotonic()
            takes_inputs = any(sink.inputs for sink in self.sinks)
            for window in merge_windows({k: t.to_batches() for k, t in tables.items()}):
                self._process(window)
                self.stats.processed += window.num_rows
                if takes_inputs:
                    for kind, batch in zip(window.kinds, window.batches):
                        self._writes.add(kind, self._consumed(batch), output=False)
        if upto is not None:
            self.source.released_upto = upto
        self._flush_outputs()
        if tables:
            self._writes.schedule([t.column("ts_recv").to_numpy() for t in tables.values()])

    def _consumed(self, batch: pa.RecordBatch) -> pa.Table:
        """The rows of ``batch`` the engine consumes (the strategy's keys), for the sinks."""
        table = pa.Table.from_batches([batch])
        if self._keys is None:
            return table
        return table.filter(pc.is_in(table.column("key"), value_set=self._keys))

    def _process(self, window: Window) -> None:
        """One window of events through the engine (:meth:`Engine.process_window`); the
        strategy's exception becomes :class:`StrategyFailed`."""
        first, last = format_time(window.first_ts()), format_time(window.last_ts())
        what = "/".join(window.kinds)
        self._guarded(lambda: self.engine.process_window(window),
                      f"the {what} event at {first}" if first == last else f"{what} events {first} .. {last}")

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

    def _flush_outputs(self) -> None:
        """The outputs emitted so far join this poll's writes."""
        outputs = self.engine.ctx.outputs
        for name, buf in (outputs.buffers() | outputs.execution()).items():  # the latter: rows once it ordered
            if not len(buf):
                continue
            table = buf.drain()
            self._writes.add(buf.kind.name, table, output=True)
            if name in _COUNTED:
                setattr(self.stats, name, getattr(self.stats, name) + table.num_rows)

    def _log_progress(self, lag: int, t0: float) -> None:
        rate = self.stats.processed / max(time.monotonic() - t0, 1e-9)
        p99 = self._latency.percentile(99)
        log.info("processed %d events (%.0f/s), lag %d, signals %d, alerts %d%s%s",
                 self.stats.processed, rate, lag, self.stats.signals,
                 self.stats.alerts, f", fills {self.stats.fills}" if self.stats.orders else "",
                 "" if p99 is None else f", p99 latency {p99:.1f} ms")



@functools.cache
def _freeze_start_up_heap() -> None:
    """What is alive at the first processor's start (modules, clients) lives as long as the
    process: kept out of the cyclic collector's passes, whose full pass otherwise holds the loop
    ~80 ms. Once a process: a scaled-out member starts a processor per partition it is given."""
    gc.collect()
    gc.freeze()


def _quiet_kafka_leftovers(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """aiokafka shields its commit requests: one still in flight when a stop cuts the commit
    retry short fails later with nobody to hear it. That is expected (the commit is retried
    on restart), so it is one log line, not asyncio's traceback on stderr."""
    exc = context.get("exception")
    if isinstance(exc, KafkaError):
        log.info("%s: %s", context.get("message", "after the stop"), describe(exc))
        return
    loop.default_exception_handler(context)


def install_signal_handlers(processor: Processor | ScaledOut) -> None:
    stop_on_signals(processor.stop)

