"""Helpers for the processor's fault tests: publish tables, run ``qsf process``, wait for
conditions (never for a fixed time), read topics and part directories."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition

from qsframework.stack.kafka import KafkaBrokerService
from qsframework.stack.services import BrokerService
from qsframework.kafka import ensure_topics, kind_headers, start_producer, topic_of
from qsframework.wire import encode

from ..conftest import qsf_cmd

STRATEGIES = str(Path(__file__).with_name("flow_strategies.py"))


def publish(bootstrap: str, prefix: str, kind: str, table: pa.Table) -> None:
    """Every row of ``table`` on the kind's topic, acknowledged."""

    async def send() -> None:
        topic = topic_of(kind, prefix)
        await ensure_topics(bootstrap, [topic])
        producer = await start_producer(bootstrap)
        try:
            for key, value in encode(table):
                await producer.send(topic, key=key, value=value, headers=kind_headers(kind))
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def start_process(spec: str, *args: str, env: dict[str, str], stderr: Path | None = None) -> subprocess.Popen:
    """``qsf process`` in the background; its stderr into a file to read while it runs, if given."""
    err = subprocess.PIPE if stderr is None else open(stderr, "w")  # noqa: SIM115 (the child holds it)
    return subprocess.Popen([*qsf_cmd(), "process", spec, *args], stdout=subprocess.PIPE,
                            stderr=err, text=True, env={**os.environ, **env})


def run_process(spec: str, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*qsf_cmd(), "process", spec, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


def wait_for(condition: Callable[[], bool], what: str, *, proc: subprocess.Popen | None = None,
             limit_s: float = 240) -> None:
    """Poll ``condition`` until it holds; the limit is only a safety net."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            detail = proc.stderr.read() if proc.stderr is not None else ""
            raise AssertionError(f"qsf process exited ({proc.returncode}) before {what}: {detail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {limit_s} s")
        time.sleep(0.05)


def records_in(bootstrap: str, topic: str) -> int:
    """How many records partition 0 of ``topic`` holds (0 if it does not exist), counted by
    reading them: Tansu's end offset for a topic written in batches is not a record count."""
    return len(topic_values(bootstrap, topic))


def topic_values(bootstrap: str, topic: str) -> list[bytes | None]:
    """The values of every record in partition 0 of ``topic``, in log order (read_committed;
    none if the topic does not exist)."""

    async def read() -> list[bytes | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed")
        await consumer.start()
        try:
            if topic not in await consumer.topics():
                return []
            tp = TopicPartition(topic, 0)
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            values: list[bytes | None] = []
            while await consumer.position(tp) < end:
                values += [m.value for m in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])]
            return values
        finally:
            await consumer.stop()

    return asyncio.run(read())


def restart_empty(broker: BrokerService | KafkaBrokerService) -> None:
    """Stop the broker and start it with an empty log: every topic, group and committed
    offset gone. Tansu keeps nothing across a restart; Apache Kafka's log directory is wiped
    while it is stopped (formatted again at start, with the same cluster id)."""
    broker.stop()
    if isinstance(broker, KafkaBrokerService):
        shutil.rmtree(broker.data_dir)
    broker.start()


def state_offsets(state_dir: Path) -> dict[tuple[str, int], int]:
    """The committed offsets in the --state snapshot ({} before the first)."""
    try:
        return pickle.loads((state_dir / "processor.state").read_bytes())["offsets"]
    except FileNotFoundError:
        return {}


def rows_in(directory: Path) -> int:
    """Rows of the published parts in an --out directory (0 before the first)."""
    parts = sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []
    return sum(pq.read_metadata(p).num_rows for p in parts)


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The offset ``group`` committed on partition 0 of ``topic`` (None: none)."""

    async def ask() -> int | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            return await consumer.committed(TopicPartition(topic, 0))
        finally:
            await consumer.stop()

    return asyncio.run(ask())
