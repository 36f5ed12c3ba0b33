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

from qsframework.io import Rejected, Sink, pump
from qsframework.recording import RecordingWriter
from qsframework.shutdown import stop_on_signals
from qsframework.sinks.recording import RecordingSink

from .client import BinanceConfig, BinanceSource

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


async def _drive(source: BinanceSource, sinks: list[Sink], *, duration: float | None, status: Status | None,
                 flush_every_s: float) -> RunSummary:
    stop_on_signals(source.stop)
    t0 = time.monotonic()
    ticker = source.spawn(status.run(), "status line") if status is not None else None
    try:
        await pump(source, sinks, flush_every_s=flush_every_s, duration_s=duration)
    finally:
        if ticker is not None:
            ticker.cancel()
            status.done()  # type: ignore[union-attr]
    return _summary(source, t0)


def _status(source: BinanceSource, status: Status | bool | None) -> Status | None:
    return Status(source) if status is True or status is None else (status or None)


async def record_binance(config: BinanceConfig, out: str | Path, *, duration: float | None = None,
                         roll: float = 60.0, status: Status | bool | None = None) -> RunSummary:
    """Write trades and gaps to the recording ``out``; files roll every ``roll`` seconds.

    Each roll writes the buffered events as new part files (atomically), so a crash loses
    at most the last ``roll`` seconds. Bad frames are logged with their reason.
    """
    source = BinanceSource(config)
    writer = RecordingWriter(out, origin={"source": "binance", "url": config.url,
                                          "stream": config.stream, "symbols": list(config.symbols)})
    bad_logged = 0

    async def log_bad_frame(bad: Rejected) -> None:
        nonlocal bad_logged
        if bad_logged < 100:
            log.warning("bad frame (%s): %s", bad.reason, bad.value[:200].decode(errors="replace"))
        bad_logged += 1

    source.on_reject = log_bad_frame
    return await _drive(source, [RecordingSink(writer)], duration=duration, status=_status(source, status),
                        flush_every_s=roll)


async def ingest_binance(config: BinanceConfig, bootstrap: str, *, prefix: str = "qsf",
                         duration: float | None = None, status: Status | bool | None = None,
                         producer: ProducerConfig | None = None) -> RunSummary:
    """Publish trades to PREFIX.trades, gaps to PREFIX.gaps and bad frames to PREFIX.dlq.

    Each batch waits until the broker acknowledged every record; a lost one stops the run
    with :class:`~qsframework.errors.PublishError` naming how many."""
    from qsframework.kafka import ProducerConfig
    from qsframework.sinks.kafka import KafkaSink

    source = BinanceSource(config)
    kafka = KafkaSink(bootstrap, ["trade", "gap"], prefix=prefix, producer=producer or ProducerConfig())
    source.on_reject = kafka.dead_letter
    return await _drive(source, [kafka], duration=duration, status=_status(source, status), flush_every_s=0.0)
