"""The vehicle model of the emulator: an ArduCopter-like quadrotor flying a scenario.

Disarmed, armed, GUIDED takeoff, AUTO mission, RTL, LAND, disarm; simple kinematics, a 3S
LiPo (12.6 V full, so ``BATT_LOW_VOLT`` 10.5 V is meaningful), GPS, EKF variances, vibration;
deterministic for a seed. Faults act as their SITL parameters would, and it reacts as
ArduCopter's defaults do: battery failsafe -> RTL, EKF failsafe -> LAND, fence breach -> RTL,
crash -> disarm. Each anomaly is an :class:`~.scenario.Incident`; MAVLink is :mod:`.telemetry`.
"""

from __future__ import annotations

import math
import random

from pymavlink.dialects.v20 import ardupilotmega as apm

from qsframework.geo import inside_polygon, m_per_deg_lon

from .physics import _SEV_CRITICAL, _SEV_INFO, _WP_RADIUS, VehiclePhysics
from .scenario import FAULT_PARAMS, Incident, Scenario

BOOT_OFFSET_S = 20.0
"""The autopilot booted this long before mission time 0 (time_boot_ms at t=0 is 20000)."""
FENCE_BREACH = "fence_breach"

EKF_FS_THRESH = 0.8
"""FS_EKF_THRESH: EKF variances at or above it (two of them, for 1 s) trigger the failsafe."""


class VehicleModel(VehiclePhysics):
    """ArduCopter-like quadrotor. ``step(dt)`` advances the mission clock, the flight plan and
    the physics; the STATUSTEXTs it would send queue up in ``_texts``."""

    def __init__(self, scenario: Scenario, *, seed: int = 0) -> None:
        self.scenario = scenario
        self.seed = seed
        self.t = 0.0
        self._rng = random.Random(seed)
        self._m_per_deg_lon = m_per_deg_lon(scenario.home[0])
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
        self._polarization = 0.0  # V across the polarisation branch
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

    def _failsafes(self, dt: float) -> None:
        if not self.airborne:
            return
        b = self.scenario.battery
        if self.voltage < b.low_volt:
            self._low_since = self.t if self._low_since is None else self._low_since
            if self.t - self._low_since >= 10.0 and not self.battery_failsafe:
                self.battery_failsafe = True
                self._battery_incident(b.low_volt)
                used = f"{self.voltage:.2f}V used {self.consumed_mah:.0f} mAh"
                self._text(_SEV_CRITICAL, f"Battery 1 is low {used}")
                if self.phase in ("takeoff", "auto"):
                    self._rtl()
        else:
            self._low_since = None
        pos, vel = 0.05 + self._pos_var, 0.08 + self._vel_var
        bad = pos >= EKF_FS_THRESH and vel >= EKF_FS_THRESH
        self._ekf_bad_s = self._ekf_bad_s + dt if bad else 0.0
        if self._ekf_bad_s >= 1.0 and not self.ekf_failsafe:
            self.ekf_failsafe = True
            self._text(_SEV_CRITICAL, "EKF Failsafe: changed to LAND Mode")
            if self.phase != "land":
                self._land()

    def _battery_incident(self, low_volt: float) -> None:
        """The failsafe of a pack that ran down by itself (no SIM_BATT_VOLTAGE fault) is an
        incident too: onset when the loaded voltage went below BATT_LOW_VOLT, failsafe_s
        when it had been for BATT_LOW_TIMER."""
        if any(i.name == "battery_low" for i in self.incidents):
            return
        assert self._low_since is not None
        inc = Incident(name="battery_low", param="BATT_LOW_VOLT", value=low_volt, also={},
                       expect=FAULT_PARAMS["SIM_BATT_VOLTAGE"][1], planned_at_s=None,
                       onset_s=self._low_since, end_s=None, messages=FAULT_PARAMS["SIM_BATT_VOLTAGE"][2],
                       failsafe_s=self.t)
        self.incidents.append(inc)
        self._pending.append(inc)

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
        elif f.polygon and not inside_polygon(n, e, f.polygon):
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

