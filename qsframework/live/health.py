"""``pipeline_health``: one row per interval of wall time from each ``qsf process`` writing to
PostgreSQL, so the live dashboard and SQL users read the same figures: events processed and
events/s over the interval, consumer lag, receive-to-durable latency p50/p99, dead letters by
reason class (a JSON object) and the last commit.

The writer is a :class:`~qsframework.io.Sink` that takes no rows: the processor starts,
commits and closes it like its other sinks, so it learns each commit's time and writes a last
row at close, within the processor's stop grace (the rows' ``events`` add up to the run's
processed events). Its own
connection; a database away is retried at the next interval, rows kept meanwhile (at most
:data:`MAX_BACKLOG`): health rows never stop or slow the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass

import asyncpg
import numpy as np
import orjson
import pyarrow as pa

from ..io import Checkpoint, Refused, Sink
from ..latency import LatencyWindow
from .config import ProcessConfig, ProcessStats
from .kafka_source import KafkaSource

log = logging.getLogger("qsf.process.health")

MAX_BACKLOG = 10_000  # rows kept while the database is away (the oldest go first)
COLUMNS = ("ts", "group_id", "processor", "strategy", "interval_s", "events", "events_per_s", "consumer_lag",
           "latency_ms_p50", "latency_ms_p99", "dlq", "dlq_by_reason", "last_commit")


def this_host() -> str:
    """This machine's name: the host part of ``pipeline_health.processor`` (``host:pid``)."""
    return socket.gethostname()


@dataclass(frozen=True, kw_only=True)
class HealthRow:
    """One interval's figures (``ts``, ``last_commit``: UTC ns; ``dlq_by_reason``: reason class -> count)."""

    ts: int
    group_id: str
    processor: str
    strategy: str
    interval_s: float
    events: int
    events_per_s: float
    consumer_lag: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    dlq: int
    dlq_by_reason: dict[str, int]
    last_commit: int | None

    def record(self) -> tuple:
        """The row as COPY takes it (the reasons as a JSON object)."""
        values = [getattr(self, c) for c in COLUMNS]
        values[COLUMNS.index("dlq_by_reason")] = orjson.dumps(self.dlq_by_reason).decode()
        return tuple(values)


class HealthSink(Sink):
    """Writes a :class:`HealthRow` every ``interval_s`` while the processor runs, and one at close."""

    inputs = False
    outputs = False

    def __init__(self, dsn: str, *, group: str, strategy: str, interval_s: float, stats: ProcessStats,
                 latency: LatencyWindow, source: KafkaSource) -> None:
        self.dsn = dsn
        self.group, self.strategy, self.interval_s = group, strategy, interval_s
        self.processor = f"{this_host()}:{os.getpid()}"
        self.stats, self.latency, self.source = stats, latency, source
        self.rows_written = 0
        self._backlog: deque[HealthRow] = deque(maxlen=MAX_BACKLOG)
        self._con: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None
        self._closing = asyncio.Event()
        self._last_commit: int | None = None
        self._mark: tuple[float, int, int, Counter[str]] = (time.monotonic(), 0, 0, Counter())  # (when, processed, latency samples, dead letters)

    @property
    def waiting(self) -> tuple[HealthRow, ...]:
        """Rows not written yet (the database away)."""
        return tuple(self._backlog)

    async def start(self) -> None:
        self._mark = (time.monotonic(), self.stats.processed, self.latency.total, Counter(self._dead_letters()))
        self._task = asyncio.create_task(self._run())

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        return []  # takes no rows (inputs and outputs False)

    async def commit(self, checkpoint: Checkpoint) -> None:
        self._last_commit = time.time_ns()

    async def close(self) -> None:
        """The last interval's row (up to now), then the connection closed."""
        self._closing.set()
        if self._task is not None:
            await asyncio.wait({self._task})
        self._backlog.append(self.take())
        await self._send()
        if self._con is not None:
            self._con.terminate()
            self._con = None

    def take(self) -> HealthRow:
        """The figures since the previous row (or the start), and a new mark."""
        now = time.monotonic()
        since, processed, samples, dead = self._mark
        letters = Counter(self._dead_letters())
        self._mark = (now, self.stats.processed, self.latency.total, letters)
        lat = self.latency.since(samples)
        p50, p99 = (float(v) for v in np.percentile(lat, [50, 99])) if len(lat) else (None, None)
        new = {reason: n for reason, n in (letters - dead).items() if n > 0}
        events, elapsed = self.stats.processed - processed, max(now - since, 1e-9)
        return HealthRow(ts=time.time_ns(), group_id=self.group, processor=self.processor, strategy=self.strategy,
                         interval_s=elapsed, events=events, events_per_s=events / elapsed,
                         consumer_lag=self.source.lag(), latency_ms_p50=p50, latency_ms_p99=p99,
                         dlq=sum(new.values()), dlq_by_reason=new, last_commit=self._last_commit)

    def _dead_letters(self) -> Counter[str]:
        dlq = self.source.dlq
        return Counter() if dlq is None else dlq.by_reason

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=self.interval_s)
                return
            except TimeoutError:
                pass
            self._backlog.append(self.take())
            await self._send()

    async def _send(self) -> None:
        """Everything in the backlog to the table; on any failure, kept for the next interval."""
        if not self._backlog:
            return
        rows = list(self._backlog)
        try:
            if self._con is None or self._con.is_closed():
                self._con = await asyncpg.connect(self.dsn, timeout=5)
            await self._con.copy_records_to_table("pipeline_health", records=[r.record() for r in rows],
                                                  columns=list(COLUMNS))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("pipeline_health: %d rows not written yet (%s: %s)", len(rows), type(exc).__name__, exc)
            if self._con is not None:
                self._con.terminate()
                self._con = None
            return
        for _ in rows:
            self._backlog.popleft()
        self.rows_written += len(rows)


def health_sink(config: ProcessConfig, *, strategy: str, stats: ProcessStats, latency: LatencyWindow,
                source: KafkaSource) -> HealthSink | None:
    """The health writer of a run that writes to PostgreSQL (``--sink timescale``), unless
    ``--health-interval 0``."""
    if "timescale" not in config.sinks or not config.pg_dsn or config.health_interval_s <= 0:
        return None
    return HealthSink(config.pg_dsn, group=config.group, strategy=strategy, interval_s=config.health_interval_s,
                      stats=stats, latency=latency, source=source)
