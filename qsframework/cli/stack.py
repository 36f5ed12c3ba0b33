"""``qsf stack``: the embedded broker and PostgreSQL for development."""

from __future__ import annotations

import json
import sys

import click

from ..errors import UserError
from .groups import Commands


_DIR_OPTION = click.option(
    "--dir", "stack_dir", metavar="DIR", help="Stack directory (default: $QSF_STACK_DIR or a per-user temp dir)."
)


def _stack(stack_dir: str | None, broker: str | None = None):
    from ..stack import ServiceError, Stack

    try:
        return Stack(stack_dir, broker=broker)
    except (OSError, ServiceError) as exc:
        raise UserError(str(exc)) from None


def _service_call(fn) -> None:
    from ..stack import ServiceError

    try:
        fn()
    except ServiceError as exc:
        raise UserError(str(exc)) from None


@click.group()
def stack() -> None:
    """Embedded broker (Kafka API) and PostgreSQL for development, no Docker.

    Start it with: eval "$(qsf stack up)". Set QSF_KAFKA_BOOTSTRAP and QSF_PG_DSN to use
    other services (e.g. Redpanda and TimescaleDB from docker-compose) instead.
    """


#: the embedded broker's choice, the same for every command that starts the stack itself
BROKER_OPTION = click.option(
    "--broker", type=click.Choice(["kafka", "tansu", "auto"]), default="auto", show_default=True,
    help="Apache Kafka (durable; needs Java 17+, jars fetched once with Maven), Tansu (in-memory), "
         "or auto: the stack's broker, else Kafka where Java 17+ is on PATH, else Tansu.")


@stack.command("up")
@_DIR_OPTION
@BROKER_OPTION
def stack_up(stack_dir: str | None, broker: str) -> None:
    """Start the broker and PostgreSQL in the background; print their addresses as env lines."""
    s = _stack(stack_dir, broker)
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
            what = f"{info['kind']} {info['version']}  " if "kind" in info else ""
            state = f"running (pid {info['pid']})" if info["running"] else "stopped"
            preload = f"  preload: {','.join(info['preload'])}" if info.get("preload") else ""
            click.echo(f"{name:<9} {state:<20} {what}{where}  log: {info['log']}{preload}")
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
_one_service("start", "Start one service again (Apache Kafka keeps its data; Tansu comes back empty).")


def register(cli: Commands) -> None:
    cli.main.add_command(stack)
