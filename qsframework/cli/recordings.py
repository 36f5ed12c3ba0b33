"""``qsf recordings info`` and ``qsf recordings generate`` (importers are the adapters')."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..durations import format_time
from ..errors import UserError
from .groups import Commands
from .options import progress, time_option


@click.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def recordings_info(path: str, as_json: bool) -> None:
    """Print kinds, keys, counts and time span of the recording at PATH."""
    from ..recording import Recording

    info = Recording(path).info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    origin = info.get("origin") or {}
    note = f" - SYNTHETIC (simulated {origin.get('simulated', 'market')})" if origin.get("synthetic") else ""
    click.echo(f"recording {info['path']} (format v{info['format_version']}){note}")
    if origin.get("rejected"):
        from ..validity import describe_rejected

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


@click.command("generate")
@click.option("--symbols", default="BTCUSDT,ETHUSDT", show_default=True, help="Comma-separated symbols.")
@click.option("--minutes", required=True, type=float, help="Length of the recording in minutes.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same bytes.")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Recording directory to write.")
@click.option("--start", metavar="T", help="Start time (ISO 8601 UTC); default 2026-01-05T00:00:00Z.")
def recordings_generate(symbols: str, minutes: float, seed: int, out_dir: str, start: str | None) -> None:
    """Write a synthetic trade recording from the seeded market simulator."""
    from ..recording import RecordingWriter
    from ..sim.market import DEFAULT_START_NS, estimate_rate, simulate_trades

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not syms:
        raise UserError("--symbols needs at least one symbol")
    if minutes <= 0:
        raise UserError("--minutes must be positive")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out_dir!r} exists and is not empty; choose a new directory")
    t0 = time_option(start, "--start") if start else DEFAULT_START_NS
    total = int(estimate_rate(syms) * minutes * 60)
    rows = 0
    origin = {
        "synthetic": True,
        "generator": "qsframework.sim.market",
        "symbols": syms,
        "minutes": minutes,
        "seed": seed,
        "start_ns": t0,
    }
    with progress(unit="trades") as bar, RecordingWriter(out, origin=origin) as writer:
        task = bar.add_task("generate", total=total)
        for table in simulate_trades(syms, minutes=minutes, seed=seed, start_ns=t0):
            writer.write("trade", table)
            rows += table.num_rows
            bar.advance(task, table.num_rows)
    click.echo(f"wrote {rows:,} synthetic trades of {', '.join(syms)} ({minutes:g} min, seed {seed}) to {out_dir}/")


def register(cli: Commands) -> None:
    cli.recordings.add_command(recordings_info)
    cli.recordings.add_command(recordings_generate)
