"""``qsf process``: the live engine. Kafka in, the same engine and strategy as the backtest,
outputs to sinks; offsets are committed only once the sinks hold the batch.

Events of all input topics are merged into the engine's total order behind a watermark:
the smallest of the partitions' latest event times, minus the allowed lateness. An event
that arrives after events later than it were processed is late: it is counted and sent to
the DLQ with the reason, never silently reordered. ``--record`` keeps exactly what the
engine consumed, so a backtest of it reproduces the live outputs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from .backtest import ParquetOutput
from .engine import Engine
from .events import KINDS, get_kind
from .kafka import (
    DEFAULT_PREFIX,
    KIND_HEADER,
    DeadLetter,
    ProducerConfig,
    dead_letter,
    dlq_topic,
    ensure_topics,
    kind_headers,
    shares_topic,
    start_producer,
    topic_of,
)
from .order import sort_table
from .recording import RecordingWriter
from .shutdown import stop_on_signals
from .sinks import Refused
from .strategy import Strategy
from .validity import DEFAULT_BOUNDS, TimeBounds
from .wire import decode, encode

log = logging.getLogger("qsf.process")


@dataclass(frozen=True, kw_only=True)
class ProcessConfig:
    bootstrap: str
    group: str
    prefix: str = DEFAULT_PREFIX
    lateness_ns: int = 0
    exit_when_idle_s: float | None = None
    out: Path | None = None
    record: Path | None = None
    sinks: tuple[str, ...] = ()
    pg_dsn: str | None = None
    state: Path | None = None  # snapshot directory: a restart resumes exactly from it
    bounds: TimeBounds = DEFAULT_BOUNDS  # events outside them go to the DLQ, not the engine
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
    signals: int = 0
    alerts: int = 0
    commits: int = 0
    wall_s: float = 0.0
    first_processed_at: float | None = None  # time.monotonic() of the first and last batch
    last_processed_at: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None


class _Pending:
    """Consumed rows not yet released to the engine; each keeps its partition and offset
    (columns ``_part``, ``_offset``) so commits never pass an unprocessed row."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}

    def add(self, kind: str, table: pa.Table) -> None:
        if table.num_rows:
            self.tables.setdefault(kind, []).append(table)

    def take(self, kind: str, upto: int | None) -> pa.Table | None:
        """Remove and return (sorted) the rows with ts_event < ``upto`` (all if None)."""
        parts = self.tables.pop(kind, [])
        if not parts:
            return None
        table = sort_table(pa.concat_tables(parts))
        if upto is None:
            return table
        n = int(np.searchsorted(table.column("ts_event").to_numpy(), upto, side="left"))
        if n < table.num_rows:
            self.tables[kind] = [table.slice(n)]
        return table.slice(0, n) if n else None

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
        self.engine = Engine(strategy_cls, overrides=config.overrides, path=config.path)  # type: ignore[arg-type]
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
        self._latencies: list[float] = []
        # PostgreSQL writes run while the next poll is fetched and processed: each poll's
        # rows are written by a task chained after the previous poll's, and a poll's
        # offsets (and state snapshot) are committed once its task is done
        self._pg_items: list[tuple[str, pa.Table]] = []
        self._durable: asyncio.Task | None = None
        self._deferred: tuple[asyncio.Task | None, dict, bytes | None] | None = None
        self._outputs: dict[str, ParquetOutput] = {}
        self._recorder = RecordingWriter(config.record) if config.record else None
        self._pg = None
        self._dlq_failures = 0  # dead letters the broker did not take (logged; never fatal)
        if "timescale" in config.sinks:
            from .sinks.postgres import PostgresSink

            if not config.pg_dsn:
                raise ValueError("the timescale sink needs a database: set QSF_PG_DSN")
            self._pg = PostgresSink(config.pg_dsn)
        # PostgreSQL gets the input rows the engine consumes: those of the strategy's keys
        keys = self.engine.keys
        self._pg_keys = None if keys is None else pa.array(keys, pa.string())
        self._telegram = None
        if "telegram" in config.sinks:
            from .sinks.telegram import MemoryDedupStore, PostgresDedupStore, TelegramConfig, TelegramSink

            store = PostgresDedupStore(config.pg_dsn) if config.pg_dsn else MemoryDedupStore()
            self._telegram = TelegramSink(TelegramConfig.from_env(), store=store)
        if config.out is not None:
            config.out.mkdir(parents=True, exist_ok=True)
            for name, buf in self.engine.ctx.outputs.buffers().items():
                self._outputs[name] = ParquetOutput(config.out / f"{name}.parquet", buf.kind.schema)

    def stop(self) -> None:
        self._stop.set()

    def end_of_input(self) -> None:
        """Everything there is to read has been consumed: at the next empty poll, release the
        rows held behind the watermark, commit, and stop (as ``exit_when_idle_s`` does)."""
        self._input_ended = True

    def restart_latency_window(self) -> None:
        """Forget the latency samples so far (e.g. a benchmark's warm-up)."""
        self._latencies.clear()

    async def run(self) -> ProcessStats:
        cfg = self.cfg
        await ensure_topics(cfg.bootstrap, [*self.topics, dlq_topic(cfg.prefix),
                                            topic_of("signal", cfg.prefix), topic_of("alert", cfg.prefix)])
        consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap, group_id=cfg.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            # big fetches (one partition per topic carries everything) and short waits
            max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20, fetch_max_wait_ms=50,
        )
        resume = self._load_state()
        consumer.subscribe(list(self.topics), listener=_SeekTo(consumer, resume))
        producer = await start_producer(cfg.bootstrap, ProducerConfig())
        await consumer.start()
        if self._pg is not None:
            await self._pg.start()
        if self._telegram is not None:
            await self._telegram.start()
        self.engine.prepare()
        t0 = last_log = time.monotonic()
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=cfg.poll_ms, max_records=cfg.max_records)
                if not any(batches.values()):
                    idle = time.monotonic() - idle_since
                    if self._input_ended or (cfg.exit_when_idle_s is not None and idle >= cfg.exit_when_idle_s):
                        await self._release(producer, upto=None)  # end of input: everything goes
                        await self._commit(consumer, producer, final=True, drain=True)
                        break
                    await self._commit_deferred(consumer)  # quiet: catch up on durability
                    continue
                idle_since = time.monotonic()
                await self._ingest(batches, producer)
                await self._release(producer, upto=self._watermark())
                await self._commit(consumer, producer)
                if time.monotonic() - last_log >= cfg.log_every_s:
                    last_log = time.monotonic()
                    self._log_progress(consumer, t0)
            else:
                await self._commit(consumer, producer, drain=True)
        finally:
            if self._durable is not None and not self._durable.done():
                self._durable.cancel()  # failing: nothing more is committed
            self.stats.wall_s = time.monotonic() - t0
            if self._latencies:
                lat = np.array(self._latencies)
                self.stats.latency_ms_p50 = float(np.percentile(lat, 50))
                self.stats.latency_ms_p99 = float(np.percentile(lat, 99))
            self.engine.finish()
            await self._flush_outputs(producer)  # whatever on_stop emitted
            if self._pg_items and (self._durable is None or not self._durable.cancelled()):
                items, self._pg_items = self._pg_items, []
                await self._write_pg(self._durable, items, [], producer)
            await producer.flush()
            await consumer.stop()
            await producer.stop()
            self._close_files()
            if self._pg is not None:
                await self._pg.close()
            if self._telegram is not None:
                await self._telegram.close()
        return self.stats

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
        ts = table.column("ts_event").to_numpy()
        if self._released_upto is not None:
            late = ts < self._released_upto
            if late.any():
                by_offset = {m.offset: m for m in msgs}
                reason = f"late: event time before the watermark {self._released_upto}"
                for off in table.column("_offset").to_numpy()[late].tolist():
                    m = by_offset[off]
                    await self._dead_letter(producer, dead_letter(
                        reason=reason, value=m.value, key=m.key, topic=tp.topic, partition=tp.partition,
                        offset=off, kind=kind))
                self.stats.late += int(late.sum())
                table = table.filter(pa.array(~late))
                ts = ts[~late]
        if table.num_rows:
            self._part_max[tp] = max(self._part_max.get(tp, ts.max()), int(ts.max()))
            self._pending.add(kind, table)

    def _watermark(self) -> int | None:
        if not self._part_max:
            return None
        return min(self._part_max.values()) - self.cfg.lateness_ns

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
            for kind, batch in merged:
                self.engine.process(kind, batch)
                self.stats.processed += batch.num_rows
                if self._recorder is not None:
                    self._recorder.write(kind, batch)
                if self._pg is not None:
                    self._pg_items.append((kind, self._consumed(batch)))
        if upto is not None:
            self._released_upto = upto
        await self._flush_outputs(producer)
        recv = [t.column("ts_recv").to_numpy()[-1000:] for t in tables.values()]
        if self._pg is not None:
            if self._pg_items:
                items, self._pg_items = self._pg_items, []
                self._durable = asyncio.create_task(self._write_pg(self._durable, items, recv, producer))
        elif tables:
            self._durable_now(recv)

    def _consumed(self, batch: pa.RecordBatch) -> pa.Table:
        """The rows of ``batch`` the engine consumes (the strategy's keys), for PostgreSQL."""
        table = pa.Table.from_batches([batch])
        if self._pg_keys is None:
            return table
        return table.filter(pc.is_in(table.column("key"), value_set=self._pg_keys))

    async def _write_pg(self, previous: asyncio.Task | None, items: list[tuple[str, pa.Table]],
                        recv: list[np.ndarray], producer) -> None:
        """Write one poll's rows, after the previous poll's (one connection, in order); rows
        the database refuses for their data go to the DLQ with its error."""
        if previous is not None:
            await previous
        for kind, table in items:
            refused = await self._pg.write(kind, table)  # type: ignore[union-attr]
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
            self._latencies.extend(lat_ms[(lat_ms >= 0) & (lat_ms < 3.6e6)].tolist())

    async def _flush_outputs(self, producer) -> None:
        for name, buf in self.engine.ctx.outputs.buffers().items():
            if not len(buf):
                continue
            table = buf.drain()
            if name in self._outputs:
                self._outputs[name].write(table)
            if self._pg is not None:
                self._pg_items.append((buf.kind.name, table))
            if self._telegram is not None and name == "alerts":
                await self._telegram.write(table)
            if "kafka" in self.cfg.sinks:
                topic, headers = topic_of(buf.kind.name, self.cfg.prefix), kind_headers(buf.kind.name)
                for key, value in encode(table):
                    try:
                        await producer.send(topic, key=key, value=value, headers=headers)
                    except MessageSizeTooLargeError as exc:  # a strategy's huge text: that row only
                        await self._dead_letter(producer, dead_letter(
                            reason=f"output too large for {topic}: {exc}", value=value, key=key, kind=buf.kind.name))
            if name == "signals":
                self.stats.signals += table.num_rows
            else:
                self.stats.alerts += table.num_rows

    async def _commit(self, consumer, producer, *, final: bool = False, drain: bool = False) -> None:
        """Commit what the engine has fully consumed, once the sinks hold it.

        The PostgreSQL sink's writes for this poll may still be running: then this poll's
        offsets and state are kept and committed at the next call (or now with ``drain``),
        after the previous poll's, whose writes must be done by then.
        """
        await producer.flush()
        if self._recorder is not None:
            self._recorder.flush()
        pending = {} if final else self._pending.first_offsets()
        offsets = {}
        for tp, nxt in self._next_offset.items():
            offsets[tp] = pending.get(self._part_ids[tp], nxt)  # never past an unprocessed row
        blob = self._state_blob(offsets) if offsets else None
        previous, self._deferred = self._deferred, (self._durable, offsets, blob)
        if previous is not None:
            await self._commit_now(consumer, *previous)
        if drain or self._pg is None:
            await self._commit_deferred(consumer)

    async def _commit_deferred(self, consumer) -> None:
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            await self._commit_now(consumer, *deferred)

    async def _commit_now(self, consumer, durable: asyncio.Task | None, offsets: dict, blob: bytes | None) -> None:
        if durable is not None:
            await durable
        if offsets:
            self._save_state(blob)  # the snapshot first: it is what a restart trusts
            await consumer.commit(offsets)
            self.stats.commits += 1

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

    def _close_files(self) -> None:
        for out in self._outputs.values():
            out.close()
        if self._recorder is not None:
            self._recorder.close()

    def _log_progress(self, consumer, t0: float) -> None:
        lag = 0
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            pos = consumer.last_stable_offset(tp) if hw is None else hw
            lag += max(0, (hw or 0) - (pos or 0))
        rate = self.stats.processed / max(time.monotonic() - t0, 1e-9)
        p99 = float(np.percentile(self._latencies[-5000:], 99)) if self._latencies else float("nan")
        log.info("processed %d events (%.0f/s), lag %d, signals %d, alerts %d, p99 latency %.1f ms",
                 self.stats.processed, rate, lag, self.stats.signals, self.stats.alerts, p99)


class _SeekTo(ConsumerRebalanceListener):
    """On assignment, start from the snapshot's offsets (not the group's) when resuming."""

    def __init__(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        self.consumer, self.offsets = consumer, offsets

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        for tp in assigned:
            if tp in self.offsets:
                self.consumer.seek(tp, self.offsets[tp])


def install_signal_handlers(processor: Processor) -> None:
    stop_on_signals(processor.stop)
