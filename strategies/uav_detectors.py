"""The detectors of :class:`~qsframework.strategies.uav_anomaly.UavAnomaly`. Each detector is a
function of the parameters, the event time (ns), the vehicle's state
(:mod:`~qsframework.strategies.uav_state`) and the values measured: it works out the level
its condition shows, feeds it to that condition's :class:`~qsframework.alerting.Condition`
under the alert policy (``p.warnings`` or ``p.events``) and returns the :class:`Onset` to
emit (an onset, an escalation, a ``<name>_cleared`` info or a flapping summary) or None; the
strategy wires events to them and emits. The strategy's docstring specifies each one."""

from __future__ import annotations

from math import hypot, isnan, sqrt
from typing import Any

from qsframework.alerting import Transition, band
from qsframework.geo import inside_polygon, offset_ne
from qsframework.strategies.uav_params import UavAnomalyParams
from qsframework.strategies.uav_state import Battery, Episode, Hold, Onset, Severity, Vehicle

__all__ = ["Battery", "Episode", "Hold", "Onset", "Severity", "Vehicle"]

NS = 1_000_000_000
FIX_NAMES = {0: "no GPS", 1: "no fix", 2: "2D", 3: "3D", 4: "DGPS", 5: "RTK float", 6: "RTK fixed"}
BREACH_NAMES = {0: "none", 1: "min alt", 2: "max alt", 3: "boundary"}


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


def _span(ns: int) -> str:
    """``300 s`` as ``"5 min"``: the flapping window in summaries."""
    return f"{ns // (60 * NS)} min" if ns % (60 * NS) == 0 else f"{_secs(ns)} s"


RISING = ("raised", "escalated")


def closing(p: UavAnomalyParams, name: str, tr: Transition | None, tag: str = "",
            attrs: dict[str, Any] | None = None) -> Onset | None:
    """The report of an episode's end (``<name>_cleared``, info; value: seconds it lasted)
    or of a flapping summary (``<name>``, value: the episodes not alerted); None otherwise."""
    if tr is None or tr.kind in RISING:
        return None
    extra = attrs or {}
    if tr.kind == "cleared":
        return Onset(f"{name}_cleared", "info", f"{name} cleared after {_secs(tr.held)} s", tr.held / NS,
                     {"unit": "s", **extra}, tag)
    text = (f"{name} x{tr.episodes} in {_span(p.flap_window)} (flapping around its threshold; "
            f"summarised, not alerted one by one)")
    severity: Severity = "critical" if tr.level == 2 else "warning"
    return Onset(name, severity, text, float(tr.episodes),
                 {"episodes": tr.episodes, "since_ns": tr.since, "summary": True, **extra}, tag)


def pending_summaries(p: UavAnomalyParams, now: int, v: Vehicle) -> list[Onset]:
    """The summaries still open at the end of the stream, one per flapping condition."""
    out = []
    for name, tag, cond in v.conditions():
        onset = closing(p, name, cond.flush(now), tag)
        if onset is not None:
            out.append(onset)
    return out


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
    tr = bat.alert.update(p.events, now, level, low_v or crt_v or low_p or crt_p)
    if tr is None or tr.kind not in RISING:
        return closing(p, "battery_low", tr, f":{bid}", {"battery_id": bid})
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
    level, holding = (0, False) if rate is None else band(rate, p.batt_sag_rate, 0.0, p.alert_hysteresis,
                                                          bat.sag.level)
    tr = bat.sag.update(p.events, now, level, holding)
    if tr is None or tr.kind not in RISING:
        return closing(p, "battery_sag", tr, f":{bid}", {"battery_id": bid})
    assert rate is not None
    name = _battery_name(bid)
    span = now - hist[0][0]
    text = (f"{name} voltage falling {_num(rate)} V/s over {_secs(span)} s "
            f"(limit {_num(p.batt_sag_rate)} V/s), now {_num(volt)} V")
    return Onset("battery_sag", "warning", text, rate, {"unit": "V/s", "battery_id": bid, "voltage": volt},
                 tag=f":{bid}")


def battery_health(p: UavAnomalyParams, now: int, bid: int, bat: Battery, volt: float,
                   current: float | None) -> Onset | None:
    """Feeds the battery model; every ``batt_predict`` (60 s by default) once it has an
    estimate, a ``battery_resistance`` signal (ohm, no alert): the pack's health."""
    if current is None or current < 0 or p.batt_predict <= 0:
        return None
    model = bat.model
    model.update(now, volt, current, p.batt_predict)
    r = model.resistance
    if r is None or (model.next_report is not None and now < model.next_report):
        return None
    model.next_report = now + p.batt_predict
    rest = volt + current * r
    return Onset("battery_resistance", "info", f"{_battery_name(bid)} internal resistance {_num(r * 1000, 0)} mOhm",
                 r, {"unit": "ohm", "battery_id": bid, "resting_v": rest}, tag=f":{bid}", alert=False)


def battery_predicted_low(p: UavAnomalyParams, now: int, bid: int, bat: Battery,
                          remaining: float | None, current: float | None) -> Onset | None:
    """The failsafe is predicted within batt_predict, by whichever predictor says sooner:
    the loaded voltage below batt_low_volt (the battery model's trend), or, with
    batt_capacity known and the vehicle reporting what remains, the consumed capacity
    reaching the reserve at the recent draw. Only before battery_low has alerted. Raised, it
    holds while a prediction stays within twice batt_predict or battery_low is raised."""
    if p.batt_predict <= 0:
        return None
    if current is not None and current >= 0:
        bat.draw.update(now, current, p.batt_predict)
    reserve = p.batt_low_pct or p.batt_reserve
    volt = bat.model.seconds_to(now, p.batt_low_volt, p.batt_predict) if p.batt_low_volt > 0 else None
    cap = (bat.draw.seconds_to(remaining, reserve, p.batt_capacity, p.batt_predict)
           if p.batt_capacity > 0 and remaining is not None else None)
    by_capacity = cap is not None and (volt is None or cap[0] < volt[0])
    secs = cap[0] if cap is not None and by_capacity else volt[0] if volt is not None else None
    limit = p.batt_predict / NS
    soon = secs is not None and secs <= limit and not bat.alert.active
    near = secs is not None and secs <= 2.0 * limit or bat.alert.active  # a trend wavers
    tr = bat.predicted.update(p.events, now, int(soon), near)
    if tr is None or tr.kind not in RISING:
        return closing(p, "battery_predicted_low", tr, f":{bid}", {"battery_id": bid})
    name = _battery_name(bid)
    if by_capacity:
        assert cap is not None and remaining is not None
        secs, amps = cap
        text = (f"{name} predicted at its {_num(reserve, 1)}% reserve in {_num(secs, 0)} s: "
                f"{_num(remaining, 1)}% of {_num(p.batt_capacity, 0)} mAh left, drawing {_num(amps, 1)} A")
        attrs: dict[str, Any] = {"by": "capacity", "remaining_pct": remaining, "current_a": amps,
                                 "reserve_pct": reserve}
    else:
        assert volt is not None
        secs, loaded, slope = volt
        r = bat.model.resistance or 0.0
        text = (f"{name} predicted below {_num(p.batt_low_volt)} V (loaded) in {_num(secs, 0)} s: "
                f"now {_num(loaded)} V loaded, falling {_num(-slope * 60, 2)} V/min, "
                f"internal resistance {_num(r * 1000, 0)} mOhm")
        attrs = {"by": "voltage", "loaded_v": loaded, "slope_v_s": slope, "resistance_ohm": r}
    return Onset("battery_predicted_low", "warning", text, secs,
                 {"unit": "s", "battery_id": bid, **attrs}, tag=f":{bid}")


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
    tr = v.fence.update(p.events, now, int(bad))
    if tr is None or tr.kind not in RISING:
        return closing(p, "fence_breach", tr)
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
    tr = v.predicted.update(p.warnings, now, int(soon))
    if tr is None or tr.kind not in RISING:
        return closing(p, "fence_predicted", tr)
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
    tr = v.gps_loss.update(p.events, now, int(lost))
    if tr is None or tr.kind not in RISING:
        return closing(p, "gps_loss", tr)
    need = FIX_NAMES.get(p.gps_min_fix, str(p.gps_min_fix))
    text = f"GPS fix lost: fix type {fix} ({FIX_NAMES.get(fix, '?')}), need {p.gps_min_fix} ({need})"
    return Onset("gps_loss", "critical", text, float(fix), {"fix_type": fix})


def gps_degraded(p: UavAnomalyParams, now: int, v: Vehicle, fix: int, satellites: int | None,
                 hdop: float | None) -> Onset | None:
    """Too few satellites or too high an HDOP, while the fix itself is good enough."""
    lost = fix < p.gps_min_fix
    level, h = v.gps_degraded.level, p.alert_hysteresis
    few, few_holds = (False, False) if lost or satellites is None else (
        band(satellites, p.gps_min_sats, -1.0, h, level, above=False))
    blurred, blur_holds = (False, False) if lost or hdop is None or p.gps_max_hdop <= 0 else (
        band(hdop, p.gps_max_hdop, 0.0, h, level))
    tr = v.gps_degraded.update(p.warnings, now, int(few or blurred), few_holds or blur_holds)
    if tr is None or tr.kind not in RISING:
        return closing(p, "gps_degraded", tr)
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
    tr = v.gps_glitch.update(p.warnings, now, int(bad))
    if tr is None or tr.kind not in RISING:
        return closing(p, "gps_glitch", tr)
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
    level, holding = band(peak, p.vibe_warn, p.vibe_crit, p.alert_hysteresis, v.vibe.level)
    tr = v.vibe.update(p.warnings, now, level, holding)
    if tr is None or tr.kind not in RISING:
        return closing(p, "vibration_high", tr)
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
    tr = v.clipping.update(p.warnings, now, int(rising), inc > 0)
    if tr is None or tr.kind not in RISING:
        return closing(p, "vibration_clipping", tr)
    text = f"accelerometer clipping rising in {v.clip_run} consecutive samples (+{v.clip_sum} clips)"
    return Onset("vibration_clipping", "warning", text, float(v.clip_sum), {"samples": v.clip_run})


# -- EKF -----------------------------------------------------------------------------
def ekf_variance(p: UavAnomalyParams, now: int, v: Vehicle, variances: tuple[tuple[str, float | None], ...]
                 ) -> Onset | None:
    """Two or more of the named variances at or above ekf_thresh for ekf_timer."""
    over = [(n, x) for n, x in variances if x is not None and x >= p.ekf_thresh]
    held = v.ekf_hold.held(now, len(over) >= 2)
    level = int(held >= p.ekf_timer)
    near = p.ekf_thresh * (1.0 - p.alert_hysteresis)
    holding = held >= 0 or sum(x is not None and x >= near for _, x in variances) >= 2
    tr = v.ekf.update(p.warnings, now, level, holding)
    if tr is None or tr.kind not in RISING:
        return closing(p, "ekf_variance", tr)
    listed = ", ".join(f"{n} {_num(x)}" for n, x in over)
    return Onset("ekf_variance", "critical",
                 f"EKF variances at or above {_num(p.ekf_thresh)} for {_secs(held)} s: {listed}",
                 max(x for _, x in over), dict(over))
