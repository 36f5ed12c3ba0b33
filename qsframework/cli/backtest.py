"""``qsf backtest``: a strategy over a recording."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .groups import Commands
from .options import (BATCH_OPTION, END_OPTION, FLOOR_OPTION, MAX_FUTURE_OPTION, PARAM_OPTION, SEED_OPTION,
                      START_OPTION, bounds, execution_options, progress, time_option)

if TYPE_CHECKING:
    from ..execution.config import ExecutionConfig


@click.command()
@click.argument("spec")
@click.option("--recording", "recording_dir", required=True, metavar="DIR", help="Recording directory to replay.")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Where signals.parquet, alerts.parquet, report.json (and orders/fills/equity.parquet once the strategy orders) go.")
@START_OPTION
@END_OPTION
@BATCH_OPTION
@PARAM_OPTION
@click.option("--path", "path", type=click.Choice(["auto", "event", "batch"]), default="auto", show_default=True, help="Handler path: per-event, vectorized batch, or batch when the strategy has one.")
@SEED_OPTION
@MAX_FUTURE_OPTION
@FLOOR_OPTION
@execution_options
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback when the strategy raises.")
def backtest(spec: str, recording_dir: str, out_dir: str, start: str | None, end: str | None,
             batch_size: int, params: tuple[str, ...], path: str, seed: int, max_future: str,
             floor: str, execution: ExecutionConfig, verbose: bool) -> None:
    """Run strategy SPEC (file.py:Class or module:Class) over a recording.

    Example: qsf backtest strategies/btc_eth_spread.py:BtcEthSpread --recording recordings/sample --out out -p window=30s
    """
    from ..backtest import run_backtest
    from ..errors import StrategyError
    from ..loader import load_strategy
    from ..params import build_params, parse_overrides
    from ..recording import Recording

    overrides = parse_overrides(params)
    cls = load_strategy(spec)
    build_params(cls.Params, overrides, owner=f"strategy {cls.__name__}")  # fail before reading
    limits = bounds(max_future, floor)
    recording = Recording(recording_dir)
    t_start, t_end = time_option(start, "--start"), time_option(end, "--end")
    try:
        with progress() as bar:
            task = bar.add_task("backtest", total=None)
            result = run_backtest(
                cls, recording, out=Path(out_dir), overrides=overrides, start=t_start, end=t_end,
                batch_size=batch_size, path=path, seed=seed, spec=spec, bounds=limits,  # type: ignore[arg-type]
                execution=execution,
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
    from ..execution.metrics import summary

    r = result.report
    span = r["span"]
    prep = f" (+{r['prepare_s']:.1f} s to prepare)" if r["prepare_s"] >= 0.5 else ""
    cold = "; the batch path compiles in the background for the next run" if r["warm_up"] else ""
    click.echo(
        f"{cls.__name__} ({r['path']} path{cold}): {result.events_in:,} events "
        f"{span['first'] or '-'} .. {span['last'] or '-'} in {result.wall_s:.2f} s{prep} "
        f"({r['events_per_s'] or 0:,.0f} events/s) -> {result.signals:,} signals, "
        f"{result.alerts:,} alerts{summary(r.get('metrics'))} in {out_dir}/"
    )


def register(cli: Commands) -> None:
    cli.main.add_command(backtest)
