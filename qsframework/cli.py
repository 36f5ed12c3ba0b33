"""The ``qsf`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .durations import format_time, parse_time
from .errors import UserError
from .validity import DEFAULT_FLOOR_NS, DEFAULT_MAX_FUTURE_NS, NS_PER_S

if TYPE_CHECKING:
    from .validity import TimeBounds

BATCH_DEFAULT = 65_536
# the event-time bounds' defaults, as options show them (the values live in qsframework.validity)
MAX_FUTURE_DEFAULT = f"{DEFAULT_MAX_FUTURE_NS // NS_PER_S}s"
FLOOR_DEFAULT = format_time(DEFAULT_FLOOR_NS)


def _time_option(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise UserError(f"{name}: {exc}") from None


def _bounds(max_future: str, floor: str) -> TimeBounds:
    """The ts_event bounds of --max-future and --floor."""
    from .durations import parse_duration
    from .validity import TimeBounds

    try:
        max_future_ns = parse_duration(max_future)
    except ValueError as exc:
        raise UserError(f"--max-future: {exc}") from None
    if max_future_ns < 0:
        raise UserError("--max-future must not be negative")
    floor_ns = _time_option(floor, "--floor")
    assert floor_ns is not None
    return TimeBounds(max_future_ns=max_future_ns, floor_ns=floor_ns)


def _progress(*, unit: str = "events"):
    """A rich progress bar on stderr when it is a terminal, nothing otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="qsf")
def main() -> None:
    """QuantStream: backtest a strategy on recordings, run the same class live."""


# -- backtest ------------------------------------------------------------------------
@main.command()
@click.argument("spec")
@click.option("--recording", "recording_dir", required=True, metavar="DIR", help="Recording directory to replay.")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Where signals.parquet, alerts.parquet and report.json go.")
@click.option("--start", metavar="T", help="First event time (ISO 8601 UTC or ns), inclusive.")
@click.option("--end", metavar="T", help="Last event time (ISO 8601 UTC or ns), exclusive.")
@click.option("--batch-size", default=BATCH_DEFAULT, show_default=True, type=int, help="Events per batch (outputs do not depend on it).")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a strategy parameter (repeatable); durations like 30s, 5m.")
@click.option("--path", "path", type=click.Choice(["auto", "event", "batch"]), default="auto", show_default=True, help="Handler path: per-event, vectorized batch, or batch when the strategy has one.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the strategy's ctx.rng.")
@click.option("--max-future", "max_future", default=MAX_FUTURE_DEFAULT, show_default=True, metavar="D",
              help="Skip (and list in rejected.parquet) events whose ts_event is more than D ahead of their ts_recv.")
@click.option("--floor", "floor", default=FLOOR_DEFAULT, show_default=True, metavar="T",
              help="Skip (and list in rejected.parquet) events whose ts_event is before T.")
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback when the strategy raises.")
def backtest(spec: str, recording_dir: str, out_dir: str, start: str | None, end: str | None,
             batch_size: int, params: tuple[str, ...], path: str, seed: int, max_future: str,
             floor: str, verbose: bool) -> None:
    """Run strategy SPEC (file.py:Class or module:Class) over a recording.

    Example: qsf backtest strategies/btc_eth_spread.py:BtcEthSpread --recording recordings/sample --out out -p window=30s
    """
    from .backtest import run_backtest
    from .errors import StrategyError
    from .loader import load_strategy
    from .params import build_params, parse_overrides
    from .recording import Recording

    overrides = parse_overrides(params)
    cls = load_strategy(spec)
    build_params(cls.Params, overrides, owner=f"strategy {cls.__name__}")  # fail before reading
    bounds = _bounds(max_future, floor)
    recording = Recording(recording_dir)
    t_start, t_end = _time_option(start, "--start"), _time_option(end, "--end")
    try:
        with _progress() as bar:
            task = bar.add_task("backtest", total=None)
            result = run_backtest(
                cls, recording, out=Path(out_dir), overrides=overrides, start=t_start, end=t_end,
                batch_size=batch_size, path=path, seed=seed, spec=spec, bounds=bounds,  # type: ignore[arg-type]
                on_progress=lambda n, _ts: bar.advance(task, n),
                on_total=lambda n: bar.update(task, total=n),
                on_phase=lambda phase: bar.update(
                    task, description="preparing (compiles kernels on first use)" if phase == "prepare" else "backtest"
                ),
            )
    except StrategyError as exc:
        if verbose and exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        raise
    for note in result.warnings:
        click.echo(f"qsf: warning: {note}", err=True)
    r = result.report
    span = r["span"]
    prep = f" (+{r['prepare_s']:.1f} s to prepare)" if r["prepare_s"] >= 0.5 else ""
    cold = "; the batch path compiles in the background for the next run" if r["warm_up"] else ""
    click.echo(
        f"{cls.__name__} ({r['path']} path{cold}): {result.events_in:,} events "
        f"{span['first'] or '-'} .. {span['last'] or '-'} in {result.wall_s:.2f} s{prep} "
        f"({r['events_per_s'] or 0:,.0f} events/s) -> {result.signals:,} signals, "
        f"{result.alerts:,} alerts in {out_dir}/"
    )


# -- recordings ----------------------------------------------------------------------
@main.group()
def recordings() -> None:
    """Inspect and create recordings (Parquet files of events)."""


@recordings.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def recordings_info(path: str, as_json: bool) -> None:
    """Print kinds, keys, counts and time span of the recording at PATH."""
    from .recording import Recording

    info = Recording(path).info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    origin = info.get("origin") or {}
    note = f" - SYNTHETIC (simulated {origin.get('simulated', 'market')})" if origin.get("synthetic") else ""
    click.echo(f"recording {info['path']} (format v{info['format_version']}){note}")
    if origin.get("rejected"):
        from .validity import describe_rejected

        click.echo(f"  events {describe_rejected(origin['rejected'])} when it was made")
    if not info["kinds"]:
        click.echo("  (empty)")
    for kind, k in info["kinds"].items():
        if not k["rows"]:
            click.echo(f"  kind={kind}: no events in {k['files']} file(s)")
            continue
        secs = (k["ts_max"] - k["ts_min"]) / 1e9
        click.echo(
            f"  kind={kind}: {k['rows']:,} events in {k['files']} file(s), "
            f"{format_time(k['ts_min'])} .. {format_time(k['ts_max'])} ({secs:,.1f} s)"
        )
        width = max(len(key) for key in k["keys"])
        for key, v in k["keys"].items():
            rate = v["rows"] / max(secs, 1e-9)
            click.echo(f"    {key:<{width}}  {v['rows']:>12,}  {rate:10.1f}/s  "
                       f"{format_time(v['ts_min'])} .. {format_time(v['ts_max'])}")


@recordings.command("generate")
@click.option("--symbols", default="BTCUSDT,ETHUSDT", show_default=True, help="Comma-separated symbols.")
@click.option("--minutes", required=True, type=float, help="Length of the recording in minutes.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same bytes.")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Recording directory to write.")
@click.option("--start", metavar="T", help="Start time (ISO 8601 UTC); default 2026-01-05T00:00:00Z.")
def recordings_generate(symbols: str, minutes: float, seed: int, out_dir: str, start: str | None) -> None:
    """Write a synthetic trade recording from the seeded market simulator."""
    from .recording import RecordingWriter
    from .simulate import DEFAULT_START_NS, estimate_rate, simulate_trades

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not syms:
        raise UserError("--symbols needs at least one symbol")
    if minutes <= 0:
        raise UserError("--minutes must be positive")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out_dir!r} exists and is not empty; choose a new directory")
    t0 = _time_option(start, "--start") if start else DEFAULT_START_NS
    total = int(estimate_rate(syms) * minutes * 60)
    rows = 0
    origin = {
        "synthetic": True,
        "generator": "qsframework.simulate",
        "symbols": syms,
        "minutes": minutes,
        "seed": seed,
        "start_ns": t0,
    }
    with _progress(unit="trades") as bar, RecordingWriter(out, origin=origin) as writer:
        task = bar.add_task("generate", total=total)
        for table in simulate_trades(syms, minutes=minutes, seed=seed, start_ns=t0):
            writer.write("trade", table)
            rows += table.num_rows
            bar.advance(task, table.num_rows)
    click.echo(f"wrote {rows:,} synthetic trades of {', '.join(syms)} ({minutes:g} min, seed {seed}) to {out_dir}/")


@recordings.group("import")
def recordings_import() -> None:
    """Import outside data as a recording."""


@recordings_import.command("binance-csv")
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

    with _progress(unit="rows") as bar:
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


@recordings_import.command("tlog")
@click.argument("file", metavar="FILE")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Recording directory to write (new or empty).")
@click.option("--system-id", type=int, metavar="N", help="The vehicle's MAVLink system id (default: the first vehicle heartbeat's).")
@click.option("--component-id", type=int, metavar="N", help="Its component id (default: the heartbeat's, usually 1).")
def recordings_import_tlog(file: str, out_dir: str, system_id: int | None, component_id: int | None) -> None:
    """Import a MAVLink telemetry log (.tlog) as telemetry events.

    Only the vehicle's own messages are kept (not a ground station's); ts_event is the
    log's per-packet time. Example: qsf recordings import tlog flight.tlog --out recordings/flight
    """
    try:
        from qsframework.adapters.mavlink.tlog import import_tlog
    except ImportError as exc:
        raise UserError(f"MAVLink support needs {exc.name}: pip install 'qsframework[mavlink]'") from None
    size = Path(file).stat().st_size if Path(file).exists() else 0
    with _progress(unit="messages") as bar:
        task = bar.add_task("import", total=max(size // 40, 1))  # about 40 bytes per record
        stats = import_tlog(file, out=out_dir, system_id=system_id, component_id=component_id,
                            progress=lambda n: bar.advance(task, n))
    from .validity import describe_rejected

    span = f"{format_time(stats.first_ts)} .. {format_time(stats.last_ts)}" if stats.first_ts else ""
    click.echo(f"imported {stats.events:,} telemetry messages of system {stats.system_id} component "
               f"{stats.component_id} into {out_dir}/ ({span}); {stats.foreign:,} from other systems and "
               f"{stats.other:,} of other types skipped, {stats.skipped_bytes:,} damaged bytes passed over, "
               f"{describe_rejected(stats.rejected)}")


@recordings_import.command("dataflash")
@click.argument("file", metavar="FILE")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Recording directory to write (new or empty).")
def recordings_import_dataflash(file: str, out_dir: str) -> None:
    """Import an ArduPilot onboard log (DataFlash .bin) as telemetry events.

    Onboard logs have no telemetry link: heartbeat events mark arming and mode changes
    only, so run UavAnomaly on them with -p link=false. Example:
    qsf recordings import dataflash 00000042.BIN --out recordings/flight42
    """
    try:
        from qsframework.adapters.mavlink.dataflash import import_dataflash
    except ImportError as exc:
        raise UserError(f"MAVLink support needs {exc.name}: pip install 'qsframework[mavlink]'") from None
    with _progress(unit="events") as bar:
        task = bar.add_task("import", total=None)
        stats = import_dataflash(file, out=out_dir, progress=lambda n: bar.advance(task, n))
    from .validity import describe_rejected

    span = f"{format_time(stats.first_ts)} .. {format_time(stats.last_ts)}" if stats.first_ts else ""
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_kind.items()))
    click.echo(f"imported {stats.events:,} telemetry events of system {stats.system_id} into {out_dir}/ ({span}): {kinds}; "
               f"{stats.damaged_bytes:,} damaged bytes passed over, {describe_rejected(stats.rejected)}")


# -- ingest ----------------------------------------------------------------------------
def _bootstrap(option: str | None) -> str:
    import os

    server = option or os.environ.get("QSF_KAFKA_BOOTSTRAP")
    if not server:
        raise UserError('no broker: set QSF_KAFKA_BOOTSTRAP (e.g. eval "$(qsf stack up)") or pass --bootstrap')
    return server


@main.group()
def ingest() -> None:
    """Publish events to Kafka topics (qsf.trades, ...)."""


@ingest.command("replay")
@click.option("--recording", "recording_dir", required=True, metavar="DIR", help="Recording to publish.")
@click.option("--speed", type=float, metavar="X", help="Pace by event time, X times real time (default: as fast as possible).")
@click.option("--start", metavar="T", help="First event time (ISO 8601 UTC or ns), inclusive.")
@click.option("--end", metavar="T", help="Last event time, exclusive.")
@click.option("--bootstrap", metavar="HOST:PORT", help="Broker (default: $QSF_KAFKA_BOOTSTRAP).")
@click.option("--topic-prefix", default="qsf", show_default=True, help="Topics are PREFIX.trades, PREFIX.dlq, ...")
def ingest_replay(recording_dir: str, speed: float | None, start: str | None, end: str | None,
                  bootstrap: str | None, topic_prefix: str) -> None:
    """Publish a recording's events to their topics in total order, then exit."""
    import asyncio

    from aiokafka.errors import KafkaError

    from .publish import PublishError
    from .recording import Recording
    from .replay import replay

    if speed is not None and speed <= 0:
        raise UserError("--speed must be positive")
    server = _bootstrap(bootstrap)
    rec = Recording(recording_dir)
    t_start, t_end = _time_option(start, "--start"), _time_option(end, "--end")
    with _progress() as bar:
        task = bar.add_task("replay", total=rec.rows())
        try:
            stats = asyncio.run(replay(rec, server, speed=speed, start=t_start, end=t_end,
                                       prefix=topic_prefix, on_progress=lambda n: bar.advance(task, n)))
        except KafkaError as exc:
            raise UserError(f"broker {server}: {exc}") from None
        except PublishError as exc:
            raise UserError(str(exc)) from None
    topics = ", ".join(f"{t} {n:,}" for t, n in stats.per_topic.items())
    click.echo(f"published {stats.events:,} events in {stats.wall_s:.2f} s "
               f"({stats.events / max(stats.wall_s, 1e-9):,.0f}/s): {topics}")


def _binance_options(fn):
    """Options shared by ``qsf record binance`` and ``qsf ingest binance``."""
    options = [
        click.option("--symbols", required=True, metavar="LIST", help="Comma-separated symbols, e.g. btcusdt,ethusdt."),
        click.option("--url", default=None, metavar="URL", help="WebSocket base URL (default: Binance's public endpoint)."),
        click.option("--stream", type=click.Choice(["trade", "aggTrade"]), default="trade", show_default=True, help="Raw trades or aggregate trades."),
        click.option("--duration", type=float, metavar="S", help="Stop after S seconds (default: run until SIGTERM/Ctrl-C)."),
        click.option("--backfill/--no-backfill", default=False, show_default=True, help="Fetch the trades of a gap from the REST API."),
        click.option("--rest-url", default=None, metavar="URL", help="REST base URL for --backfill (default: Binance's public API)."),
        click.option("--microseconds", is_flag=True, help="Ask for timeUnit=MICROSECOND (times are exact either way)."),
        click.option("--rotate-after", default="23.5h", show_default=True, metavar="DURATION", help="Open an overlapping new connection after this long (Binance closes at 24 h)."),
        click.option("--max-future", default=MAX_FUTURE_DEFAULT, show_default=True, metavar="DURATION", help="Reject a trade timed more than this ahead of its receipt (or before 2000)."),
        click.option("-v", "--verbose", is_flag=True, help="Log connections, gaps and bad frames."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _binance_config(symbols: str, url: str | None, stream: str, backfill: bool, rest_url: str | None,
                    microseconds: bool, rotate_after: str, max_future: str):
    from .durations import parse_duration

    bounds = _bounds(max_future, FLOOR_DEFAULT)
    try:
        from qsframework.adapters.binance.client import DEFAULT_REST, DEFAULT_URL, BinanceConfig

        syms = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
        return BinanceConfig(symbols=syms, stream=stream, url=url or DEFAULT_URL,
                             rest_url=rest_url or DEFAULT_REST, backfill=backfill,
                             microseconds=microseconds,
                             rotate_after=parse_duration(rotate_after) / 1e9,
                             bounds=bounds)
    except ImportError as exc:
        raise UserError(f"the Binance adapter needs {exc.name}: pip install 'qsframework[binance]'") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _binance_run(coro_fn, verbose: bool):
    import asyncio
    import logging

    from qsframework.adapters.binance.client import SourceFailed

    from .errors import PublishError

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


@main.group()
def record() -> None:
    """Record live sources straight to a recording (Parquet)."""


@record.command("binance")
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

    from .durations import parse_duration

    cfg = _binance_config(symbols, url, stream, backfill, rest_url, microseconds, rotate_after, max_future)
    try:
        roll_s = parse_duration(roll) / 1e9
    except ValueError as exc:
        raise UserError(f"--roll: {exc}") from None
    _binance_run(lambda: record_binance(cfg, out_dir, duration=duration, roll=roll_s), verbose)


@ingest.command("binance")
@_binance_options
@click.option("--bootstrap", metavar="HOST:PORT", help="Broker (default: $QSF_KAFKA_BOOTSTRAP).")
@click.option("--topic-prefix", default="qsf", show_default=True, help="Topics are PREFIX.trades, PREFIX.gaps, PREFIX.dlq.")
def ingest_binance_cmd(symbols: str, url: str | None, stream: str, duration: float | None, backfill: bool,
                       rest_url: str | None, microseconds: bool, rotate_after: str, max_future: str,
                       verbose: bool, bootstrap: str | None, topic_prefix: str) -> None:
    """Publish Binance spot trades to Kafka (PREFIX.trades; gaps to PREFIX.gaps; bad frames to PREFIX.dlq)."""
    from qsframework.adapters.binance.live import ingest_binance

    cfg = _binance_config(symbols, url, stream, backfill, rest_url, microseconds, rotate_after, max_future)
    server = _bootstrap(bootstrap)
    _binance_run(lambda: ingest_binance(cfg, server, prefix=topic_prefix, duration=duration), verbose)


def _mavlink_options(fn):
    options = [
        click.option("--url", required=True, metavar="URL", help="MAVLink connection: udpin:0.0.0.0:14550, udpout:HOST:PORT, tcp:HOST:PORT, /dev/ttyUSB0."),
        click.option("--duration", type=float, metavar="S", help="Stop after S seconds (default: until SIGTERM/Ctrl-C)."),
        click.option("--system-id", type=int, metavar="N", help="The vehicle's system id (default: the first vehicle heartbeat's)."),
        click.option("--component-id", type=int, metavar="N", help="Its component id (default: the heartbeat's)."),
        click.option("--clock", type=click.Choice(["receive", "vehicle"]), default="receive", show_default=True,
                     help="Event time: when a message arrived, or the vehicle's time since boot (for replays run faster than real time)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _mavlink_config(url: str, system_id: int | None, component_id: int | None, clock: str):
    try:
        import pymavlink  # noqa: F401

        from qsframework.adapters.mavlink.source import MavlinkConfig

        return MavlinkConfig(url=url, system_id=system_id, component_id=component_id, clock=clock)  # type: ignore[arg-type]
    except ImportError as exc:
        raise UserError(f"MAVLink support needs {exc.name}: pip install 'qsframework[mavlink]'") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _mavlink_summary(stats) -> None:
    who = f"system {stats.system_id} component {stats.component_id}" if stats.system_id is not None else "no vehicle seen"
    from .validity import describe_rejected

    click.echo(f"{stats.events:,} telemetry events from {who}; {stats.received:,} messages received, "
               f"{stats.foreign:,} not the vehicle's, {stats.bad:,} bad; events {describe_rejected(stats.rejected)}")


@record.command("mavlink")
@_mavlink_options
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Recording directory (created or appended to).")
@click.option("--roll", default="60s", show_default=True, metavar="DURATION", help="Write buffered events as new files this often.")
def record_mavlink_cmd(url: str, duration: float | None, system_id: int | None, component_id: int | None,
                       clock: str, out_dir: str, roll: str) -> None:
    """Record a vehicle's MAVLink telemetry (ArduPilot, PX4, SITL, the emulator) to a recording.

    Example: qsf record mavlink --url udpin:0.0.0.0:14550 --out recordings/flight --duration 600
    """
    import asyncio

    from qsframework.adapters.mavlink.live import record_mavlink

    from .durations import parse_duration

    cfg = _mavlink_config(url, system_id, component_id, clock)
    try:
        roll_s = parse_duration(roll) / 1e9
    except ValueError as exc:
        raise UserError(f"--roll: {exc}") from None
    try:
        stats = asyncio.run(record_mavlink(cfg, out_dir, duration=duration, roll=roll_s))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _mavlink_summary(stats)


@ingest.command("mavlink")
@_mavlink_options
@click.option("--bootstrap", metavar="HOST:PORT", help="Broker (default: $QSF_KAFKA_BOOTSTRAP).")
@click.option("--topic-prefix", default="qsf", show_default=True, help="Topics are PREFIX.telemetry.")
def ingest_mavlink_cmd(url: str, duration: float | None, system_id: int | None, component_id: int | None,
                       clock: str, bootstrap: str | None, topic_prefix: str) -> None:
    """Publish a vehicle's MAVLink telemetry to Kafka (PREFIX.telemetry.position, ...)."""
    import asyncio

    from qsframework.adapters.mavlink.live import ingest_mavlink

    from .publish import PublishError

    cfg = _mavlink_config(url, system_id, component_id, clock)
    server = _bootstrap(bootstrap)
    try:
        stats = asyncio.run(ingest_mavlink(cfg, server, prefix=topic_prefix, duration=duration))
    except (ValueError, PublishError) as exc:
        raise UserError(str(exc)) from None
    _mavlink_summary(stats)


@main.group()
def sitl() -> None:
    """The vehicle emulator (an ArduCopter SITL stand-in) and anomaly runs."""


def _sitl_module():
    try:
        from qsframework.adapters.mavlink import sitl as module
    except ImportError as exc:
        raise UserError(f"the emulator needs {exc.name}: pip install 'qsframework[mavlink]'") from None
    return module


@sitl.command("emulate")
@click.option("--to", "target", required=True, metavar="udp:HOST:PORT", help="Where to send the MAVLink stream.")
@click.option("--scenario", default="clean", show_default=True, metavar="NAME|FILE", help="A bundled scenario (qsf sitl scenario list) or a TOML file.")
@click.option("--duration", type=float, metavar="S", help="Stop after S mission seconds (default: the scenario's).")
@click.option("--speedup", default=1.0, show_default=True, type=float, metavar="X", help="Mission time runs X times faster than real time.")
@click.option("--truth", metavar="FILE", help="Write the injected faults and their onset times (JSON).")
@click.option("--seed", default=0, show_default=True, type=int)
def sitl_emulate(target: str, scenario: str, duration: float | None, speedup: float, truth: str | None, seed: int) -> None:
    """Fly a scenario and stream it as MAVLink v2 over UDP, like an ArduCopter SITL.

    Example: qsf sitl emulate --to udp:127.0.0.1:14550 --scenario gps_loss --speedup 10 --truth truth.json
    """
    module = _sitl_module()
    plan = module.Scenario.load(scenario)
    with _progress(unit="mission s") as bar:
        task = bar.add_task(plan.name, total=duration or plan.duration_s)
        stats = module.emulate(plan, to=target, speedup=speedup, duration=duration, truth=truth, seed=seed,
                               on_progress=lambda t, total: bar.update(task, completed=t))
    faults = ", ".join(f"{name} at {onset:.1f} s" for name, onset in zip(stats.faults, stats.onsets_s, strict=True)) or "no faults"
    click.echo(f"{plan.name}: {stats.packets:,} packets in {stats.mission_s:.0f} mission s "
               f"({stats.wall_s:.1f} s wall); {faults}" + (f"; truth in {truth}" if truth else ""))


@sitl.group("scenario")
def sitl_scenario() -> None:
    """Scenarios: flights with faults on a timeline."""


@sitl_scenario.command("list")
def sitl_scenario_list() -> None:
    """The bundled scenarios and what they inject."""
    module = _sitl_module()
    for name in module.list_scenarios():
        plan = module.Scenario.load(name)
        faults = ", ".join(f"{f.param}={f.value:g} at {f.at_s:g} s" for f in plan.faults) or "-"
        click.echo(f"{name:<15} {plan.duration_s:>5.0f} s  {faults}  {plan.description}")


@sitl_scenario.command("run")
@click.argument("name", required=False)
@click.option("--all", "run_all", is_flag=True, help="Run every bundled scenario (each in DIR/NAME), except the 1-hour endurance flight.")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Where report.json, truth.json, the recording and the outputs go (new or empty).")
@click.option("--speedup", default=20.0, show_default=True, type=float, metavar="X", help="Mission time runs X times faster than real time.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a UavAnomaly parameter.")
def sitl_scenario_run(name: str | None, run_all: bool, out_dir: str, speedup: float, seed: int,
                      params: tuple[str, ...]) -> None:
    """Fly scenario NAME through UDP into the MAVLink adapter and UavAnomaly; score the alerts.

    Writes DIR/report.json: per injected fault, detected or not, by which alert, with what
    latency (mission seconds) against the target (1 s, plus the detector's own timer for the
    battery and the link), and the false positives. Example: qsf sitl scenario run gps_loss --out out/gps_loss
    """
    module = _sitl_module()
    from qsframework.adapters.mavlink.anomaly import RunConfig, run_scenario

    from .params import parse_overrides

    if (name is None) == (not run_all):
        raise UserError("give a scenario NAME or --all")
    if speedup <= 0:
        raise UserError("--speedup must be positive")
    config = RunConfig(speedup=speedup, seed=seed, overrides=parse_overrides(params))
    from .recording.writer import require_empty

    names = [n for n in module.list_scenarios() if n != "endurance"] if run_all else [name]
    outs = [Path(out_dir) / scenario for scenario in names] if run_all else [Path(out_dir)]
    for out in outs:
        require_empty(out)  # before any flight: a run never joins an earlier run's recording
    totals = [0, 0, 0, 0]
    for scenario, out in zip(names, outs, strict=True):
        report = run_scenario(scenario, out, config=config)
        for f in report["faults"]:
            verdict = "MISSED"
            if f["detected"]:
                late = "" if f["in_time"] else f" (target {f['target_s']:g} s: LATE)"
                verdict = f"detected as {f['alert']} after {f['latency_s']:.1f} s{late}"
            click.echo(f"  {f['fault']:<15} onset {f['onset_s']:6.1f} s: {verdict}")
        fp = len(report["false_positives"])
        click.echo(f"{report['scenario']}: {report['detected']} of {len(report['faults'])} faults detected "
                   f"({report['in_time']} in time), {fp} false positives -> {out}/report.json")
        totals = [totals[0] + report["detected"], totals[1] + len(report["faults"]),
                  totals[2] + report["in_time"], totals[3] + fp]
    if run_all:
        click.echo(f"all {len(names)} scenarios: {totals[0]} of {totals[1]} faults detected ({totals[2]} in time), "
                   f"{totals[3]} false positives")


@sitl.command("run")
@click.option("--connect", required=True, metavar="URL", help="The SITL's MAVLink port, e.g. tcp:127.0.0.1:5760 (or a real vehicle's link).")
@click.option("--scenario", metavar="NAME|FILE", help="Inject this scenario's SIM_* faults by PARAM_SET on its timeline.")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Where the recording, alerts, truth.json and report.json go (new or empty).")
@click.option("--duration", default=300.0, show_default=True, type=float, metavar="S", help="How long to watch.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a UavAnomaly parameter.")
def sitl_run(connect: str, scenario: str | None, out_dir: str, duration: float, params: tuple[str, ...]) -> None:
    """Watch a real ArduPilot SITL (optional tier: needs your own SITL), injecting faults.

    Start SITL (e.g. sim_vehicle.py -v ArduCopter), arm and fly a mission from MAVProxy or a
    ground station, then: qsf sitl run --connect tcp:127.0.0.1:5762 --scenario gps_loss --out out/real
    """
    _sitl_module()
    from qsframework.adapters.mavlink.anomaly import run_real_sitl

    from .params import parse_overrides

    try:
        report = run_real_sitl(connect, out_dir, scenario=scenario, duration=duration, overrides=parse_overrides(params))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{report['messages']:,} messages, {report['events']:,} events; {report['detected']} of "
               f"{len(report['faults'])} injected faults detected, {len(report['false_positives'])} other alerts "
               f"-> {out_dir}/report.json")


# -- process ---------------------------------------------------------------------------
@main.command()
@click.argument("spec")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Override a strategy parameter (repeatable).")
@click.option("--group", metavar="G", help="Consumer group (default: qsf-<strategy name>).")
@click.option("--sink", "sinks", multiple=True, type=click.Choice(["kafka", "timescale", "telegram"]),
              help="kafka: outputs to PREFIX.signals/PREFIX.alerts; timescale: input and outputs to $QSF_PG_DSN; "
                   "telegram: alerts to $QSF_TELEGRAM_CHAT_ID via $QSF_TELEGRAM_TOKEN (sent once, deduplicated in $QSF_PG_DSN).")
@click.option("--out", "out_dir", metavar="DIR",
              help="Write signals/alerts as Parquet part directories (DIR/signals.parquet/part-*.parquet), the backtest's rows; a restart appends.")
@click.option("--record", "record_dir", metavar="DIR", help="Write the consumed input as a recording.")
@click.option("--exit-when-idle", type=float, metavar="SECONDS", help="Finish once no event arrived for this long.")
@click.option("--state", "state_dir", metavar="DIR", help="Snapshot the engine with each commit; a restart resumes exactly from it.")
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
              help="A committed or --state offset the broker's log no longer has: stop with an error, or read the partition from its start.")
@click.option("--commit-interval", default="1s", show_default=True, metavar="DURATION",
              help="At most one commit (offsets, --state snapshot, --out part file) per interval.")
@click.option("--bootstrap", metavar="HOST:PORT", help="Broker (default: $QSF_KAFKA_BOOTSTRAP).")
@click.option("--topic-prefix", default="qsf", show_default=True, help="Topics are PREFIX.trades, PREFIX.dlq, ...")
@click.option("-v", "--verbose", is_flag=True, help="Log progress (lag, events/s, latency) every 5 s; tracebacks of strategy errors.")
def process(spec: str, params: tuple[str, ...], group: str | None, sinks: tuple[str, ...], out_dir: str | None,
            record_dir: str | None, exit_when_idle: float | None, state_dir: str | None, lateness: str,
            max_future: str, floor: str, idle_timeout: str, max_held: int, on_reset: str, commit_interval: str,
            bootstrap: str | None, topic_prefix: str, verbose: bool) -> None:
    """Run strategy SPEC live on Kafka topics with the backtest's engine.

    Stops cleanly on SIGTERM/SIGINT: outputs flushed, offsets committed, exit code 0; a sink
    still retrying after a few seconds is cut short (its batch is read again on restart).
    """
    import asyncio
    import logging
    import os
    import traceback

    from aiokafka.errors import KafkaConnectionError, KafkaError

    from .durations import parse_duration
    from .loader import load_strategy
    from .params import build_params, parse_overrides
    from .processor import ProcessConfig, Processor, StrategyFailed, install_signal_handlers
    from .sinks.telegram import TelegramError

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if not verbose:  # its connection errors are reported once, as qsf's own error line
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    overrides = parse_overrides(params)
    cls = load_strategy(spec)
    build_params(cls.Params, overrides, owner=f"strategy {cls.__name__}")
    durations = {}
    for name, value in (("--lateness", lateness), ("--idle-timeout", idle_timeout), ("--commit-interval", commit_interval)):
        try:
            durations[name] = parse_duration(value)
        except ValueError as exc:
            raise UserError(f"{name}: {exc}") from None
    if max_held < 1:
        raise UserError("--max-held must be at least 1")
    bounds = _bounds(max_future, floor)
    cfg = ProcessConfig(
        bootstrap=_bootstrap(bootstrap), group=group or f"qsf-{cls.name}", prefix=topic_prefix,
        lateness_ns=durations["--lateness"], idle_timeout_s=durations["--idle-timeout"] / 1e9, max_held=max_held,
        on_reset=on_reset, commit_interval_s=durations["--commit-interval"] / 1e9,  # type: ignore[arg-type]
        exit_when_idle_s=exit_when_idle, out=Path(out_dir) if out_dir else None,
        record=Path(record_dir) if record_dir else None, sinks=sinks, overrides=overrides,
        pg_dsn=os.environ.get("QSF_PG_DSN"), state=Path(state_dir) if state_dir else None, bounds=bounds,
    )
    if "timescale" in sinks and not cfg.pg_dsn:
        raise UserError('--sink timescale needs QSF_PG_DSN (e.g. eval "$(qsf stack up)")')
    if "telegram" in sinks and not (os.environ.get("QSF_TELEGRAM_TOKEN") and os.environ.get("QSF_TELEGRAM_CHAT_ID")):
        raise UserError("--sink telegram needs QSF_TELEGRAM_TOKEN and QSF_TELEGRAM_CHAT_ID in the environment")

    async def main_async():
        proc = Processor(cls, cfg)
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
    lat = f", latency p50 {stats.latency_ms_p50:.1f} ms p99 {stats.latency_ms_p99:.1f} ms" if stats.latency_ms_p50 is not None else ""
    extra = "".join(f", {n:,} {what}" for n, what in ((stats.redelivered, "re-read after a restart"),
                                                        (stats.released_early, "released early (--max-held)")) if n)
    click.echo(
        f"{cls.__name__}: processed {stats.processed:,} events ({stats.rejected:,} rejected, {stats.late:,} late{extra}) "
        f"in {stats.wall_s:.1f} s -> {stats.signals:,} signals, {stats.alerts:,} alerts{lat}"
    )
    if stats.interrupted:
        click.echo("qsf: warning: stopped while a sink was retrying: its last batch is not committed "
                   "and will be read again on restart", err=True)


# -- demo ------------------------------------------------------------------------------
@main.command()
@click.option("--duration", default=None, type=float, metavar="S", help="Stop after this many seconds (default: when every replayed event is processed).")
@click.option("--speed", default=None, type=float, metavar="X", help="Replay the sample at X times real time (default: as fast as possible).")
@click.option("--dir", "stack_dir", metavar="DIR", help="Stack directory for the embedded broker and database.")
def demo(duration: float | None, speed: float | None, stack_dir: str | None) -> None:
    """The live pipeline in one command: embedded stack, sample replayed as live, the spread
    strategy writing to PostgreSQL, a running summary, and a clean stop once every replayed
    event is processed (exit 1 if it was stopped before, by --duration or Ctrl-C)."""
    import asyncio

    from .demo import run_demo, sample_recording
    from .publish import PublishError
    from .stack import ServiceError

    if speed is not None and speed <= 0:
        raise UserError("--speed must be positive")
    if not sample_recording().is_dir():
        raise UserError(f"the sample recording is missing ({sample_recording()}); reinstall qsframework")
    try:
        result = asyncio.run(run_demo(duration_s=duration, speed=speed,
                                      stack_dir=Path(stack_dir) if stack_dir else None, report=click.echo))
    except (ServiceError, PublishError) as exc:
        raise UserError(str(exc)) from None
    summary = (f"{result.processed:,} events processed in {result.wall_s:.1f} s, {result.signals:,} signals, "
               f"{result.alerts:,} alerts, {result.rows_in_db:,} rows in PostgreSQL")
    if result.complete:
        click.echo(f"demo done: {summary}")
        return
    why = {"duration": "by --duration", "signal": "by a signal"}.get(result.stopped_by or "", "early")
    click.echo(f"qsf: demo stopped {why} before the end: {summary}", err=True)
    sys.exit(130 if result.stopped_by == "signal" else 1)


# -- stack -----------------------------------------------------------------------------
_DIR_OPTION = click.option(
    "--dir", "stack_dir", metavar="DIR", help="Stack directory (default: $QSF_STACK_DIR or a per-user temp dir)."
)


def _stack(stack_dir: str | None):
    from .stack import ServiceError, Stack

    try:
        return Stack(stack_dir)
    except (OSError, ServiceError) as exc:
        raise UserError(str(exc)) from None


def _service_call(fn) -> None:
    from .stack import ServiceError

    try:
        fn()
    except ServiceError as exc:
        raise UserError(str(exc)) from None


@main.group()
def stack() -> None:
    """Embedded broker (Kafka API) and PostgreSQL for development, no Docker.

    Start it with: eval "$(qsf stack up)". Set QSF_KAFKA_BOOTSTRAP and QSF_PG_DSN to use
    other services (e.g. Redpanda and TimescaleDB from docker-compose) instead.
    """


@stack.command("up")
@_DIR_OPTION
def stack_up(stack_dir: str | None) -> None:
    """Start the broker and PostgreSQL in the background; print their addresses as env lines."""
    s = _stack(stack_dir)
    _service_call(s.up)
    for line in s.endpoints.env_lines():
        click.echo(f"export {line}")


@stack.command("down")
@_DIR_OPTION
@click.option("--purge", is_flag=True, help="Also delete the data and logs.")
def stack_down(stack_dir: str | None, purge: bool) -> None:
    """Stop both services."""
    s = _stack(stack_dir)
    _service_call(lambda: s.down(purge=purge))
    click.echo(f"stack in {s.root} stopped{' and deleted' if purge else ''}", err=True)


@stack.command("status")
@_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stack_status(stack_dir: str | None, as_json: bool) -> None:
    """Show whether each service runs, its pid, address and log. Exit code 1 if one is down."""
    s = _stack(stack_dir)
    st = s.status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        for name, info in st.items():
            where = info.get("bootstrap") or info.get("dsn")
            state = f"running (pid {info['pid']})" if info["running"] else "stopped"
            click.echo(f"{name:<9} {state:<20} {where}  log: {info['log']}")
    if not all(info["running"] for info in st.values()):
        sys.exit(1)


def _one_service(action: str, help_text: str) -> None:
    @stack.command(action, help=help_text)
    @click.argument("service", type=click.Choice(["broker", "postgres"]))
    @_DIR_OPTION
    def command(service: str, stack_dir: str | None) -> None:
        s = _stack(stack_dir)
        _service_call(getattr(s.service(service), action))
        click.echo(f"{service} {'stopped' if action == 'stop' else 'running'}", err=True)


_one_service("stop", "Stop one service (to rehearse an outage).")
_one_service("start", "Start one service again (the broker comes back empty: it keeps data in memory).")


def run() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        code = main.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        click.echo(f"qsf: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("qsf: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        click.echo(f"qsf: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("qsf: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:  # disk full, permissions, ...: the user can act on it
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"qsf: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
