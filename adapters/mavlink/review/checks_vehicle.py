"""Airframe checks: vibration and accelerometer clipping (VIBE), motor balance and thrust from
the servo outputs (LogAnalyzer's Motor Balance and Thrust tests) and the parameters."""

from __future__ import annotations

import math

import polars as pl

from .flight import Flight
from .report import Check, na
from .series import Interval, intervals, runs, with_armed

NS = 1_000_000_000
BALANCE_WARN, BALANCE_FAIL = 75.0, 150.0
"""LogAnalyzer's Motor Balance: motor averages further apart than 75 µs warn, 150 µs fail."""
HIGH_THROTTLE = 0.7
"""LogAnalyzer's Thrust test: throttle above 70 % of the range ..."""
THRUST_TILT_DEG = 20.0
"""... while level (tilt under 20 degrees) ..."""
THRUST_MIN_S = 5.0
"""... for over 5 s (its 50 samples at 10 Hz) ..."""
CLIMB_WARN, CLIMB_FAIL = 1.0, 0.5
"""... with an average climb under 1 m/s warns, under 0.5 m/s fails (underpowered)."""
MOTOR_LIMIT = 0.95
"""A motor held above 95 % of its range for a second is at its limit (thrust lost elsewhere)."""
GROUND_ALT = 1.0
"""Metres above home below which the vehicle is on the ground or touching down."""
SPIN_FRACTION = 0.2
"""Servo samples count as flying when the motors' mean is above 20 % of the range."""

# ArduCopter 4.5 defaults of the parameters checked or read, for tlogs (DataFlash logs state theirs)
COPTER_DEFAULTS: dict[str, float] = {
    "ARMING_CHECK": 1, "FS_THR_ENABLE": 1, "FS_EKF_ACTION": 1, "FS_EKF_THRESH": 0.8, "FS_GCS_ENABLE": 0,
    "FS_GCS_TIMEOUT": 5, "BATT_LOW_VOLT": 10.5, "BATT_CRT_VOLT": 0, "BATT_LOW_TIMER": 10, "BATT_FS_LOW_ACT": 0,
    "FENCE_ENABLE": 0, "FENCE_RADIUS": 300, "FENCE_ALT_MAX": 100, "FENCE_MARGIN": 2, "MAG_ENABLE": 1,
    "AHRS_GPS_MINSATS": 6, "MOT_PWM_MIN": 1000, "MOT_PWM_MAX": 2000, "RTL_ALT": 1500, "LAND_SPEED": 50,
}
# a safety feature switched off: (parameter, value that disables it, what is lost)
UNSAFE: tuple[tuple[str, float, str], ...] = (
    ("ARMING_CHECK", 0, "pre-arm checks off"), ("FS_THR_ENABLE", 0, "RC failsafe off"),
    ("FS_EKF_ACTION", 0, "EKF failsafe action none"), ("MAG_ENABLE", 0, "compass off"),
)


def vibration(flight: Flight) -> Check:
    """VIBE levels (m/s^2, any axis): above vibe_crit (60) fails, above vibe_warn (30) warns."""
    name, title, alerts = "vibration", "Vibration", ("vibration_high",)
    v = flight.kind("vibration")
    if v is None:
        return na(name, title, "no vibration levels in the log (VIBRATION/VIBE)", alerts=alerts)
    p = flight.params
    level = pl.max_horizontal("vibe_x", "vibe_y", "vibe_z")
    peak = float(v.select(level.max()).item() or 0.0)
    limits = {"vibe_warn": p.vibe_warn, "vibe_crit": p.vibe_crit}
    for status, limit in (("fail", p.vibe_crit), ("warn", p.vibe_warn)):
        high = runs(v, level > limit, value=level)
        if high.height:
            return Check(name, title, status, f"peak {peak:.1f} m/s^2 (over {limit:g} in {high.height} stretch(es))",
                         peak, "m/s^2", limits, tuple(intervals(high, f"above {limit:g} m/s^2", unit=" m/s^2", digits=1)),
                         alerts)
    return Check(name, title, "pass", f"peak {peak:.1f} m/s^2 (warn above {p.vibe_warn:g})", peak, "m/s^2", limits, (),
                 alerts)


def airborne(frame: pl.DataFrame, flight: Flight) -> pl.DataFrame:
    """The rows of ``frame`` while the vehicle was more than GROUND_ALT above home (all rows
    when the log has no altitude)."""
    pos = flight.kind("position")
    if pos is None:
        return frame
    alt = pos.select("ts_event", "relative_alt").drop_nulls().unique("ts_event", keep="last").sort("ts_event")
    if not alt.height:
        return frame
    joined = frame.sort("ts_event").join_asof(alt, on="ts_event", strategy="backward")
    return joined.filter(pl.col("relative_alt").fill_null(0.0) > GROUND_ALT).drop("relative_alt")


def clipping(flight: Flight) -> Check:
    """Accelerometer clipping in the air: counts rising in clip_rise consecutive samples fails, any
    clip warns. Clips on the ground or at touchdown (below 1 m) do not count."""
    name, title, alerts = "clipping", "Accelerometer clipping", ("vibration_clipping",)
    v = flight.kind("vibration")
    if v is None:
        return na(name, title, "no clipping counters in the log (VIBRATION/VIBE)", alerts=alerts)
    rise = flight.params.clip_rise
    inc = pl.sum_horizontal(pl.col("clip_inc_0").fill_null(0), pl.col("clip_inc_1").fill_null(0),
                            pl.col("clip_inc_2").fill_null(0))
    v = airborne(v, flight)
    total = int(v.select(inc.sum()).item() or 0)
    clipping_runs = runs(v, inc > 0, value=inc)
    limits = {"clip_rise": rise, "ground_alt_m": GROUND_ALT}
    sustained = clipping_runs.filter(pl.col("rows") >= rise)
    evidence = tuple(intervals(clipping_runs, "clipping", digits=0))
    if sustained.height:
        return Check(name, title, "fail", f"{total} clips in the air; counts rose in {rise}+ consecutive samples "
                     f"{sustained.height} time(s)", float(total), "clips", limits, evidence, alerts)
    if total:
        return Check(name, title, "warn", f"{total} clips in the air", float(total), "clips", limits, evidence, alerts)
    return Check(name, title, "pass", "no clipping in the air", 0.0, "clips", limits, (), alerts)


CRASH_TEXTS: tuple[tuple[str, str], ...] = (("Crash", "crash detected"), ("Thrust Loss", "thrust loss"))
"""ArduCopter's messages when its crash check disarms ("Crash: Disarming") and when a motor
cannot keep up ("Potential Thrust Loss (N)")."""


def crash(flight: Flight) -> Check:
    """The autopilot's own crash and thrust-loss reports (STATUSTEXT / MSG) fail."""
    name, title = "crash", "Crash / thrust loss"
    texts = flight.kind("statustext")
    if texts is None:
        return na(name, title, "no status texts in the log (STATUSTEXT/MSG)")
    found = []
    for needle, what in CRASH_TEXTS:
        hits = texts.filter(pl.col("text").str.contains(needle, literal=True))
        found += [Interval(t, t, f"{what}: {text}") for t, text in hits.select("ts_event", "text").iter_rows()]
    if found:
        found.sort(key=lambda e: e.start)
        return Check(name, title, "fail", "; ".join(dict.fromkeys(e.detail for e in found)), float(len(found)), "",
                     {}, tuple(found))
    return Check(name, title, "pass", f"no crash or thrust loss reported ({texts.height} messages)", 0.0, "")


def _pwm_range(flight: Flight) -> tuple[float, float]:
    params = flight.extras.params
    lo, hi = params.get("MOT_PWM_MIN", 0.0), params.get("MOT_PWM_MAX", 0.0)
    return (lo, hi) if 0 < lo < hi else (1000.0, 2000.0)


def _motors(flight: Flight) -> tuple[pl.DataFrame, list[str]] | None:
    """Servo samples while flying, and the motor channels (outputs that move within PWM range)."""
    servo = flight.extras.servo
    if servo is None or not servo.height:
        return None
    armed = with_armed(servo, flight.kind("heartbeat")).filter(pl.col("armed"))
    lo, hi = _pwm_range(flight)
    chans = [c for c in servo.columns if c.startswith("c") and armed.height
             and armed.get_column(c).min() >= lo * 0.8 and armed.get_column(c).max() <= hi * 1.1
             and armed.get_column(c).n_unique() > 1]
    if len(chans) < 2:
        return None
    flying = armed.filter(pl.mean_horizontal(*chans) > lo + SPIN_FRACTION * (hi - lo))
    return (flying, chans) if flying.height else None


#: why the motor tests are n/a: what they need is not in the log
NO_MOTORS = "no motor outputs while flying in the log (SERVO_OUTPUT_RAW/RCOU)"


def motor_balance(flight: Flight) -> Check:
    """Difference between the motors' average outputs while flying: over 75 µs warns, 150 µs fails."""
    name, title = "motor_balance", "Motor balance"
    got = _motors(flight)
    if got is None:
        return na(name, title, NO_MOTORS)
    flying, chans = got
    means = flying.select(pl.col(c).mean() for c in chans).row(0)
    spread = float(max(means) - min(means))
    text = ", ".join(f"{c[1:]}: {m:.0f}" for c, m in zip(chans, means, strict=True))
    status = "fail" if spread > BALANCE_FAIL else "warn" if spread > BALANCE_WARN else "pass"
    first, last = int(flying.item(0, "ts_event")), int(flying.item(-1, "ts_event"))
    evidence = (Interval(first, last, f"motor averages {text}"),) if status != "pass" else ()
    return Check(name, title, status, f"motor averages differ by {spread:.0f} us ({text})", spread, "us",
                 {"warn_us": BALANCE_WARN, "fail_us": BALANCE_FAIL}, evidence)


def thrust(flight: Flight) -> Check:
    """High throttle while level without climbing (underpowered), or a motor held at its limit."""
    name, title = "thrust", "Thrust margin"
    got = _motors(flight)
    if got is None:
        return na(name, title, NO_MOTORS)
    flying, chans = got
    lo, hi = _pwm_range(flight)
    frame = flying.with_columns(thr=(pl.mean_horizontal(*chans) - lo) / (hi - lo),
                                top=(pl.max_horizontal(*chans) - lo) / (hi - lo))
    att, pos = flight.kind("attitude"), flight.kind("position")
    if att is not None:
        tilt = att.select("ts_event", tilt=pl.max_horizontal(pl.col("roll").abs(), pl.col("pitch").abs()).degrees())
        frame = frame.join_asof(tilt, on="ts_event", strategy="backward")
    else:
        frame = frame.with_columns(tilt=pl.lit(0.0))
    limits = {"high_throttle": HIGH_THROTTLE, "tilt_deg": THRUST_TILT_DEG, "climb_warn_m_per_s": CLIMB_WARN,
              "climb_fail_m_per_s": CLIMB_FAIL, "motor_limit": MOTOR_LIMIT}
    status, notes, evidence = "pass", [], []
    if pos is not None:
        found = _underpowered(frame, pos.select("ts_event", "relative_alt").drop_nulls())
        if found:
            status = "fail" if any(v == "fail" for v, _ in found) else "warn"
            evidence = [e for _, e in found]
            notes.append(f"{len(found)} stretch(es) of high throttle without climbing")
    limit = runs(frame, pl.col("top") >= MOTOR_LIMIT, value=pl.col("top")).filter(pl.col("held") >= NS)
    if limit.height:
        status = "fail" if status == "fail" else "warn"
        notes.append(f"a motor at its limit {limit.height} time(s)")
        evidence += intervals(limit, "motor output at", digits=2)
    peak = float(frame.get_column("thr").max())
    summary = "; ".join(notes) or f"throttle up to {peak:.0%} of the range, motors never at their limit"
    return Check(name, title, status, summary, peak, "", limits, tuple(sorted(evidence, key=lambda e: e.start)))


def _underpowered(frame: pl.DataFrame, alt: pl.DataFrame) -> list[tuple[str, Interval]]:
    """LogAnalyzer's Thrust test over ``frame`` (servo samples with ``thr`` and ``tilt``): each
    stretch of high throttle while level that lasts THRUST_MIN_S and climbs too slowly."""
    out = []
    level_high = (pl.col("thr") > HIGH_THROTTLE) & (pl.col("tilt").fill_null(0) < THRUST_TILT_DEG)
    for r in runs(frame, level_high).filter(pl.col("held") >= int(THRUST_MIN_S * NS)).iter_rows(named=True):
        seg = alt.filter(pl.col("ts_event").is_between(r["start"], r["last"]))
        if seg.height < 2:
            continue
        rise = seg.item(-1, "relative_alt") - seg.item(0, "relative_alt")
        climb = rise / ((seg.item(-1, "ts_event") - seg.item(0, "ts_event")) / NS)
        verdict = "fail" if climb < CLIMB_FAIL else "warn" if climb < CLIMB_WARN else None
        if verdict:
            text = f"throttle over {HIGH_THROTTLE:.0%} while level, climbing {climb:.2f} m/s"
            out.append((verdict, Interval(r["start"], r["last"], text)))
    return out


def parameters(flight: Flight) -> Check:
    """The parameters: NaN fails, a safety feature switched off warns; lists those off their defaults."""
    name, title = "parameters", "Parameters"
    params = flight.extras.params
    if not params:
        return na(name, title, "no parameters in the log (PARAM_VALUE/PARM)")
    defaults = flight.extras.defaults or COPTER_DEFAULTS
    changed = sorted(k for k, v in params.items() if k in defaults and not math.isnan(defaults[k])
                     and not math.isclose(v, defaults[k], rel_tol=1e-6, abs_tol=1e-6))
    nan = sorted(k for k, v in params.items() if math.isnan(v))
    unsafe = [f"{p} {params[p]:g} ({why})" for p, off, why in UNSAFE if p in params and params[p] == off]
    listed = ", ".join(f"{k}={params[k]:g}" for k in changed[:8]) + (f" (+{len(changed) - 8})" if len(changed) > 8 else "")
    off = f"{len(changed)} of {len(params)} off their defaults" + (f": {listed}" if changed else "")
    limits = {"changed": float(len(changed))}
    if nan:
        return Check(name, title, "fail", f"NaN: {', '.join(nan)}; {off}", float(len(nan)), "", limits)
    if unsafe:
        return Check(name, title, "warn", f"{'; '.join(unsafe)}; {off}", float(len(unsafe)), "", limits)
    return Check(name, title, "pass", off, float(len(changed)), "", limits)
