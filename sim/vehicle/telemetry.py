"""The vehicle emulator's MAVLink side: what the model says, at ArduCopter's stream rates.

:class:`VehicleEmulator` is the :class:`~.model.VehicleModel` speaking MAVLink v2 as system 1,
component 1 (MAV_COMP_ID_AUTOPILOT1, ``ardupilotmega`` dialect): the streams of
:data:`~.scenario.STREAM_RATES` and STATUSTEXT on events, packed with sequence numbers and
dropped during a link loss; it notes when each incident first showed (the truth record).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from pymavlink.dialects.v20 import ardupilotmega as apm

from qsframework.geo import offset_latlon

from .model import EKF_FS_THRESH, VehicleModel
from .scenario import LINK_LOSS, STREAM_RATES, Incident, Scenario

TICK_S = 0.1
"""Physics step and message scheduling grid, in mission seconds."""
MODES: dict[str, int] = {"STABILIZE": 0, "AUTO": 3, "GUIDED": 4, "LOITER": 5, "RTL": 6, "LAND": 9}
"""ArduCopter flight mode numbers (HEARTBEAT custom_mode)."""
_PHASES = {  # offsets (s) so the slower streams interleave rather than all fall on one tick
    "HEARTBEAT": 0.0, "GLOBAL_POSITION_INT": 0.0, "ATTITUDE": 0.0, "GPS_RAW_INT": 0.1,
    "SYS_STATUS": 0.2, "BATTERY_STATUS": 0.3, "VIBRATION": 0.4, "EKF_STATUS_REPORT": 0.1,
    "FENCE_STATUS": 0.5, "SYSTEM_TIME": 0.7,
}
_SENSORS = (apm.MAV_SYS_STATUS_SENSOR_3D_GYRO | apm.MAV_SYS_STATUS_SENSOR_3D_ACCEL
            | apm.MAV_SYS_STATUS_SENSOR_3D_MAG | apm.MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE
            | apm.MAV_SYS_STATUS_SENSOR_GPS | apm.MAV_SYS_STATUS_SENSOR_RC_RECEIVER
            | apm.MAV_SYS_STATUS_SENSOR_MOTOR_OUTPUTS | apm.MAV_SYS_STATUS_AHRS
            | apm.MAV_SYS_STATUS_GEOFENCE | apm.MAV_SYS_STATUS_SENSOR_BATTERY)
_EKF_OK = (apm.EKF_ATTITUDE | apm.EKF_VELOCITY_HORIZ | apm.EKF_VELOCITY_VERT
           | apm.EKF_POS_HORIZ_REL | apm.EKF_POS_HORIZ_ABS | apm.EKF_POS_VERT_ABS
           | apm.EKF_PRED_POS_HORIZ_REL | apm.EKF_PRED_POS_HORIZ_ABS)


class VehicleEmulator(VehicleModel):
    """The vehicle model on a MAVLink link. ``messages(t)`` returns the MAVLink messages due
    up to mission time ``t``; ``packets(t)`` encodes them (MAVLink v2, with sequence numbers)
    and drops them during a link loss; ``frames()`` steps the flight and yields its packets."""

    def __init__(self, scenario: Scenario, *, system_id: int = 1, component_id: int = 1,
                 seed: int = 0, start_unix_us: int | None = None) -> None:
        super().__init__(scenario, seed=seed)
        self.system_id, self.component_id = system_id, component_id
        self.start_unix_us = int(time.time() * 1e6) if start_unix_us is None else start_unix_us
        self._mav = apm.MAVLink(None, srcSystem=system_id, srcComponent=component_id)
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
        self.dropped = 0  # packets lost to LINK_LOSS

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
        lat, lon = offset_latlon(self.scenario.home[0], self.scenario.home[1], n, e)
        return round(lat * 1e7), round(lon * 1e7)

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
        n, e = self.n + self._gps_err[0], self.e + self._gps_err[1]
        lat, lon = offset_latlon(home_lat, home_lon, n, e)
        lat, lon = lat + gx, lon + gy
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
        if self.ekf_failsafe or self._pos_var + 0.05 >= EKF_FS_THRESH:
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


def _i16(x: float) -> int:
    return max(-32768, min(32767, round(x)))
