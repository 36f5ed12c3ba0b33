"""``qsf sitl``: the vehicle emulator and scored anomaly runs (registered through the
``qsframework.commands`` entry point, like the adapters' commands)."""

from __future__ import annotations

from pathlib import Path

import click

from qsframework.cli.groups import Commands
from qsframework.cli.options import needs_extra, progress
from qsframework.errors import UserError


@click.group()
def sitl() -> None:
    """The vehicle emulator (an ArduCopter SITL stand-in) and anomaly runs."""


def _sitl_module():
    try:
        from qsframework.sim import vehicle as module

        module.VehicleEmulator  # noqa: B018 - the package imports its modules on first use
    except ImportError as exc:
        raise needs_extra(exc, "the emulator", "mavlink") from None
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
    with progress(unit="mission s") as bar:
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
    from qsframework.sim.vehicle.runs import RunConfig, run_scenario

    from qsframework.params import parse_overrides

    if (name is None) == (not run_all):
        raise UserError("give a scenario NAME or --all")
    if speedup <= 0:
        raise UserError("--speedup must be positive")
    config = RunConfig(speedup=speedup, seed=seed, overrides=parse_overrides(params))
    from qsframework.recording.writer import require_empty

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
                if f.get("summarised"):
                    late = " (flapping: in the alert policy's summary)"
                verdict = f"detected as {f['alert']} after {f['latency_s']:.1f} s{late}"
                if f.get("lead_s") is not None:
                    verdict += f", warned {f['lead_s']:.0f} s before"
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
    from qsframework.sim.vehicle.runs import run_real_sitl

    from qsframework.params import parse_overrides

    try:
        report = run_real_sitl(connect, out_dir, scenario=scenario, duration=duration, overrides=parse_overrides(params))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{report['messages']:,} messages, {report['events']:,} events; {report['detected']} of "
               f"{len(report['faults'])} injected faults detected, {len(report['false_positives'])} other alerts "
               f"-> {out_dir}/report.json")


def register(cli: Commands) -> None:
    cli.main.add_command(sitl)
