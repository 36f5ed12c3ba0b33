"""The MAVLink adapter's commands: ``qsf record mavlink``, ``qsf ingest mavlink`` and ``qsf
recordings import tlog|dataflash`` (registered through the ``qsframework.commands`` entry point)."""

from __future__ import annotations

from pathlib import Path

import click

from qsframework.cli.groups import Commands
from qsframework.cli.options import (ACK_TIMEOUT_OPTION, BOOTSTRAP_OPTION, add_options, broker_address, duration_option, needs_extra,
                                     producer_config, progress, topic_prefix_option)
from qsframework.durations import format_time
from qsframework.errors import UserError


@click.command("tlog")
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
        raise needs_extra(exc, "MAVLink support", "mavlink") from None
    size = Path(file).stat().st_size if Path(file).exists() else 0
    with progress(unit="messages") as bar:
        task = bar.add_task("import", total=max(size // 40, 1))  # about 40 bytes per record
        stats = import_tlog(file, out=out_dir, system_id=system_id, component_id=component_id,
                            progress=lambda n: bar.advance(task, n))
    from qsframework.validity import describe_rejected

    span = f"{format_time(stats.first_ts)} .. {format_time(stats.last_ts)}" if stats.first_ts else ""
    click.echo(f"imported {stats.events:,} telemetry messages of system {stats.system_id} component "
               f"{stats.component_id} into {out_dir}/ ({span}); {stats.foreign:,} from other systems and "
               f"{stats.other:,} of other types skipped, {stats.skipped_bytes:,} damaged bytes passed over, "
               f"{describe_rejected(stats.rejected)}")


@click.command("dataflash")
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
        raise needs_extra(exc, "MAVLink support", "mavlink") from None
    with progress(unit="events") as bar:
        task = bar.add_task("import", total=None)
        stats = import_dataflash(file, out=out_dir, progress=lambda n: bar.advance(task, n))
    from qsframework.validity import describe_rejected

    span = f"{format_time(stats.first_ts)} .. {format_time(stats.last_ts)}" if stats.first_ts else ""
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_kind.items()))
    click.echo(f"imported {stats.events:,} telemetry events of system {stats.system_id} into {out_dir}/ ({span}): {kinds}; "
               f"{stats.damaged_bytes:,} damaged bytes passed over, {describe_rejected(stats.rejected)}")


def _mavlink_options(fn):
    options = [
        click.option("--url", required=True, metavar="URL", help="MAVLink connection: udpin:0.0.0.0:14550, udpout:HOST:PORT, tcp:HOST:PORT, /dev/ttyUSB0."),
        click.option("--duration", type=float, metavar="S", help="Stop after S seconds (default: until SIGTERM/Ctrl-C)."),
        click.option("--system-id", type=int, metavar="N", help="The vehicle's system id (default: the first vehicle heartbeat's)."),
        click.option("--component-id", type=int, metavar="N", help="Its component id (default: the heartbeat's)."),
        click.option("--clock", type=click.Choice(["receive", "vehicle"]), default="receive", show_default=True,
                     help="Event time: when a message arrived, or the vehicle's time since boot (for replays run faster than real time)."),
    ]
    return add_options(fn, options)


def _mavlink_config(url: str, system_id: int | None, component_id: int | None, clock: str):
    try:
        import pymavlink  # noqa: F401

        from qsframework.adapters.mavlink.source import MavlinkConfig

        return MavlinkConfig(url=url, system_id=system_id, component_id=component_id, clock=clock)  # type: ignore[arg-type]
    except ImportError as exc:
        raise needs_extra(exc, "MAVLink support", "mavlink") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _mavlink_summary(stats) -> None:
    who = f"system {stats.system_id} component {stats.component_id}" if stats.system_id is not None else "no vehicle seen"
    from qsframework.validity import describe_rejected

    click.echo(f"{stats.events:,} telemetry events from {who}; {stats.received:,} messages received, "
               f"{stats.foreign:,} not the vehicle's, {stats.bad:,} bad; events {describe_rejected(stats.rejected)}")


@click.command("mavlink")
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

    cfg = _mavlink_config(url, system_id, component_id, clock)
    roll_s = duration_option(roll, "--roll") / 1e9
    try:
        stats = asyncio.run(record_mavlink(cfg, out_dir, duration=duration, roll=roll_s))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _mavlink_summary(stats)


@click.command("mavlink")
@_mavlink_options
@BOOTSTRAP_OPTION
@topic_prefix_option("PREFIX.telemetry.")
@ACK_TIMEOUT_OPTION
def ingest_mavlink_cmd(url: str, duration: float | None, system_id: int | None, component_id: int | None,
                       clock: str, bootstrap: str | None, topic_prefix: str, ack_timeout: str | None) -> None:
    """Publish a vehicle's MAVLink telemetry to Kafka (PREFIX.telemetry.position, ...)."""
    import asyncio

    from qsframework.adapters.mavlink.live import ingest_mavlink

    from qsframework.publish import PublishError

    cfg = _mavlink_config(url, system_id, component_id, clock)
    server = broker_address(bootstrap)
    producer = producer_config(ack_timeout)
    try:
        stats = asyncio.run(ingest_mavlink(cfg, server, prefix=topic_prefix, duration=duration, producer=producer))
    except (ValueError, PublishError) as exc:
        raise UserError(str(exc)) from None
    _mavlink_summary(stats)


def register(cli: Commands) -> None:
    cli.imports.add_command(recordings_import_tlog)
    cli.imports.add_command(recordings_import_dataflash)
    cli.record.add_command(record_mavlink_cmd)
    cli.ingest.add_command(ingest_mavlink_cmd)
