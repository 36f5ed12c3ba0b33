"""What the commands share: time and duration options, the event-time bounds, the broker
address, the progress bar, the summary of rejected events."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from ..durations import format_time, parse_duration, parse_time
from ..errors import UserError
from ..validity import DEFAULT_FLOOR_NS, DEFAULT_MAX_FUTURE_NS, NS_PER_S

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..validity import TimeBounds

BATCH_DEFAULT = 65_536
# the event-time bounds' defaults, as options show them (the values live in qsframework.validity)
MAX_FUTURE_DEFAULT = f"{DEFAULT_MAX_FUTURE_NS // NS_PER_S}s"
FLOOR_DEFAULT = format_time(DEFAULT_FLOOR_NS)

PARAM_OPTION = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                            help="Override a strategy parameter (repeatable); durations like 30s, 5m.")
BOOTSTRAP_OPTION = click.option("--bootstrap", metavar="HOST:PORT", help="Broker (default: $QSF_KAFKA_BOOTSTRAP).")


ACK_TIMEOUT_OPTION = click.option(
    "--ack-timeout", metavar="DURATION",
    help="Count a record as lost (exit 2) when the broker has not acknowledged it within this long (default: 40s).")


def producer_config(ack_timeout: str | None):
    """The producer settings of --ack-timeout (the producer's defaults without it)."""
    from ..kafka import ProducerConfig

    if ack_timeout is None:
        return ProducerConfig()
    timeout_ms = duration_option(ack_timeout, "--ack-timeout") // 1_000_000
    if timeout_ms <= 0:
        raise UserError("--ack-timeout must be at least 1ms")
    return ProducerConfig(request_timeout_ms=timeout_ms)


def topic_prefix_option(topics: str = "PREFIX.trades, PREFIX.dlq, ..."):
    return click.option("--topic-prefix", default="qsf", show_default=True, help=f"Topics are {topics}")


def time_option(value: str | None, name: str) -> int | None:
    """An instant given as ISO 8601 UTC or nanoseconds; None stays None."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None


def duration_option(value: str, name: str) -> int:
    """A duration (``30s``, ``5m``, ``250ms``) in nanoseconds."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None


def bounds(max_future: str, floor: str) -> TimeBounds:
    """The ts_event bounds of --max-future and --floor."""
    from ..validity import TimeBounds

    max_future_ns = duration_option(max_future, "--max-future")
    if max_future_ns < 0:
        raise UserError("--max-future must not be negative")
    floor_ns = time_option(floor, "--floor")
    assert floor_ns is not None
    return TimeBounds(max_future_ns=max_future_ns, floor_ns=floor_ns)


def broker_address(option: str | None) -> str:
    """The broker: --bootstrap, else $QSF_KAFKA_BOOTSTRAP."""
    server = option or os.environ.get("QSF_KAFKA_BOOTSTRAP")
    if not server:
        raise UserError('no broker: set QSF_KAFKA_BOOTSTRAP (e.g. eval "$(qsf stack up)") or pass --bootstrap')
    return server


def progress(*, unit: str = "events") -> Progress:
    """A rich progress bar on stderr when it is a terminal, nothing otherwise."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit}"),
        TimeRemainingColumn(),
        disable=not sys.stderr.isatty(),
        console=Console(stderr=True),
        transient=True,
    )


def needs_extra(exc: ImportError, what: str, extra: str) -> UserError:
    """The one line for a command whose optional dependency is not installed."""
    return UserError(f"{what} needs {exc.name}: pip install 'qsframework[{extra}]'")


def add_options(fn, options: list):
    """Apply click ``options`` to ``fn`` in the order listed (as --help shows them)."""
    for option in reversed(options):
        fn = option(fn)
    return fn
