"""Replay a recording onto Kafka topics, as fast as possible or paced by event time: the
recording as a source, Kafka as the sink, and :func:`~qsframework.io.pump` between them (the
loop of every publishing command)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from .io import Refused, Sink, pump
from .kafka import DEFAULT_PREFIX, ProducerConfig
from .recording import Recording, RecordingSource
from .sinks.kafka import KafkaSink


@dataclass(frozen=True, kw_only=True)
class ReplayStats:
    """What the broker acknowledged (a replay with a lost record raises instead)."""

    events: int
    wall_s: float
    per_topic: dict[str, int]
    end_offsets: dict[tuple[str, int], int]  # (topic, partition) -> offset after the last record


class _Progress(Sink):
    """Counts the rows the sinks before it took (a progress bar's ``advance``)."""

    def __init__(self, on_progress: Callable[[int], None]) -> None:
        self.on_progress = on_progress

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        self.on_progress(table.num_rows)
        return []


async def replay(
    recording: Recording,
    bootstrap: str,
    *,
    kinds: list[str] | None = None,
    speed: float | None = None,
    start: int | None = None,
    end: int | None = None,
    batch_size: int = 16_384,
    producer: ProducerConfig = ProducerConfig(),
    prefix: str = DEFAULT_PREFIX,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Publish the recording's events (in total order) to their kinds' topics.

    With ``speed`` the gaps between events are replayed in wall time divided by ``speed``
    (1 = real time); without it, events go out as fast as the broker takes them. Returns
    once the broker acknowledged every event; raises :class:`~qsframework.publish.PublishError`
    (after the first lost one, without sending more) otherwise. An event too large for the
    producer raises its ``MessageSizeTooLargeError`` (nothing more is sent).
    """
    t0 = time.monotonic()
    source = RecordingSource(recording, kinds=kinds, speed=speed, start=start, end=end, batch_size=batch_size)
    kafka = KafkaSink(bootstrap, source.kinds, prefix=prefix, producer=producer, refuse_oversized=False)
    # acknowledgements are awaited once, at the end (a lost record stops the sends sooner)
    await pump(source, [kafka] if on_progress is None else [kafka, _Progress(on_progress)], flush_every_s=math.inf)
    assert kafka.publisher is not None
    stats = kafka.publisher.stats
    return ReplayStats(events=stats.acked, wall_s=time.monotonic() - t0, per_topic=dict(stats.per_topic),
                       end_offsets=dict(stats.end_offsets))
