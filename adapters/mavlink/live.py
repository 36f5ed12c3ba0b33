"""Run the MAVLink source into a recording (``qsf record mavlink``) or Kafka (``qsf ingest mavlink``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from qsframework.recording import RecordingWriter
from qsframework.shutdown import stop_on_signals

from .source import MavlinkConfig, MavlinkSource, SourceStats

if TYPE_CHECKING:
    from qsframework.kafka import ProducerConfig


async def record_mavlink(config: MavlinkConfig, out: str | Path, *, duration: float | None = None,
                         roll: float = 60.0) -> SourceStats:
    """Write the vehicle's telemetry to the recording ``out``, as new files every ``roll`` s."""
    source = MavlinkSource(config)
    writer = RecordingWriter(out, origin={"source": "mavlink", "url": config.url, "clock": config.clock})
    last_roll = time.monotonic()

    async def sink(tables: list[tuple[str, pa.Table]]) -> None:
        nonlocal last_roll
        for kind, table in tables:
            writer.write(kind, table)
        if time.monotonic() - last_roll >= roll:
            writer.flush()
            last_roll = time.monotonic()

    stop_on_signals(source.stop)
    try:
        return await source.run(sink, duration=duration)
    finally:
        writer.close()


async def ingest_mavlink(config: MavlinkConfig, bootstrap: str, *, prefix: str = "qsf",
                         duration: float | None = None, producer: ProducerConfig | None = None) -> SourceStats:
    """Publish the vehicle's telemetry to PREFIX.telemetry (the kind in each message's header).

    Each flush waits until the broker acknowledged every record; a lost one ends the run
    with :class:`~qsframework.publish.PublishError` naming how many."""
    from qsframework.kafka import ProducerConfig, dlq_topic, topic_of
    from qsframework.publish import publishing
    from qsframework.telemetry import TELEMETRY_KINDS
    from qsframework.wire import encode

    topics = [*(topic_of(k, prefix) for k in TELEMETRY_KINDS), dlq_topic(prefix)]
    async with publishing(bootstrap, topics, config=producer or ProducerConfig()) as pub:
        source = MavlinkSource(config)

        async def sink(tables: list[tuple[str, pa.Table]]) -> None:
            for kind, table in tables:
                await pub.send_table(topic_of(kind, prefix), kind, table)
            await pub.flush()

        async def dead_letter(kind: str, table: pa.Table, reasons: list[str]) -> None:
            for (key, value), why in zip(encode(table), reasons, strict=True):
                await pub.send_dead_letter(dlq_topic(prefix), value, reason=why,
                                           headers=[("topic", topic_of(kind, prefix).encode()), ("kind", kind.encode())])

        stop_on_signals(source.stop)
        return await source.run(sink, duration=duration, dead_letter=dead_letter)
