"""A MAVLink v2 vehicle emulator that flies like ArduCopter SITL, with SITL-style fault injection.

It stands in for ``sim_vehicle.py -v ArduCopter`` where ArduPilot is not installed: a quadrotor
(system 1, component 1 = MAV_COMP_ID_AUTOPILOT1, ``ardupilotmega`` dialect) sits disarmed for a
few seconds, arms, takes off in GUIDED, flies its mission in AUTO, returns (RTL), lands (LAND)
and disarms, streaming ArduCopter's default telemetry rates (:data:`STREAM_RATES`). Physics
are simple kinematics with a 3S LiPo (12.6 V full, so ArduPilot's default ``BATT_LOW_VOLT``
10.5 V is meaningful) and everything is deterministic for a seed.

Faults are scheduled on the mission timeline as ArduPilot SITL parameters (:data:`FAULT_PARAMS`)
plus ``LINK_LOSS``, the emulator's own telemetry blackout; a waypoint outside the fence gives a
fence breach. The vehicle reacts as ArduCopter's defaults would: battery failsafe -> RTL, EKF
failsafe -> LAND, fence breach -> RTL, crash -> disarm. Each anomaly is recorded as an
:class:`Incident`, written to the truth file (:func:`write_truth`).

Scenarios are TOML files in ``scenarios/`` (:func:`list_scenarios`); :func:`emulate` streams one
over UDP in (scaled) real time, :func:`render` yields the packets without sockets and
:func:`write_tlog` writes them as a MAVProxy-style ``.tlog``.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import struct
import threading
import time
import tomllib
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as apm

from qsframework.errors import UserError

SCENARIO_DIR = Path(__file__).with_name("scenarios")
TICK_S = 0.1
"""Physics step and message scheduling grid, in mission seconds."""
BURST_S = 0.01
"""emulate() sends in bursts on this wall-clock grid."""
BOOT_OFFSET_S = 20.0
"""The autopilot booted this long before mission time 0 (time_boot_ms at t=0 is 20000)."""
G = 9.80665
M_PER_DEG = 111_319.49
"""Metres per degree of latitude (WGS84 equatorial radius, spherical)."""

MODES: dict[str, int] = {"STABILIZE": 0, "AUTO": 3, "GUIDED": 4, "LOITER": 5, "RTL": 6, "LAND": 9}
"""ArduCopter flight mode numbers (HEARTBEAT custom_mode)."""

STREAM_RATES: dict[str, float] = {
    "HEARTBEAT": 1.0,
    "GLOBAL_POSITION_INT": 10.0,
    "ATTITUDE": 10.0,
    "GPS_RAW_INT": 5.0,
    "SYS_STATUS": 2.0,
    "BATTERY_STATUS": 1.0,
    "VIBRATION": 2.0,
    "EKF_STATUS_REPORT": 2.0,
    "FENCE_STATUS": 1.0,
    "SYSTEM_TIME": 1.0,
}
"""Messages per mission second (STATUSTEXT on events); a scenario's ``[rates]`` overrides these."""
_PHASES = {  # offsets (s) so the slower streams interleave rather than all fall on one tick
    "HEARTBEAT": 0.0, "GLOBAL_POSITION_INT": 0.0, "ATTITUDE": 0.0, "GPS_RAW_INT": 0.1,
    "SYS_STATUS": 0.2, "BATTERY_STATUS": 0.3, "VIBRATION": 0.4, "EKF_STATUS_REPORT": 0.1,
    "FENCE_STATUS": 0.5, "SYSTEM_TIME": 0.7,
}

LINK_LOSS = "LINK_LOSS"
"""Emulator-level fault (not an ArduPilot parameter): value 1 = no packet leaves the vehicle."""
FENCE_BREACH = "fence_breach"

_MOTOR_EXPECT = ("attitude_error", "vibration_high", "ekf_variance", "altitude_loss")
_GPS, _BATT = frozenset({"GPS_RAW_INT"}), frozenset({"SYS_STATUS", "BATTERY_STATUS"})
# param -> (anomaly name, other anomalies a detector may also report, messages carrying it)
FAULT_PARAMS: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {
    "SIM_BATT_VOLTAGE": ("battery_low", ("battery_sag",), _BATT),
    "SIM_GPS1_ENABLE": ("gps_loss", ("ekf_variance",), _GPS),
    "SIM_GPS1_GLTCH_X": ("gps_glitch", ("ekf_variance",), _GPS),
    "SIM_GPS1_GLTCH_Y": ("gps_glitch", ("ekf_variance",), _GPS),
    "SIM_ACC1_RND": ("vibration_high", (), frozenset({"VIBRATION"})),
    "SIM_ENGINE_FAIL": ("motor_failure", _MOTOR_EXPECT, frozenset({"ATTITUDE"})),
    "SIM_ENGINE_MUL": ("motor_failure", _MOTOR_EXPECT, frozenset({"ATTITUDE"})),
    LINK_LOSS: ("link_loss", (), frozenset()),  # the first *dropped* message marks the onset
}
"""Fault parameters the emulator understands. Units as in ArduPilot: SIM_BATT_VOLTAGE is the
full-pack voltage (V; the pack's open-circuit curve is scaled by value / full), SIM_GPS1_ENABLE
0/1, SIM_GPS1_GLTCH_X/Y degrees of latitude/longitude added to the GPS fix, SIM_ACC1_RND the
motor vibration amplitude (m/s^2, added to the VIBRATION levels), SIM_ENGINE_FAIL a motor
bitmask whose thrust is multiplied by SIM_ENGINE_MUL (default 0 = dead, as in ArduPilot)."""

_OCV_SOC = (0.0, 0.05, 0.10, 0.20, 0.40, 0.60, 0.80, 0.90, 1.0)
_OCV_CELL = (3.30, 3.50, 3.60, 3.70, 3.78, 3.86, 3.98, 4.06, 4.20)  # LiPo rest voltage per cell

# ArduCopter-like tuning (WPNAV_SPEED_UP/DN, WPNAV_ACCEL, LAND_SPEED, RTL_ALT, ...)
_CLIMB, _DESCEND, _LAND_FAST, _LAND_SLOW = 2.5, 1.5, 1.5, 0.5
_ACCEL, _BRAKE, _VEL_TAU, _YAW_RATE, _DRAG = 2.5, 1.0, 0.8, math.radians(90), 0.015
_WP_RADIUS = 2.0
_CLIP_MS2 = 152.0  # a 16 g accelerometer clips here
_EKF_FS_THRESH = 0.8  # FS_EKF_THRESH
_SENSORS = (apm.MAV_SYS_STATUS_SENSOR_3D_GYRO | apm.MAV_SYS_STATUS_SENSOR_3D_ACCEL
            | apm.MAV_SYS_STATUS_SENSOR_3D_MAG | apm.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE
            | apm.MAV_SYS_STATUS_SENSOR_GPS | apm.MAV_SYS_STATUS_SENSOR_RC_RECEIVER
            | apm.MAV_SYS_STATUS_SENSOR_MOTOR_OUTPUTS | apm.MAV_SYS_STATUS_AHRS
            | apm.MAV_SYS_STATUS_GEOFENCE | apm.MAV_SYS_STATUS_SENSOR_BATTERY)
_EKF_OK = (apm.EKF_ATTITUDE | apm.EKF_VELOCITY_HORIZ | apm.EKF_VELOCITY_VERT
           | apm.EKF_POS_HORIZ_REL | apm.EKF_POS_HORIZ_ABS | apm.EKF_POS_VERT_ABS
           | apm.EKF_PRED_POS_HORIZ_REL | apm.EKF_PRED_POS_HORIZ_ABS)
_SEV_CRITICAL, _SEV_EMERGENCY, _SEV_INFO = 2, 0, 6


# ---------------------------------------------------------------------------------------------
# scenarios


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A SITL parameter set to ``value`` at mission time ``at_s`` (for ``duration_s``, or for
    good), ramped linearly from its default over ``ramp_s``; ``also`` sets companion parameters
    at the same time (e.g. SIM_ENGINE_MUL with SIM_ENGINE_FAIL). ``name`` is the anomaly a
    detector should report; ``expect`` others it may report as well."""

    param: str
    value: float
    at_s: float
    duration_s: float | None = None
    name: str = ""
    ramp_s: float = 0.0
    also: tuple[tuple[str, float], ...] = ()
    expect: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for p in (self.param, *(k for k, _ in self.also)):
            if p not in FAULT_PARAMS:
                raise UserError(f"unknown fault parameter {p!r}; known: {', '.join(FAULT_PARAMS)}")
        bad_duration = self.duration_s is not None and self.duration_s <= 0
        if self.at_s < 0 or self.ramp_s < 0 or bad_duration:
            raise UserError(f"fault {self.param}: at_s and ramp_s must be >= 0, duration_s > 0")
        default_name, default_expect, _ = FAULT_PARAMS[self.param]
        for attr in ("value", "at_s", "ramp_s"):
            object.__setattr__(self, attr, float(getattr(self, attr)))
        if self.duration_s is not None:
            object.__setattr__(self, "duration_s", float(self.duration_s))
        if not self.name:
            object.__setattr__(self, "name", default_name)
        if self.expect is None:
            object.__setattr__(self, "expect", default_expect)

    @property
    def end_s(self) -> float | None:
        return None if self.duration_s is None else self.at_s + self.duration_s


@dataclass(frozen=True, kw_only=True)
class Mission:
    """Waypoints are (north_m, east_m) or (north_m, east_m, alt_m) from home; alt is relative."""

    altitude_m: float = 30.0
    waypoints: tuple[tuple[float, ...], ...] = ((100.0, 0.0), (100.0, 100.0), (0.0, 100.0))
    cruise_speed: float = 8.0
    laps: int = 1
    rtl_alt_m: float = 15.0


@dataclass(frozen=True, kw_only=True)
class Fence:
    """Circle of ``radius_m`` around home, ceiling ``alt_max_m``, optional inclusion polygon of
    (north_m, east_m) vertices. A breach switches to RTL (FENCE_ACTION 1)."""

    radius_m: float = 300.0
    alt_max_m: float = 100.0
    polygon: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Battery:
    """LiPo pack: ``cells`` in series, capacity, internal resistance and hover current."""

    cells: int = 3
    capacity_mah: float = 5200.0
    resistance_ohm: float = 0.025
    hover_current_a: float = 12.0
    low_volt: float = 10.5  # BATT_LOW_VOLT (failsafe after 10 s below: BATT_LOW_TIMER)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One flight: home (lat deg, lon deg, alt m AMSL), mission, fence, battery, faults."""

    name: str
    description: str = ""
    duration_s: float = 180.0
    home: tuple[float, float, float] = (-35.363262, 149.165237, 584.0)  # ArduPilot SITL's CMAC
    ground_s: float = 5.0
    mission: Mission = field(default_factory=Mission)
    fence: Fence = field(default_factory=Fence)
    battery: Battery = field(default_factory=Battery)
    faults: tuple[Fault, ...] = ()
    rates: tuple[tuple[str, float], ...] = ()

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A bundled scenario by name (see :func:`list_scenarios`) or a TOML file by path."""
        path = Path(name_or_path)
        if not (path.suffix == ".toml" or path.is_file()):
            path = SCENARIO_DIR / f"{name_or_path}.toml"
            if not path.is_file():
                known = ", ".join(list_scenarios())
                raise UserError(f"unknown scenario {str(name_or_path)!r}; bundled: {known}")
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise UserError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"scenario {path} is not valid TOML: {exc}") from None
        return cls.from_mapping(data, name=path.stem)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, name: str) -> Scenario:
        """Build from a parsed TOML document; unknown keys are an error (typos fail loudly)."""
        try:
            d = dict(data)
            home = d.pop("home", None)
            faults = tuple(_fault(f) for f in d.pop("faults", ()))
            mission = d.pop("mission", {})
            fence = d.pop("fence", {})
            battery = d.pop("battery", {})
            rates = d.pop("rates", {})
            for msg in rates:
                if msg not in STREAM_RATES:
                    known = ", ".join(STREAM_RATES)
                    raise UserError(f"scenario {name}: no stream {msg!r}; streams: {known}")
            if "waypoints" in mission:
                wps = tuple(tuple(float(x) for x in wp) for wp in mission["waypoints"])
                mission = {**mission, "waypoints": wps}
            if fence.get("polygon") is not None:
                polygon = tuple((float(n), float(e)) for n, e in fence["polygon"])
                fence = {**fence, "polygon": polygon}
            if home is not None:
                d["home"] = (float(home["lat"]), float(home["lon"]), float(home["alt"]))
            scenario = cls(
                name=d.pop("name", name), mission=Mission(**mission), fence=Fence(**fence),
                battery=Battery(**battery), faults=faults,
                rates=tuple((k, float(v)) for k, v in rates.items()), **d,
            )
        except UserError:
            raise
        except (TypeError, KeyError, ValueError) as exc:
            raise UserError(f"scenario {name}: {exc}") from None
        m = scenario.mission
        if not m.waypoints or any(len(wp) not in (2, 3) for wp in m.waypoints):
            raise UserError(f"scenario {name}: a waypoint is [north_m, east_m] or [n, e, alt_m]")
        if min(scenario.duration_s, m.cruise_speed, m.laps, scenario.battery.cells) <= 0:
            raise UserError(f"scenario {name}: duration_s, cruise_speed, laps, cells must be > 0")
        return scenario


def _fault(d: Mapping[str, Any]) -> Fault:
    d = dict(d)
    also = tuple((k, float(v)) for k, v in d.pop("also", {}).items())
    expect = tuple(d.pop("expect")) if "expect" in d else None
    return Fault(also=also, expect=expect, **d)


def list_scenarios() -> list[str]:
    """Names of the bundled scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


# ---------------------------------------------------------------------------------------------
# incidents (the truth)


@dataclass
class Incident:
    """An anomaly as it happened. Mission times in s; wall times unix ns, stamped by the sender
    when the first message showing it went out (for link loss: when the first was dropped)."""

    name: str
    param: str
    value: float
    also: dict[str, float]
    expect: tuple[str, ...]
    planned_at_s: float | None
    onset_s: float
    end_s: float | None
    messages: frozenset[str]
    onset_msg: str | None = None
    onset_msg_s: float | None = None
    onset_wall_ns: int | None = None
    end_wall_ns: int | None = None

    def as_json(self, last_t: float) -> dict[str, Any]:
        ended = self.end_s is not None and self.end_s <= last_t
        return {
            "name": self.name, "param": self.param, "value": self.value, "also": self.also,
            "expect": list(self.expect), "planned_at_s": self.planned_at_s,
            "onset_s": round(self.onset_s, 3), "onset_msg": self.onset_msg,
            "onset_msg_s": self.onset_msg_s, "onset_wall_ns": self.onset_wall_ns,
            "end_s": round(self.end_s, 3) if ended and self.end_s is not None else None,
            "end_wall_ns": self.end_wall_ns if ended else None,
        }


# ---------------------------------------------------------------------------------------------
# the vehicle


class VehicleEmulator:
    """ArduCopter-like quadrotor. ``step(dt)`` advances physics and the flight plan;
    ``messages(t)`` returns the MAVLink messages due up to mission time ``t``; ``packets(t)``
    encodes them (MAVLink v2, with sequence numbers) and drops them during a link loss."""

    def __init__(self, scenario: Scenario, *, system_id: int = 1, component_id: int = 1,
                 seed: int = 0, start_unix_us: int | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.system_id, self.component_id = system_id, component_id
        self.start_unix_us = int(time.time() * 1e6) if start_unix_us is None else start_unix_us
        self.t = 0.0
        self._rng = random.Random(seed)
        self._mav = apm.MAVLink(None, srcSystem=system_id, srcComponent=component_id)
        lat0 = math.radians(scenario.home[0])
        self._m_per_deg_lon = M_PER_DEG * math.cos(lat0)
        rates = {**STREAM_RATES, **dict(scenario.rates)}
        self._streams = [(name, 1.0 / hz, _PHASES.get(name, 0.0))
                         for name, hz in rates.items() if hz > 0]
        self._next = [0] * len(self._streams)  # per stream, the index of its next send
        self._encoders: dict[str, Callable[[], Any]] = {
            "HEARTBEAT": self._heartbeat, "GLOBAL_POSITION_INT": self._global_position_int,
            "ATTITUDE": self._attitude, "GPS_RAW_INT": self._gps_raw_int,
            "SYS_STATUS": self._sys_status,
            "BATTERY_STATUS": self._battery_status, "VIBRATION": self._vibration,
            "EKF_STATUS_REPORT": self._ekf_status_report, "FENCE_STATUS": self._fence_status,
            "SYSTEM_TIME": self._system_time,
        }
        self._defaults = dict.fromkeys(FAULT_PARAMS, 0.0) | {
            "SIM_BATT_VOLTAGE": 4.2 * scenario.battery.cells, "SIM_GPS1_ENABLE": 1.0}
        self.params = dict(self._defaults)
        self.incidents = [
            Incident(name=f.name, param=f.param, value=f.value, also=dict(f.also),
                     expect=tuple(f.expect or ()), planned_at_s=f.at_s, onset_s=f.at_s,
                     end_s=f.end_s, messages=FAULT_PARAMS[f.param][2])
            for f in scenario.faults
        ]
        self._pending = list(self.incidents)  # onset message not seen yet
        self.dropped = 0  # packets lost to LINK_LOSS
        self._texts: list[tuple[int, str]] = [
            (_SEV_INFO, "ArduCopter V4.5 (qsf emulator)"), (_SEV_INFO, "Frame: QUAD/X")]
        m = scenario.mission
        wps = [(wp[0], wp[1], wp[2] if len(wp) == 3 else m.altitude_m) for wp in m.waypoints]
        self._route = wps * m.laps
        # flight state (local NED-ish: n, e metres from home, h metres up)
        self.armed, self.mode, self.phase = False, "STABILIZE", "ground"
        self.n = self.e = self.h = 0.0
        self.vn = self.ve = self.vu = 0.0
        self.an = self.ae = self.au = 0.0
        self.roll = self.pitch = self.yaw = 0.0
        self.body_rates = (0.0, 0.0, 0.0)
        self._tilt = [0.0, 0.0]
        self._prev_att = (0.0, 0.0, 0.0)
        self._turb = [0.0, 0.0]
        self._target = (0.0, 0.0, 0.0)
        self._wp = 0
        self._landed_at: float | None = None
        self._rtl_home_alt = scenario.mission.rtl_alt_m
        # battery
        self.voltage = 4.2 * scenario.battery.cells
        self.current = 0.0
        self.consumed_mah = 0.0
        self.energy_wh = 0.0
        self._low_since: float | None = None
        self.battery_failsafe = False
        # sensors and estimator
        self._gps_err = [0.0, 0.0, 0.0]
        self._sats = 12
        self._gps_fix = (scenario.home[0], scenario.home[1], scenario.home[2])
        self._gps_lost_s = 0.0
        self._ekf_off = [0.0, 0.0]  # EKF following a GPS glitch (m)
        self._dr = [0.0, 0.0]  # dead-reckoning drift without GPS (m)
        self._pos_var = self._vel_var = 0.0  # fault-driven parts of the EKF variances
        self._ekf_bad_s = 0.0
        self.ekf_failsafe = False
        self._glitching = False
        self._motor_s = 0.0  # motor failure severity 0..1
        self._thrust_loss_sent = False
        self.vibe = [0.0, 0.0, 0.0]
        self.clipping = [0, 0, 0]
        self._clip_acc = [0.0, 0.0, 0.0]
        # fence
        self.breach_status = self.breach_count = self.breach_type = self.breach_time = 0
        self._breach: Incident | None = None

    # -- time ---------------------------------------------------------------------------------

    @property
    def airborne(self) -> bool:
        return self.phase in ("takeoff", "auto", "rtl", "land") and self._landed_at is None

    @property
    def time_boot_ms(self) -> int:
        return round((BOOT_OFFSET_S + self.t) * 1000)

    def step(self, dt: float) -> None:
        """Advance the mission clock, the flight plan and the physics by ``dt`` seconds."""
        self.t += dt
        self._prev_att = (self.roll, self.pitch, self.yaw)
        self.params = self._params_at(self.t)
        self._plan()
        self._fly(dt)
        self._battery(dt)
        self._sensors(dt)
        self._failsafes(dt)
        self._fence()

    def _params_at(self, t: float) -> dict[str, float]:
        active = [f for f in self.scenario.faults
                  if f.at_s <= t and (f.end_s is None or t < f.end_s)]
        if not active:
            return self._defaults
        params = dict(self._defaults)
        for f in active:
            k = 1.0 if f.ramp_s <= 0 else min(1.0, (t - f.at_s) / f.ramp_s)
            for p, v in ((f.param, f.value), *f.also):
                params[p] = self._defaults[p] + (v - self._defaults[p]) * k
        return params

    # -- flight plan --------------------------------------------------------------------------

    def _text(self, severity: int, text: str) -> None:
        self._texts.append((severity, text[:50]))

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self._text(_SEV_INFO, f"Mode {mode}")

    def _rtl(self) -> None:
        self._set_mode("RTL")
        self.phase = "rtl"
        self._rtl_home_alt = max(self.h, self.scenario.mission.rtl_alt_m)
        self._target = (self.n, self.e, self._rtl_home_alt)

    def _land(self) -> None:
        self._set_mode("LAND")
        self.phase = "land"
        self._target = (self.n, self.e, 0.0)

    def _disarm(self, text: str, severity: int = _SEV_INFO) -> None:
        self.armed = False
        self.phase = "landed"
        self.vn = self.ve = self.vu = self.an = self.ae = self.au = 0.0
        self._text(severity, text)

    def _plan(self) -> None:
        s, t = self.scenario, self.t
        if self.phase == "ground":
            if t >= s.ground_s:
                self._set_mode("GUIDED")
            if t >= s.ground_s + 1 and not self.armed:
                self.armed = True
                self._text(_SEV_INFO, "Arming motors")
            if t >= s.ground_s + 2:
                self.phase = "takeoff"
                self._target = (self.n, self.e, s.mission.altitude_m)
                self._text(_SEV_INFO, f"Takeoff to {s.mission.altitude_m:.0f} m")
        elif self.phase == "takeoff":
            if self.h >= self._target[2] - 0.5:
                self._set_mode("AUTO")
                self.phase = "auto"
                self._target = self._route[0]
        elif self.phase == "auto":
            tn, te, th = self._target
            if math.hypot(tn - self.n, te - self.e) < _WP_RADIUS and abs(th - self.h) < 1.0:
                number = self._wp % len(s.mission.waypoints) + 1
                self._text(_SEV_INFO, f"Reached waypoint #{number}")
                self._wp += 1
                if self._wp < len(self._route):
                    self._target = self._route[self._wp]
                else:
                    self._rtl()
        elif self.phase == "rtl":
            if self.h >= self._rtl_home_alt - 0.5:
                self._target = (0.0, 0.0, self._rtl_home_alt)
            if math.hypot(self.n, self.e) < _WP_RADIUS:
                self._land()
        if self._landed_at is not None and t - self._landed_at >= 1.0 and self.armed:
            self._landed_at = None
            self._disarm("Disarming motors")

    # -- physics ------------------------------------------------------------------------------

    def _fly(self, dt: float) -> None:
        p, rng = self.params, self._rng
        failed = p["SIM_ENGINE_FAIL"] != 0  # a motor bitmask
        self._motor_s = 1.0 - min(1.0, max(0.0, p["SIM_ENGINE_MUL"])) if failed else 0.0
        if not self.airborne:
            self.an = self.ae = self.au = 0.0
            self._attitude_from(dt, 0.0, 0.0, 0.0, spin=0.0)
            return
        tn, te, th = self._target
        dn, de = tn - self.n, te - self.e
        dist = math.hypot(dn, de)
        cruise = self.scenario.mission.cruise_speed
        speed = min(cruise, math.sqrt(2 * _BRAKE * dist)) if dist > 0.05 else 0.0
        wn, we = (dn / dist * speed, de / dist * speed) if speed else (0.0, 0.0)
        an, ae = (wn - self.vn) / _VEL_TAU, (we - self.ve) / _VEL_TAU
        a = math.hypot(an, ae)
        if a > _ACCEL:
            an, ae = an * _ACCEL / a, ae * _ACCEL / a
        if self.phase == "land":
            want_up = -(_LAND_FAST if self.h > 10 else _LAND_SLOW)
        else:
            want_up = max(-_DESCEND, min(_CLIMB, th - self.h))
        if self._motor_s > 0.2:  # the other motors saturate: it cannot hold altitude
            want_up = -4.0 * self._motor_s
        au = max(-3.0, min(3.0, (want_up - self.vu) / 0.6))
        self.vn += an * dt
        self.ve += ae * dt
        self.vu += au * dt
        self.n += self.vn * dt
        self.e += self.ve * dt
        self.h += self.vu * dt
        self.an, self.ae, self.au = an, ae, au
        if speed > 1.0 and not self._motor_s:  # face the way it goes (no yaw control on 3 motors)
            err = _wrap(math.atan2(we, wn) - self.yaw)
            self.yaw = _wrap(self.yaw + max(-_YAW_RATE * dt, min(_YAW_RATE * dt, err)))
        if self.h <= 0.0 and self.vu < 0:
            self.h, self.vn, self.ve, self.vu = 0.0, 0.0, 0.0, 0.0
            self.clipping[2] += 1 + int(rng.random() < 0.5)  # touchdown jolt
            if self._motor_s > 0:
                self._disarm("Crash: Disarming", _SEV_EMERGENCY)
            else:
                self._landed_at = self.t
            self._attitude_from(dt, 0.0, 0.0, 0.0, spin=0.0)
            return
        # tilt to produce the acceleration plus the drag at this speed
        v = math.hypot(self.vn, self.ve)
        drag_n, drag_e = _DRAG * v * self.vn, _DRAG * v * self.ve
        self._attitude_from(dt, an + drag_n, ae + drag_e, au, spin=1.5 * self._motor_s)

    def _attitude_from(self, dt: float, an: float, ae: float, au: float, *, spin: float) -> None:
        """Tilt toward the commanded horizontal acceleration (plus turbulence, plus the wobble
        and yaw spin of a failed motor); body rates are the change since the last step."""
        rng, s = self._rng, self._motor_s if self.airborne else 0.0
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        fwd, right = an * cy + ae * sy, -an * sy + ae * cy
        k = min(1.0, dt / 0.15)
        self._tilt[0] += (math.atan2(right, G + au) - self._tilt[0]) * k
        self._tilt[1] += (-math.atan2(fwd, G + au) - self._tilt[1]) * k
        turb = 0.003 if self.armed else 0.0003
        self._turb = [0.9 * x + rng.gauss(0.0, turb) for x in self._turb]
        prev = self._prev_att
        self.roll, self.pitch = self._tilt[0] + self._turb[0], self._tilt[1] + self._turb[1]
        if s > 0:
            w = 2 * math.pi * self.t
            self.roll += 0.3 * s * math.sin(1.1 * w) + rng.gauss(0.0, 0.02 * s)
            self.pitch += 0.25 * s * math.sin(0.8 * w + 1.0) + rng.gauss(0.0, 0.02 * s)
            self.yaw = _wrap(self.yaw + spin * dt)
        self.body_rates = ((self.roll - prev[0]) / dt, (self.pitch - prev[1]) / dt,
                           _wrap(self.yaw - prev[2]) / dt)

    def _battery(self, dt: float) -> None:
        b, rng = self.scenario.battery, self._rng
        if not self.armed:
            current = 0.6
        elif self.phase in ("ground", "landed") or self._landed_at is not None:
            current = 2.0  # motors at MOT_SPIN_ARM
        else:
            v = math.hypot(self.vn, self.ve)
            ah = math.hypot(self.an + _DRAG * v * self.vn, self.ae + _DRAG * v * self.ve)
            load = math.hypot(ah, G + self.au) / G
            current = 0.6 + b.hover_current_a * load**1.5 * (1.0 + 0.4 * self._motor_s)
        self.current = max(0.0, current + rng.gauss(0.0, 0.05 * math.sqrt(current)))
        self.consumed_mah += self.current * dt / 3.6
        soc = max(0.0, 1.0 - self.consumed_mah / b.capacity_mah)
        i = max(1, bisect_right(_OCV_SOC, soc)) - 1
        j = min(i + 1, len(_OCV_SOC) - 1)
        f = 0.0 if j == i else (soc - _OCV_SOC[i]) / (_OCV_SOC[j] - _OCV_SOC[i])
        ocv = b.cells * (_OCV_CELL[i] + f * (_OCV_CELL[j] - _OCV_CELL[i]))
        ocv *= self.params["SIM_BATT_VOLTAGE"] / (4.2 * b.cells)
        self.voltage = max(0.0, ocv - self.current * b.resistance_ohm + rng.gauss(0.0, 0.01))
        self.energy_wh += self.voltage * self.current * dt / 3600.0

    def _sensors(self, dt: float) -> None:
        rng, p = self._rng, self.params
        decay = math.exp(-dt / 3.0)
        motor_s = self._motor_s if self.airborne else 0.0
        gps_ok = p["SIM_GPS1_ENABLE"] >= 0.5
        if gps_ok:
            self._gps_lost_s = 0.0
            self._dr = [x * decay for x in self._dr]
        else:
            if self._gps_lost_s == 0.0:
                self._text(_SEV_CRITICAL, "GPS 1: lost fix")
            self._gps_lost_s += dt
            self._dr = [x + rng.gauss(0.0, 0.15) * dt * self._gps_lost_s for x in self._dr]
        glitch = (p["SIM_GPS1_GLTCH_X"] * M_PER_DEG, p["SIM_GPS1_GLTCH_Y"] * self._m_per_deg_lon)
        glitch_m = math.hypot(*glitch)
        k = min(1.0, dt / 2.0)
        # the EKF rejects most of a glitch but drifts ~30% of the way toward it
        self._ekf_off = [o + (0.3 * g - o) * k for o, g in zip(self._ekf_off, glitch, strict=True)]
        if (glitch_m > 5.0) != self._glitching:
            self._glitching = glitch_m > 5.0
            text = "GPS Glitch or Compass error" if self._glitching else "Glitch cleared"
            self._text(_SEV_CRITICAL, text)
        # fault-driven EKF variances (normalised: 1.0 = failsafe limit)
        pos_want = min(3.0, 0.12 * self._gps_lost_s) + min(2.5, glitch_m / 50.0) + 0.5 * motor_s
        vel_want = min(2.0, 0.1 * self._gps_lost_s) + 0.3 * self._glitching + 0.4 * motor_s
        self._pos_var = max(pos_want, pos_want + (self._pos_var - pos_want) * decay)  # up fast,
        self._vel_var = max(vel_want, vel_want + (self._vel_var - vel_want) * decay)  # down slowly
        # vibration (m/s^2) and accelerometer clipping
        if self.airborne:
            base = (6.0, 7.0, 11.0)
        else:
            base = (2.0, 2.0, 3.0) if self.armed else (0.02, 0.02, 0.03)
        extra = p["SIM_ACC1_RND"] + 45.0 * motor_s
        self.vibe = [base[0] + extra, base[1] + extra, base[2] + 1.2 * extra]
        if extra > 0:  # clipping: the share of 1 kHz samples beyond +-16 g, for Gaussian vibration
            for axis, level in enumerate(self.vibe):
                share = math.erfc(_CLIP_MS2 / (level * math.sqrt(2.0)))
                self._clip_acc[axis] += 1000.0 * dt * share
                whole = int(self._clip_acc[axis] + rng.random())
                self._clip_acc[axis] -= whole
                self.clipping[axis] += whole
        if motor_s > 0 and not self._thrust_loss_sent:
            self._thrust_loss_sent = True
            self._text(_SEV_EMERGENCY, "Potential Thrust Loss (1)")

    def _failsafes(self, dt: float) -> None:
        if not self.airborne:
            return
        b = self.scenario.battery
        if self.voltage < b.low_volt:
            self._low_since = self.t if self._low_since is None else self._low_since
            if self.t - self._low_since >= 10.0 and not self.battery_failsafe:
                self.battery_failsafe = True
                used = f"{self.voltage:.2f}V used {self.consumed_mah:.0f} mAh"
                self._text(_SEV_CRITICAL, f"Battery 1 is low {used}")
                if self.phase in ("takeoff", "auto"):
                    self._rtl()
        else:
            self._low_since = None
        pos, vel = 0.05 + self._pos_var, 0.08 + self._vel_var
        bad = pos >= _EKF_FS_THRESH and vel >= _EKF_FS_THRESH
        self._ekf_bad_s = self._ekf_bad_s + dt if bad else 0.0
        if self._ekf_bad_s >= 1.0 and not self.ekf_failsafe:
            self.ekf_failsafe = True
            self._text(_SEV_CRITICAL, "EKF Failsafe: changed to LAND Mode")
            if self.phase != "land":
                self._land()

    def _estimate(self) -> tuple[float, float]:
        """Where the EKF believes the vehicle is (north, east m): truth plus its errors."""
        return self.n + self._ekf_off[0] + self._dr[0], self.e + self._ekf_off[1] + self._dr[1]

    def _fence(self) -> None:
        if not self.armed or self.phase in ("ground", "landed"):
            return
        f = self.scenario.fence
        n, e = self._estimate()
        kind, btype = "", 0
        if self.h > f.alt_max_m:
            kind, btype = "max alt", apm.FENCE_BREACH_MAXALT
        elif math.hypot(n, e) > f.radius_m:
            kind, btype = "circle", apm.FENCE_BREACH_BOUNDARY
        elif f.polygon and not _inside(n, e, f.polygon):
            kind, btype = "polygon", apm.FENCE_BREACH_BOUNDARY
        if btype and not self.breach_status:
            self.breach_status, self.breach_type, self.breach_time = 1, btype, self.time_boot_ms
            self.breach_count += 1
            self._text(_SEV_CRITICAL, f"Fence Breach: {kind}")
            value = f.alt_max_m if btype == apm.FENCE_BREACH_MAXALT else f.radius_m
            param = "FENCE_ALT_MAX" if btype == apm.FENCE_BREACH_MAXALT else "FENCE_RADIUS"
            self._breach = Incident(name=FENCE_BREACH, param=param, value=value, also={},
                                    expect=(), planned_at_s=None, onset_s=self.t, end_s=None,
                                    messages=frozenset({"FENCE_STATUS"}))
            self.incidents.append(self._breach)
            self._pending.append(self._breach)
            if self.phase in ("takeoff", "auto"):
                self._rtl()
        elif not btype and self.breach_status:
            self.breach_status = 0
            if self._breach is not None:
                self._breach.end_s = self.t
                self._breach = None

    # -- messages -----------------------------------------------------------------------------

    def messages(self, t: float | None = None) -> list[Any]:
        """The messages due in (previous call, ``t``]: pending STATUSTEXTs, then each stream
        whose next send time has come (a stream late by several periods is sent once)."""
        t = self.t if t is None else t
        out = [self._mav.statustext_encode(sev, text.encode()) for sev, text in self._texts]
        self._texts.clear()
        for i, (name, period, phase) in enumerate(self._streams):
            k = self._next[i]
            if phase + k * period <= t + 1e-9:
                out.append(self._encoders[name]())
                self._next[i] = max(k + 1, math.floor((t - phase) / period + 1e-9) + 1)
        return out

    def packets(self, t: float | None = None) -> list[bytes]:
        """``messages(t)`` packed as MAVLink v2; empty while the link is lost (their sequence
        numbers are still used up, as on a real link)."""
        t = self.t if t is None else t
        down = self.params[LINK_LOSS] >= 0.5
        out: list[bytes] = []
        mav = self._mav
        for msg in self.messages(t):
            buf = msg.pack(mav)
            mav.seq = (mav.seq + 1) & 0xFF
            if self._pending:
                self._note(msg.get_type(), t, down)
            if down:
                self.dropped += 1
            else:
                out.append(buf)
        return out

    def _note(self, name: str, t: float, down: bool) -> None:
        for inc in list(self._pending):
            if t + 1e-9 < inc.onset_s:
                continue
            if (inc.param == LINK_LOSS and down) or (name in inc.messages and not down):
                inc.onset_msg, inc.onset_msg_s = name, round(t, 3)
                self._pending.remove(inc)

    def stamp(self, t: float, wall_ns: int) -> None:
        """Record the wall time at which the packets of mission time ``t`` went out."""
        for inc in self.incidents:
            sent = inc.onset_msg_s is not None and inc.onset_msg_s <= t + 1e-9
            if inc.onset_wall_ns is None and sent:
                inc.onset_wall_ns = wall_ns
            if inc.end_wall_ns is None and inc.end_s is not None and inc.end_s <= t + 1e-9:
                inc.end_wall_ns = wall_ns

    def frames(self, *, duration: float | None = None) -> Iterator[tuple[float, list[bytes]]]:
        """(mission time, packets) every :data:`TICK_S` from 0 to ``duration`` (default: the
        scenario's), stepping the vehicle in between."""
        end = self.scenario.duration_s if duration is None else duration
        n = 0
        while (t := round(n * TICK_S, 6)) <= end + 1e-9:
            if n:
                self.step(t - self.t)
                self.t = t
            yield t, self.packets(t)
            n += 1

    def began(self) -> list[Incident]:
        """The incidents whose onset has come, by onset."""
        return sorted((i for i in self.incidents if i.onset_s <= self.t + 1e-9),
                      key=lambda i: i.onset_s)

    def truth(self, *, start_wall_ns: int, speedup: float,
              target: str | None = None) -> dict[str, Any]:
        """The truth record: scenario, timing, and every anomaly that began."""
        return {
            "scenario": self.scenario.name, "description": self.scenario.description,
            "seed": self.seed, "system_id": self.system_id, "component_id": self.component_id,
            "target": target, "speedup": speedup, "start_wall_ns": start_wall_ns,
            "mission_s": round(self.t, 3), "faults": [i.as_json(self.t) for i in self.began()],
        }

    # -- encoders -----------------------------------------------------------------------------

    def _heartbeat(self) -> Any:
        base = (apm.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED | apm.MAV_MODE_FLAG_STABILIZE_ENABLED
                | apm.MAV_MODE_FLAG_MANUAL_INPUT_ENABLED)
        if self.mode in ("AUTO", "GUIDED", "RTL", "LAND", "LOITER"):
            base |= apm.MAV_MODE_FLAG_GUIDED_ENABLED
        if self.armed:
            base |= apm.MAV_MODE_FLAG_SAFETY_ARMED
        if not self.armed:
            state = apm.MAV_STATE_STANDBY
        elif self.battery_failsafe or self.ekf_failsafe:
            state = apm.MAV_STATE_CRITICAL
        else:
            state = apm.MAV_STATE_ACTIVE
        return self._mav.heartbeat_encode(apm.MAV_TYPE_QUADROTOR, apm.MAV_AUTOPILOT_ARDUPILOTMEGA,
                                          base, MODES[self.mode], state, 3)

    def _latlon(self, n: float, e: float) -> tuple[int, int]:
        lat, lon, _ = self.scenario.home
        return round((lat + n / M_PER_DEG) * 1e7), round((lon + e / self._m_per_deg_lon) * 1e7)

    def _global_position_int(self) -> Any:
        rng = self._rng
        n, e = self._estimate()
        lat, lon = self._latlon(n + rng.gauss(0.0, 0.02), e + rng.gauss(0.0, 0.02))
        h = self.h + rng.gauss(0.0, 0.03) if self.h > 0 else rng.gauss(0.0, 0.01)
        hdg = round(math.degrees(self.yaw) * 100) % 36000
        return self._mav.global_position_int_encode(
            self.time_boot_ms, lat, lon, round((self.scenario.home[2] + h) * 1000),
            round(h * 1000), _i16(self.vn * 100), _i16(self.ve * 100), _i16(-self.vu * 100), hdg)

    def _attitude(self) -> Any:
        return self._mav.attitude_encode(self.time_boot_ms, self.roll, self.pitch, self.yaw,
                                         *self.body_rates)

    def _gps_raw_int(self) -> Any:
        rng, boot_us = self._rng, self.time_boot_ms * 1000
        # small correlated position noise (m); satellites wander within 10..14
        self._gps_err = [0.9 * x + rng.gauss(0.0, 0.09) for x in self._gps_err]
        if rng.random() < 0.02:
            self._sats = max(10, min(14, self._sats + rng.choice((-1, 1))))
        if self.params["SIM_GPS1_ENABLE"] < 0.5:
            lat, lon, alt = self._gps_fix
            return self._mav.gps_raw_int_encode(
                boot_us, apm.GPS_FIX_TYPE_NO_FIX, round(lat * 1e7), round(lon * 1e7),
                round(alt * 1000), 9999, 9999, 0, 0, 0, round(alt * 1000), 0, 0, 0, 0, 0)
        gx, gy = self.params["SIM_GPS1_GLTCH_X"], self.params["SIM_GPS1_GLTCH_Y"]
        home_lat, home_lon, home_alt = self.scenario.home
        lat = home_lat + (self.n + self._gps_err[0]) / M_PER_DEG + gx
        lon = home_lon + (self.e + self._gps_err[1]) / self._m_per_deg_lon + gy
        alt = home_alt + self.h + 2 * self._gps_err[2]
        self._gps_fix = (lat, lon, alt)
        hdop = max(0.7, min(1.0, 0.82 + rng.gauss(0.0, 0.05)))
        vdop = hdop * 1.4
        vel = math.hypot(self.vn, self.ve)
        cog = round(math.degrees(math.atan2(self.ve, self.vn)) * 100) % 36000 if vel > 0.3 else 0
        return self._mav.gps_raw_int_encode(
            boot_us, apm.GPS_FIX_TYPE_3D_FIX, round(lat * 1e7), round(lon * 1e7),
            round(alt * 1000), int(hdop * 100), int(vdop * 100), round(vel * 100), cog, self._sats,
            round(alt * 1000), int(hdop * 1200), int(vdop * 1500), 150, 0, 0)

    def _sys_status(self) -> Any:
        enabled = _SENSORS if self.armed else _SENSORS & ~apm.MAV_SYS_STATUS_SENSOR_MOTOR_OUTPUTS
        health = _SENSORS
        if self.params["SIM_GPS1_ENABLE"] < 0.5:
            health &= ~apm.MAV_SYS_STATUS_SENSOR_GPS
        if self.ekf_failsafe or self._pos_var + 0.05 >= _EKF_FS_THRESH:
            health &= ~apm.MAV_SYS_STATUS_AHRS
        if self.breach_status:
            health &= ~apm.MAV_SYS_STATUS_GEOFENCE
        if self.battery_failsafe:
            health &= ~apm.MAV_SYS_STATUS_SENSOR_BATTERY
        load = int(max(0, min(1000, 250 + self._rng.gauss(0.0, 15.0))))
        return self._mav.sys_status_encode(
            _SENSORS, enabled, health, load, round(self.voltage * 1000), _i16(self.current * 100),
            self._remaining(), 0, 0, 0, 0, 0, 0)

    def _remaining(self) -> int:
        used = self.consumed_mah / self.scenario.battery.capacity_mah
        return int(max(0.0, min(100.0, 100.0 * (1.0 - used))))

    def _battery_status(self) -> Any:
        low = self.battery_failsafe
        state = apm.MAV_BATTERY_CHARGE_STATE_LOW if low else apm.MAV_BATTERY_CHARGE_STATE_OK
        cells = [min(65534, round(self.voltage * 1000))] + [65535] * 9  # the total: no cell monitor
        return self._mav.battery_status_encode(
            0, apm.MAV_BATTERY_FUNCTION_UNKNOWN, apm.MAV_BATTERY_TYPE_LIPO, 32767, cells,
            _i16(self.current * 100), int(self.consumed_mah), int(self.energy_wh * 36),
            self._remaining(), 0, state)

    def _vibration(self) -> Any:
        rng = self._rng
        x, y, z = (max(0.0, v + rng.gauss(0.0, 0.05 * v)) for v in self.vibe)
        return self._mav.vibration_encode(self.time_boot_ms * 1000, x, y, z, *self.clipping)

    def _ekf_status_report(self) -> Any:
        rng = self._rng
        flags = _EKF_OK
        if self.params["SIM_GPS1_ENABLE"] < 0.5 and self._gps_lost_s > 1.0:
            flags &= ~(apm.EKF_POS_HORIZ_ABS | apm.EKF_PRED_POS_HORIZ_ABS)
            flags |= apm.EKF_CONST_POS_MODE
        if self._glitching:
            flags |= apm.EKF_GPS_GLITCHING
        return self._mav.ekf_status_report_encode(
            flags, 0.08 + self._vel_var + abs(rng.gauss(0.0, 0.03)),
            0.05 + self._pos_var + abs(rng.gauss(0.0, 0.02)),
            0.1 + 0.3 * self._pos_var + abs(rng.gauss(0.0, 0.03)),
            0.05 + abs(rng.gauss(0.0, 0.02)), 0.0, 0.0)

    def _fence_status(self) -> Any:
        return self._mav.fence_status_encode(self.breach_status, self.breach_count,
                                             self.breach_type, self.breach_time, 0)

    def _system_time(self) -> Any:
        unix_us = self.start_unix_us + round(self.t * 1e6)
        return self._mav.system_time_encode(unix_us, self.time_boot_ms)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _i16(x: float) -> int:
    return max(-32768, min(32767, round(x)))


def _inside(n: float, e: float, polygon: tuple[tuple[float, float], ...]) -> bool:
    inside = False
    for (n1, e1), (n2, e2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (e1 > e) != (e2 > e) and n < n1 + (e - e1) * (n2 - n1) / (e2 - e1):
            inside = not inside
    return inside


# ---------------------------------------------------------------------------------------------
# outputs: UDP in (scaled) real time, packets, tlog, truth


@dataclass(frozen=True, kw_only=True)
class EmulationStats:
    """What a run sent. ``max_late_s`` is the worst wall-clock lateness behind schedule."""

    scenario: str
    packets: int
    bytes: int
    dropped: int
    send_errors: int
    mission_s: float
    wall_s: float
    max_late_s: float
    start_wall_ns: int
    faults: tuple[str, ...]  # the faults that began, in order
    onsets_s: tuple[float, ...]  # their onsets (mission s), one per fault


def render(scenario: Scenario, *, seed: int = 0, duration: float | None = None,
           start_unix_us: int = 1_700_000_000_000_000) -> Iterator[tuple[float, bytes]]:
    """(mission time s, MAVLink v2 packet) for the whole flight, without sockets or sleeping."""
    emu = VehicleEmulator(scenario, seed=seed, start_unix_us=start_unix_us)
    for t, packets in emu.frames(duration=duration):
        for p in packets:
            yield t, p


def write_tlog(scenario: Scenario, path: str | Path, *, seed: int = 0,
               start_unix_us: int | None = None, duration: float | None = None,
               truth: str | Path | None = None) -> EmulationStats:
    """Write the flight as a ``.tlog``: each packet prefixed by its time as a big-endian uint64
    of unix microseconds (MAVProxy's format), start_unix_us + mission time."""
    start_us = int(time.time() * 1e6) if start_unix_us is None else start_unix_us
    emu = VehicleEmulator(scenario, seed=seed, start_unix_us=start_us)
    pack_ts = struct.Struct(">Q").pack
    count = size = 0
    t0 = time.monotonic()
    path = Path(path)
    try:
        with path.open("wb") as f:
            chunk: list[bytes] = []
            for t, packets in emu.frames(duration=duration):
                ts_us = start_us + round(t * 1e6)
                prefix = pack_ts(ts_us)
                for p in packets:
                    chunk.append(prefix)
                    chunk.append(p)
                    size += len(p)
                count += len(packets)
                emu.stamp(t, ts_us * 1000)
                if len(chunk) > 8192:
                    f.write(b"".join(chunk))
                    chunk.clear()
            f.write(b"".join(chunk))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    if truth is not None:
        record = emu.truth(start_wall_ns=start_us * 1000, speedup=1.0, target=f"tlog:{path}")
        write_truth(truth, record)
    return EmulationStats(scenario=scenario.name, packets=count, bytes=size, dropped=emu.dropped,
                          send_errors=0, mission_s=emu.t, wall_s=time.monotonic() - t0,
                          max_late_s=0.0, start_wall_ns=start_us * 1000,
                          faults=tuple(i.name for i in emu.began()),
                          onsets_s=tuple(i.onset_s for i in emu.began()))


def write_truth(path: str | Path, record: Mapping[str, Any]) -> None:
    """Write a truth record (:meth:`VehicleEmulator.truth`) as JSON, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write truth file {path}: {exc.strerror or exc}") from None


def parse_target(to: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` or ``udpout:HOST:PORT`` -> (host, port)."""
    for prefix in ("udpout:", "udp:"):
        if to.startswith(prefix):
            host, _, port = to[len(prefix):].rpartition(":")
            break
    else:
        raise UserError(f"unsupported target {to!r}: use udp:HOST:PORT or udpout:HOST:PORT")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"bad target {to!r}: expected udp:HOST:PORT with a port in 1-65535")
    return host.strip("[]"), int(port)


def emulate(scenario: Scenario, *, to: str, speedup: float = 1.0,
            duration: float | None = None, truth: str | Path | None = None, seed: int = 0,
            on_progress: Callable[[float, float], None] | None = None,
            stop: threading.Event | None = None) -> EmulationStats:
    """Stream the flight to ``to`` over UDP, one MAVLink packet per datagram, mission time
    running ``speedup`` times faster than the wall clock (sent in bursts on a 10 ms grid).
    Blocks until the flight (or ``duration`` mission seconds) is over or ``stop`` is set;
    ``on_progress(mission_s, total_s)`` is called every mission second. The truth file is
    written at the end, also when interrupted."""
    if not speedup > 0:
        raise UserError(f"speedup must be > 0, not {speedup}")
    host, port = parse_target(to)
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve {host!r}: {exc.strerror}") from None
    total = scenario.duration_s if duration is None else duration
    sock = socket.socket(family, socket.SOCK_DGRAM)
    start_wall_ns = time.time_ns()
    emu = VehicleEmulator(scenario, seed=seed, start_unix_us=start_wall_ns // 1000)
    count = size = errors = 0
    max_late = 0.0
    start_mono = time.monotonic()
    next_progress = 0.0
    try:
        for t, packets in emu.frames(duration=duration):
            due = start_mono + t / speedup
            now = time.monotonic()
            if due > now:
                wake = start_mono + math.ceil((due - start_mono) / BURST_S - 1e-6) * BURST_S
                if stop is not None:
                    if stop.wait(wake - now):
                        break
                else:
                    time.sleep(wake - now)
            elif stop is not None and stop.is_set():
                break
            else:
                max_late = max(max_late, now - due)
            for p in packets:
                try:
                    sock.sendto(p, addr)
                    count += 1
                    size += len(p)
                except OSError:
                    errors += 1
            emu.stamp(t, time.time_ns())
            if on_progress is not None and t >= next_progress:
                next_progress += 1.0
                on_progress(t, total)
    finally:
        sock.close()
        if truth is not None:
            write_truth(truth, emu.truth(start_wall_ns=start_wall_ns, speedup=speedup, target=to))
    return EmulationStats(scenario=scenario.name, packets=count, bytes=size, dropped=emu.dropped,
                          send_errors=errors, mission_s=emu.t,
                          wall_s=time.monotonic() - start_mono, max_late_s=max_late,
                          start_wall_ns=start_wall_ns, faults=tuple(i.name for i in emu.began()),
                          onsets_s=tuple(i.onset_s for i in emu.began()))
