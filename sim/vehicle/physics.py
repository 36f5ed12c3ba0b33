"""The physics of the emulator's vehicle: kinematics, attitude, the battery and the sensors.

:class:`VehiclePhysics` holds the per-step physics of :class:`~.model.VehicleModel` (which
holds the state, the flight plan, the failsafes and the fence); split from it by what it
holds, it reads and writes the model's state.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from qsframework.geo import M_PER_DEG

G = 9.80665
_OCV_SOC = (0.0, 0.05, 0.10, 0.20, 0.40, 0.60, 0.80, 0.90, 1.0)
_OCV_CELL = (3.30, 3.50, 3.60, 3.70, 3.78, 3.86, 3.98, 4.06, 4.20)  # LiPo rest voltage per cell

# ArduCopter-like tuning (WPNAV_SPEED_UP/DN, WPNAV_ACCEL, LAND_SPEED, RTL_ALT, ...)
_CLIMB, _DESCEND, _LAND_FAST, _LAND_SLOW = 2.5, 1.5, 1.5, 0.5
_ACCEL, _BRAKE, _VEL_TAU, _YAW_RATE, _DRAG = 2.5, 1.0, 0.8, math.radians(90), 0.015
_WP_RADIUS = 2.0
_CLIP_MS2 = 152.0  # a 16 g accelerometer clips here
_SEV_CRITICAL, _SEV_EMERGENCY, _SEV_INFO = 2, 0, 6


class VehiclePhysics:
    """The physics steps of :class:`~.model.VehicleModel` (a base class of it)."""

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
        ohmic = b.resistance_ohm * (1.0 + 1.5 * (1.0 - soc) ** 3)  # rises toward empty
        if b.polarization_s > 0:
            k = min(1.0, dt / b.polarization_s)
            self._polarization += (self.current * b.polarization_ohm - self._polarization) * k
        self.voltage = max(0.0, ocv - self.current * ohmic - self._polarization + rng.gauss(0.0, 0.01))
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


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi
