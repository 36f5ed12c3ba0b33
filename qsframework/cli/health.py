"""``qsf health``: one line on whether the live pipeline works; exit 0 when it does (a
container's HEALTHCHECK, compose's ``service_healthy``), 1 when not, 2 for bad input."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from ..errors import UserError
from .groups import Commands
from .options import BOOTSTRAP_OPTION, broker_address, duration_option


@click.command("health")
@BOOTSTRAP_OPTION
@click.option("--group", metavar="G", help="Only this consumer group's processors (default: any).")
@click.option("--here", is_flag=True, help="Only processors on this host (a container's own processor).")
@click.option("--max-age", default="60s", show_default=True, metavar="DURATION",
              help="How recent a processor's last report and, while it has lag, its last commit must be.")
@click.option("--timeout", default="5s", show_default=True, metavar="DURATION",
              help="How long the broker and the database have to answer.")
def health(bootstrap: str | None, group: str | None, here: bool, max_age: str, timeout: str) -> None:
    """Is the live pipeline working? Exit 0 when the broker ($QSF_KAFKA_BOOTSTRAP) and the
    database ($QSF_PG_DSN) answer and a processor (qsf process --sink timescale) reported
    to pipeline_health within --max-age and committed within it (or has no lag); else exit 1.
    One line of status either way."""
    from ..live.health import this_host
    from ..live.health_check import HealthCheck, check_health

    dsn = os.environ.get("QSF_PG_DSN")
    if not dsn:
        raise UserError('no database: set QSF_PG_DSN (e.g. eval "$(qsf stack up)")')
    max_age_s = duration_option(max_age, "--max-age") / 1e9
    timeout_s = duration_option(timeout, "--timeout") / 1e9
    if max_age_s <= 0 or timeout_s <= 0:
        raise UserError("--max-age and --timeout must be positive")
    check = HealthCheck(bootstrap=broker_address(bootstrap), dsn=dsn, group=group,
                        host=this_host() if here else None, max_age_s=max_age_s, timeout_s=timeout_s)
    result = asyncio.run(check_health(check))
    click.echo(result.line)
    if not result.ok:
        sys.exit(1)


def register(cli: Commands) -> None:
    cli.main.add_command(health)
