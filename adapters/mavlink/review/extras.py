"""The messages a review needs that are not telemetry events: servo (motor) outputs, the
board's supply voltage, the parameters, the IMUs, the compass and the throttle, read from the
log itself with pymavlink.

tlog: ``SERVO_OUTPUT_RAW`` (port 0, servo1..8_raw), ``POWER_STATUS`` (Vcc, mV),
``PARAM_VALUE`` (the vehicle's, last value per name), ``RAW_IMU`` (IMU 0 and compass 0:
ArduPilot sends it scaled, mG, mrad/s, mGauss), ``SCALED_IMU2``/``SCALED_IMU3`` (IMUs 1, 2),
``VFR_HUD`` (throttle %). DataFlash: ``RCOU`` (C1..C8 or Chan1..8), ``POWR`` (Vcc, V),
``PARM`` (Name, Value and, in ArduPilot 4.1+, Default), ``IMU`` (instance ``I``; older logs
``IMU2``/``IMU3``; m/s^2, rad/s), ``MAG`` (the first compass, mGauss), ``CTUN`` (ThO, 0-1).
Times are the ones the importers give the events (ns), so the frames join with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

MOTOR_CHANNELS = 8
"""Servo outputs looked at for motors (LogAnalyzer's motor balance reads the first 8)."""
G = 9.80665
IMU_COLUMNS = ["ax", "ay", "az", "gx", "gy", "gz"]
"""An IMU frame's columns besides ts_event: accelerations m/s^2, rates rad/s."""
_TLOG_IMUS = {"RAW_IMU": 0, "SCALED_IMU2": 1, "SCALED_IMU3": 2}


@dataclass(slots=True)
class Extras:
    """Servo outputs (``ts_event``, ``c1``..``c8`` PWM µs), board supply (``ts_event``,
    ``vcc`` V) and parameters (with their defaults where the log states them)."""

    servo: pl.DataFrame | None = None
    power: pl.DataFrame | None = None
    params: dict[str, float] = field(default_factory=dict)
    defaults: dict[str, float] = field(default_factory=dict)
    imus: dict[int, pl.DataFrame] = field(default_factory=dict)  # instance -> IMU_COLUMNS
    mag: pl.DataFrame | None = None  # the first compass: mx, my, mz (mGauss)
    throttle: pl.DataFrame | None = None  # throttle (0-1)


def _sensors(imus: dict[int, list[tuple]], mag: list[tuple], throttle: list[tuple]) -> dict:
    """The IMU, compass and throttle frames of the rows read (Extras' fields)."""
    return {"imus": {i: f for i, rows in sorted(imus.items()) if (f := _frame(rows, IMU_COLUMNS)) is not None},
            "mag": _frame(mag, ["mx", "my", "mz"]), "throttle": _frame(throttle, ["throttle"])}


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
    imus: dict[int, list[tuple]] = {}
    mag: list[tuple] = []
    throttle: list[tuple] = []
    types = ["SERVO_OUTPUT_RAW", "POWER_STATUS", "PARAM_VALUE", *_TLOG_IMUS, "VFR_HUD"]
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
            elif name in _TLOG_IMUS:
                ts = _ns(m._timestamp)
                imus.setdefault(_TLOG_IMUS[name], []).append(
                    (ts, m.xacc * G / 1000, m.yacc * G / 1000, m.zacc * G / 1000,
                     m.xgyro / 1000, m.ygyro / 1000, m.zgyro / 1000))
                if name == "RAW_IMU":
                    mag.append((ts, float(m.xmag), float(m.ymag), float(m.zmag)))
            elif name == "VFR_HUD":
                throttle.append((_ns(m._timestamp), m.throttle / 100.0))
            else:
                pid = m.param_id if isinstance(m.param_id, str) else m.param_id.decode(errors="replace")
                params[pid.rstrip("\0")] = float(m.param_value)
    finally:
        conn.close()
    channels = [f"c{i}" for i in range(1, MOTOR_CHANNELS + 1)]
    return Extras(servo=_frame(servo, channels), power=_frame(power, ["vcc"]), params=params,
                  **_sensors(imus, mag, throttle))


def read_dataflash_extras(path: Path, *, boot_start_ns: int | None = None) -> Extras:
    """The servo outputs, supply voltage and parameters (with defaults) in the DataFlash log
    ``path``; times as :class:`~..dataflash.DataflashSource` gives them (``boot_start_ns``)."""
    from pymavlink.DFReader import DFReader_binary

    from ..dataflash import _Complaints, _quiet, stamp_ns

    def ns(seconds: float) -> int:  # this log's clock
        return stamp_ns(seconds, boot_start_ns=boot_start_ns)

    with _quiet(_Complaints(), native=True):
        reader = DFReader_binary(str(path), zero_time_base=False)
    servo: list[tuple] = []
    power: list[tuple] = []
    params: dict[str, float] = {}
    defaults: dict[str, float] = {}
    imus: dict[int, list[tuple]] = {}
    mag: list[tuple] = []
    throttle: list[tuple] = []
    try:
        with _quiet(_Complaints()):
            while (m := reader.recv_match(type=["RCOU", "POWR", "PARM", "IMU", "IMU2", "IMU3", "MAG", "CTUN"])) is not None:
                name, fields = m.get_type(), m._fieldnames
                if name == "RCOU":
                    prefix = "C" if "C1" in fields else "Chan"
                    servo.append((ns(m._timestamp), *(float(getattr(m, f"{prefix}{i}", 0.0))
                                                       for i in range(1, MOTOR_CHANNELS + 1))))
                elif name == "POWR":
                    power.append((ns(m._timestamp), float(m.Vcc)))
                elif name.startswith("IMU"):
                    inst = int(m.I) if "I" in fields else int(name[3:] or 1) - 1
                    imus.setdefault(inst, []).append((ns(m._timestamp), *(float(getattr(m, f)) for f in (
                        "AccX", "AccY", "AccZ", "GyrX", "GyrY", "GyrZ"))))
                elif name == "MAG":
                    if int(getattr(m, "I", 0)) == 0:
                        mag.append((ns(m._timestamp), float(m.MagX), float(m.MagY), float(m.MagZ)))
                elif name == "CTUN":
                    out = "ThO" if "ThO" in fields else "ThrOut" if "ThrOut" in fields else None
                    if out is not None:
                        throttle.append((ns(m._timestamp), float(getattr(m, out))))
                else:
                    params[str(m.Name)] = float(m.Value)
                    if "Default" in fields:
                        defaults[str(m.Name)] = float(m.Default)
    finally:
        reader.close()
    channels = [f"c{i}" for i in range(1, MOTOR_CHANNELS + 1)]
    return Extras(servo=_frame(servo, channels), power=_frame(power, ["vcc"]), params=params, defaults=defaults,
                  **_sensors(imus, mag, throttle))
