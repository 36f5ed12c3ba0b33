"""Scored anomaly runs: the emulator flies a scenario over real UDP into the MAVLink source and
the UavAnomaly strategy, and the alerts are scored against the injected faults' ground truth
(``qsf sitl scenario run``); or a real SITL is watched while its faults are injected
(``qsf sitl run``).

Event time is the vehicle's clock (``time_boot_ms``), so the strategy's timers mean mission
seconds at any speed-up. An alert counts for a fault when its name is one the fault should
cause and it comes between ``early`` seconds before the onset (a predicted fence breach) and
``late`` seconds after the fault ended; other warning/critical alerts in that window are
the fault's side effects; any other warning/critical alert is a false positive. A fault whose
episode the alert policy summarised (a condition flapping) is detected by that summary
(``summarised``), late by design.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from qsframework.adapters.mavlink.source import MavlinkConfig, MavlinkSource
from qsframework.engine import Engine
from qsframework.order import merge_windows
from qsframework.recording import RecordingWriter
from qsframework.recording.writer import require_empty, staged_directory

from .model import BOOT_OFFSET_S
from .scenario import Scenario
from .transports import emulate

# detectors that must wait by design: a fault counts as detected in time when its alert
# comes within TARGET_S of the onset plus this wait (parameter of UavAnomaly, default)
WAITS = {"battery_low": ("batt_low_timer", 10.0), "link_loss": ("link_timeout", 5.0)}
TARGET_S = 1.0

# a fault's early warning: (alert, parameter of its look-ahead, default s). It may come up to
# twice the look-ahead before the onset (it holds that long), counts as explained, and is
# reported as the fault's warning_s and lead_s (how long before the fault's own alert)
LEADS = {"battery_low": ("battery_predicted_low", "batt_predict", 60.0)}

# what each fault should be reported as (besides its own name)
ALSO_EXPECT = {
    "battery_low": ("battery_low", "battery_sag"),
    "fence_breach": ("fence_breach", "fence_predicted"),
    "gps_loss": ("gps_loss", "gps_degraded"),
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    speedup: float = 20.0
    seed: int = 0
    early: float = 10.0
    late: float = 30.0
    overrides: dict[str, str] | None = None


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_scenario(name: str, out: str | Path, *, config: RunConfig = RunConfig(), progress=None) -> dict:
    """Fly ``name`` and write ``out/report.json``, ``out/truth.json``, ``out/recording``,
    ``out/alerts.parquet`` and ``out/signals.parquet``; returns the report. ``out`` must be
    new or empty (a second flight must not join the first one's recording); it appears
    complete when the run succeeded, and not at all when it failed."""
    scenario = Scenario.load(name)
    with staged_directory(out) as tmp:
        return _fly(scenario, tmp, config=config, progress=progress)


def _fly(scenario: Scenario, out: Path, *, config: RunConfig, progress) -> dict:
    from qsframework.loader import load_strategy

    port = _free_udp_port()
    strategy = load_strategy("uav_anomaly:UavAnomaly")
    engine = Engine(strategy, overrides=config.overrides or {}, path="event")
    writer = RecordingWriter(out / "recording", origin={"source": "sitl-emulator", "scenario": scenario.name,
                                                        "seed": config.seed, "synthetic": True,
                                                        "simulated": f"flight: SITL emulator, scenario {scenario.name}"})
    source = MavlinkSource(MavlinkConfig(url=f"udpin:127.0.0.1:{port}", clock="vehicle", heartbeat=False,
                                         flush_interval=0.1))
    truth_path = out / "truth.json"
    done = threading.Event()
    failure: list[BaseException] = []

    def fly() -> None:
        try:
            emulate(scenario, to=f"udp:127.0.0.1:{port}", speedup=config.speedup, truth=truth_path,
                    seed=config.seed, on_progress=progress)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failure.append(exc)
        finally:
            done.set()

    sink = _record_and_process(writer, engine)

    async def main() -> None:
        flight = threading.Thread(target=fly, name="sitl-emulator", daemon=True)
        bound = asyncio.Event()  # the source's first pass: its socket is bound, so nothing is lost
        loop_task = asyncio.create_task(source.run(sink, until=lambda: done.is_set() and _drained(source),
                                                   tick=lambda _conn: bound.set()))
        waiter = asyncio.create_task(bound.wait())
        await asyncio.wait({loop_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not loop_task.done():  # (else it failed to open the link: raised below)
            flight.start()
        await loop_task

    t0 = time.monotonic()
    try:
        asyncio.run(main())
    finally:
        writer.close()
    if failure:
        raise failure[0]
    engine.finish()
    outputs = engine.ctx.outputs
    alerts, signals = outputs.alerts.drain(), outputs.signals.drain()
    _write_parquet(out / "alerts.parquet", alerts)
    _write_parquet(out / "signals.parquet", signals)
    truth = json.loads(truth_path.read_text())
    report = score(truth, alerts.to_pylist(), epoch_ns=source.stats.epoch_ns, config=config)
    report.update({
        "scenario": scenario.name, "speedup": config.speedup, "seed": config.seed,
        "wall_s": round(time.monotonic() - t0, 2), "messages": source.stats.received,
        "events": source.stats.events, "foreign": source.stats.foreign,
    })
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _record_and_process(writer: RecordingWriter, engine: Engine):
    """A source sink: each flush is recorded, then merged into windows of the total order for
    the engine (each walked in one pass, not run by run)."""

    async def sink(tables: list[tuple[str, pa.Table]]) -> None:
        by_kind: dict[str, list[pa.Table]] = {}
        for kind, table in tables:
            writer.write(kind, table)
            by_kind.setdefault(kind, []).append(table)
        merged = merge_windows({k: pa.concat_tables(v).sort_by([("ts_event", "ascending"), ("seq", "ascending")])
                                .to_batches() for k, v in by_kind.items()})
        for window in merged:
            engine.process_window(window)

    return sink


def _write_parquet(path: Path, table: pa.Table) -> None:
    from qsframework.backtest import ParquetOutput

    out = ParquetOutput(path, table.schema)
    out.write(table)
    out.close()


def _drained(source: MavlinkSource) -> bool:
    last = source.stats.last_message
    return last is None or time.monotonic() - last > 1.0


def mission_s(ts_ns: int, epoch_ns: int | None) -> float:
    """Mission seconds of an event time on the vehicle clock."""
    return round((ts_ns - (epoch_ns or 0)) / 1e9 - BOOT_OFFSET_S, 3)


def score(truth: dict, alerts: list[dict], *, epoch_ns: int | None, config: RunConfig = RunConfig()) -> dict:
    """Per injected fault: detected or not, by which alert, how late; and the false positives."""
    serious = [dict(a, mission_s=mission_s(a["ts_event"], epoch_ns)) for a in alerts
               if a["severity"] in ("warning", "critical")]
    end_of_flight = float(truth.get("mission_s") or 0)
    faults, explained = [], set()
    for f in truth.get("faults", []):
        names = set(f.get("expect") or ()) | {f["name"]} | set(ALSO_EXPECT.get(f["name"], ()))
        onset = float(f["onset_s"])
        end = float(f["end_s"]) if f.get("end_s") is not None else end_of_flight
        lead_name, lead_param, lead_default = LEADS.get(f["name"], ("", "", 0.0))
        lead = _param_s(lead_param, lead_default, config) if lead_name else 0.0
        lo, hi = onset - config.early - 2 * lead, end + config.late
        window = [i for i, a in enumerate(serious) if lo <= a["mission_s"] <= hi]
        explained.update(window)
        hits = [serious[i] for i in window if serious[i]["name"] in names]
        first = min(hits, key=lambda a: a["mission_s"]) if hits else None
        if first is None:
            first = _summary_of(serious, names, onset, config, explained)
        summarised = first is not None and "(flapping" in first["text"]
        warned = [serious[i]["mission_s"] for i in window if serious[i]["name"] == lead_name]
        warning_s = min(warned) if warned else None
        own = sorted(a["mission_s"] for a in hits if a["name"] == f["name"])  # e.g. battery_low itself
        faults.append({
            "fault": f["name"], "param": f.get("param"), "value": f.get("value"), "onset_s": onset,
            "end_s": f.get("end_s"), "detected": first is not None, "summarised": summarised,
            "alert": first["name"] if first else None,
            "alert_s": first["mission_s"] if first else None,
            "latency_s": round(first["mission_s"] - onset, 3) if first else None,
            "side_effects": sorted({serious[i]["name"] for i in window} - names - {lead_name}),
            "warning_s": warning_s,
            "lead_s": round(own[0] - warning_s, 3) if own and warning_s is not None else None,
            "target_s": TARGET_S + _wait(f["name"], config),
            "in_time": first is not None and first["mission_s"] - onset <= TARGET_S + _wait(f["name"], config),
        })
    false_pos = [{"name": a["name"], "severity": a["severity"], "mission_s": a["mission_s"], "text": a["text"]}
                 for i, a in enumerate(serious) if i not in explained]
    return {
        "faults": faults,
        "detected": sum(f["detected"] for f in faults),
        "in_time": sum(f["in_time"] for f in faults),
        "missed": sum(not f["detected"] for f in faults),
        "false_positives": false_pos,
        "alerts": [{"name": a["name"], "severity": a["severity"], "mission_s": a["mission_s"], "text": a["text"]}
                   for a in serious],
    }


def _summary_of(serious: list[dict], names: set[str], onset: float, config: RunConfig,
                explained: set[int]) -> dict | None:
    """The flapping summary that reported a fault's episode (its name, within flap_window
    after the onset), if its own alert was summarised; marked explained."""
    horizon = _param_s("flap_window", 300.0, config)
    for i, a in enumerate(serious):
        if a["name"] in names and "(flapping" in a["text"] and onset <= a["mission_s"] <= onset + horizon:
            explained.add(i)
            return a
    return None


def _wait(fault: str, config: RunConfig) -> float:
    """How long the fault's detector waits by design (its timer parameter), in seconds."""
    if fault not in WAITS:
        return 0.0
    return _param_s(*WAITS[fault], config)


def _param_s(param: str, default: float, config: RunConfig) -> float:
    """A duration parameter of the run's UavAnomaly in seconds (its default unless overridden)."""
    value = (config.overrides or {}).get(param)
    if value is None:
        return default
    from qsframework.durations import parse_duration

    return parse_duration(value) / 1e9


def run_real_sitl(connect: str, out: str | Path, *, scenario: str | None = None, duration: float = 300.0,
                  overrides: dict[str, str] | None = None) -> dict:
    """Record and watch a real ArduPilot SITL (or vehicle) on ``connect``; with ``scenario``,
    inject its faults by PARAM_SET of the same SIM_* parameters on its timeline (seconds
    from the start of this run) and restore them afterwards. Fly the vehicle yourself (e.g.
    a mission in AUTO from MAVProxy); faults only the emulator has (link loss) are skipped.
    """
    from pymavlink import mavutil

    from qsframework.loader import load_strategy

    plan = Scenario.load(scenario) if scenario else None
    faults = [f for f in (plan.faults if plan else ()) if f.param.startswith("SIM_")]
    out = Path(out)
    require_empty(out)  # a second run must not join the first one's recording
    out.mkdir(parents=True, exist_ok=True)
    engine = Engine(load_strategy("uav_anomaly:UavAnomaly"), overrides=overrides or {}, path="event")
    writer = RecordingWriter(out / "recording", origin={"source": "mavlink", "url": connect, "sitl": True,
                                                        "scenario": plan.name if plan else None})
    source = MavlinkSource(MavlinkConfig(url=connect, clock="receive"))
    start_ns = time.time_ns()
    t0 = time.monotonic()
    pending = sorted(((f.at_s, f.param, f.value, f.name) for f in faults), key=lambda x: x[0])
    restore: list[tuple[float, str, float]] = []
    truth: list[dict] = []
    requested = False

    def param_set(conn, name: str, value: float) -> None:
        conn.mav.param_set_send(conn.target_system, conn.target_component, name.encode(), float(value),
                                mavutil.mavlink.MAV_PARAM_TYPE_REAL32)

    def tick(conn) -> None:
        nonlocal requested
        if not requested and conn.target_system:
            conn.mav.request_data_stream_send(conn.target_system, conn.target_component,
                                              mavutil.mavlink.MAV_DATA_STREAM_ALL, 10, 1)
            requested = True
        elapsed = time.monotonic() - t0
        while pending and pending[0][0] <= elapsed:
            at, param, value, name = pending.pop(0)
            param_set(conn, param, value)
            fault = next(f for f in faults if f.param == param and f.at_s == at)
            truth.append({"name": name, "param": param, "value": value, "onset_s": round(elapsed, 3),
                          "end_s": None if fault.duration_s is None else round(at + fault.duration_s, 3),
                          "expect": list(fault.expect or ())})
            if fault.duration_s is not None:
                restore.append((at + fault.duration_s, param, _SIM_DEFAULTS.get(param, 0.0)))
        for item in [r for r in restore if r[0] <= elapsed]:
            param_set(conn, item[1], item[2])
            restore.remove(item)

    sink = _record_and_process(writer, engine)

    try:
        asyncio.run(source.run(sink, duration=duration, tick=tick))
    finally:
        writer.close()
    engine.finish()
    alerts = engine.ctx.outputs.alerts.drain()
    _write_parquet(out / "alerts.parquet", alerts)
    record = {"scenario": plan.name if plan else None, "mission_s": round(time.monotonic() - t0, 3), "faults": truth}
    (out / "truth.json").write_text(json.dumps(record, indent=2) + "\n")
    report = score(record, alerts.to_pylist(), epoch_ns=start_ns - int(BOOT_OFFSET_S * 1e9))
    report.update({"connect": connect, "messages": source.stats.received, "events": source.stats.events})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# ArduPilot SITL's defaults, restored when a fault ends
_SIM_DEFAULTS = {"SIM_BATT_VOLTAGE": 12.6, "SIM_GPS1_ENABLE": 1.0, "SIM_GPS1_GLTCH_X": 0.0, "SIM_GPS1_GLTCH_Y": 0.0,
                 "SIM_ACC1_RND": 0.0, "SIM_ENGINE_FAIL": 0.0, "SIM_ENGINE_MUL": 1.0}
