"""The ``qsf`` command line, one module per concern: ``backtest``, ``sweep``, ``recordings``, ``live``
(process, ingest replay, demo) and ``stack`` here; adapters add theirs (``qsf record binance``,
``qsf recordings import tlog``, ``qsf sitl``, ...) through the ``qsframework.commands`` entry
points (see :mod:`qsframework.cli.groups`), so the core never imports an adapter.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from ..errors import UserError
from . import backtest, dashboard, health, live, recordings, stack, sweep
from .groups import COMMANDS, ENTRY_POINTS, Commands, main

__all__ = ["COMMANDS", "Commands", "main", "run"]

for _module in (backtest, sweep, recordings, live, stack, health, dashboard):
    _module.register(COMMANDS)


def _register_packages() -> None:
    """Add the commands of every installed package that registers some; one that cannot
    load costs its own commands (a warning line), never the others."""
    for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        try:
            ep.load()(COMMANDS)
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break qsf
            print(f"qsf: warning: the commands of {ep.name} ({ep.value}) are not available: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)


_register_packages()


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


