"""``qsf sweep``: a strategy over a grid of parameters, every point a backtest, on every core."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ..errors import UserError
from .groups import Commands
from .options import (BATCH_OPTION, END_OPTION, FLOOR_OPTION, MAX_FUTURE_OPTION, SEED_OPTION, START_OPTION,
                      bounds, execution_options, progress, time_option)

if TYPE_CHECKING:
    from ..execution.config import ExecutionConfig
    from ..sweep.point import PointResult
    from ..sweep.run import Progress

#: the [sweep] table of --config: the options' names (underscores), and the grid as a table
CONFIG_KEYS = ("spec", "recording", "out", "grid", "workers", "objective", "direction", "keep", "search",
               "trials", "ray", "walk_forward", "start", "end", "batch_size", "seed", "max_future", "floor")


@click.command()
@click.argument("spec", required=False)
@click.option("--recording", "recording_dir", metavar="DIR|URI",
              help="Recording directory to replay, or a pyarrow filesystem URI (s3://bucket/path, "
                   "file:///path; S3 set up by the AWS_* environment variables).  [required]")
@click.option("--out", "out_dir", metavar="DIR",
              help="Where sweep.parquet and points/<id>/ (each as qsf backtest --out) go.  [required]")
@click.option("-g", "--grid", "grid", multiple=True, metavar="NAME=VALUES",
              help="A parameter's values: a list (window=30s,60s,120s) or a range lo:hi:step "
                   "(threshold=0.003:0.01:0.001, hi included); repeatable, the grid is the product.")
@click.option("--workers", type=int, metavar="N", help="Points run at once.  [default: all cores]")
@click.option("--objective", default="sharpe", show_default=True, metavar="METRIC",
              help="The metric points are ranked by (report.json's metrics).")
@click.option("--direction", type=click.Choice(["max", "min"]), default="max", show_default=True,
              help="Whether a larger or a smaller objective is better.")
@click.option("--keep", type=int, metavar="N",
              help="At the end keep only the best N points' directories (the table keeps every row).")
@click.option("--search", type=click.Choice(["grid", "random", "optuna"]), default="grid", show_default=True,
              help="Every point of the grid, or --trials points chosen at random or by Optuna.")
@click.option("--trials", type=int, metavar="N", help="Points a random or Optuna search runs.")
@click.option("--ray", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Run the points as Ray tasks: a local Ray, or a cluster (e.g. ray://head:10001).")
@click.option("--walk-forward", "walk_forward", metavar="train=D,test=D[,step=D]",
              help="Per fold choose the best point on a train window, test it on the next window "
                   "(durations such as 20m, or event counts); -> OUT/walkforward.parquet.")
@START_OPTION
@END_OPTION
@BATCH_OPTION
@SEED_OPTION
@MAX_FUTURE_OPTION
@FLOOR_OPTION
@functools.partial(execution_options, tables=("sweep",))
@click.pass_context
def sweep(ctx: click.Context, spec: str | None, execution: ExecutionConfig, config: dict[str, Any],
          **options: Any) -> None:
    """Run strategy SPEC over a recording for every point of a parameter grid.

    Each point's outputs equal a single qsf backtest with its parameters; the table of all
    points (parameters, metrics, events/s, wall time) is OUT/sweep.parquet. A rerun of the
    same command skips the points already finished. --config FILE.toml may hold the options
    in a [sweep] table (names with underscores, the grid as a [sweep.grid] table) besides
    [execution]; options given here win.

    Example: qsf sweep strategies/btc_eth_pairs.py:BtcEthPairs --recording recordings/sample
    --out out/sweep -g window=30s,60s,120s -g threshold=0.003:0.006:0.001
    """
    from ..sweep.api import run

    given = _merged(ctx, dict(options, spec=spec), config.get("sweep", {}), ctx.params.get("config_file"))
    for name in ("spec", "recording_dir", "out_dir"):
        if given[name] is None:
            flag = {"spec": "SPEC", "recording_dir": "--recording", "out_dir": "--out"}[name]
            raise UserError(f"missing {flag} (on the command line or in --config's [sweep] table)")
    t0 = time.perf_counter()
    show = Shown(given["objective"])
    with progress(unit="points") as bar:
        if not bar.disable and sys.stdout.isatty():  # one terminal: the lines go above the bar
            show.echo = lambda line: bar.console.print(line, markup=False, highlight=False)
        task = bar.add_task("sweep", total=None)

        def on_point(result: PointResult, state: Progress) -> None:
            bar.update(task, completed=state.done, total=state.total,
                       description=f"sweep{show.best_text(state)}")
            show.point(result, state)

        try:
            table = run(
                given["spec"], recording=given["recording_dir"], out=given["out_dir"], grid=given["grid"],
                workers=given["workers"], objective=given["objective"], direction=given["direction"],
                search=given["search"], trials=given["trials"], ray=given["ray"],
                start=time_option(given["start"], "--start"), end=time_option(given["end"], "--end"),
                execution=execution, seed=given["seed"], bounds=bounds(given["max_future"], given["floor"]),
                batch_size=given["batch_size"], keep=given["keep"], walk_forward=given["walk_forward"],
                on_start=lambda s: bar.update(task, total=getattr(s, "total", None)), on_point=on_point,
            )
        except KeyboardInterrupt:
            bar.stop()
            click.echo(f"qsf: interrupted: {show.done} point{'' if show.done == 1 else 's'} finished, in {given['out_dir']}/points "
                       "(the same command goes on from there)", err=True)
            ctx.exit(130)
    if given["walk_forward"] is not None:
        from ..sweep.walkforward import summary

        for line in summary(table, given["out_dir"]):
            click.echo(line)
        return
    show.summary(table, time.perf_counter() - t0, given["out_dir"])


class Shown:
    """What the sweep prints: a line per finished point (stdout), the best so far."""

    def __init__(self, objective: str) -> None:
        self.objective = objective
        self.best_id: str | None = None
        self.done = 0
        self.echo: Callable[[str], None] = click.echo

    def best_text(self, state: Progress) -> str:
        best = state.best(1)
        if not best:
            return ""
        return f" (best {self.objective} {_num(best[0].metrics[self.objective])}: {_params(best[0].params)})"

    def point(self, result: PointResult, state: Progress) -> None:
        self.done = state.done
        total = f"/{state.total}" if state.total is not None else ""
        earlier = " (finished earlier)" if result.point_id not in state.ran else ""
        value = _num(result.metrics.get(self.objective))
        best = state.best(1)
        new_best = bool(best) and best[0].point_id == result.point_id and self.best_id != result.point_id
        if new_best:
            self.best_id = result.point_id
        mark = "  <- best so far" if new_best and sys.stdout.isatty() else ""
        self.echo(f"point {state.done}{total} {result.point_id} {_params(result.params)}: "
                   f"{self.objective}={value} {result.events:,} events{earlier}{mark}")

    def summary(self, table: Any, wall: float, out: str) -> None:
        click.echo(f"sweep: {table.num_rows} points in {wall:.1f} s -> {out}/sweep.parquet")
        rows = table.to_pylist()
        names = json.loads(table.schema.metadata[b"qsf.params"])
        direction = table.schema.metadata[b"qsf.direction"].decode()
        scored = [r for r in rows if r[self.objective] is not None]
        scored.sort(key=lambda r: r[self.objective], reverse=direction == "max")
        if not scored:
            click.echo(f"no point has a {self.objective} (the strategy never ordered, or too few samples)")
        for i, r in enumerate(scored[:3], 1):
            click.echo(f"  #{i} {self.objective}={_num(r[self.objective])} "
                       f"{_params({n: r[n] for n in names})}  points/{r['point']}/")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def _merged(ctx: click.Context, options: dict[str, Any], table: Any, config_file: str | None) -> dict[str, Any]:
    """The options, each from the command line if given there, else from --config's [sweep]
    table, else its default; the grid: the file's, each parameter overridden by -g."""
    if not isinstance(table, dict):
        raise UserError(f"--config {config_file}: sweep must be a table ([sweep])")
    unknown = sorted(set(table) - set(CONFIG_KEYS))
    if unknown:
        raise UserError(f"--config {config_file}: [sweep] has no key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})")
    where = {"recording": "recording_dir", "out": "out_dir"}
    params = {p.name: p for p in ctx.command.params}
    out = dict(options)
    for key, value in table.items():
        if key in ("grid", "spec"):
            continue
        name = where.get(key, key)
        if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
            if isinstance(value, int | float) and not isinstance(value, bool) and key in ("start", "end"):
                value = str(value)
            if key == "ray" and isinstance(value, bool):  # ray = true: a local Ray
                value = "" if value else None
            try:
                out[name] = params[name].type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise UserError(f"--config {config_file}: sweep.{key}: {exc.format_message()}") from None
    if options["spec"] is None and "spec" in table:
        out["spec"] = str(table["spec"])
    grid = table.get("grid", {})
    if not isinstance(grid, dict):
        raise UserError(f"--config {config_file}: sweep.grid must be a table (name = \"values\" or [values])")
    from ..sweep.api import grid_options

    merged = {g.partition("=")[0].strip(): g for g in grid_options(grid)}
    merged.update({g.partition("=")[0].strip(): g for g in options["grid"]})
    out["grid"] = list(merged.values())
    return out


def register(cli: Commands) -> None:
    cli.main.add_command(sweep)
