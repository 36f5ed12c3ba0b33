"""Flight logs with known faults for the review tests: the emulator's tlogs (with truth.json),
the same flights as ArduPilot DataFlash logs, and the messages the emulator does not send
(servo outputs, board supply, parameters) added where a test needs them.

The emulator has no motor outputs, so :func:`motor_outputs` makes them from the truth: four
motors around a hover PWM, and after a ``motor_failure`` onset the failed motor driven to its
limit while the others back off, as ArduCopter's mixer does when a motor loses thrust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

os.environ.setdefault("MAVLINK20", "1")

from pymavlink import mavutil  # noqa: E402
from pymavlink.dialects.v20 import ardupilotmega as apm  # noqa: E402

from .dataflash_gen import FORMATS, Writer, gps_week_ms  # noqa: E402

START_US = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
BOOT_US = 20_000_000  # the emulator's time since boot at mission time 0
EXTRA_FORMATS = {
    "RCOU": (77, "QHHHHHHHHHHHHHH", "TimeUS," + ",".join(f"C{i}" for i in range(1, 15))),
    "POWR": (78, "QffHH", "TimeUS,Vcc,VServo,Flags,AccFlags"),
}
NAV_GPS_GLITCHING = 1 << 14
"""The EKF's nav_filter_status bit for a GPS glitch (XKF4.SS), where MAVLink has EKF_GPS_GLITCHING (1 << 15)."""
HOVER_PWM = 1500


def emulator_tlog(name: str, out: Path, *, seed: int = 0) -> tuple[Path, dict]:
    """The emulator's flight ``name`` as ``out/NAME.tlog`` and its truth record."""
    from qsframework.sim.vehicle import Scenario, write_tlog

    path, truth = out / f"{name}.tlog", out / f"{name}.truth.json"
    write_tlog(Scenario.load(name), path, seed=seed, start_unix_us=START_US, truth=truth)
    return path, json.loads(truth.read_text())


def vehicle_messages(tlog: Path) -> Iterable[tuple[int, object]]:
    """(unix µs, message) of the vehicle (system 1) in a tlog, as pymavlink reads it."""
    conn = mavutil.mavlink_connection(str(tlog), dialect="ardupilotmega")
    try:
        while (m := conn.recv_match()) is not None:
            if m.get_type() != "BAD_DATA" and m.get_srcSystem() == 1:
                yield round(m._timestamp * 1e6), m
    finally:
        conn.close()


def motor_outputs(truth: dict) -> Callable[[float, bool], list[int]]:
    """PWM of motors 1..4 at mission second ``t`` (armed or not), from the truth's faults."""
    fail = next((f for f in truth["faults"] if f["name"] == "motor_failure"), None)

    def pwm(t: float, armed: bool) -> list[int]:
        if not armed:
            return [1000] * 4
        wobble = [int(8 * ((t * 10 + k * 3) % 5 - 2)) for k in range(4)]
        if fail is not None and t >= fail["onset_s"]:
            return [1990, 1380 + wobble[1], 1420 + wobble[2], 1380 + wobble[3]]
        return [HOVER_PWM + w for w in wobble]

    return pwm


def write_dataflash_from_tlog(tlog: Path, out: Path, *, params: dict[str, float] | None = None,
                              defaults: dict[str, float] | None = None,
                              motors: Callable[[float, bool], list[int]] | None = None,
                              vcc: Callable[[float], float] | None = None, gps: bool = True) -> Path:
    """The vehicle's flight in ``tlog`` as an ArduCopter DataFlash log: POS, GPS, BAT, ATT, VIBE,
    XKF4, MODE, ARM, MSG; with ``params`` PARM messages (``defaults`` their Default column),
    with ``motors`` RCOU at each ATTITUDE, with ``vcc`` POWR at each SYS_STATUS; without
    ``gps`` no GPS message (the log is timed from boot, as an indoor flight's)."""
    w = Writer({**FORMATS, **EXTRA_FORMATS})
    defaults = defaults or {}
    for name, value in (params or {}).items():
        w.write("PARM", BOOT_US, name, float(value), float(defaults.get(name, value)))
    armed, mode = False, None
    for us, m in vehicle_messages(tlog):
        t_us = BOOT_US + us - START_US
        t = (us - START_US) / 1e6
        kind = m.get_type()
        if kind == "GLOBAL_POSITION_INT":
            w.write("POS", t_us, m.lat / 1e7, m.lon / 1e7, m.alt / 1e3, m.relative_alt / 1e3, m.relative_alt / 1e3)
        elif kind == "GPS_RAW_INT" and gps:
            week, ms = gps_week_ms(us)
            w.write("GPS", t_us, 0, m.fix_type, ms, week, m.satellites_visible, m.eph / 100, m.lat / 1e7, m.lon / 1e7,
                    m.alt / 1e3, m.vel / 100, m.cog / 100, 0.0, 0.0, 1)
        elif kind == "SYS_STATUS":
            volt, cur = m.voltage_battery / 1000, m.current_battery / 100
            w.write("BAT", t_us, 0, volt, volt, cur, 0.0, 0.0, 25.0, 0.0, max(m.battery_remaining, 0), 1, 0)
            if vcc is not None:
                w.write("POWR", t_us, vcc(t), 5.0, 3, 0)
        elif kind == "ATTITUDE":
            w.write("ATT", t_us, 0.0, _deg(m.roll), 0.0, _deg(m.pitch), 0.0, _deg(m.yaw) % 360, 0.0, 0.0, 0)
            if motors is not None:
                w.write("RCOU", t_us, *motors(t, armed), *([0] * 10))
        elif kind == "VIBRATION":
            w.write("VIBE", t_us, 0, m.vibration_x, m.vibration_y, m.vibration_z,
                    m.clipping_0 + m.clipping_1 + m.clipping_2)
        elif kind == "EKF_STATUS_REPORT":
            ss = NAV_GPS_GLITCHING if m.flags & apm.EKF_GPS_GLITCHING else 0
            w.write("XKF4", t_us, 0, m.velocity_variance, m.pos_horiz_variance, m.pos_vert_variance,
                    m.compass_variance, m.terrain_alt_variance, 0.0, 0, 0, 0, 0, ss, 0, 0)
        elif kind == "HEARTBEAT":
            now_armed = bool(m.base_mode & apm.MAV_MODE_FLAG_SAFETY_ARMED)
            if m.custom_mode != mode:
                mode = m.custom_mode
                w.write("MODE", t_us, mode, mode, 0)
            if now_armed != armed:
                armed = now_armed
                w.write("ARM", t_us, int(armed), 0, 0, 0)
        elif kind == "STATUSTEXT":
            w.write("MSG", t_us, m.text)
    out.write_bytes(bytes(w.buf))
    return out


def _deg(rad: float) -> float:
    import math

    return math.degrees(rad)


def tlog_with_extras(tlog: Path, out: Path, *, params: dict[str, float] | None = None,
                     motors: Callable[[float, bool], list[int]] | None = None,
                     vcc: Callable[[float], float] | None = None) -> Path:
    """``tlog`` with the vehicle's PARAM_VALUEs at the start, SERVO_OUTPUT_RAW (``motors``) after
    each ATTITUDE and POWER_STATUS (``vcc``) after each SYS_STATUS."""
    mav = apm.MAVLink(None, srcSystem=1, srcComponent=1)
    records = bytearray()
    stamp = START_US.to_bytes(8, "big")
    for i, (name, value) in enumerate((params or {}).items()):
        records += stamp + mav.param_value_encode(name.encode(), float(value), apm.MAV_PARAM_TYPE_REAL32,
                                                   len(params or {}), i).pack(mav)
    armed = False
    for us, m in vehicle_messages(tlog):
        t = (us - START_US) / 1e6
        head = us.to_bytes(8, "big")
        records += head + m.get_msgbuf()
        kind = m.get_type()
        if kind == "HEARTBEAT":
            armed = bool(m.base_mode & apm.MAV_MODE_FLAG_SAFETY_ARMED)
        elif kind == "ATTITUDE" and motors is not None:
            pwm = motors(t, armed)
            records += head + mav.servo_output_raw_encode(BOOT_US + us - START_US, 0, *pwm, *([0] * 4)).pack(mav)
        elif kind == "SYS_STATUS" and vcc is not None:
            records += head + mav.power_status_encode(round(vcc(t) * 1000), 5000, 3).pack(mav)
    out.write_bytes(bytes(records))
    return out
