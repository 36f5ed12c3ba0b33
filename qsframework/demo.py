"""``qsf demo``: the whole live pipeline on one machine, in one command.

Starts the embedded stack (unless QSF_KAFKA_BOOTSTRAP/QSF_PG_DSN point elsewhere), replays
the sample recording onto the broker as if it were live, runs the BTC/ETH spread strategy
with the PostgreSQL sink, prints a running summary, and stops cleanly: once the processor
has consumed every event the replay published and committed the offsets the broker gave
them (however long the machine takes), or at ``--duration``, or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .loader import load_strategy
from .live import ProcessConfig, Processor
from .recording import Recording
from .replay import replay
from .shutdown import stop_on_signals
from .stack import Stack, endpoints_from_env, redact

SPEC = "qsframework.strategies.btc_eth_spread:BtcEthSpread"


def sample_recording() -> Path:
    """The sample recording (the package qsframework.sample: recordings/sample)."""
    return Path(str(resources.files("qsframework.sample")))


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    published: int
    processed: int
    signals: int
    alerts: int
    rows_in_db: int
    wall_s: float
    complete: bool  # every published event processed and its offset committed
    stopped_by: str | None  # "duration" or "signal" when it ended before that
    dashboard: str = "qsf dashboard live"  # the command that shows the run's tables (the live dashboard)


async def run_demo(
    *,
    duration_s: float | None,
    speed: float | None,
    recording: Path | None = None,
    stack_dir: Path | None = None,
    broker: str = "auto",
    report: Callable[[str], None] = print,
) -> DemoResult:
    """``broker`` chooses the embedded stack's (kafka, tansu or auto, as ``qsf stack up``)."""
    external = endpoints_from_env()
    stack = None
    if external is None:
        stack = Stack(stack_dir, broker=broker)
        report(f"starting the embedded stack in {stack.root} ...")
        endpoints = await asyncio.to_thread(stack.up)  # Kafka's readiness check runs an event loop of its own
        which = f"{stack.broker.title} {stack.broker.version} at {endpoints.kafka_bootstrap}"
    else:
        endpoints = external
        which = f"{endpoints.kafka_bootstrap} (QSF_KAFKA_BOOTSTRAP)"
    report(f"broker {which}, database {redact(endpoints.pg_dsn)}")
    prefix = f"demo{uuid.uuid4().hex[:6]}"
    group = f"{prefix}-spread"
    proc = Processor(
        load_strategy(SPEC),
        ProcessConfig(bootstrap=endpoints.kafka_bootstrap, group=group, prefix=prefix,
                      sinks=("timescale",), pg_dsn=endpoints.pg_dsn),
    )
    signalled = asyncio.Event()
    stop_on_signals(signalled.set)
    t0 = time.monotonic()
    try:
        rec = Recording(recording or sample_recording())
        feeder = asyncio.create_task(replay(rec, endpoints.kafka_bootstrap, speed=speed, prefix=prefix))
        worker = asyncio.create_task(proc.run())
        try:
            stopped_by = await _watch(proc, feeder, worker, signalled, t0, duration_s, report)
            stats = await worker
        finally:
            _cancel_once(feeder)
            await asyncio.wait([feeder])
        published = None if feeder.cancelled() else feeder.result()  # raises the replay's error
        complete = (stopped_by is None and published is not None
                    and await _committed(endpoints.kafka_bootstrap, group, published.end_offsets) == published.end_offsets)
        rows = await proc_rows(endpoints.pg_dsn)
        return DemoResult(published=published.events if published else stats.consumed,
                          processed=stats.processed, signals=stats.signals, alerts=stats.alerts,
                          rows_in_db=rows, wall_s=time.monotonic() - t0, complete=complete,
                          stopped_by=stopped_by, dashboard=dashboard_command(stack))
    finally:
        if stack is not None:
            report("stopping the embedded stack ...")
            stack.down()


def dashboard_command(stack: Stack | None) -> str:
    """How to see the demo's tables on the live dashboard: the embedded stack keeps its data
    when the demo stops it, so starting it again (same directory) and the dashboard shows them."""
    if stack is None:  # QSF_PG_DSN names the database
        return "qsf dashboard live"
    return f'eval "$(qsf stack up --dir {shlex.quote(str(stack.root))})" && qsf dashboard live'


async def _watch(proc: Processor, feeder: asyncio.Task, worker: asyncio.Task, signalled: asyncio.Event,
                 t0: float, duration_s: float | None, report: Callable[[str], None]) -> str | None:
    """Report every second until the processor ends. Returns why it was stopped early
    ("duration", "signal"), or None."""
    stopped_by: str | None = None
    signal = asyncio.ensure_future(signalled.wait())
    try:
        while not worker.done():
            waits = [worker] if signal.done() else [worker, signal]
            await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            stopped_by = _step(proc, feeder, signalled, t0, duration_s, report, stopped_by)
    finally:
        signal.cancel()
    return stopped_by


def _step(proc: Processor, feeder: asyncio.Task, signalled: asyncio.Event, t0: float,
          duration_s: float | None, report: Callable[[str], None], stopped_by: str | None) -> str | None:
    elapsed = time.monotonic() - t0
    s = proc.stats
    report(f"[{elapsed:5.1f} s] processed {s.processed:,} events, "
           f"signals {s.signals:,}, alerts {s.alerts:,}, rejected {s.rejected}")
    if feeder.done() and (feeder.cancelled() or feeder.exception() is not None):
        proc.stop()  # the replay failed: its error is raised once the processor is down
    elif feeder.done() and s.consumed >= feeder.result().events:
        proc.end_of_input()  # all consumed: release, commit and stop at the next empty poll
    if stopped_by is None and signalled.is_set():
        stopped_by = "signal"
    elif stopped_by is None and duration_s is not None and elapsed >= duration_s:
        stopped_by = "duration"
    if stopped_by is not None:
        proc.stop()
        _cancel_once(feeder)
    return stopped_by


def _cancel_once(task: asyncio.Task) -> None:
    """Cancel ``task`` unless it is done or already cancelling: a second cancel would cut
    short its clean-up (stopping its producer)."""
    if not task.done() and not task.cancelling():
        task.cancel()


async def _committed(bootstrap: str, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The group's committed offsets of ``partitions`` ((topic, partition) -> offset)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: (await consumer.committed(TopicPartition(*tp))) or 0 for tp in partitions}
    finally:
        await consumer.stop()


async def proc_rows(dsn: str) -> int:
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        # a demo stopped before its first commit has no tables yet: 0 rows, not an error
        total = 0
        for table in ("trades", "signals"):
            if await con.fetchval("SELECT to_regclass($1)", table) is not None:
                total += int(await con.fetchval(f"SELECT count(*) FROM {table}"))
        return total
    finally:
        await con.close()
