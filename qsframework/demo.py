"""``qsf demo``: the whole live pipeline on one machine, in one command.

Starts the embedded stack (unless QSF_KAFKA_BOOTSTRAP/QSF_PG_DSN point elsewhere), replays
the sample recording onto the broker as if it were live, runs the BTC/ETH spread strategy
with the PostgreSQL sink, prints a running summary, and stops cleanly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .loader import load_strategy
from .processor import ProcessConfig, Processor
from .recording import Recording
from .replay import replay
from .stack import Stack, endpoints_from_env

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "recordings" / "sample"
SPEC = "qsframework.strategies.btc_eth_spread:BtcEthSpread"


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    published: int
    processed: int
    signals: int
    alerts: int
    rows_in_db: int
    wall_s: float


async def run_demo(
    *,
    duration_s: float,
    speed: float | None,
    recording: Path = SAMPLE,
    stack_dir: Path | None = None,
    report: Callable[[str], None] = print,
) -> DemoResult:
    external = endpoints_from_env()
    stack = None
    if external is None:
        stack = Stack(stack_dir)
        report(f"starting the embedded stack in {stack.root} ...")
        endpoints = stack.up()
    else:
        endpoints = external
    report(f"broker {endpoints.kafka_bootstrap}, database {endpoints.pg_dsn}")
    prefix = f"demo{uuid.uuid4().hex[:6]}"
    proc = Processor(
        load_strategy(SPEC),
        ProcessConfig(bootstrap=endpoints.kafka_bootstrap, group=f"{prefix}-spread", prefix=prefix,
                      sinks=("timescale",), pg_dsn=endpoints.pg_dsn, exit_when_idle_s=3.0),
    )
    t0 = time.monotonic()
    try:
        feeder = asyncio.create_task(replay(Recording(recording), endpoints.kafka_bootstrap, speed=speed, prefix=prefix))
        worker = asyncio.create_task(proc.run())
        last = 0
        while not worker.done():
            await asyncio.sleep(1.0)
            elapsed = time.monotonic() - t0
            s = proc.stats
            report(f"[{elapsed:5.1f} s] processed {s.processed:,} events ({(s.processed - last):,}/s), "
                   f"signals {s.signals:,}, alerts {s.alerts:,}, rejected {s.rejected}")
            last = s.processed
            if elapsed >= duration_s:
                proc.stop()
        if not feeder.done():
            feeder.cancel()
        stats = await worker
        published = feeder.result().events if feeder.done() and not feeder.cancelled() else stats.consumed
        rows = await proc_rows(endpoints.pg_dsn)
        return DemoResult(published=published, processed=stats.processed, signals=stats.signals,
                          alerts=stats.alerts, rows_in_db=rows, wall_s=time.monotonic() - t0)
    finally:
        if stack is not None:
            report("stopping the embedded stack ...")
            stack.down()


async def proc_rows(dsn: str) -> int:
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        return int(await con.fetchval("SELECT (SELECT count(*) FROM trades) + (SELECT count(*) FROM signals)"))
    finally:
        await con.close()
