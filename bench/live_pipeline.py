"""Live pipeline benchmark: broker -> qsf process -> PostgreSQL, Apache Kafka and Tansu side by side.

Usage: python bench/live_pipeline.py [--brokers kafka,tansu] [--events 300000] [--rate 5000] [--seconds 60] [--warmup 65]

Prints, for each broker in one run (the same PostgreSQL; targets from issues 3 and 13 in brackets):
1. sustained events/s end to end: a backlog of --events trades on the broker, processed by
   the spread strategy with the PostgreSQL sink, timed from the first processed batch to
   the last one made durable [>= 50k events/s];
2. p50/p99 latency from ts_recv (stamped when published) to durable in PostgreSQL, with
   events published at a fixed --rate for --seconds by another process, after --warmup
   seconds (65: the strategy's 60 s window full, its snapshot at its steady size) [p99 < 100 ms at 5k events/s],
   with the worst 20 s slice's p99 beside it, and a probe's timings of the database disk's
   flushes meanwhile (every durable commit waits for one);
and once, broker aside:
3. the sink's rows/s next to a raw asyncpg COPY of the same rows [>= 70%].
Uses QSF_KAFKA_BOOTSTRAP/QSF_PG_DSN when set (one column, that broker), else starts the
embedded stack with each broker in turn (Apache Kafka only where Java 17+ runs).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent

from qsframework.events import TRADE  # noqa: E402
from qsframework.kafka import ensure_topics, start_producer, topic_of  # noqa: E402
from qsframework.loader import load_strategy  # noqa: E402
from qsframework.live import ProcessConfig, Processor  # noqa: E402
from qsframework.sim.market import estimate_rate, simulate_trades  # noqa: E402
from qsframework.sinks.postgres import PostgresSink  # noqa: E402
from qsframework.stack import Stack, endpoints_from_env  # noqa: E402
from qsframework.stack.kafka import kafka_usable  # noqa: E402
from qsframework.wire import encode  # noqa: E402

SPREAD = load_strategy(str(ROOT / "strategies" / "btc_eth_spread.py") + ":BtcEthSpread")


async def fresh_db(dsn: str) -> str:
    import asyncpg

    name = f"bench{uuid.uuid4().hex[:8]}"
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(f"CREATE DATABASE {name}")
    finally:
        await con.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


def simulated(rows: int, *, seed: int) -> pa.Table:
    """``rows`` simulated BTC/ETH trades (the simulator's rate is an estimate: longer until enough)."""
    symbols = ["BTCUSDT", "ETHUSDT"]
    minutes = rows / estimate_rate(symbols) / 60
    while (table := pa.concat_tables(simulate_trades(symbols, minutes=minutes, seed=seed))).num_rows < rows:
        minutes *= 1.1 * rows / max(table.num_rows, 1)
    return table.slice(0, rows)


async def publish(bootstrap: str, topic: str, table: pa.Table) -> None:
    producer = await start_producer(bootstrap)
    try:
        for key, value in encode(table):
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def throughput(bootstrap: str, dsn: str, events: int) -> tuple[int, float]:
    prefix = f"b{uuid.uuid4().hex[:6]}"
    table = simulated(events, seed=3)
    await ensure_topics(bootstrap, [topic_of("trade", prefix)])
    await publish(bootstrap, topic_of("trade", prefix), table)
    proc = Processor(SPREAD, ProcessConfig(bootstrap=bootstrap, group=f"{prefix}-g", prefix=prefix,
                                           sinks=("timescale",), pg_dsn=dsn, exit_when_idle_s=2.0))
    stats = await proc.run()
    # sustained: from the first processed batch to the last one made durable (joining the
    # consumer group and the idle wait at the end are start-up and shut-down, not throughput)
    return stats.processed, (stats.last_processed_at or 0) - (stats.first_processed_at or 0)


async def _publish_at_rate(bootstrap: str, topic: str, rate: int, seconds: float) -> int:
    """Publish trades stamped ts_recv = now at ``rate`` events/s for ``seconds``; each
    symbol's price a random walk of 1 bp steps, as trades move (uniform noise would make
    every trade a 0.5% divergence, and the strategy a firehose of signals)."""
    producer = await start_producer(bootstrap)
    rng = np.random.default_rng(0)
    last = {"BTCUSDT": 95_000.0, "ETHUSDT": 3_300.0}
    sent = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            due = int((time.monotonic() - t0) * rate) - sent
            if due > 0:
                now = time.time_ns()
                keys = rng.choice(["BTCUSDT", "ETHUSDT"], due).tolist()
                steps = np.exp(rng.normal(0, 1e-4, due)).tolist()
                prices = []
                for key, step in zip(keys, steps):
                    last[key] *= step
                    prices.append(last[key])
                table = pa.table({
                    "ts_event": np.full(due, now, np.int64), "ts_recv": np.full(due, now, np.int64),
                    "source": ["bench"] * due, "key": keys,
                    "seq": np.arange(sent, sent + due, dtype=np.int64), "price": prices,
                    "qty": np.ones(due), "is_buyer_maker": np.zeros(due, bool),
                }, schema=TRADE.schema)
                for key, value in encode(table):
                    await producer.send(topic, key=key, value=value)
                sent += due
            await asyncio.sleep(0.002)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _publisher(bootstrap: str, topic: str, rate: int, seconds: float, out) -> None:
    out.put(asyncio.run(_publish_at_rate(bootstrap, topic, rate, seconds)))


@dataclass(frozen=True)
class Flushes:
    """What the disk did meanwhile: latencies (ms) of 8 KiB write + fdatasync probes, the
    pattern of a PostgreSQL commit, on the database's file system."""

    p50: float
    p99: float
    max: float
    stalls: int  # probes over STALL_MS

    STALL_MS = 50.0


def _flush_probe(directory: str, seconds: float, every_s: float, out) -> None:
    """Every ``every_s``: 8 KiB into a preallocated file and fdatasync (as PostgreSQL writes
    its WAL); the latencies' summary to ``out``. In its own process: nothing else waits."""
    import os

    path = os.path.join(directory, "flush-probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, bytes(16 << 20))
        os.fsync(fd)
        lat, block, end = [], b"x" * 8192, time.monotonic() + seconds
        while time.monotonic() < end:
            if os.lseek(fd, 0, os.SEEK_CUR) >= 16 << 20:
                os.lseek(fd, 0, os.SEEK_SET)
            t = time.monotonic()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append((time.monotonic() - t) * 1000)
            time.sleep(every_s)
    finally:
        os.close(fd)
        os.unlink(path)
    a = np.array(lat)
    out.put(Flushes(float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max()),
                    int((a > Flushes.STALL_MS).sum())))


SLICE_S = 20.0  # the worst p99 over slices this long is printed beside the whole measurement's


def worst_p99(samples: np.ndarray, per: int) -> float:
    """The highest p99 over consecutive slices of ``per`` samples (a last, shorter slice counts
    if at least half as long)."""
    slices = [samples[i:i + per] for i in range(0, len(samples), per)]
    return max((float(np.percentile(s, 99)) for s in slices if len(s) >= per // 2), default=float("nan"))


async def latency(bootstrap: str, dsn: str, rate: int, seconds: float, warmup: float = 3.0, *,
                  disk: str | None) -> tuple[float, float, int, Flushes, float]:
    """The publisher runs in its own process, as a feed would: the processor's event loop
    and CPU time are its own. Measured after ``warmup`` seconds of publishing (the
    consumer's first fetches and the publisher's start-up are not the steady state; nor is
    the strategy's window before it filled: its state, and with it each checkpoint's
    snapshot, grows until then). A probe in a third process times the disk's flushes (in
    ``disk``) over the measurement: every durable commit waits for one."""
    import multiprocessing as mp

    prefix = f"b{uuid.uuid4().hex[:6]}"
    topic = topic_of("trade", prefix)
    await ensure_topics(bootstrap, [topic])
    # no idle exit: the publisher's process may take longer to start than any idle bound;
    # the processor ends once it consumed everything that was published
    proc = Processor(SPREAD, ProcessConfig(bootstrap=bootstrap, group=f"{prefix}-g", prefix=prefix,
                                           sinks=("timescale",), pg_dsn=dsn, lateness_ns=0, poll_ms=20))
    worker = asyncio.create_task(proc.run())
    while not proc.source.assigned and not worker.done():  # joined the group
        await asyncio.sleep(0.05)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    publisher = ctx.Process(target=_publisher, args=(bootstrap, topic, rate, seconds + warmup, out))
    publisher.start()
    while proc.stats.consumed == 0 and publisher.is_alive():
        await asyncio.sleep(0.05)
    await asyncio.sleep(warmup)
    proc.restart_latency_window(samples=int(rate * seconds * 1.2) + 10_000)  # every row measured
    flushes = ctx.Queue()
    probe = None
    if disk is not None:
        probe = ctx.Process(target=_flush_probe, args=(disk, seconds, 0.05, flushes))
        probe.start()
    while publisher.is_alive():
        await asyncio.sleep(0.2)
    sent = out.get(timeout=10)
    while proc.stats.consumed < sent and not worker.done():
        await asyncio.sleep(0.05)
    proc.end_of_input()
    stats = await worker
    probed = Flushes(*[float("nan")] * 3, 0)
    if probe is not None:
        probed = flushes.get(timeout=30)
        probe.join()
    return stats.latency_ms_p50 or float("nan"), stats.latency_ms_p99 or float("nan"), sent, probed, \
        worst_p99(proc.latency.since(0), int(rate * SLICE_S))


async def sink_vs_copy(dsn: str, rows: int) -> tuple[float, float]:
    import asyncpg

    table = simulated(rows, seed=4)
    sink = PostgresSink(dsn)
    await sink.start()
    t = time.monotonic()
    for batch in table.to_batches(20_000):
        await sink.write("trade", pa.Table.from_batches([batch]))
    sink_s = time.monotonic() - t
    await sink.close()
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("CREATE TABLE raw_copy (LIKE trades INCLUDING ALL)")
        names = table.schema.names
        t = time.monotonic()
        for batch in table.to_batches(20_000):
            records = list(zip(*(batch.column(n).to_pylist() for n in names)))
            await con.copy_records_to_table("raw_copy", records=records, columns=names)
        raw_s = time.monotonic() - t
    finally:
        await con.close()
    return rows / sink_s, rows / raw_s


@dataclass(frozen=True)
class Figures:
    broker: str
    events: int
    secs: float
    p50: float
    p99: float
    sent: int
    flushes: Flushes
    worst: float  # p99 of the worst SLICE_S slice


async def measure(broker: str, bootstrap: str, dsn: str, args, disk: str | None) -> Figures:
    n, secs = await throughput(bootstrap, dsn, args.events)
    p50, p99, sent, flushes, worst = await latency(bootstrap, dsn, args.rate, args.seconds, args.warmup, disk=disk)
    return Figures(broker, n, secs, p50, p99, sent, flushes, worst)


def table(figures: list[Figures], rate: int) -> list[str]:
    """The brokers side by side, one row per figure."""
    rows = [("", [f.broker for f in figures], ""),
            ("end to end events/s", [f"{f.events / f.secs:,.0f}" for f in figures], "[>= 50,000]"),
            ("  (events, seconds)", [f"{f.events:,} in {f.secs:.1f} s" for f in figures], ""),
            (f"latency p50 at {rate:,}/s", [f"{f.p50:.1f} ms" for f in figures], ""),
            (f"latency p99 at {rate:,}/s", [f"{f.p99:.1f} ms" for f in figures], "[< 100 ms]"),
            (f"  worst {SLICE_S:g} s of it: p99", [f"{f.worst:.1f} ms" for f in figures], ""),
            ("  (events published)", [f"{f.sent:,}" for f in figures], ""),
            ("disk flush p50/p99/max", [f"{f.flushes.p50:.1f}/{f.flushes.p99:.0f}/{f.flushes.max:.0f} ms" for f in figures],
             "(probe beside it)"),
            (f"  flushes over {Flushes.STALL_MS:.0f} ms", [f"{f.flushes.stalls}" for f in figures], "")]
    width = max(22, *(len(f.broker) + 2 for f in figures))
    return [f"{name:<28}" + "".join(f"{c:>{width}}" for c in cells) + f"  {target}".rstrip()
            for name, cells, target in rows]


async def main_async(args) -> None:
    external = endpoints_from_env()
    figures: list[Figures] = []
    roots = []
    try:
        if external is not None:
            dsn = await fresh_db(external.pg_dsn)
            figures.append(await measure(external.kafka_bootstrap, external.kafka_bootstrap, dsn, args,
                                         disk=None))  # the database's disk is not here to probe
        else:
            brokers = [b for b in args.brokers.split(",") if b != "kafka" or kafka_usable()]
            pg = None
            for broker in brokers:
                stack = Stack(Path(tempfile.mkdtemp(prefix=f"qsf-bench-{broker}-")), broker=broker)
                roots.append(stack)
                if pg is None:  # one PostgreSQL for every broker: only the broker differs
                    pg = stack.postgres
                    pg.start()
                stack.broker.start()
                print(f"{stack.broker.title} {stack.broker.version} ...", file=sys.stderr, flush=True)
                dsn = await fresh_db(pg.dsn)
                figures.append(await measure(f"{stack.broker.title} {stack.broker.version}",
                                             stack.broker.bootstrap, dsn, args, disk=str(pg.root)))
                stack.broker.stop()  # the next broker runs alone on the machine
        for line in table(figures, args.rate):
            print(line)
        sink_rate, raw_rate = await sink_vs_copy(dsn, args.copy_rows)
        print(f"PostgreSQL sink {sink_rate:,.0f} rows/s vs raw asyncpg COPY {raw_rate:,.0f} rows/s "
              f"= {sink_rate / raw_rate:.0%}  [target >= 70%]")
    finally:
        for stack in roots:
            stack.down(purge=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", default="kafka,tansu",
                    help="embedded brokers to compare, in order (kafka is left out where Java 17+ is missing)")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rate", type=int, default=5_000)
    ap.add_argument("--seconds", type=float, default=60,
                    help="seconds the latency is measured (default 60: a p99 over 300k events at 5k/s)")
    ap.add_argument("--warmup", type=float, default=65,
                    help="seconds published before the latency is measured (default: the spread "
                         "strategy's 60 s window filled, and a checkpoint)")
    ap.add_argument("--copy-rows", type=int, default=200_000)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
