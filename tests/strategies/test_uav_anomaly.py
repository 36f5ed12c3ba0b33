"""UAV anomaly detectors: each detector on synthetic flights built in code, plus the
invariants (batch boundaries, snapshot/restore) and a backtest through the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from math import cos, pi, radians, sin
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.engine import Engine
from qsframework.errors import UserError
from qsframework.events import get_kind
from qsframework.loader import load_strategy
from qsframework.order import merge_kinds, sort_table
from qsframework.recording import RecordingWriter
from qsframework.telemetry import TELEMETRY_KINDS

from ..conftest import ROOT, T0, run_qsf

SPEC = str(ROOT / "strategies" / "uav_anomaly.py") + ":UavAnomaly"
UAV = load_strategy(SPEC)
SEC = 1_000_000_000
HOME_LAT, HOME_LON = -35.363261, 149.165230  # ArduPilot SITL's default home (CMAC)
M_PER_DEG = 111_318.84502145034


def latlon(n: float, e: float) -> tuple[float, float]:
    """The point ``n`` metres north and ``e`` metres east of HOME."""
    return HOME_LAT + n / M_PER_DEG, HOME_LON + e / (M_PER_DEG * cos(radians(HOME_LAT)))


W = 2 * pi / 60  # a 50 m circle a minute, starting at home: at most 100 m from home, 5.2 m/s


def circle(t: float) -> tuple[float, float]:
    return 50 * sin(W * t), 50 - 50 * cos(W * t)


def circle_vel(t: float) -> tuple[float, float]:
    return 50 * W * cos(W * t), 50 * W * sin(W * t)


Fn = Callable[[float], object]


@dataclass
class Flight:
    """One vehicle's telemetry: every kind sampled at ``offset + i * step`` seconds, values
    from functions of t (seconds) that a test replaces to inject an anomaly. The default
    is a clean flight: armed, circling near home, healthy battery, GPS, vibration and EKF."""

    key: str = "1"
    seconds: float = 60
    step: float = 1.0
    offset: float = 0.0
    origin: tuple[float, float] = (0.0, 0.0)  # metres north/east of HOME added to positions
    drop: float = 0.0  # probability of leaving a row out (random flights)
    seed: int = 0
    armed: Fn = lambda t: True
    heartbeat: Fn = lambda t: True  # send a heartbeat at t?
    ne: Fn = circle
    vel: Fn = circle_vel
    rel_alt: Fn = lambda t: 20.0
    gps_ne: Fn | None = None  # where GPS puts the vehicle (default: ne)
    voltage: Fn = lambda t: 12.4 - 0.005 * t
    current: Fn = lambda t: 12.0
    remaining: Fn = lambda t: 95.0 - 0.1 * t
    fix: Fn = lambda t: 3
    sats: Fn = lambda t: 12
    hdop: Fn = lambda t: 0.8
    vibe: Fn = lambda t: (8.0, 9.0, 12.0)
    clip_inc: Fn = lambda t: 0
    ekf: Fn = lambda t: (0.1, 0.1, 0.1, 0.1)
    fence_status: Fn = lambda t: 0

    def times(self) -> list[int]:
        n = round(self.seconds / self.step)
        return [T0 + round((self.offset + i * self.step) * SEC) for i in range(n)]

    def rows(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {k: [] for k in TELEMETRY_KINDS}
        rng = np.random.default_rng(self.seed)
        seq = 0

        def add(kind: str, ts: int, **values: object) -> None:
            nonlocal seq
            seq += 1
            if self.drop and rng.random() < self.drop:
                return
            out[kind].append({"ts_event": ts, "ts_recv": ts + 20_000_000, "source": "mavlink",
                              "key": self.key, "seq": seq, **values})

        on, oe = self.origin
        for ts in self.times():
            t = (ts - T0) / SEC
            if self.heartbeat(t):
                add("heartbeat", ts, armed=self.armed(t), mode="AUTO", custom_mode=3, base_mode=217,
                    system_status=4, vehicle_type=2, autopilot=3)
            n, e = self.ne(t)
            lat, lon = latlon(on + n, oe + e)
            vn, ve = self.vel(t)
            rel = self.rel_alt(t)
            add("position", ts, lat=lat, lon=lon, alt=584.0 + rel, relative_alt=rel, vx=vn, vy=ve, vz=0.0,
                heading=0.0)
            gn, ge = (self.gps_ne or self.ne)(t)
            glat, glon = latlon(on + gn, oe + ge)
            add("gps", ts, fix_type=self.fix(t), satellites=self.sats(t), hdop=self.hdop(t), vdop=1.2,
                lat=glat, lon=glon, alt=584.0 + rel, ground_speed=5.0, course=0.0)
            add("battery", ts, battery_id=0, voltage=self.voltage(t), current=self.current(t),
                remaining=self.remaining(t), msg="SYS_STATUS")
            add("attitude", ts, roll=0.01, pitch=-0.02, yaw=1.0, rollspeed=0.0, pitchspeed=0.0, yawspeed=0.0)
            vx, vy, vz = self.vibe(t)
            inc = self.clip_inc(t)
            add("vibration", ts, vibe_x=vx, vibe_y=vy, vibe_z=vz, clipping_0=0, clipping_1=0, clipping_2=0,
                clip_inc_0=inc, clip_inc_1=0, clip_inc_2=0)
            ve_, ph, pv, cm = self.ekf(t)
            add("ekf", ts, flags=831, velocity_variance=ve_, pos_horiz_variance=ph, pos_vert_variance=pv,
                compass_variance=cm, terrain_alt_variance=0.0)
            if ts == T0 + round(self.offset * SEC):
                add("statustext", ts, severity=6, text="Mission: 1 Takeoff")
            breached = self.fence_status(t)
            add("fence", ts, breach_status=breached, breach_count=breached, breach_type=3 if breached else 0,
                breach_time=0)
        return out


def tables(*flights: Flight) -> dict[str, pa.Table]:
    """Per kind, the rows of all flights as one table in total order."""
    rows: dict[str, list[dict]] = {k: [] for k in TELEMETRY_KINDS}
    for f in flights:
        for kind, r in f.rows().items():
            rows[kind].extend(r)
    return {k: sort_table(pa.Table.from_pylist(r, schema=get_kind(k).schema)) for k, r in rows.items()}


def run_engine(data: dict[str, pa.Table], *, batch: int = 65_536, **overrides: object) -> Engine:
    engine = Engine(UAV, overrides={k: str(v) for k, v in overrides.items()})
    for kind, b in merge_kinds({k: t.to_batches(max_chunksize=batch) for k, t in data.items()}):
        engine.process(kind, b)
    engine.finish()
    return engine


def outputs(data: dict[str, pa.Table], **overrides: object) -> tuple[list[dict], list[dict]]:
    """(alerts, signals) as row dicts, with ``t``: seconds after T0; without the
    ``*_cleared`` ends of episodes (test_uav_alerts.py tests those)."""
    engine = run_engine(data, **overrides)
    out = engine.ctx.outputs
    alerts, signals = out.alerts.drain().to_pylist(), out.signals.drain().to_pylist()
    alerts = [a for a in alerts if not a["name"].endswith("_cleared")]
    signals = [s for s in signals if not s["name"].endswith("_cleared")]
    for row in alerts + signals:
        row["t"] = (row["ts_event"] - T0) / SEC
    return alerts, signals


def alerts_of(flight: Flight | dict[str, pa.Table], **overrides: object) -> list[tuple[float, str, str, str]]:
    """(t, key, name, severity) of every alert but the ``*_cleared`` ends, in emission order."""
    data = tables(flight) if isinstance(flight, Flight) else flight
    return [(a["t"], a["key"], a["name"], a["severity"]) for a in outputs(data, **overrides)[0]]


def only(alerts: list[tuple], prefix: str) -> list[tuple]:
    return [a for a in alerts if a[2].startswith(prefix)]


# -- clean flights ---------------------------------------------------------------------
def test_clean_flight_gives_no_alert_or_signal():
    two = Flight(key="2", seconds=180, offset=0.5, origin=(800, 0))
    alerts, signals = outputs(tables(Flight(seconds=180), two))
    assert alerts == [] and signals == []


def test_declares_every_telemetry_kind_and_ardupilot_defaults():
    assert set(UAV.kinds) == set(TELEMETRY_KINDS)
    p = Engine(UAV).params
    got = (p.batt_low_volt, p.batt_low_timer, p.fence_radius, p.fence_alt_max, p.fence_margin, p.ekf_thresh)
    assert got == (10.5, 10 * SEC, 300.0, 100.0, 2.0, 0.8)


# -- battery ---------------------------------------------------------------------------
def low_from(start: float, volts: float = 10.2, normal: float = 10.7) -> Fn:
    """``volts`` from ``start`` on, ``normal`` before: a step too small to count as a sag."""
    return lambda t: volts if t >= start else normal


def test_battery_low_after_the_timer_once():
    data = tables(Flight(voltage=low_from(20), seconds=90))
    alerts, signals = outputs(data)
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(30.0, "battery_low", "warning")]
    assert alerts[0]["text"] == "vehicle 1: battery 10.2 V below 10.5 V for 10 s"
    assert alerts[0]["dedup_key"] == f"uav_anomaly:1:battery_low:0:{T0 + 30 * SEC}"
    assert [(s["t"], s["name"], s["value"]) for s in signals] == [(30.0, "battery_low", 10.2)]


def test_battery_low_fires_at_first_sample_after_timer_on_irregular_samples():
    flight = Flight(voltage=low_from(20), seconds=60, step=0.7)
    ts = flight.times()
    first_low = min(t for t in ts if t >= T0 + 20 * SEC)
    expected = min(t for t in ts if t >= first_low + 10 * SEC)
    alerts = outputs(tables(flight))[0]
    assert [(a["ts_event"], a["name"]) for a in alerts] == [(expected, "battery_low")]


def test_battery_low_clears_and_comes_back():
    dips = lambda t: 10.2 if 20 <= t < 40 or 50 <= t < 80 else 10.7
    assert alerts_of(Flight(voltage=dips, seconds=90)) == [(30.0, "1", "battery_low", "warning"),
                                                           (60.0, "1", "battery_low", "warning")]
    # back above for 2 s only (< clear_time 3 s): the same episode, one alert
    blip = lambda t: 10.2 if 20 <= t < 40 or t >= 42 else 10.7
    assert alerts_of(Flight(voltage=blip, seconds=90)) == [(30.0, "1", "battery_low", "warning")]
    # with clear_time=1s the same blip is a new episode
    assert [a[0] for a in alerts_of(Flight(voltage=blip, seconds=90), clear_time="1s")] == [30.0, 52.0]


def test_battery_critical_escalates_once():
    volts = lambda t: 10.7 if t < 20 else 10.3 if t < 40 else 9.8
    flight = Flight(voltage=volts, seconds=90)
    assert alerts_of(flight, batt_crt_volt=10.0) == [(30.0, "1", "battery_low", "warning"),
                                                     (50.0, "1", "battery_low", "critical")]
    assert alerts_of(flight) == [(30.0, "1", "battery_low", "warning")]


def test_battery_low_by_remaining_percentage():
    flight = Flight(remaining=lambda t: 90.0 - t, seconds=100)
    assert alerts_of(flight) == []  # batt_low_pct = 0: off
    alerts = outputs(tables(flight), batt_low_pct=20)[0]
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(71.0, "battery_low", "warning")]
    assert "19% remaining" in alerts[0]["text"]


def test_battery_parameters_override_and_switch_off():
    flight = Flight(voltage=low_from(20, volts=10.8, normal=11.2), seconds=60)
    assert alerts_of(flight) == []
    alerts = outputs(tables(flight), batt_low_volt="11.0")[0]
    assert [(a["t"], a["name"]) for a in alerts] == [(30.0, "battery_low")]
    assert alerts[0]["text"] == "vehicle 1: battery 10.8 V below 11 V for 10 s"
    shorter = alerts_of(flight, batt_low_volt="11.0", batt_low_timer="5s")
    assert shorter == [(25.0, "1", "battery_low", "warning")]
    assert alerts_of(Flight(voltage=low_from(20), seconds=60), battery="false") == []


def test_battery_sag_rate():
    volts = lambda t: 12.0 if t <= 30 else max(9.0, 12.0 - (t - 30))  # 1 V/s from t=30 to 33
    alerts, signals = outputs(tables(Flight(voltage=volts, seconds=60)), batt_low_volt=0)
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(32.0, "battery_sag", "warning")]
    assert [(s["t"], s["name"]) for s in signals] == [(32.0, "battery_sag")]
    assert signals[0]["value"] == pytest.approx(0.4)  # 2 V over the 5 s window
    assert "0.4 V/s" in alerts[0]["text"]
    assert alerts_of(Flight(voltage=volts, seconds=60), batt_low_volt=0, batt_sag_rate=0.7) == []
    # the slow discharge of a clean flight never sags
    assert alerts_of(Flight(voltage=lambda t: 12.6 - 0.02 * t, seconds=60)) == []


# -- fence -----------------------------------------------------------------------------
def fly_north(speed: float) -> dict:
    return {"ne": lambda t: (speed * t, 0.0), "vel": lambda t: (speed, 0.0)}


def test_fence_predicted_then_breached_once():
    alerts, signals = outputs(tables(Flight(seconds=60, **fly_north(7.0))))
    # radius - margin = 298 m is 5 s away once 7 t >= 263 (t = 38); outside 300 m from t = 43
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [
        (38.0, "fence_predicted", "warning"), (43.0, "fence_breach", "critical")]
    assert "301 m from home (radius 300 m)" in alerts[1]["text"]
    breach = next(s for s in signals if s["name"] == "fence_breach")
    assert breach["value"] == pytest.approx(301.0, abs=0.01)
    predicted = next(s for s in signals if s["name"] == "fence_predicted")
    assert predicted["value"] == pytest.approx((298 - 266) / 7, abs=1e-3)
    assert alerts_of(Flight(seconds=60, **fly_north(7.0)), fence="false") == []
    assert alerts_of(Flight(seconds=60, **fly_north(7.0)), fence_radius=500) == []


def test_fence_altitude_breach_clears_and_comes_back():
    alt = lambda t: 105.0 if 20 <= t < 30 or 40 <= t < 50 else 20.0
    hover = {"ne": lambda t: (0.0, 0.0), "vel": lambda t: (0.0, 0.0)}
    alerts = outputs(tables(Flight(rel_alt=alt, seconds=60, **hover)))[0]
    assert [(a["t"], a["name"]) for a in alerts] == [(20.0, "fence_breach"), (40.0, "fence_breach")]
    assert "105 m above home (max 100 m)" in alerts[0]["text"]
    assert alerts_of(Flight(rel_alt=alt, seconds=60, **hover), fence_alt_max=110) == []


def test_fence_polygon():
    corners = [latlon(-100, -100), latlon(-100, 100), latlon(100, 100), latlon(100, -100)]
    polygon = ";".join(f"{lat:.8f},{lon:.8f}" for lat, lon in corners)
    flight = Flight(seconds=60, **fly_north(7.0))
    alerts = outputs(tables(flight), fence_polygon=polygon, fence_predict="0s")[0]
    # out of the 100 m square at t = 15 (105 m); the circle breach at t = 43 is the same episode
    assert [(a["t"], a["name"]) for a in alerts] == [(15.0, "fence_breach")]
    assert "outside the polygon fence" in alerts[0]["text"]
    assert alerts_of(Flight(seconds=60), fence_polygon=polygon) == []  # the circle stays inside
    with pytest.raises(UserError, match="fence_polygon"):
        Engine(UAV, overrides={"fence_polygon": "1,2;3"})


def test_fence_status_breach():
    alerts = outputs(tables(Flight(fence_status=lambda t: int(t >= 20), seconds=40)))[0]
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(20.0, "fence_breach", "critical")]
    assert "FENCE_STATUS" in alerts[0]["text"]


def test_fence_home_is_the_first_armed_position():
    # the vehicle is carried 1 km while disarmed (GPS off: that hop is a GPS glitch too)
    far = lambda t: (1000.0, 0.0) if t < 10 else circle(t)
    # armed at t = 10 and circling near there: no breach
    assert alerts_of(Flight(armed=lambda t: t >= 10, ne=far, seconds=60), gps="false") == []
    # armed from the start, home is 1 km away from where the vehicle then flies
    assert alerts_of(Flight(ne=far, seconds=60), gps="false", fence_predict="0s") == [
        (10.0, "1", "fence_breach", "critical")]
    # disarming resets home: re-armed elsewhere, no breach
    hop = lambda t: (0.0, 0.0) if t < 20 else (2000.0, 0.0)
    still = lambda t: (0.0, 0.0)
    assert alerts_of(Flight(armed=lambda t: not 15 <= t < 25, ne=hop, vel=still, seconds=40), gps="false") == []


# -- GPS -------------------------------------------------------------------------------
def test_gps_loss_once_per_episode():
    fix = lambda t: 1 if 20 <= t < 30 or 45 <= t < 55 else 3
    alerts = outputs(tables(Flight(fix=fix, seconds=60)))[0]
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [
        (20.0, "gps_loss", "critical"), (45.0, "gps_loss", "critical")]
    assert "fix type 1" in alerts[0]["text"]
    two_d = Flight(fix=lambda t: 2 if t >= 20 else 3, seconds=40)
    assert alerts_of(two_d) == [(20.0, "1", "gps_loss", "critical")]
    assert alerts_of(two_d, gps_min_fix=2) == []
    assert alerts_of(Flight(fix=fix, seconds=60), gps="false") == []


def test_gps_degraded_by_satellites_or_hdop():
    alerts = outputs(tables(Flight(sats=lambda t: 4 if t >= 20 else 12, seconds=40)))[0]
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(20.0, "gps_degraded", "warning")]
    assert "4 satellites (min 6)" in alerts[0]["text"]
    alerts = outputs(tables(Flight(hdop=lambda t: 2.5 if t >= 30 else 0.8, seconds=40)))[0]
    assert [(a["t"], a["name"]) for a in alerts] == [(30.0, "gps_degraded")]
    assert "HDOP 2.5 (max 2)" in alerts[0]["text"]
    assert alerts_of(Flight(sats=lambda t: 4 if t >= 20 else 12, seconds=40), gps_min_sats=4) == []


def test_gps_glitch():
    jump = lambda t: (circle(t)[0] + 1000.0, circle(t)[1]) if t == 30 else circle(t)
    alerts, signals = outputs(tables(Flight(gps_ne=jump, seconds=60)))
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(30.0, "gps_glitch", "critical")]
    assert 950 < signals[0]["value"] < 1050  # m/s over 1 s
    assert alerts_of(Flight(gps_ne=jump, seconds=60), gps_max_speed=2000) == []


# -- vibration -------------------------------------------------------------------------
def test_vibration_high_warning_then_critical():
    vibe = lambda t: (8.0, 9.0, 12.0 if t < 20 else 45.0 if t < 30 else 70.0)
    alerts = outputs(tables(Flight(vibe=vibe, seconds=60)))[0]
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [
        (20.0, "vibration_high", "warning"), (30.0, "vibration_high", "critical")]
    assert "45 m/s^2 on z" in alerts[0]["text"]
    steady = lambda t: (8.0, 45.0 if t >= 20 else 9.0, 12.0)
    assert alerts_of(Flight(vibe=steady, seconds=60)) == [(20.0, "1", "vibration_high", "warning")]
    assert alerts_of(Flight(vibe=vibe, seconds=60), vibration="false") == []


def test_vibration_clipping_rising():
    alerts, signals = outputs(tables(Flight(clip_inc=lambda t: 5 if t >= 20 else 0, seconds=40)))
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(22.0, "vibration_clipping", "warning")]
    assert signals[0]["value"] == 15.0
    isolated = lambda t: 5 if t in (20, 25, 30) else 0
    assert alerts_of(Flight(clip_inc=isolated, seconds=40)) == []
    # clip_rise=1: every clipping sample counts; each is a new episode after clear_time (3 s)
    assert [a[0] for a in alerts_of(Flight(clip_inc=isolated, seconds=40), clip_rise=1)] == [20.0, 25.0, 30.0]


# -- EKF -------------------------------------------------------------------------------
def test_ekf_variance_two_over_threshold_for_one_second():
    bad = lambda t: (0.9, 0.1, 0.1, 0.85) if t >= 20 else (0.1, 0.1, 0.1, 0.1)
    alerts, signals = outputs(tables(Flight(ekf=bad, seconds=40)))
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [(21.0, "ekf_variance", "critical")]
    assert "velocity 0.9, compass 0.85" in alerts[0]["text"]
    assert signals[0]["value"] == 0.9
    assert alerts_of(Flight(ekf=bad, seconds=40), ekf_timer="0s")[0][0] == 20.0
    assert alerts_of(Flight(ekf=bad, seconds=40), ekf_thresh=0.95) == []
    assert alerts_of(Flight(ekf=bad, seconds=40), ekf="false") == []
    one = lambda t: (0.9, 0.1, 0.1, 0.1) if t >= 20 else (0.1, 0.1, 0.1, 0.1)
    assert alerts_of(Flight(ekf=one, seconds=40)) == []
    blip = lambda t: (0.9, 0.1, 0.1, 0.85) if t == 20 else (0.1, 0.1, 0.1, 0.1)
    assert alerts_of(Flight(ekf=blip, seconds=40)) == []


# -- link ------------------------------------------------------------------------------
def test_link_loss_from_the_timer_and_restored():
    beats = lambda t: t <= 30 or 50 <= t <= 60
    alerts, signals = outputs(tables(Flight(heartbeat=beats, seconds=80)))
    assert [(a["t"], a["name"], a["severity"]) for a in alerts] == [
        (35.0, "link_loss", "critical"), (50.0, "link_restored", "info"), (65.0, "link_loss", "critical")]
    assert alerts[0]["text"] == "vehicle 1: no heartbeat for 5 s (link_timeout 5s)"
    assert [(s["t"], s["name"], s["value"]) for s in signals] == [
        (35.0, "link_loss", 5.0), (50.0, "link_restored", 20.0), (65.0, "link_loss", 5.0)]
    assert alerts_of(Flight(heartbeat=beats, seconds=80), link="false") == []
    assert only(alerts_of(Flight(heartbeat=beats, seconds=80), link_timeout="30s"), "link") == []


def test_link_timer_edges():
    # a heartbeat exactly link_timeout after the last one is in time
    assert alerts_of(Flight(heartbeat=lambda t: t % 5 == 0, seconds=40)) == []
    late = alerts_of(Flight(heartbeat=lambda t: t % 6 == 0, seconds=20))
    assert late[:2] == [(5.0, "1", "link_loss", "critical"), (6.0, "1", "link_restored", "info")]
    # no event after the deadline: the timer never fires (nothing tells time has passed)
    assert alerts_of(Flight(heartbeat=lambda t: t <= 30, seconds=35)) == []
    assert alerts_of(Flight(heartbeat=lambda t: t <= 30, seconds=37)) == [(35.0, "1", "link_loss", "critical")]


# -- several vehicles ------------------------------------------------------------------
def test_vehicles_keep_separate_state():
    one = Flight(key="1", seconds=60, voltage=low_from(20))
    two = Flight(key="2", seconds=60, offset=0.25, origin=(5000.0, 0.0), heartbeat=lambda t: t <= 30.25)
    got = alerts_of(tables(one, two))
    assert got == [(30.0, "1", "battery_low", "warning"), (35.25, "2", "link_loss", "critical")]
    # the same samples at the same instants (ties in event time) keep them apart too
    assert alerts_of(tables(one, replace(two, offset=0.0, heartbeat=lambda t: t <= 30))) == [
        (30.0, "1", "battery_low", "warning"), (35.0, "2", "link_loss", "critical")]


# -- invariants ------------------------------------------------------------------------
def random_flight(seed: int, key: str, offset: float) -> Flight:
    """A flight with random anomaly windows in every detector and randomly dropped rows."""
    rng = np.random.default_rng(seed)

    def windows() -> Callable[[float], bool]:
        starts = np.sort(rng.uniform(0, 100, 3))
        lengths = rng.uniform(0.5, 15, 3)
        return lambda t: bool(((t >= starts) & (t < starts + lengths)).any())

    low, gps, sats, vib, clip, ekf, fence, beat, alt, jump = (windows() for _ in range(10))
    step = float(rng.choice([0.25, 0.5, 1.0]))
    return Flight(
        key=key, seconds=100, step=step, offset=offset, origin=(float(rng.uniform(-500, 500)), 0.0),
        drop=0.2, seed=seed,
        voltage=lambda t: 10.0 if low(t) else 12.4, fix=lambda t: 1 if gps(t) else 3,
        sats=lambda t: 5 if sats(t) else 12, vibe=lambda t: (8.0, 9.0, 65.0 if vib(t) else 12.0),
        clip_inc=lambda t: 3 if clip(t) else 0, ekf=lambda t: (0.9, 0.9, 0.1, 0.1) if ekf(t) else (0.1,) * 4,
        fence_status=lambda t: int(fence(t)), heartbeat=lambda t: not beat(t),
        rel_alt=lambda t: 120.0 if alt(t) else 20.0,
        gps_ne=lambda t: (circle(t)[0] + 900 * jump(t), circle(t)[1]),
    )


def random_data(seed: int) -> dict[str, pa.Table]:
    return tables(random_flight(seed, "1", 0.0), random_flight(seed + 1, "2", float(seed % 3) * 0.25))


def drained(engine: Engine) -> tuple[pa.Table, pa.Table]:
    return engine.ctx.outputs.alerts.drain(), engine.ctx.outputs.signals.drain()


def test_random_flights_exercise_the_detectors():
    names = {a[2] for seed in range(3) for a in alerts_of(random_data(seed))}
    assert {"battery_low", "gps_loss", "gps_degraded", "gps_glitch", "vibration_high", "vibration_clipping",
            "ekf_variance", "fence_breach", "link_loss", "link_restored"} <= names


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000))
def test_outputs_do_not_depend_on_batch_boundaries(seed):
    data = random_data(seed)
    reference = drained(run_engine(data))
    for size in (1, 7):
        got = drained(run_engine(data, batch=size))
        assert got[0].equals(reference[0]) and got[1].equals(reference[1]), size


def test_snapshot_and_restore_resume_exactly():
    data = random_data(11)
    reference = drained(run_engine(data))
    assert reference[0].num_rows > 5
    stream = list(merge_kinds({k: t.to_batches(max_chunksize=50) for k, t in data.items()}))
    first = Engine(UAV)
    for kind, batch in stream[: len(stream) // 2]:
        first.process(kind, batch)
    second = Engine(UAV)
    second.restore(first.snapshot())
    for kind, batch in stream[len(stream) // 2 :]:
        second.process(kind, batch)
    second.finish()
    a1, s1 = drained(first)
    a2, s2 = drained(second)
    assert pa.concat_tables([a1, a2]).equals(reference[0])
    assert pa.concat_tables([s1, s2]).equals(reference[1])


def test_bad_parameters_are_user_errors():
    for overrides, needle in [({"batt_low_volts": "10"}, "unknown parameter"),
                              ({"batt_crt_volt": "11"}, "batt_crt_volt"),
                              ({"fence_margin": "400"}, "fence_margin"),
                              ({"vibe_crit": "20"}, "vibe_warn"),
                              ({"ekf_timer": "soon"}, "ekf_timer")]:
        with pytest.raises(UserError, match=needle):
            Engine(UAV, overrides=overrides)


# -- command line ----------------------------------------------------------------------
def qsf(*args: str) -> subprocess.CompletedProcess:
    return run_qsf(*args, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def uav_recording(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uav") / "rec"
    data = tables(Flight(key="1", seconds=60, voltage=low_from(20)),
                  Flight(key="2", seconds=60, offset=0.5, heartbeat=lambda t: t <= 40.5))
    with RecordingWriter(root) as writer:
        for kind, table in data.items():
            writer.write(kind, table)
    return root


def test_cli_backtest_by_path(uav_recording, tmp_path):
    out = tmp_path / "out"
    spec = "strategies/uav_anomaly.py:UavAnomaly"  # relative to the checkout, as a user types it
    r = qsf("backtest", spec, "--recording", str(uav_recording), "--out", str(out))
    assert r.returncode == 0, r.stderr
    alerts = pq.read_table(out / "alerts.parquet").to_pylist()
    assert [((a["ts_event"] - T0) / SEC, a["key"], a["name"], a["severity"]) for a in alerts] == [
        (30.0, "1", "battery_low", "warning"), (45.5, "2", "link_loss", "critical")]
    assert pq.read_table(out / "signals.parquet").num_rows == 2
    out2 = tmp_path / "out2"
    r = qsf("backtest", "strategies/uav_anomaly.py:UavAnomaly", "--recording", str(uav_recording),
            "--out", str(out2), "-p", "battery=false", "--batch-size", "7")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out2 / "alerts.parquet").column("name").to_pylist() == ["link_loss"]
    r = qsf("backtest", "strategies/uav_anomaly.py:UavAnomaly", "--recording", str(uav_recording),
            "--out", str(tmp_path / "o3"), "-p", "fence_polygon=1,2")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "fence_polygon" in r.stderr
