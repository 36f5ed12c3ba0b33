"""What the Binance WebSocket source subscribes to and how it keeps its connection, and what
it counts while it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from qsframework.retry import Backoff
from qsframework.validity import DEFAULT_BOUNDS, TimeBounds

DEFAULT_URL = "wss://stream.binance.com:9443"
DEFAULT_REST = "https://api.binance.com"


@dataclass(frozen=True, kw_only=True)
class BinanceConfig:
    """Where and what to subscribe, and how to keep the connection."""

    symbols: tuple[str, ...]
    stream: str = "trade"  # or "aggTrade"
    url: str = DEFAULT_URL
    rest_url: str = DEFAULT_REST
    backfill: bool = False
    microseconds: bool = False  # ask for timeUnit=MICROSECOND
    rotate_after: float = 23.5 * 3600  # seconds; Binance ends connections at 24 h
    overlap_timeout: float = 15.0  # longest wait for old and new connection to meet
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    open_timeout: float = 10.0
    ping_interval: float | None = 30.0  # our own pings, to notice a dead link
    flush_interval: float = 0.25  # seconds between hand-overs of batches
    bounds: TimeBounds = DEFAULT_BOUNDS  # a trade's time vs its receipt (see qsframework.validity)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("give at least one symbol")
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"--url must start with ws:// or wss://, not {self.url!r}")
        if self.backfill and not self.rest_url.startswith(("http://", "https://")):
            raise ValueError(f"REST base URL must start with http:// or https://, not {self.rest_url!r}")
        if self.rotate_after <= 0 or self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("rotate_after and backoff times must be positive")
        if self.bounds.max_future_ns < 0:
            raise ValueError("--max-future must not be negative")

    @property
    def backoff(self) -> Backoff:
        """Between connection attempts that fail in a row."""
        return Backoff(initial_s=self.backoff_initial, max_s=self.backoff_max, jitter=(0.5, 1.1))


@dataclass(slots=True)
class SourceStats:
    connections: int = 0
    reconnects: int = 0  # connections lost and reopened
    rotations: int = 0  # planned hand-overs (24 h limit, serverShutdown)
    backfilled: int = 0
    backfill_errors: int = 0
    started: float = field(default_factory=time.monotonic)


class SourceFailed(RuntimeError):
    """A background task of the source (the flusher, a connection reader) failed: the run
    stops with this error instead of going on without it."""

