"""The detectors of :class:`~qsframework.strategies.uav_anomaly.UavAnomaly` and the per-vehicle
state they keep. Each detector is a function of the parameters, the event time (ns), the
vehicle's state and the values measured: it updates that state and returns the :class:`Onset`
to emit (an anomaly starting or escalating) or None; the strategy wires events to them and
emits. The strategy's docstring is the specification of each one."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from math import hypot, isnan, sqrt
from typing import Any, Literal

from qsframework.geo import inside_polygon, offset_ne
from qsframework.strategies.uav_params import UavAnomalyParams

NS = 1_000_000_000
FIX_NAMES = {0: "no GPS", 1: "no fix", 2: "2D", 3: "3D", 4: "DGPS", 5: "RTK float", 6: "RTK fixed"}
BREACH_NAMES = {0: "none", 1: "min alt", 2: "max alt", 3: "boundary"}

Severity = Literal["warning", "critical", "info"]


@dataclass(frozen=True, slots=True)
class Onset:
    """One anomaly to emit: a signal with ``value`` and ``attrs``, and an alert with ``text``;
    ``tag`` tells apart the dedup keys of anomalies of one vehicle (e.g. its battery)."""

    name: str
    severity: Severity
    text: str
    value: float | None
    attrs: dict[str, Any] = field(default_factory=dict)
    tag: str = ""


# -- per-vehicle state ---------------------------------------------------------------
@dataclass(slots=True)
class Hold:
    """Since when a condition has been continuously true (None while it is false)."""

    since: int | None = None

    def held(self, now: int, cond: bool) -> int:
        """Nanoseconds the condition has held at ``now``; -1 when it is false."""
        if not cond:
            self.since = None
            return -1
        if self.since is None:
            self.since = now
        return now - self.since


@dataclass(slots=True)
class Episode:
    """One anomaly of one vehicle: the level alerted (0 none, 1 warning, 2 critical) and
    since when its condition has been false. It ends after ``clear`` of false condition."""

    level: int = 0
    ok_since: int | None = None

    def rises(self, now: int, level: int, bad: bool, clear: int) -> bool:
        """True when ``level`` exceeds the level already alerted: an onset or an escalation."""
        if bad:
            self.ok_since = None
            if level > self.level:
                self.level = level
                return True
            return False
        if self.level:
            if self.ok_since is None:
                self.ok_since = now
            if now - self.ok_since >= clear:
                self.level, self.ok_since = 0, None
        return False


@dataclass(slots=True)
class Battery:
    low: Hold = field(default_factory=Hold)
    crt: Hold = field(default_factory=Hold)
    alert: Episode = field(default_factory=Episode)
    sag: Episode = field(default_factory=Episode)
    history: deque[tuple[int, float]] = field(default_factory=deque)  # (ts, volts), sag window


@dataclass(slots=True)
class Vehicle:
    key: str
    armed: bool = False
    home: tuple[float, float, float | None] | None = None  # lat, lon, alt AMSL
    geo: list[tuple[str, str]] = field(default_factory=list)  # (cause, text) of a breach now
    status_breach: int | None = None  # FENCE_STATUS breach_type while breached
    distance: float | None = None  # from home, m
    fence: Episode = field(default_factory=Episode)
    predicted: Episode = field(default_factory=Episode)
    batteries: dict[int, Battery] = field(default_factory=dict)
    gps_loss: Episode = field(default_factory=Episode)
    gps_degraded: Episode = field(default_factory=Episode)
    gps_glitch: Episode = field(default_factory=Episode)
    last_fix: tuple[int, float, float] | None = None  # ts, lat, lon
    vibe: Episode = field(default_factory=Episode)
    clip_run: int = 0  # consecutive samples with clipping increments
    clip_sum: int = 0  # their increments
    clipping: Episode = field(default_factory=Episode)
    ekf_hold: Hold = field(default_factory=Hold)
    ekf: Episode = field(default_factory=Episode)
    last_heartbeat: int | None = None
    lost_at: int | None = None

    def battery(self, bid: int) -> Battery:
        bat = self.batteries.get(bid)
        if bat is None:
            bat = self.batteries[bid] = Battery()
        return bat

    def arm(self, armed: bool) -> None:
        """A heartbeat's armed state; home is set again at the next arming."""
        if armed != self.armed:
            self.armed = armed
            if not armed:
                self.home, self.geo, self.distance = None, [], None


def _num(x: float, digits: int = 2) -> str:
    """``10.20`` -> ``"10.2"``, ``11.0`` -> ``"11"``: short numbers for alert texts."""
    text = f"{x:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _secs(ns: int) -> str:
    return _num(ns / NS, 3)


def known(*values: float | None) -> bool:
    """No value is null or NaN (unknown coordinates must not become a home or a fix)."""
    return all(x is not None and not isnan(x) for x in values)


def time_to_circle(n: float, e: float, vn: float, ve: float, radius: float) -> float | None:
    """Seconds until position (n, e) moving at (vn, ve) reaches ``radius`` from the origin:
    0 if at or beyond it and moving outward, None if it never does."""
    a = vn * vn + ve * ve
    if a == 0.0:
        return None
    b = 2.0 * (n * vn + e * ve)
    c = n * n + e * e - radius * radius
    if c >= 0.0:
        return 0.0 if b > 0.0 else None
    return (-b + sqrt(b * b - 4.0 * a * c)) / (2.0 * a)


# -- battery -------------------------------------------------------------------------
def _battery_name(bid: int) -> str:
    return "battery" if bid == 0 else f"battery {bid}"


def battery_low(p: UavAnomalyParams, now: int, bid: int, bat: Battery, volt: float | None,
                pct: float | None) -> Onset | None:
    low_v = volt is not None and 0 < p.batt_low_volt and volt < p.batt_low_volt
    crt_v = volt is not None and 0 < p.batt_crt_volt and volt < p.batt_crt_volt
    low_p = pct is not None and 0 < p.batt_low_pct and pct < p.batt_low_pct
    crt_p = pct is not None and 0 < p.batt_crt_pct and pct < p.batt_crt_pct
    held_low = bat.low.held(now, low_v)
    held_crt = bat.crt.held(now, crt_v)
    volt_level = 2 if held_crt >= p.batt_low_timer else 1 if held_low >= p.batt_low_timer else 0
    pct_level = 2 if crt_p else 1 if low_p else 0
    level = max(volt_level, pct_level)
    if not bat.alert.rises(now, level, low_v or crt_v or low_p or crt_p, p.clear_time):
        return None
    name = _battery_name(bid)
    severity: Severity = "critical" if level == 2 else "warning"
    if volt_level >= pct_level:
        assert volt is not None
        limit = p.batt_crt_volt if level == 2 else p.batt_low_volt
        held = held_crt if level == 2 else held_low
        text = f"{name} {_num(volt)} V below {_num(limit)} V for {_secs(held)} s"
        value, attrs = volt, {"unit": "V", "threshold": limit, "held_s": held / NS}
    else:
        assert pct is not None
        limit = p.batt_crt_pct if level == 2 else p.batt_low_pct
        text = f"{name} {_num(pct, 1)}% remaining, below {_num(limit, 1)}%"
        value, attrs = pct, {"unit": "%", "threshold": limit}
    return Onset("battery_low", severity, text, value, {"battery_id": bid, **attrs}, tag=f":{bid}")


def battery_sag(p: UavAnomalyParams, now: int, bid: int, bat: Battery, volt: float) -> Onset | None:
    """Rate of fall from the last sample at least ``batt_sag_window`` old to now."""
    hist, cut = bat.history, now - p.batt_sag_window
    while len(hist) >= 2 and hist[1][0] <= cut:
        hist.popleft()
    rate = None
    if hist and hist[0][0] <= cut:
        t0, v0 = hist[0]
        rate = (v0 - volt) / ((now - t0) / NS)
    hist.append((now, volt))
    bad = rate is not None and rate > p.batt_sag_rate
    if not bat.sag.rises(now, int(bad), bad, p.clear_time):
        return None
    assert rate is not None
    name = _battery_name(bid)
    span = now - hist[0][0]
    text = (f"{name} voltage falling {_num(rate)} V/s over {_secs(span)} s "
            f"(limit {_num(p.batt_sag_rate)} V/s), now {_num(volt)} V")
    return Onset("battery_sag", "warning", text, rate, {"unit": "V/s", "battery_id": bid, "voltage": volt},
                 tag=f":{bid}")


# -- link ----------------------------------------------------------------------------
def heartbeat(now: int, v: Vehicle) -> Onset | None:
    """A heartbeat: the link is restored if it was lost."""
    onset = None
    if v.lost_at is not None and v.last_heartbeat is not None:
        outage = now - v.last_heartbeat
        onset = Onset("link_restored", "info", f"heartbeat back after {_secs(outage)} s of silence",
                      outage / NS, {"unit": "s"})
        v.lost_at = None
    v.last_heartbeat = now
    return onset


def link_loss(p: UavAnomalyParams, ts: int, v: Vehicle) -> Onset | None:
    """The link timer fired at ``ts`` (last heartbeat + link_timeout)."""
    if v.last_heartbeat is None or v.lost_at is not None:
        return None
    v.lost_at = ts
    silent = ts - v.last_heartbeat
    return Onset("link_loss", "critical", f"no heartbeat for {_secs(silent)} s (link_timeout {p.link_timeout})",
                 silent / NS, {"unit": "s"})


# -- fence ---------------------------------------------------------------------------
def locate(p: UavAnomalyParams, v: Vehicle, pos: Any, polygon: tuple[tuple[float, float], ...]) -> float | None:
    """Where a position puts the vehicle against the fence (``v.geo``, ``v.distance``; home is
    the first position while armed); returns the seconds until it reaches radius - margin."""
    v.geo, v.distance = [], None
    if not (v.armed and known(pos.lat, pos.lon)):
        return None
    if v.home is None:
        v.home = (pos.lat, pos.lon, pos.alt)
    lat0, lon0, alt0 = v.home
    n, e = offset_ne(lat0, lon0, pos.lat, pos.lon)
    v.distance = dist = hypot(n, e)
    alt = pos.relative_alt
    if alt is None and pos.alt is not None and alt0 is not None:
        alt = pos.alt - alt0
    if p.fence_radius > 0 and dist > p.fence_radius:
        v.geo.append(("radius", f"{_num(dist, 1)} m from home (radius {_num(p.fence_radius)} m)"))
    if p.fence_alt_max > 0 and alt is not None and alt > p.fence_alt_max:
        v.geo.append(("altitude", f"{_num(alt, 1)} m above home (max {_num(p.fence_alt_max)} m)"))
    if polygon and not inside_polygon(pos.lat, pos.lon, polygon):
        v.geo.append(("polygon", "outside the polygon fence"))
    moving = pos.vx is not None and pos.vy is not None
    if p.fence_radius > 0 and p.fence_predict > 0 and dist <= p.fence_radius and moving:
        return time_to_circle(n, e, pos.vx, pos.vy, p.fence_radius - p.fence_margin)
    return None


def fence_breach(p: UavAnomalyParams, now: int, v: Vehicle) -> Onset | None:
    bad = bool(v.geo) or v.status_breach is not None
    if not v.fence.rises(now, int(bad), bad, p.clear_time):
        return None
    causes = [c for c, _ in v.geo]
    texts = [t for _, t in v.geo]
    if v.status_breach is not None:
        causes.append("status")
        kind = BREACH_NAMES.get(v.status_breach, "unknown")
        texts.append(f"FENCE_STATUS reports a breach (type {v.status_breach}, {kind})")
    return Onset("fence_breach", "critical", "fence breach: " + "; ".join(texts), v.distance,
                 {"unit": "m", "causes": causes})


def fence_predicted(p: UavAnomalyParams, now: int, v: Vehicle, predicted: float | None,
                    vx: float | None, vy: float | None) -> Onset | None:
    soon = predicted is not None and predicted * NS <= p.fence_predict
    if not v.predicted.rises(now, int(soon), soon, p.clear_time):
        return None
    assert predicted is not None and v.distance is not None and vx is not None and vy is not None
    speed = hypot(vx, vy)
    text = (f"fence breach predicted in {_num(predicted, 1)} s: {_num(v.distance, 1)} m from "
            f"home at {_num(speed, 1)} m/s (radius {_num(p.fence_radius)} m, "
            f"margin {_num(p.fence_margin)} m)")
    return Onset("fence_predicted", "warning", text, predicted,
                 {"unit": "s", "distance_m": v.distance, "speed_ms": speed})


# -- GPS -----------------------------------------------------------------------------
def gps_loss(p: UavAnomalyParams, now: int, v: Vehicle, fix: int) -> Onset | None:
    lost = fix < p.gps_min_fix
    if not v.gps_loss.rises(now, int(lost), lost, p.clear_time):
        return None
    need = FIX_NAMES.get(p.gps_min_fix, str(p.gps_min_fix))
    text = f"GPS fix lost: fix type {fix} ({FIX_NAMES.get(fix, '?')}), need {p.gps_min_fix} ({need})"
    return Onset("gps_loss", "critical", text, float(fix), {"fix_type": fix})


def gps_degraded(p: UavAnomalyParams, now: int, v: Vehicle, fix: int, satellites: int | None,
                 hdop: float | None) -> Onset | None:
    """Too few satellites or too high an HDOP, while the fix itself is good enough."""
    lost = fix < p.gps_min_fix
    few = not lost and satellites is not None and satellites < p.gps_min_sats
    blurred = not lost and hdop is not None and p.gps_max_hdop > 0 and hdop > p.gps_max_hdop
    degraded = few or blurred
    if not v.gps_degraded.rises(now, int(degraded), degraded, p.clear_time):
        return None
    parts = []
    if few:
        parts.append(f"{satellites} satellites (min {p.gps_min_sats})")
    if blurred:
        assert hdop is not None
        parts.append(f"HDOP {_num(hdop)} (max {_num(p.gps_max_hdop)})")
    value = float(satellites) if few and satellites is not None else hdop
    return Onset("gps_degraded", "warning", "GPS degraded: " + ", ".join(parts), value,
                 {"satellites": satellites, "hdop": hdop, "causes": ["satellites"] * few + ["hdop"] * blurred})


def gps_glitch(p: UavAnomalyParams, now: int, v: Vehicle, lat: float, lon: float) -> Onset | None:
    """Implied speed from the previous fix to this one (fixes at the same time are skipped)."""
    last = v.last_fix
    if last is not None and now <= last[0]:
        return None
    v.last_fix = (now, lat, lon)
    if last is None or p.gps_max_speed <= 0:
        return None
    dist = hypot(*offset_ne(last[1], last[2], lat, lon))
    dt = (now - last[0]) / NS
    speed = dist / dt
    bad = speed > p.gps_max_speed
    if not v.gps_glitch.rises(now, int(bad), bad, p.clear_time):
        return None
    text = (f"GPS glitch: position jumped {_num(dist, 1)} m in {_num(dt, 3)} s "
            f"({_num(speed, 1)} m/s, max {_num(p.gps_max_speed)} m/s)")
    return Onset("gps_glitch", "critical", text, speed, {"unit": "m/s", "distance_m": dist, "dt_s": dt})


# -- vibration -----------------------------------------------------------------------
def vibration_high(p: UavAnomalyParams, now: int, v: Vehicle, x: float | None, y: float | None,
                   z: float | None) -> Onset | None:
    axes = [(value, axis) for value, axis in ((x, "x"), (y, "y"), (z, "z")) if value is not None]
    if not axes:
        return None
    peak, axis = max(axes)
    level = 2 if peak > p.vibe_crit else 1 if peak > p.vibe_warn else 0
    if not v.vibe.rises(now, level, level > 0, p.clear_time):
        return None
    limit = p.vibe_crit if level == 2 else p.vibe_warn
    return Onset("vibration_high", "critical" if level == 2 else "warning",
                 f"vibration {_num(peak, 1)} m/s^2 on {axis} (above {_num(limit, 1)} m/s^2)",
                 peak, {"unit": "m/s^2", "axis": axis, "threshold": limit})


def vibration_clipping(p: UavAnomalyParams, now: int, v: Vehicle, *clip_incs: int | None) -> Onset | None:
    inc = sum(i for i in clip_incs if i is not None and i > 0)
    if inc > 0:
        v.clip_run, v.clip_sum = v.clip_run + 1, v.clip_sum + inc
    else:
        v.clip_run, v.clip_sum = 0, 0
    rising = v.clip_run >= p.clip_rise
    if not v.clipping.rises(now, int(rising), rising, p.clear_time):
        return None
    text = f"accelerometer clipping rising in {v.clip_run} consecutive samples (+{v.clip_sum} clips)"
    return Onset("vibration_clipping", "warning", text, float(v.clip_sum), {"samples": v.clip_run})


# -- EKF -----------------------------------------------------------------------------
def ekf_variance(p: UavAnomalyParams, now: int, v: Vehicle, variances: tuple[tuple[str, float | None], ...]
                 ) -> Onset | None:
    """Two or more of the named variances at or above ekf_thresh for ekf_timer."""
    over = [(n, x) for n, x in variances if x is not None and x >= p.ekf_thresh]
    held = v.ekf_hold.held(now, len(over) >= 2)
    level = int(held >= p.ekf_timer)
    if not v.ekf.rises(now, level, held >= 0, p.clear_time):
        return None
    listed = ", ".join(f"{n} {_num(x)}" for n, x in over)
    return Onset("ekf_variance", "critical",
                 f"EKF variances at or above {_num(p.ekf_thresh)} for {_secs(held)} s: {listed}",
                 max(x for _, x in over), dict(over))
