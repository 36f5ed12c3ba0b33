"""UAV telemetry anomaly detection: battery, fence, GPS, vibration, EKF and link detectors.

Per vehicle (event ``key`` = MAVLink system id), each detector switchable (``battery``,
``fence``, ``gps``, ``vibration``, ``ekf``, ``link``); thresholds are named after the
ArduPilot parameters they mirror, with ArduPilot's defaults where one exists:

- battery_low: voltage < batt_low_volt (10.5 V) continuously for batt_low_timer (10 s)
  (BATT_LOW_VOLT, BATT_LOW_TIMER); critical under batt_crt_volt (BATT_CRT_VOLT, 0 = off);
  also at once when remaining < batt_low_pct / batt_crt_pct % (BATT_LOW_MAH/BATT_CRT_MAH as %).
- battery_sag: voltage falling faster than batt_sag_rate (0.3 V/s) over batt_sag_window (5 s)
  (no ArduPilot parameter).
- fence_breach: farther than fence_radius (300 m) from home, higher than fence_alt_max (100 m)
  above home, outside the fence_polygon, or FENCE_STATUS breach_status=1 (FENCE_RADIUS,
  FENCE_ALT_MAX, polygon fence); home is the first position while armed.
- fence_predicted: at the current horizontal velocity the vehicle reaches
  fence_radius - fence_margin (FENCE_MARGIN, 2 m) within fence_predict (5 s).
- gps_loss: fix_type < gps_min_fix (3 = 3D) (the EKF's GPS requirement).
- gps_degraded: satellites < gps_min_sats (6, AHRS_GPS_MINSATS) or hdop > gps_max_hdop (2.0;
  cf. GPS_HDOP_GOOD 1.4 for arming).
- gps_glitch: implied speed between consecutive fixes > gps_max_speed (50 m/s) (cf. the EKF
  glitch checks, EK3_GLITCH_RAD).
- vibration_high: any axis > vibe_warn (30 m/s^2, warning) or > vibe_crit (60 m/s^2,
  critical) (ArduPilot's vibration guidance; VIBE_* log fields).
- vibration_clipping: accelerometer clip counts rising in clip_rise (3) consecutive samples.
- ekf_variance: two or more of velocity/pos_horiz/pos_vert/compass variances >= ekf_thresh
  (0.8, FS_EKF_THRESH; 0 = off) continuously for ekf_timer (1 s, the EKF check's 10 x 100 ms).
- link_loss: no heartbeat for link_timeout (5 s, FS_GCS_TIMEOUT) of event time; a heartbeat
  after a loss gives link_restored (signal and an "info" alert). An event-time timer: the
  loss is stamped at last heartbeat + link_timeout and noticed when any later event arrives
  (attitude and statustext are subscribed for that alone); none fires after the last event.

Each anomaly emits a signal (the measured value) and an alert of the same name once, at
onset; it may fire again only after its condition has been false for clear_time (3 s).
battery_low and vibration_high also fire again when they escalate from warning to critical.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from math import hypot, isnan, sqrt
from typing import Any, ClassVar, Literal

from qsframework import Context, Duration, Strategy
from qsframework.geo import inside_polygon, offset_ne

NS = 1_000_000_000
FIX_NAMES = {0: "no GPS", 1: "no fix", 2: "2D", 3: "3D", 4: "DGPS", 5: "RTK float", 6: "RTK fixed"}
BREACH_NAMES = {0: "none", 1: "min alt", 2: "max alt", 3: "boundary"}

Severity = Literal["warning", "critical", "info"]


# -- parameters ----------------------------------------------------------------------
def parse_polygon(text: str) -> tuple[tuple[float, float], ...]:
    """``"lat,lon;lat,lon;..."`` (degrees) as points; empty text means no polygon."""
    points: list[tuple[float, float]] = []
    for part in text.split(";"):
        if not part.strip():
            continue
        lat_s, sep, lon_s = part.partition(",")
        try:
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            raise ValueError(f"fence_polygon point {part.strip()!r} is not lat,lon") from None
        if not sep or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"fence_polygon point {part.strip()!r} is not lat,lon in degrees")
        points.append((lat, lon))
    if points and len(points) < 3:
        raise ValueError("fence_polygon needs at least 3 points (lat,lon;lat,lon;lat,lon)")
    return tuple(points)


@dataclass(frozen=True, kw_only=True)
class UavAnomalyParams:
    # switches: each detector on/off
    battery: bool = True
    fence: bool = True
    gps: bool = True
    vibration: bool = True
    ekf: bool = True
    link: bool = True
    # battery (volts, percent; 0 turns a threshold off)
    batt_low_volt: float = 10.5
    batt_low_timer: Duration = Duration("10s")  # 0 = at once (in ArduPilot 0 disables)
    batt_crt_volt: float = 0.0
    batt_low_pct: float = 0.0
    batt_crt_pct: float = 0.0
    batt_sag_rate: float = 0.3
    batt_sag_window: Duration = Duration("5s")
    # fence (metres; radius/alt_max/fence_predict 0 = off)
    fence_radius: float = 300.0
    fence_alt_max: float = 100.0
    fence_margin: float = 2.0
    fence_polygon: str = ""
    fence_predict: Duration = Duration("5s")
    # GPS
    gps_min_fix: int = 3
    gps_min_sats: int = 6
    gps_max_hdop: float = 2.0
    gps_max_speed: float = 50.0
    # vibration (m/s^2)
    vibe_warn: float = 30.0
    vibe_crit: float = 60.0
    clip_rise: int = 3
    # EKF (normalized variances)
    ekf_thresh: float = 0.8
    ekf_timer: Duration = Duration("1s")
    # link
    link_timeout: Duration = Duration("5s")
    # all detectors: the condition must be gone this long before it can alert again
    clear_time: Duration = Duration("3s")

    def check(self) -> None:
        for name in ("batt_low_volt", "batt_crt_volt", "batt_low_pct", "batt_crt_pct", "batt_sag_rate",
                     "batt_low_timer", "fence_radius", "fence_alt_max", "fence_margin", "fence_predict",
                     "gps_min_sats", "gps_max_hdop", "gps_max_speed", "ekf_thresh", "ekf_timer", "clear_time"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if 0 < self.batt_low_volt <= self.batt_crt_volt:
            raise ValueError("batt_crt_volt must be below batt_low_volt")
        if self.batt_low_pct > 100 or self.batt_crt_pct > 100:
            raise ValueError("batt_low_pct and batt_crt_pct are percentages (0-100)")
        if 0 < self.batt_low_pct <= self.batt_crt_pct:
            raise ValueError("batt_crt_pct must be below batt_low_pct")
        if self.batt_sag_window <= 0 or self.link_timeout <= 0:
            raise ValueError("batt_sag_window and link_timeout must be positive")
        if self.fence_radius > 0 and self.fence_margin >= self.fence_radius:
            raise ValueError("fence_margin must be smaller than fence_radius")
        parse_polygon(self.fence_polygon)
        if not 0 <= self.gps_min_fix <= 8:
            raise ValueError("gps_min_fix is a GPS fix type (0-8; 3 = 3D)")
        if not 0 < self.vibe_warn <= self.vibe_crit:
            raise ValueError("vibe_warn must be positive and at most vibe_crit")
        if self.clip_rise < 1:
            raise ValueError("clip_rise must be at least 1")


# -- geometry (distances and polygons: qsframework.geo) -------------------------------
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


# -- per-vehicle state ---------------------------------------------------------------
@dataclass(slots=True)
class _Hold:
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
class _Episode:
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
class _Battery:
    low: _Hold = field(default_factory=_Hold)
    crt: _Hold = field(default_factory=_Hold)
    alert: _Episode = field(default_factory=_Episode)
    sag: _Episode = field(default_factory=_Episode)
    history: deque[tuple[int, float]] = field(default_factory=deque)  # (ts, volts), sag window


@dataclass(slots=True)
class _Vehicle:
    key: str
    armed: bool = False
    home: tuple[float, float, float | None] | None = None  # lat, lon, alt AMSL
    geo: list[tuple[str, str]] = field(default_factory=list)  # (cause, text) of a breach now
    status_breach: int | None = None  # FENCE_STATUS breach_type while breached
    distance: float | None = None  # from home, m
    fence: _Episode = field(default_factory=_Episode)
    predicted: _Episode = field(default_factory=_Episode)
    batteries: dict[int, _Battery] = field(default_factory=dict)
    gps_loss: _Episode = field(default_factory=_Episode)
    gps_degraded: _Episode = field(default_factory=_Episode)
    gps_glitch: _Episode = field(default_factory=_Episode)
    last_fix: tuple[int, float, float] | None = None  # ts, lat, lon
    vibe: _Episode = field(default_factory=_Episode)
    clip_run: int = 0  # consecutive samples with clipping increments
    clip_sum: int = 0  # their increments
    clipping: _Episode = field(default_factory=_Episode)
    ekf_hold: _Hold = field(default_factory=_Hold)
    ekf: _Episode = field(default_factory=_Episode)
    last_heartbeat: int | None = None
    lost_at: int | None = None


def _num(x: float, digits: int = 2) -> str:
    """``10.20`` -> ``"10.2"``, ``11.0`` -> ``"11"``: short numbers for alert texts."""
    text = f"{x:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _secs(ns: int) -> str:
    return _num(ns / NS, 3)


def _known(*values: float | None) -> bool:
    """No value is null or NaN (unknown coordinates must not become a home or a fix)."""
    return all(x is not None and not isnan(x) for x in values)


# -- the strategy --------------------------------------------------------------------
class UavAnomaly(Strategy):
    """Telemetry anomaly detectors per vehicle: battery, fence, GPS, vibration, EKF, link."""

    kinds = ("position", "gps", "battery", "attitude", "vibration", "ekf", "heartbeat", "statustext", "fence")
    fields: ClassVar[dict[str, tuple[str, ...]]] = {
        "position": ("key", "lat", "lon", "alt", "relative_alt", "vx", "vy"),
        "gps": ("key", "fix_type", "satellites", "hdop", "lat", "lon"),
        "battery": ("key", "battery_id", "voltage", "remaining"),
        "attitude": ("key",),
        "vibration": ("key", "vibe_x", "vibe_y", "vibe_z", "clip_inc_0", "clip_inc_1", "clip_inc_2"),
        "ekf": ("key", "velocity_variance", "pos_horiz_variance", "pos_vert_variance", "compass_variance"),
        "heartbeat": ("key", "armed"),
        "statustext": ("key",),
        "fence": ("key", "breach_status", "breach_type"),
    }
    Params = UavAnomalyParams

    def __init__(self, params: UavAnomalyParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self._polygon = parse_polygon(params.fence_polygon)
        self._vehicles: dict[str, _Vehicle] = {}

    def _vehicle(self, key: str) -> _Vehicle:
        v = self._vehicles.get(key)
        if v is None:
            v = self._vehicles[key] = _Vehicle(key)
        return v

    def _emit(
        self, v: _Vehicle, name: str, severity: Severity, text: str, value: float | None,
        attrs: dict[str, Any] | None = None, *, tag: str = "",
    ) -> None:
        """Signal and alert of one onset; the dedup key is (vehicle, anomaly, onset time)."""
        now = self.ctx.now
        self.ctx.signal(v.key, name, value, {"severity": severity, **(attrs or {})})
        self.ctx.alert(
            v.key, name, f"vehicle {v.key}: {text}", severity=severity,
            dedup_key=f"{self.name}:{v.key}:{name}{tag}:{now}",
        )

    # -- battery ---------------------------------------------------------------------
    def on_battery(self, b: Any) -> None:
        if not self.p.battery:
            return
        v = self._vehicle(b.key)
        bid = 0 if b.battery_id is None else b.battery_id
        bat = v.batteries.get(bid)
        if bat is None:
            bat = v.batteries[bid] = _Battery()
        self._battery_low(v, bid, bat, b.voltage, b.remaining)
        if b.voltage is not None and self.p.batt_sag_rate > 0:
            self._battery_sag(v, bid, bat, b.voltage)

    def _battery_low(self, v: _Vehicle, bid: int, bat: _Battery, volt: float | None, pct: float | None) -> None:
        p, now = self.p, self.ctx.now
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
            return
        name = "battery" if bid == 0 else f"battery {bid}"
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
        self._emit(v, "battery_low", severity, text, value, {"battery_id": bid, **attrs}, tag=f":{bid}")

    def _battery_sag(self, v: _Vehicle, bid: int, bat: _Battery, volt: float) -> None:
        """Rate of fall from the last sample at least ``batt_sag_window`` old to now."""
        p, now = self.p, self.ctx.now
        hist, cut = bat.history, now - p.batt_sag_window
        while len(hist) >= 2 and hist[1][0] <= cut:
            hist.popleft()
        rate = None
        if hist and hist[0][0] <= cut:
            t0, v0 = hist[0]
            rate = (v0 - volt) / ((now - t0) / NS)
        hist.append((now, volt))
        bad = rate is not None and rate > p.batt_sag_rate
        if bat.sag.rises(now, int(bad), bad, p.clear_time):
            assert rate is not None
            name = "battery" if bid == 0 else f"battery {bid}"
            span = now - hist[0][0]
            text = (f"{name} voltage falling {_num(rate)} V/s over {_secs(span)} s "
                    f"(limit {_num(p.batt_sag_rate)} V/s), now {_num(volt)} V")
            self._emit(v, "battery_sag", "warning", text, rate,
                       {"unit": "V/s", "battery_id": bid, "voltage": volt}, tag=f":{bid}")

    # -- heartbeat: armed state (fence home) and link ----------------------------------
    def on_heartbeat(self, h: Any) -> None:
        v = self._vehicle(h.key)
        if h.armed is not None and bool(h.armed) != v.armed:
            v.armed = bool(h.armed)
            if not v.armed:  # home is set again at the next arming
                v.home, v.geo, v.distance = None, [], None
        if self.p.link:
            self._heartbeat(v)

    def _heartbeat(self, v: _Vehicle) -> None:
        now, ctx = self.ctx.now, self.ctx
        if v.lost_at is not None and v.last_heartbeat is not None:
            outage = now - v.last_heartbeat
            self._emit(v, "link_restored", "info", f"heartbeat back after {_secs(outage)} s of silence",
                       outage / NS, {"unit": "s"})
            v.lost_at = None
        v.last_heartbeat = now
        timer = f"link:{v.key}"
        ctx.cancel(timer)
        ctx.at(now + self.p.link_timeout, timer)

    def on_timer(self, name: str, ts: int) -> None:
        kind, _, key = name.partition(":")
        v = self._vehicles.get(key)
        if kind != "link" or v is None or v.last_heartbeat is None or v.lost_at is not None:
            return
        v.lost_at = ts
        silent = ts - v.last_heartbeat
        self._emit(v, "link_loss", "critical",
                   f"no heartbeat for {_secs(silent)} s (link_timeout {self.p.link_timeout})",
                   silent / NS, {"unit": "s"})

    # -- fence -------------------------------------------------------------------------
    def on_position(self, pos: Any) -> None:
        if not self.p.fence:
            return
        p, now = self.p, self.ctx.now
        v = self._vehicle(pos.key)
        v.geo, v.distance = [], None
        predicted: float | None = None
        if v.armed and _known(pos.lat, pos.lon):
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
            if self._polygon and not inside_polygon(pos.lat, pos.lon, self._polygon):
                v.geo.append(("polygon", "outside the polygon fence"))
            moving = pos.vx is not None and pos.vy is not None
            if p.fence_radius > 0 and p.fence_predict > 0 and dist <= p.fence_radius and moving:
                predicted = time_to_circle(n, e, pos.vx, pos.vy, p.fence_radius - p.fence_margin)
        self._fence_update(v)
        soon = predicted is not None and predicted * NS <= p.fence_predict
        if v.predicted.rises(now, int(soon), soon, p.clear_time):
            assert predicted is not None and v.distance is not None
            speed = hypot(pos.vx, pos.vy)
            text = (f"fence breach predicted in {_num(predicted, 1)} s: {_num(v.distance, 1)} m from "
                    f"home at {_num(speed, 1)} m/s (radius {_num(p.fence_radius)} m, "
                    f"margin {_num(p.fence_margin)} m)")
            self._emit(v, "fence_predicted", "warning", text, predicted,
                       {"unit": "s", "distance_m": v.distance, "speed_ms": speed})

    def on_fence(self, f: Any) -> None:
        if not self.p.fence:
            return
        v = self._vehicle(f.key)
        v.status_breach = (0 if f.breach_type is None else f.breach_type) if f.breach_status == 1 else None
        self._fence_update(v)

    def _fence_update(self, v: _Vehicle) -> None:
        bad = bool(v.geo) or v.status_breach is not None
        if not v.fence.rises(self.ctx.now, int(bad), bad, self.p.clear_time):
            return
        causes = [c for c, _ in v.geo]
        texts = [t for _, t in v.geo]
        if v.status_breach is not None:
            causes.append("status")
            kind = BREACH_NAMES.get(v.status_breach, "unknown")
            texts.append(f"FENCE_STATUS reports a breach (type {v.status_breach}, {kind})")
        self._emit(v, "fence_breach", "critical", "fence breach: " + "; ".join(texts), v.distance,
                   {"unit": "m", "causes": causes})

    # -- GPS ---------------------------------------------------------------------------
    def on_gps(self, g: Any) -> None:
        if not self.p.gps:
            return
        p, now = self.p, self.ctx.now
        v = self._vehicle(g.key)
        fix = 0 if g.fix_type is None else g.fix_type
        lost = fix < p.gps_min_fix
        if v.gps_loss.rises(now, int(lost), lost, p.clear_time):
            need = FIX_NAMES.get(p.gps_min_fix, str(p.gps_min_fix))
            text = f"GPS fix lost: fix type {fix} ({FIX_NAMES.get(fix, '?')}), need {p.gps_min_fix} ({need})"
            self._emit(v, "gps_loss", "critical", text, float(fix), {"fix_type": fix})
        few = not lost and g.satellites is not None and g.satellites < p.gps_min_sats
        blurred = not lost and g.hdop is not None and p.gps_max_hdop > 0 and g.hdop > p.gps_max_hdop
        degraded = few or blurred
        if v.gps_degraded.rises(now, int(degraded), degraded, p.clear_time):
            parts = []
            if few:
                parts.append(f"{g.satellites} satellites (min {p.gps_min_sats})")
            if blurred:
                parts.append(f"HDOP {_num(g.hdop)} (max {_num(p.gps_max_hdop)})")
            value = float(g.satellites) if few else g.hdop
            self._emit(v, "gps_degraded", "warning", "GPS degraded: " + ", ".join(parts), value,
                       {"satellites": g.satellites, "hdop": g.hdop,
                        "causes": ["satellites"] * few + ["hdop"] * blurred})
        if fix >= 2 and _known(g.lat, g.lon):
            self._gps_jump(v, g.lat, g.lon)

    def _gps_jump(self, v: _Vehicle, lat: float, lon: float) -> None:
        """Implied speed from the previous fix to this one (fixes at the same time are skipped)."""
        p, now = self.p, self.ctx.now
        last = v.last_fix
        if last is not None and now <= last[0]:
            return
        v.last_fix = (now, lat, lon)
        if last is None or p.gps_max_speed <= 0:
            return
        dist = hypot(*offset_ne(last[1], last[2], lat, lon))
        dt = (now - last[0]) / NS
        speed = dist / dt
        bad = speed > p.gps_max_speed
        if v.gps_glitch.rises(now, int(bad), bad, p.clear_time):
            text = (f"GPS glitch: position jumped {_num(dist, 1)} m in {_num(dt, 3)} s "
                    f"({_num(speed, 1)} m/s, max {_num(p.gps_max_speed)} m/s)")
            self._emit(v, "gps_glitch", "critical", text, speed,
                       {"unit": "m/s", "distance_m": dist, "dt_s": dt})

    # -- vibration ---------------------------------------------------------------------
    def on_vibration(self, s: Any) -> None:
        if not self.p.vibration:
            return
        p, now = self.p, self.ctx.now
        v = self._vehicle(s.key)
        axes = [(x, a) for x, a in ((s.vibe_x, "x"), (s.vibe_y, "y"), (s.vibe_z, "z")) if x is not None]
        if axes:
            peak, axis = max(axes)
            level = 2 if peak > p.vibe_crit else 1 if peak > p.vibe_warn else 0
            if v.vibe.rises(now, level, level > 0, p.clear_time):
                limit = p.vibe_crit if level == 2 else p.vibe_warn
                self._emit(v, "vibration_high", "critical" if level == 2 else "warning",
                           f"vibration {_num(peak, 1)} m/s^2 on {axis} (above {_num(limit, 1)} m/s^2)",
                           peak, {"unit": "m/s^2", "axis": axis, "threshold": limit})
        inc = sum(i for i in (s.clip_inc_0, s.clip_inc_1, s.clip_inc_2) if i is not None and i > 0)
        if inc > 0:
            v.clip_run, v.clip_sum = v.clip_run + 1, v.clip_sum + inc
        else:
            v.clip_run, v.clip_sum = 0, 0
        rising = v.clip_run >= p.clip_rise
        if v.clipping.rises(now, int(rising), rising, p.clear_time):
            text = f"accelerometer clipping rising in {v.clip_run} consecutive samples (+{v.clip_sum} clips)"
            self._emit(v, "vibration_clipping", "warning", text, float(v.clip_sum), {"samples": v.clip_run})

    # -- EKF ---------------------------------------------------------------------------
    def on_ekf(self, s: Any) -> None:
        p, now = self.p, self.ctx.now
        if not p.ekf or p.ekf_thresh <= 0:
            return
        v = self._vehicle(s.key)
        variances = (("velocity", s.velocity_variance), ("pos_horiz", s.pos_horiz_variance),
                     ("pos_vert", s.pos_vert_variance), ("compass", s.compass_variance))
        over = [(n, x) for n, x in variances if x is not None and x >= p.ekf_thresh]
        held = v.ekf_hold.held(now, len(over) >= 2)
        level = int(held >= p.ekf_timer)
        if v.ekf.rises(now, level, held >= 0, p.clear_time):
            listed = ", ".join(f"{n} {_num(x)}" for n, x in over)
            self._emit(v, "ekf_variance", "critical",
                       f"EKF variances at or above {_num(p.ekf_thresh)} for {_secs(held)} s: {listed}",
                       max(x for _, x in over), dict(over))

    # -- subscribed for the clock only -------------------------------------------------
    def on_attitude(self, a: Any) -> None:
        """No detector: attitude events move event time, so link timers fire on them."""

    def on_statustext(self, s: Any) -> None:
        """No detector: status texts move event time, so link timers fire on them."""
