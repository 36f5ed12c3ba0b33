"""``qsf dashboard backtest|sweep|live|flight``: a marimo notebook served on localhost."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from .groups import Commands

_PORT = click.option("--port", type=int, default=None, metavar="P",
                     help="Port on 127.0.0.1 (default: a free one).")
_HOST = click.option("--host", default=None, metavar="H",
                     help="Address to serve on (default 127.0.0.1); another one (0.0.0.0: every interface, "
                          "e.g. in a container) needs QSF_DASHBOARD_PASSWORD, which every browser is asked for.")
_EDIT = click.option("--edit", is_flag=True, help="Open the notebook in marimo's editor (marimo edit) instead of the app view.")


def _existing_dir(path: str, what: str, marker: str | None = None) -> str:
    """PATH as an absolute string when it is a directory (holding MARKER when named); else one line."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{what} {path}: not a directory")
    if marker is not None and not (p / marker).is_file():
        raise UserError(f"{what} {path}: no {marker} in it")
    return str(p.resolve())


def _serve(name: str, args: dict[str, str], port: int | None, edit: bool, host: str | None = None) -> None:
    from ..dashboards.server import LOOPBACK, DashboardConfig, notebook_path, serve, with_host

    notebook_path(name)  # a missing notebook is one line before anything starts
    if edit and host is not None and host not in LOOPBACK:
        raise UserError("--edit runs code the browser sends: only on 127.0.0.1, not with --host")
    config = with_host(DashboardConfig(name=name, args=args, port=port, edit=edit), host)

    def announce(url: str) -> None:
        click.echo(f"qsf dashboard {name}: {url}  (Ctrl-C stops it)")

    code = serve(config, on_url=announce)
    if code:
        raise UserError(f"the marimo server exited with code {code}")


@click.group()
def dashboard() -> None:
    """Marimo dashboards served on 127.0.0.1 (headless; open the printed URL)."""


@dashboard.command("backtest")
@click.argument("out_dir", metavar="DIR")
@click.option("--recording", "recording", metavar="DIR", help="The recording the backtest ran on (default: the one report.json names).")
@_PORT
@_EDIT
def dashboard_backtest(out_dir: str, recording: str | None, port: int | None, edit: bool) -> None:
    """Report on a `qsf backtest --out DIR`: prices with signals and fills, spread, equity, metrics."""
    args = {"dir": _existing_dir(out_dir, "backtest dir", "report.json")}
    if recording is not None:
        args["recording"] = _existing_dir(recording, "recording", "recording.json")
    _serve("backtest", args, port, edit)


@dashboard.command("sweep")
@click.argument("sweep_dir", metavar="DIR")
@_PORT
@_EDIT
def dashboard_sweep(sweep_dir: str, port: int | None, edit: bool) -> None:
    """A `qsf sweep --out DIR`: a metric's heatmap over two parameters and the sortable table."""
    _serve("sweep", {"dir": _existing_dir(sweep_dir, "sweep dir", "sweep.parquet")}, port, edit)


@dashboard.command("live")
@_PORT
@_HOST
@_EDIT
def dashboard_live(port: int | None, host: str | None, edit: bool) -> None:
    """Live operations on $QSF_PG_DSN: prices, spread, signals, fills, pipeline health."""
    _serve("live", {}, port, edit, host)


@dashboard.command("flight")
@click.argument("flight_dir", metavar="DIR")
@_PORT
@_EDIT
def dashboard_flight(flight_dir: str, port: int | None, edit: bool) -> None:
    """A UAV flight: a telemetry recording or a `qsf sitl scenario run` directory."""
    _serve("flight", {"dir": _existing_dir(flight_dir, "flight dir")}, port, edit)


def register(cli: Commands) -> None:
    cli.main.add_command(dashboard)
