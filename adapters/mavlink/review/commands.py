"""``qsf uav``: UAV commands (``qsf uav review``), registered through the ``qsframework.commands``
entry point like the adapters' commands."""

from __future__ import annotations

from pathlib import Path

import click

from qsframework.cli.groups import Commands
from qsframework.cli.options import PARAM_OPTION, needs_extra, progress
from qsframework.errors import UserError

FAIL_ON = ("never", "warn", "fail")


@click.group()
def uav() -> None:
    """UAV flights: reviews of telemetry and onboard logs."""


@uav.command("review")
@click.argument("log", metavar="LOG")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Where review.json goes (created).")
@click.option("--keep-recording", "keep", metavar="DIR", help="Keep the imported recording in DIR (new or empty); by default it is removed.")
@PARAM_OPTION
@click.option("--detectors/--no-detectors", default=True, show_default=True,
              help="Run UavAnomaly over the flight (its alerts in the report); the tests run either way.")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="never", show_default=True,
              help="Exit 1 when a test's status is this bad or worse (for CI); by default the exit code is 0 whatever the verdict.")
def review_cmd(log: str, out_dir: str, keep: str | None, params: tuple[str, ...], detectors: bool,
               fail_on: str) -> None:
    """Review a flight: LOG is a telemetry log (.tlog), an ArduPilot DataFlash log (.bin) or a recording.

    Runs UavAnomaly over it and LogAnalyzer-class tests (battery, sag, VCC, brownout,
    vibration, clipping, GPS, glitches, EKF, link, fence, motor balance, thrust, parameters),
    each pass/warn/fail/na with a summary and the times that show it; writes DIR/review.json
    and prints a table. -p overrides UavAnomaly's thresholds (which the tests share).
    Example: qsf uav review flight.tlog --out review/
    """
    try:
        import pymavlink  # noqa: F401
    except ImportError as exc:
        raise needs_extra(exc, "the flight review", "mavlink") from None
    from qsframework.params import parse_overrides

    from .report import RANK, print_table
    from .review import review

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserError(f"--out {out_dir!r} exists and is not a directory")
    overrides = parse_overrides(params)
    with progress(unit="events") as bar:

        def phase(name: str, total: int | None):
            task = bar.add_task(name, total=total)
            return lambda n: bar.advance(task, n)

        doc = review(log, out=out_dir, keep=keep, overrides=overrides, detectors=detectors, progress=phase)
    print_table(doc)
    click.echo(f"review written to {Path(out_dir) / 'review.json'}")
    if fail_on != "never" and RANK[doc["verdict"]] >= RANK[fail_on]:
        raise SystemExit(1)


def register(cli: Commands) -> None:
    cli.main.add_command(uav)
