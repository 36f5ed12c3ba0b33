"""The settings and the account of a ``qsf process`` run, and its two failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import UserError
from ..execution.config import ExecutionConfig
from ..kafka import DEFAULT_PREFIX
from ..validity import DEFAULT_BOUNDS, TimeBounds


@dataclass(frozen=True, kw_only=True)
class ProcessConfig:
    bootstrap: str
    group: str
    prefix: str = DEFAULT_PREFIX
    lateness_ns: int = 0
    idle_timeout_s: float = 5.0  # a partition quiet (and read to its end) this long stops holding the watermark
    max_held: int = 1_000_000  # rows waiting behind the watermark; past it the oldest are released
    exit_when_idle_s: float | None = None
    out: Path | None = None
    record: Path | None = None
    sinks: tuple[str, ...] = ()
    pg_dsn: str | None = None
    # where the engine snapshot lives (a restart resumes exactly from it): the compacted topic
    # PREFIX.state.<group>, a local directory (--state DIR), or nowhere (--no-state)
    state: Path | Literal["kafka", "none"] = "kafka"
    bounds: TimeBounds = DEFAULT_BOUNDS  # events outside them go to the DLQ, not the engine
    on_reset: Literal["fail", "earliest"] = "fail"  # a resume offset the log does not have
    # at most one commit (offsets, snapshot, --out part) per interval; None: the delivery mode's
    # (see qsframework.live.delivery: 1 s exactly-once, 5 s at-least-once)
    commit_interval_s: float | None = None
    health_interval_s: float = 2.0  # one pipeline_health row per interval with --sink timescale (0: none)
    stop_grace_s: float = 5.0  # after a stop request, how long work in progress may take
    overrides: dict[str, str] = field(default_factory=dict)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)  # the simulator's settings (paper trading)
    path: str = "auto"
    poll_ms: int = 200
    # a poll takes every record the consumer holds (at most one fetch, 16 MB a partition): the
    # consumer fetches a partition again only once its records are all taken, so taking them
    # all lets the next fetch travel while this one is processed (20,000 a poll: ~30% slower)
    max_records: int | None = None
    log_every_s: float = 5.0
    # a worker of a scaled-out ``scale = "key"`` strategy (:mod:`.scale_out`): it reads partition
    # ``partition`` of every input topic, assigned by the group's member in its process; None:
    # the group's assignor gives this processor its partitions
    partition: int | None = None

    @property
    def state_key(self) -> str:
        """Whose snapshot and transactions these are: the group, or ``<group>/p<N>`` for a worker."""
        return self.group if self.partition is None else f"{self.group}/p{self.partition}"


@dataclass(kw_only=True)
class ProcessStats:
    consumed: int = 0
    processed: int = 0
    rejected: int = 0
    late: int = 0
    redelivered: int = 0  # rows read again after a restart that were already handled
    released_early: int = 0  # rows released before the watermark passed them (max_held)
    signals: int = 0
    alerts: int = 0
    orders: int = 0  # order status rows (accepted, filled, cancelled)
    fills: int = 0
    commits: int = 0
    delivery: str = ""  # the guarantee in force, e.g. "exactly-once (Kafka transactions)"
    state_store: str = ""  # where the snapshot is kept, e.g. "Kafka topic qsf.state.g"
    interrupted: bool = False  # a stop request cut work in progress short (not committed)
    wall_s: float = 0.0
    first_processed_at: float | None = None  # time.monotonic() of the first and last batch
    last_processed_at: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    metrics: dict[str, float | int | None] | None = None  # with --out, once the strategy ordered (report.json)


class LogReset(UserError):
    """A resume offset lies outside the partition's log (the broker lost or reset it)."""


class StrategyFailed(UserError):
    """The strategy raised while handling events; nothing of that batch is committed."""

