"""Run the Binance source into a recording (``qsf record binance``) or Kafka (``qsf ingest binance``)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qsframework.recording import RecordingWriter
from qsframework.shutdown import stop_on_signals

from .client import Batch, BinanceConfig, BinanceSource

if TYPE_CHECKING:
    from qsframework.kafka import ProducerConfig

log = logging.getLogger("qsf.binance")


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    trades: int
    gaps: int
    missing: int
    backfilled: int
    duplicates: int
    rejected: int
    reconnects: int
    rotations: int
    wall_s: float


class Status:
    """A one-line status (messages/s, reconnects, gaps, dropped) on stderr, every second."""

    def __init__(self, source: BinanceSource, *, enabled: bool | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.source = source
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.echo = echo
        self._frames = 0
        self._t = time.monotonic()

    def line(self) -> str:
        p, s = self.source.parser.stats, self.source.stats
        now = time.monotonic()
        rate = (p.frames - self._frames) / max(now - self._t, 1e-9)
        self._frames, self._t = p.frames, now
        return (f"{rate:7.1f} msg/s  trades {p.trades:,}  reconnects {s.reconnects}  "
                f"gaps {p.gaps} ({p.missing:,} ids, {s.backfilled:,} backfilled)  "
                f"dropped {p.duplicates:,} dup / {p.rejected:,} bad")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            text = self.line()
            if self.echo is not None:
                self.echo(text)
            elif self.enabled:
                sys.stderr.write("\r" + text + "\x1b[K")
                sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.echo is None:
            sys.stderr.write("\n")


def _summary(source: BinanceSource, t0: float) -> RunSummary:
    p, s = source.parser.stats, source.stats
    return RunSummary(trades=p.trades + s.backfilled, gaps=p.gaps, missing=p.missing,
                      backfilled=s.backfilled, duplicates=p.duplicates, rejected=p.rejected,
                      reconnects=s.reconnects, rotations=s.rotations, wall_s=time.monotonic() - t0)


async def _drive(source: BinanceSource, sink, duration: float | None, status: Status | None) -> RunSummary:
    stop_on_signals(source.stop)
    t0 = time.monotonic()
    ticker = source.spawn(status.run(), "status line") if status is not None else None
    try:
        await source.run(sink, duration=duration)
    finally:
        if ticker is not None:
            ticker.cancel()
            status.done()  # type: ignore[union-attr]
    return _summary(source, t0)


async def record_binance(config: BinanceConfig, out: str | Path, *, duration: float | None = None,
                         roll: float = 60.0, status: Status | bool | None = None) -> RunSummary:
    """Write trades and gaps to the recording ``out``; files roll every ``roll`` seconds.

    Each roll writes the buffered events as new part files (atomically), so a crash loses
    at most the last ``roll`` seconds. Bad frames are logged with their reason.
    """
    source = BinanceSource(config)
    writer = RecordingWriter(out, origin={"source": "binance", "url": config.url,
                                          "stream": config.stream, "symbols": list(config.symbols)})
    last_roll = time.monotonic()
    bad_logged = 0

    async def sink(batch: Batch) -> None:
        nonlocal last_roll, bad_logged
        if batch.trades.num_rows:
            writer.write("trade", batch.trades)
        if batch.gaps.num_rows:
            writer.write("gap", batch.gaps)
        for r in batch.rejects:
            if bad_logged < 100:
                log.warning("bad frame (%s): %s", r.reason, r.frame[:200].decode(errors="replace"))
            bad_logged += 1
        if time.monotonic() - last_roll >= roll:
            writer.flush()
            last_roll = time.monotonic()

    st = Status(source) if status is True or status is None else (status or None)
    try:
        return await _drive(source, sink, duration, st)
    finally:
        writer.close()


async def ingest_binance(config: BinanceConfig, bootstrap: str, *, prefix: str = "qsf",
                         duration: float | None = None, status: Status | bool | None = None,
                         producer: ProducerConfig | None = None) -> RunSummary:
    """Publish trades to PREFIX.trades, gaps to PREFIX.gaps and bad frames to PREFIX.dlq.

    Each flush waits until the broker acknowledged every record; a lost one stops the run
    with :class:`~qsframework.adapters.binance.client.SourceFailed` naming how many."""
    from qsframework.kafka import ProducerConfig, dlq_topic, topic_of
    from qsframework.publish import publishing

    trades_t, gaps_t, dlq_t = topic_of("trade", prefix), topic_of("gap", prefix), dlq_topic(prefix)
    async with publishing(bootstrap, [trades_t, gaps_t, dlq_t], config=producer or ProducerConfig()) as pub:
        source = BinanceSource(config)

        async def sink(batch: Batch) -> None:
            await pub.send_table(trades_t, "trade", batch.trades)
            await pub.send_table(gaps_t, "gap", batch.gaps)
            for r in batch.rejects:
                await pub.send_dead_letter(dlq_t, r.frame, reason=r.reason, headers=[
                    ("topic", b"binance"), ("source", config.url.encode())])
            await pub.flush()

        st = Status(source) if status is True or status is None else (status or None)
        return await _drive(source, sink, duration, st)
