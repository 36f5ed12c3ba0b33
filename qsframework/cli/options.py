"""What the commands share: time and duration options, the event-time bounds, the execution
settings, the broker address, the progress bar, the summary of rejected events."""

from __future__ import annotations

import functools
import math
import os
import sys
import tomllib
from typing import TYPE_CHECKING, Any, Literal

import click

from ..durations import format_time, parse_duration, parse_time
from ..errors import UserError
from ..validity import DEFAULT_FLOOR_NS, DEFAULT_MAX_FUTURE_NS, NS_PER_S

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..execution.config import ExecutionConfig
    from ..validity import TimeBounds

BATCH_DEFAULT = 65_536
# the event-time bounds' defaults, as options show them (the values live in qsframework.validity)
MAX_FUTURE_DEFAULT = f"{DEFAULT_MAX_FUTURE_NS // NS_PER_S}s"
FLOOR_DEFAULT = format_time(DEFAULT_FLOOR_NS)

PARAM_OPTION = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                            help="Override a strategy parameter (repeatable); durations like 30s, 5m.")
# what ``qsf backtest`` and ``qsf sweep`` both take
START_OPTION = click.option("--start", metavar="T", help="First event time (ISO 8601 UTC or ns), inclusive.")
END_OPTION = click.option("--end", metavar="T", help="Last event time (ISO 8601 UTC or ns), exclusive.")
BATCH_OPTION = click.option("--batch-size", default=BATCH_DEFAULT, show_default=True, type=int,
                            help="Events per batch (outputs do not depend on it).")
SEED_OPTION = click.option("--seed", default=0, show_default=True, type=int, help="Seed of the strategy's ctx.rng.")
MAX_FUTURE_OPTION = click.option(
    "--max-future", "max_future", default=MAX_FUTURE_DEFAULT, show_default=True, metavar="D",
    help="Skip (and list in rejected.parquet) events whose ts_event is more than D ahead of their ts_recv.")
FLOOR_OPTION = click.option("--floor", "floor", default=FLOOR_DEFAULT, show_default=True, metavar="T",
                            help="Skip (and list in rejected.parquet) events whose ts_event is before T.")
BOOTSTRAP_OPTION = click.option("--bootstrap", metavar="HOST:PORT", help="Broker (default: $QSF_KAFKA_BOOTSTRAP).")


ACK_TIMEOUT_OPTION = click.option(
    "--ack-timeout", metavar="DURATION",
    help="Count a record as lost (exit 2) when the broker has not acknowledged it within this long (default: 120s, as Kafka's delivery timeout).")


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
    return click.option("--topic-prefix", default="qsf", show_default=True, envvar="QSF_TOPIC_PREFIX", show_envvar=True,
                        help=f"Topics are {topics}")


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


# -- execution settings ------------------------------------------------------------------
#: each setting: the kind of value, the ExecutionConfig field, its default as shown, its help
_SETTINGS: dict[str, tuple[Literal["duration", "number", "fraction"], str, str, str]] = {
    "latency": ("duration", "latency_ns", "0ms",
                "Order latency: an order placed at event time t is active from t + D; a cancel "
                "takes effect at its time + D."),
    "slippage_bps": ("number", "slippage_bps", "0",
                     "A market order fills at the trade price x (1 +/- X / 10^4), worse for the taker."),
    "taker_fee_bps": ("number", "taker_fee_bps", "10", "Fee of market orders, in basis points of the notional."),
    "maker_fee_bps": ("number", "maker_fee_bps", "10", "Fee of limit orders, in basis points of the notional."),
    "cash": ("number", "cash", "100000", "Initial cash, in the quote currency."),
    "mark_every": ("duration", "mark_every_ns", "1s", "Equity sampled at every multiple of D (and at the last event)."),
    "max_participation": ("fraction", "max_participation", "no limit",
                          "Each trade fills at most F x its quantity of the orders it matches (0 < F <= 1); "
                          "orders then fill over several trades."),
}


def _execution_option(name: str) -> Any:
    kind, _, default, text = _SETTINGS[name]
    metavar = {"duration": "D", "number": "X", "fraction": "F"}[kind]
    return click.option(f"--{name.replace('_', '-')}", name, metavar=metavar,
                        help=f"{text} [default: {default}]")


_EXECUTION_OPTIONS = [*map(_execution_option, _SETTINGS), click.option(
    "--config", "config_file", metavar="FILE.toml",
    help="Run-config file: its [execution] table holds the settings above (names with "
         "underscores, e.g. taker_fee_bps = 7.5, latency = \"20ms\"); options given here win.")]


def execution_options(fn: Any, *, tables: tuple[str, ...] = ()) -> Any:
    """Add the execution options (and --config) to a command, which then receives them as
    one ``execution`` argument, an :class:`~qsframework.execution.config.ExecutionConfig`.
    ``tables``: the command's own tables the run-config file may also hold; the command then
    receives ``config`` too, the file's document (empty without --config)."""
    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _SETTINGS}
        config_file = kwargs.pop("config_file")
        doc = _config_doc(config_file, tables) if config_file is not None else {}
        kwargs["execution"] = execution_config(given, config_file, doc=doc)
        if tables:
            kwargs["config"] = doc
        return fn(*args, **kwargs)

    return add_options(command, _EXECUTION_OPTIONS)


def execution_config(given: dict[str, str | None], config_file: str | None, *,
                     doc: dict[str, Any] | None = None) -> ExecutionConfig:
    """The settings of ``config_file``'s [execution] table, overridden by the options given
    (None: not given); a bad value or an unknown name is a UserError. ``doc``: the file
    already read."""
    from ..execution.config import ExecutionConfig

    values: dict[str, Any] = {}
    if config_file is not None:
        table = _config_table(config_file, doc if doc is not None else _config_doc(config_file, ()))
        values = {name: _setting(name, value, f"--config {config_file}: execution.{name}")
                  for name, value in table.items()}
    for name, text in given.items():
        if text is not None:
            values[name] = _setting(name, text, f"--{name.replace('_', '-')}")
    try:
        return ExecutionConfig(**{_SETTINGS[name][1]: value for name, value in values.items()})
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _config_doc(path: str, tables: tuple[str, ...]) -> dict[str, Any]:
    """A run-config file, its tables checked: [execution] and the command's ``tables``."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise UserError(f"--config {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--config {path}: not valid TOML: {exc}") from None
    known = ("execution", *tables)
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise UserError(f"--config {path}: unknown table or key {unknown[0]!r} "
                        f"(known: {', '.join(f'[{t}]' for t in known)})")
    return doc


def _config_table(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The [execution] table of a run-config file, its names checked."""
    table = doc.get("execution", {})
    if not isinstance(table, dict):
        raise UserError(f"--config {path}: execution must be a table ([execution])")
    unknown = sorted(set(table) - set(_SETTINGS))
    if unknown:
        raise UserError(f"--config {path}: [execution] has no setting {unknown[0]!r} "
                        f"(known: {', '.join(_SETTINGS)})")
    return table


def _setting(name: str, value: Any, where: str) -> int | float:
    """One setting's value (text from an option, or a TOML value) as the config holds it."""
    kind = _SETTINGS[name][0]
    if kind == "duration":
        if not isinstance(value, str):
            raise UserError(f"{where}: a duration is text such as \"250ms\" or \"1s\", not {value!r}")
        return duration_option(value, where)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UserError(f"{where}: expected a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{where}: expected a number, not {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"{where}: expected a finite number, not {value!r}")
    return number
