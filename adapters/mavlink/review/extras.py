"""The messages a review needs that are not telemetry events: servo (motor) outputs, the
board's supply voltage and the parameters, read from the log itself with pymavlink.

tlog: ``SERVO_OUTPUT_RAW`` (port 0, servo1..8_raw), ``POWER_STATUS`` (Vcc, mV),
``PARAM_VALUE`` (the vehicle's, last value per name). DataFlash: ``RCOU`` (C1..C8 or
Chan1..8), ``POWR`` (Vcc, V), ``PARM`` (Name, Value and, in ArduPilot 4.1+, Default). Times
are the ones the importers give the events (ns), so the frames join with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

MOTOR_CHANNELS = 8
"""Servo outputs looked at for motors (LogAnalyzer's motor balance reads the first 8)."""


@dataclass(slots=True)
class Extras:
    """Servo outputs (``ts_event``, ``c1``..``c8`` PWM µs), board supply (``ts_event``,
    ``vcc`` V) and parameters (with their defaults where the log states them)."""

    servo: pl.DataFrame | None = None
    power: pl.DataFrame | None = None
    params: dict[str, float] = field(default_factory=dict)
    defaults: dict[str, float] = field(default_factory=dict)


def _ns(seconds: float) -> int:
    return round(seconds * 1e6) * 1000


def _frame(rows: list[tuple], names: list[str]) -> pl.DataFrame | None:
    if not rows:
        return None
    schema = {"ts_event": pl.Int64, **{n: pl.Float64 for n in names}}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("ts_event")


def read_tlog_extras(path: Path, *, system_id: int | None, component_id: int | None) -> Extras:
    """The vehicle's servo outputs, supply voltage and parameters in the tlog ``path``."""
    from pymavlink import mavutil

    conn = mavutil.mavlink_connection(str(path), dialect="ardupilotmega", robust_parsing=True)
    servo: list[tuple] = []
    power: list[tuple] = []
    params: dict[str, float] = {}
    types = ["SERVO_OUTPUT_RAW", "POWER_STATUS", "PARAM_VALUE"]
    try:
        while (m := conn.recv_match(type=types)) is not None:
            if system_id is not None and m.get_srcSystem() != system_id:
                continue
            if component_id is not None and m.get_srcComponent() != component_id:
                continue
            name = m.get_type()
            if name == "SERVO_OUTPUT_RAW":
                if getattr(m, "port", 0) == 0:
                    servo.append((_ns(m._timestamp), *(float(getattr(m, f"servo{i}_raw"))
                                                       for i in range(1, MOTOR_CHANNELS + 1))))
            elif name == "POWER_STATUS":
                power.append((_ns(m._timestamp), m.Vcc / 1000.0))
            else:
                pid = m.param_id if isinstance(m.param_id, str) else m.param_id.decode(errors="replace")
                params[pid.rstrip("\0")] = float(m.param_value)
    finally:
        conn.close()
    channels = [f"c{i}" for i in range(1, MOTOR_CHANNELS + 1)]
    return Extras(servo=_frame(servo, channels), power=_frame(power, ["vcc"]), params=params)


def read_dataflash_extras(path: Path) -> Extras:
    """The servo outputs, supply voltage and parameters (with defaults) in the DataFlash log ``path``."""
    from pymavlink.DFReader import DFReader_binary

    from ..dataflash import _Complaints, _quiet

    with _quiet(_Complaints(), native=True):
        reader = DFReader_binary(str(path), zero_time_base=False)
    servo: list[tuple] = []
    power: list[tuple] = []
    params: dict[str, float] = {}
    defaults: dict[str, float] = {}
    try:
        with _quiet(_Complaints()):
            while (m := reader.recv_match(type=["RCOU", "POWR", "PARM"])) is not None:
                name, fields = m.get_type(), m._fieldnames
                if name == "RCOU":
                    prefix = "C" if "C1" in fields else "Chan"
                    servo.append((_ns(m._timestamp), *(float(getattr(m, f"{prefix}{i}", 0.0))
                                                       for i in range(1, MOTOR_CHANNELS + 1))))
                elif name == "POWR":
                    power.append((_ns(m._timestamp), float(m.Vcc)))
                else:
                    params[str(m.Name)] = float(m.Value)
                    if "Default" in fields:
                        defaults[str(m.Name)] = float(m.Default)
    finally:
        reader.close()
    channels = [f"c{i}" for i in range(1, MOTOR_CHANNELS + 1)]
    return Extras(servo=_frame(servo, channels), power=_frame(power, ["vcc"]), params=params, defaults=defaults)
