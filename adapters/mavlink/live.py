"""Run the MAVLink source into a recording (``qsf record mavlink``) or Kafka (``qsf ingest mavlink``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qsframework.io import Sink, pump
from qsframework.recording import RecordingWriter
from qsframework.shutdown import stop_on_signals
from qsframework.sinks.recording import RecordingSink

from .source import MavlinkConfig, MavlinkSource, SourceStats

if TYPE_CHECKING:
    from qsframework.kafka import ProducerConfig


async def _drive(source: MavlinkSource, sinks: list[Sink], *, duration: float | None,
                 flush_every_s: float) -> SourceStats:
    stop_on_signals(source.stop)
    await pump(source, sinks, flush_every_s=flush_every_s, duration_s=duration)
    return source.stats


async def record_mavlink(config: MavlinkConfig, out: str | Path, *, duration: float | None = None,
                         roll: float = 60.0) -> SourceStats:
    """Write the vehicle's telemetry to the recording ``out``, as new files every ``roll`` s."""
    writer = RecordingWriter(out, origin={"source": "mavlink", "url": config.url, "clock": config.clock})
    return await _drive(MavlinkSource(config), [RecordingSink(writer)], duration=duration, flush_every_s=roll)


async def ingest_mavlink(config: MavlinkConfig, bootstrap: str, *, prefix: str = "qsf",
                         duration: float | None = None, producer: ProducerConfig | None = None) -> SourceStats:
    """Publish the vehicle's telemetry to PREFIX.telemetry (the kind in each message's header)
    and the events that break a validity rule to PREFIX.dlq.

    Each batch waits until the broker acknowledged every record; a lost one ends the run
    with :class:`~qsframework.publish.PublishError` naming how many."""
    from qsframework.kafka import ProducerConfig
    from qsframework.sinks.kafka import KafkaSink
    from qsframework.telemetry import TELEMETRY_KINDS

    source = MavlinkSource(config)
    kafka = KafkaSink(bootstrap, TELEMETRY_KINDS, prefix=prefix, producer=producer or ProducerConfig())
    source.on_reject = kafka.dead_letter
    return await _drive(source, [kafka], duration=duration, flush_every_s=0.0)
