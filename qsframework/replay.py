"""Replay a recording onto Kafka topics, as fast as possible or paced by event time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from .kafka import DEFAULT_PREFIX, ProducerConfig, dlq_topic, kind_headers, topic_of
from .publish import publishing
from .recording import Recording
from .wire import encode


@dataclass(frozen=True, kw_only=True)
class ReplayStats:
    """What the broker acknowledged (a replay with a lost record raises instead)."""

    events: int
    wall_s: float
    per_topic: dict[str, int]
    end_offsets: dict[tuple[str, int], int]  # (topic, partition) -> offset after the last record


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
    (after the first lost one, without sending more) otherwise.
    """
    if speed is not None and speed <= 0:
        raise ValueError("speed must be positive")
    kinds = kinds or recording.kinds
    t0 = time.monotonic()
    first_ts: int | None = None
    topics = [*(topic_of(k, prefix) for k in kinds), dlq_topic(prefix)]
    async with publishing(bootstrap, topics, config=producer) as pub:
        # rows as stored, bad ones included: the consumer checks them and dead-letters the bad
        for kind, batch in recording.stream_all(kinds, start=start, end=end, batch_size=batch_size, bounds=None):
            topic = topic_of(kind, prefix)
            if speed is None:
                await pub.send_table(topic, kind, batch)
            else:
                headers = kind_headers(kind)
                ts = batch.column("ts_event").to_pylist()
                if first_ts is None:
                    first_ts = ts[0]
                for (key, value), t in zip(encode(batch), ts):
                    delay = (t - first_ts) / 1e9 / speed - (time.monotonic() - t0)
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                    await pub.send(topic, value, key=key, headers=headers)
            if on_progress is not None:
                on_progress(batch.num_rows)
        stats = await pub.flush()
    return ReplayStats(events=stats.acked, wall_s=time.monotonic() - t0, per_topic=dict(stats.per_topic),
                       end_offsets=dict(stats.end_offsets))
