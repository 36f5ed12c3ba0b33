"""The live commands of the core: ``qsf process`` (a strategy on Kafka topics), ``qsf ingest
replay`` (a recording published as live) and ``qsf demo`` (both, on the embedded stack)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UserError
from .groups import Commands
from .options import (ACK_TIMEOUT_OPTION, BOOTSTRAP_OPTION, FLOOR_DEFAULT, MAX_FUTURE_DEFAULT, PARAM_OPTION, bounds, broker_address,
                      duration_option, execution_options, producer_config, progress, time_option,
                      topic_prefix_option)
from .stack import BROKER_OPTION

if TYPE_CHECKING:
    from ..execution.config import ExecutionConfig
    from ..live.config import ProcessStats


BUILTIN_SINKS = ("kafka", "timescale", "telegram")


@click.command()
@click.argument("spec")
@PARAM_OPTION
@click.option("--group", metavar="G", help="Consumer group (default: qsf-<strategy name>).")
@click.option("--sink", "sinks", multiple=True, metavar="NAME|SPEC",
              help="kafka: outputs to PREFIX.signals/alerts/orders/fills/equity; timescale: input and outputs to $QSF_PG_DSN; "
                   "telegram: alerts to $QSF_TELEGRAM_CHAT_ID via $QSF_TELEGRAM_TOKEN (sent once, deduplicated in $QSF_PG_DSN); "
                   "or your own qsframework.io.Sink as path/to/file.py:Class or module:Class (made with no arguments).")
@click.option("--out", "out_dir", metavar="DIR",
              help="Write signals/alerts (and orders/fills/equity once the strategy orders, with the metrics in DIR/report.json) "
                   "as Parquet part directories (DIR/signals.parquet/part-*.parquet), the backtest's rows; a restart appends.")
@click.option("--record", "record_dir", metavar="DIR",
              help="Write the consumed input as a recording (files published at each commit; with a state snapshot a restart never doubles it).")
@click.option("--exit-when-idle", type=float, metavar="SECONDS", help="Finish once no event arrived for this long (counted once the consumer has its partitions).")
@click.option("--state", "state_dir", metavar="DIR|none",
              help="Keep the engine snapshot (taken with each commit; a restart resumes exactly from it) in DIR instead of "
                   "the default, the compacted Kafka topic PREFIX.state.GROUP; none: keep no snapshot.")
@click.option("--no-state", is_flag=True, help="Keep no snapshot: a restart resumes from the committed offsets with a fresh strategy.")
@click.option("--lateness", default="0s", show_default=True, metavar="DURATION", help="Allowed out-of-orderness before the watermark.")
@click.option("--max-future", default=MAX_FUTURE_DEFAULT, show_default=True, metavar="DURATION",
              help="Dead-letter events whose ts_event is more than this ahead of their ts_recv "
                   "(or whose ts_recv is more than this ahead of this machine's clock).")
@click.option("--floor", "floor", default=FLOOR_DEFAULT, show_default=True, metavar="T",
              help="Dead-letter events whose ts_event is before this instant.")
@click.option("--idle-timeout", default="5s", show_default=True, metavar="DURATION",
              help="A partition with nothing new for this long (and read to its end) stops holding the watermark back.")
@click.option("--max-held", default=1_000_000, show_default=True, type=int, metavar="N",
              help="Rows that may wait behind the watermark; past it the oldest are released early (counted).")
@click.option("--on-reset", type=click.Choice(["fail", "earliest"]), default="fail", show_default=True,
              help="A committed or snapshot offset the broker's log no longer has: stop with an error, or read the partition from its start.")
@click.option("--commit-interval", default=None, metavar="DURATION",
              help="At most one commit (offsets, state snapshot, --out part file) per interval "
                   "[default: 1s with exactly-once delivery, else 5s].")
@click.option("--health-interval", default="2s", show_default=True, metavar="DURATION",
              help="With --sink timescale: one pipeline_health row (events/s, lag, latency, dead letters, last commit) "
                   "per interval; 0: none.")
@BOOTSTRAP_OPTION
@topic_prefix_option()
@execution_options
@click.option("-v", "--verbose", is_flag=True, help="Log progress (lag, events/s, latency) every 5 s; tracebacks of strategy errors.")
def process(spec: str, params: tuple[str, ...], group: str | None, sinks: tuple[str, ...], out_dir: str | None,
            record_dir: str | None, exit_when_idle: float | None, state_dir: str | None, no_state: bool, lateness: str,
            max_future: str, floor: str, idle_timeout: str, max_held: int, on_reset: str, commit_interval: str,
            health_interval: str, bootstrap: str | None, topic_prefix: str, execution: ExecutionConfig, verbose: bool) -> None:
    """Run strategy SPEC live on Kafka topics with the backtest's engine.

    Stops cleanly on SIGTERM/SIGINT: outputs flushed, offsets committed, exit code 0; a sink
    still retrying after a few seconds is cut short (its batch is read again on restart).
    Orders fill in the backtest's simulator (paper trading), with the same execution options.
    The engine's state is kept with each commit in the group's compacted topic PREFIX.state.GROUP
    (or --state DIR), so a restart anywhere resumes exactly. With --sink kafka on a broker with
    transactions, outputs, state and offsets commit in one transaction (exactly-once for
    read_committed consumers); otherwise at-least-once with idempotent sinks. The first line
    printed says which state store and which guarantee are in force.

    Several processes with the same --group share the input partitions by the strategy's
    scale: "key" (e.g. UavAnomaly) runs one engine per assigned partition (files under
    --out DIR/p<N>), "single" (the default) keeps one active member and the others stand by.
    """
    import asyncio
    import logging
    import os
    import traceback

    from aiokafka.errors import KafkaConnectionError, KafkaError

    from ..loader import load_sink, load_strategy
    from ..params import build_params, parse_overrides
    from ..live import ProcessConfig, Processor, ScaledOut, StrategyFailed, install_signal_handlers
    from ..errors import PublishError
    from ..sinks.telegram import TelegramError

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if not verbose:  # its connection errors are reported once, as qsf's own error line
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    overrides = parse_overrides(params)
    cls = load_strategy(spec)
    build_params(cls.Params, overrides, owner=f"strategy {cls.__name__}")
    durations = {name: duration_option(value, name) for name, value in (
        ("--lateness", lateness), ("--idle-timeout", idle_timeout), ("--commit-interval", commit_interval),
        ("--health-interval", health_interval)) if value is not None}
    if max_held < 1:
        raise UserError("--max-held must be at least 1")
    limits = bounds(max_future, floor)
    if no_state and state_dir not in (None, "none"):
        raise UserError("--no-state and --state DIR contradict each other: give one")
    state = "none" if no_state or state_dir == "none" else Path(state_dir) if state_dir else "kafka"
    cfg = ProcessConfig(
        bootstrap=broker_address(bootstrap), group=group or f"qsf-{cls.name}", prefix=topic_prefix,
        lateness_ns=durations["--lateness"], idle_timeout_s=durations["--idle-timeout"] / 1e9, max_held=max_held,
        on_reset=on_reset, commit_interval_s=durations["--commit-interval"] / 1e9 if commit_interval else None,  # type: ignore[arg-type]
        health_interval_s=durations["--health-interval"] / 1e9,
        exit_when_idle_s=exit_when_idle, out=Path(out_dir) if out_dir else None,
        record=Path(record_dir) if record_dir else None, sinks=sinks, overrides=overrides,
        pg_dsn=os.environ.get("QSF_PG_DSN"), state=state, bounds=limits,
        execution=execution,
    )
    for name in sinks:  # a sink that cannot be made fails here, before anything is consumed
        if name not in BUILTIN_SINKS:
            if ":" not in name:
                raise UserError(f"--sink {name!r}: not one of {', '.join(BUILTIN_SINKS)} nor a path/to/file.py:Class "
                                "or module:Class")
            load_sink(name)
    if "timescale" in sinks and not cfg.pg_dsn:
        raise UserError('--sink timescale needs QSF_PG_DSN (e.g. eval "$(qsf stack up)")')
    if "telegram" in sinks and not (os.environ.get("QSF_TELEGRAM_TOKEN") and os.environ.get("QSF_TELEGRAM_CHAT_ID")):
        raise UserError("--sink telegram needs QSF_TELEGRAM_TOKEN and QSF_TELEGRAM_CHAT_ID in the environment")

    async def main_async():
        runner = ScaledOut if cls.scale == "key" else Processor  # one engine per partition, or one for all
        proc = runner(cls, cfg, announce=lambda line: click.echo(line))
        install_signal_handlers(proc)
        return await proc.run()

    try:
        stats = asyncio.run(main_async())
    except KafkaConnectionError:
        raise UserError(f"cannot reach the broker at {cfg.bootstrap} (is it running? see qsf stack up)") from None
    except KafkaError as exc:
        raise UserError(f"broker {cfg.bootstrap}: {exc}") from None
    except StrategyFailed as exc:
        if verbose and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        raise UserError(f"{exc} (nothing of this batch was committed{'' if verbose else '; -v shows the traceback'})") from None
    except TelegramError as exc:
        raise UserError(f"--sink telegram: {exc} (nothing of this batch was committed)") from None
    except PublishError as exc:  # --sink kafka: outputs the broker did not acknowledge
        raise UserError(f"--sink kafka: {exc} (nothing of this batch was committed)") from None
    lat = f", latency p50 {stats.latency_ms_p50:.1f} ms p99 {stats.latency_ms_p99:.1f} ms" if stats.latency_ms_p50 is not None else ""
    extra = "".join(f", {n:,} {what}" for n, what in ((stats.redelivered, "re-read after a restart"),
                                                        (stats.released_early, "released early (--max-held)")) if n)
    click.echo(
        f"{cls.__name__}: processed {stats.processed:,} events ({stats.rejected:,} rejected, {stats.late:,} late{extra}) "
        f"in {stats.wall_s:.1f} s -> {stats.signals:,} signals, {stats.alerts:,} alerts{_paper(stats)}{lat}"
    )
    if stats.interrupted:
        click.echo("qsf: warning: stopped while a sink was retrying: its last batch is not committed "
                   "and will be read again on restart", err=True)


def _paper(stats: ProcessStats) -> str:
    """The summary's part on paper trading: the run's metrics as the backtest shows them (with
    --out), else this run's fills; nothing for a strategy that never ordered."""
    from ..execution.metrics import summary

    if stats.metrics is not None:
        return summary(stats.metrics)
    return f", {stats.fills:,} fills" if stats.orders else ""


@click.command("replay")
@click.option("--recording", "recording_dir", required=True, metavar="DIR", help="Recording to publish.")
@click.option("--speed", type=float, metavar="X", help="Pace by event time, X times real time (default: as fast as possible).")
@click.option("--start", metavar="T", help="First event time (ISO 8601 UTC or ns), inclusive.")
@click.option("--end", metavar="T", help="Last event time, exclusive.")
@BOOTSTRAP_OPTION
@topic_prefix_option()
@ACK_TIMEOUT_OPTION
def ingest_replay(recording_dir: str, speed: float | None, start: str | None, end: str | None,
                  bootstrap: str | None, topic_prefix: str, ack_timeout: str | None) -> None:
    """Publish a recording's events to their topics in total order, then exit."""
    import asyncio

    from aiokafka.errors import KafkaError

    from ..publish import PublishError
    from ..recording import Recording
    from ..replay import replay

    if speed is not None and speed <= 0:
        raise UserError("--speed must be positive")
    server = broker_address(bootstrap)
    producer = producer_config(ack_timeout)
    rec = Recording(recording_dir)
    t_start, t_end = time_option(start, "--start"), time_option(end, "--end")
    with progress() as bar:
        task = bar.add_task("replay", total=rec.rows())
        try:
            stats = asyncio.run(replay(rec, server, speed=speed, start=t_start, end=t_end, producer=producer,
                                       prefix=topic_prefix, on_progress=lambda n: bar.advance(task, n)))
        except KafkaError as exc:
            raise UserError(f"broker {server}: {exc}") from None
        except PublishError as exc:
            raise UserError(str(exc)) from None
    topics = ", ".join(f"{t} {n:,}" for t, n in stats.per_topic.items())
    click.echo(f"published {stats.events:,} events in {stats.wall_s:.2f} s "
               f"({stats.events / max(stats.wall_s, 1e-9):,.0f}/s): {topics}")


@click.command()
@click.option("--duration", default=None, type=float, metavar="S", help="Stop after this many seconds (default: when every replayed event is processed).")
@click.option("--speed", default=None, type=float, metavar="X", help="Replay the sample at X times real time (default: as fast as possible).")
@click.option("--dir", "stack_dir", metavar="DIR", help="Stack directory for the embedded broker and database.")
@BROKER_OPTION
def demo(duration: float | None, speed: float | None, stack_dir: str | None, broker: str) -> None:
    """The live pipeline in one command: embedded stack, sample replayed as live, the spread
    strategy writing to PostgreSQL, a running summary, and a clean stop once every replayed
    event is processed (exit 1 if it was stopped before, by --duration or Ctrl-C)."""
    import asyncio

    from ..demo import run_demo, sample_recording
    from ..publish import PublishError
    from ..stack import ServiceError

    if speed is not None and speed <= 0:
        raise UserError("--speed must be positive")
    if not sample_recording().is_dir():
        raise UserError(f"the sample recording is missing ({sample_recording()}); reinstall qsframework")
    try:
        result = asyncio.run(run_demo(duration_s=duration, speed=speed, broker=broker,
                                      stack_dir=Path(stack_dir) if stack_dir else None, report=click.echo))
    except (ServiceError, PublishError) as exc:
        raise UserError(str(exc)) from None
    summary = (f"{result.processed:,} events processed in {result.wall_s:.1f} s, {result.signals:,} signals, "
               f"{result.alerts:,} alerts, {result.rows_in_db:,} rows in PostgreSQL")
    if result.complete:
        click.echo(f"demo done: {summary}")
        click.echo(f"live dashboard of these tables: {result.dashboard}")
        return
    why = {"duration": "by --duration", "signal": "by a signal"}.get(result.stopped_by or "", "early")
    click.echo(f"qsf: demo stopped {why} before the end: {summary}", err=True)
    sys.exit(130 if result.stopped_by == "signal" else 1)


def register(cli: Commands) -> None:
    cli.main.add_command(process)
    cli.main.add_command(demo)
    cli.ingest.add_command(ingest_replay)
