"""The Binance adapter's commands: ``qsf record binance``, ``qsf ingest binance`` and
``qsf recordings import binance-csv`` (registered through the ``qsframework.commands`` entry point)."""

from __future__ import annotations

from pathlib import Path

import click

from qsframework.cli.groups import Commands
from qsframework.cli.options import (ACK_TIMEOUT_OPTION, BOOTSTRAP_OPTION, FLOOR_DEFAULT, MAX_FUTURE_DEFAULT, add_options, bounds,
                                     broker_address, duration_option, needs_extra, producer_config,
                                     progress, topic_prefix_option)
from qsframework.durations import format_time
from qsframework.errors import UserError


@click.command("binance-csv")
@click.argument("files", nargs=-1, required=True, metavar="FILES...")
@click.option("--symbol", metavar="S", help="Symbol of every file (default: from each file name).")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Recording directory to write (new or empty).")
def recordings_import_binance(files: tuple[str, ...], symbol: str | None, out_dir: str) -> None:
    """Import Binance spot trades/aggTrades dumps (data.binance.vision, .zip or .csv).

    Verifies each file's .CHECKSUM when present; times in ms (before 2025) or us are told
    apart by magnitude. Example:
    qsf recordings import binance-csv BTCUSDT-trades-2025-01-*.zip ETHUSDT-trades-2025-01-*.zip --out recordings/jan
    """
    from qsframework.adapters.binance.importer import estimate_rows, import_binance_csv

    with progress(unit="rows") as bar:
        task = bar.add_task("import", total=estimate_rows(files))
        stats = import_binance_csv(files, out=out_dir, symbol=symbol, progress=lambda n: bar.advance(task, n))
    span = ""
    if stats.first_ts_event is not None:
        span = f" - {format_time(stats.first_ts_event)} .. {format_time(stats.last_ts_event)}"
    symbols = ", ".join(f"{k} {v:,}" for k, v in stats.by_symbol.items())
    click.echo(f"imported {stats.rows:,} trades ({symbols}; {stats.kind}) from {len(stats.files)} file(s) "
               f"into {out_dir}/{span}")
    for f in stats.files:
        unit = f", {f.time_unit} timestamps" if f.time_unit else ""
        click.echo(f"  {Path(f.path).name}: {f.rows:,} rows{unit}, checksum {f.checksum}")
    if stats.unverified:
        click.echo(f"warning: {len(stats.unverified)} file(s) unverified (no .CHECKSUM)", err=True)
    if stats.bad_rows:
        click.echo(f"{stats.bad_rows:,} bad rows skipped, e.g.:", err=True)
        for example in stats.bad_examples:
            click.echo(f"  {example}", err=True)
    if stats.skipped_duplicates:
        click.echo(f"skipped {stats.skipped_duplicates:,} duplicate trades (overlapping files)")


def _binance_options(fn):
    """Options shared by ``qsf record binance`` and ``qsf ingest binance``."""
    options = [
        click.option("--symbols", required=True, metavar="LIST", help="Comma-separated symbols, e.g. btcusdt,ethusdt."),
        click.option("--url", default=None, metavar="URL", envvar="QSF_BINANCE_URL", show_envvar=True,
                     help="WebSocket base URL (default: Binance's public endpoint)."),
        click.option("--stream", type=click.Choice(["trade", "aggTrade"]), default="trade", show_default=True, help="Raw trades or aggregate trades."),
        click.option("--duration", type=float, metavar="S", help="Stop after S seconds (default: run until SIGTERM/Ctrl-C)."),
        click.option("--backfill/--no-backfill", default=False, show_default=True, help="Fetch the trades of a gap from the REST API."),
        click.option("--rest-url", default=None, metavar="URL", envvar="QSF_BINANCE_REST_URL", show_envvar=True,
                     help="REST base URL for --backfill (default: Binance's public API)."),
        click.option("--microseconds", is_flag=True, help="Ask for timeUnit=MICROSECOND (times are exact either way)."),
        click.option("--rotate-after", default="23.5h", show_default=True, metavar="DURATION", help="Open an overlapping new connection after this long (Binance closes at 24 h)."),
        click.option("--max-future", default=MAX_FUTURE_DEFAULT, show_default=True, metavar="DURATION", help="Reject a trade timed more than this ahead of its receipt (or before 2000)."),
        click.option("-v", "--verbose", is_flag=True, help="Log connections, gaps and bad frames."),
    ]
    return add_options(fn, options)


def _binance_config(symbols: str, url: str | None, stream: str, backfill: bool, rest_url: str | None,
                    microseconds: bool, rotate_after: str, max_future: str):
    from qsframework.durations import parse_duration

    limits = bounds(max_future, FLOOR_DEFAULT)
    try:
        from qsframework.adapters.binance.config import DEFAULT_REST, DEFAULT_URL, BinanceConfig

        syms = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
        return BinanceConfig(symbols=syms, stream=stream, url=url or DEFAULT_URL,
                             rest_url=rest_url or DEFAULT_REST, backfill=backfill,
                             microseconds=microseconds,
                             rotate_after=parse_duration(rotate_after) / 1e9,
                             bounds=limits)
    except ImportError as exc:
        raise needs_extra(exc, "the Binance adapter", "binance") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _binance_run(coro_fn, verbose: bool):
    import asyncio
    import logging

    from qsframework.adapters.binance.config import SourceFailed

    from qsframework.errors import PublishError

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        summary = asyncio.run(coro_fn())
    except (ValueError, SourceFailed, PublishError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{summary.trades:,} trades in {summary.wall_s:.1f} s; {summary.gaps} gaps "
               f"({summary.missing:,} missing ids, {summary.backfilled:,} backfilled); "
               f"{summary.duplicates:,} duplicates and {summary.rejected:,} bad frames dropped; "
               f"{summary.reconnects} reconnects, {summary.rotations} rotations")


@click.command("binance")
@_binance_options
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Recording directory (created or appended to).")
@click.option("--roll", default="60s", show_default=True, metavar="DURATION", help="Write buffered events as new files this often (a crash loses at most this much).")
def record_binance_cmd(symbols: str, url: str | None, stream: str, duration: float | None, backfill: bool,
                       rest_url: str | None, microseconds: bool, rotate_after: str, max_future: str,
                       verbose: bool, out_dir: str, roll: str) -> None:
    """Record Binance spot trades from the WebSocket streams.

    Example: qsf record binance --symbols btcusdt,ethusdt --out recordings/live --duration 3600
    """
    from qsframework.adapters.binance.live import record_binance

    cfg = _binance_config(symbols, url, stream, backfill, rest_url, microseconds, rotate_after, max_future)
    roll_s = duration_option(roll, "--roll") / 1e9
    _binance_run(lambda: record_binance(cfg, out_dir, duration=duration, roll=roll_s), verbose)


@click.command("binance")
@_binance_options
@BOOTSTRAP_OPTION
@topic_prefix_option("PREFIX.trades, PREFIX.gaps, PREFIX.dlq.")
@ACK_TIMEOUT_OPTION
def ingest_binance_cmd(symbols: str, url: str | None, stream: str, duration: float | None, backfill: bool,
                       rest_url: str | None, microseconds: bool, rotate_after: str, max_future: str,
                       verbose: bool, bootstrap: str | None, topic_prefix: str, ack_timeout: str | None) -> None:
    """Publish Binance spot trades to Kafka (PREFIX.trades; gaps to PREFIX.gaps; bad frames to PREFIX.dlq)."""
    from qsframework.adapters.binance.live import ingest_binance

    cfg = _binance_config(symbols, url, stream, backfill, rest_url, microseconds, rotate_after, max_future)
    server = broker_address(bootstrap)
    producer = producer_config(ack_timeout)
    _binance_run(lambda: ingest_binance(cfg, server, prefix=topic_prefix, duration=duration, producer=producer),
                 verbose)


def register(cli: Commands) -> None:
    cli.imports.add_command(recordings_import_binance)
    cli.record.add_command(record_binance_cmd)
    cli.ingest.add_command(ingest_binance_cmd)
