"""Sensor checks: the compass's field strength and its interference with the throttle
(LogAnalyzer's Compass test), and the agreement of the IMUs (its IMU Mismatch test, with the
gyros too, at ArduPilot's arming-check limits)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from .flight import Flight
from .report import Check, Status, na
from .series import Interval

FIELD_CHANGE_WARN, FIELD_CHANGE_FAIL = 0.25, 0.35
"""LogAnalyzer's Compass test: (max - min) / min of the field's length over the log."""
FIELD_RANGE = (120.0, 550.0)
"""LogAnalyzer's recommended field length, mGauss (outside: warn)."""
THROTTLE_CORRELATION = 0.5
"""A field length that correlates with the throttle at least this much follows the motors'
current (interference; ArduPilot's COMPASS_MOT compensates it)."""
ACCEL_WARN, ACCEL_FAIL = 0.75, 1.5
"""LogAnalyzer's IMU Mismatch test, m/s^2 (0.75 is ArduPilot's arming check limit)."""
GYRO_WARN, GYRO_FAIL = math.radians(5.0), math.radians(10.0)
"""Gyro mismatch, rad/s: ArduPilot's arming check refuses above 5 deg/s."""
FILTER_TC = 5.0
"""Seconds: the difference between two IMUs is low-pass filtered (LogAnalyzer's time constant)."""
NS = 1_000_000_000


def compass(flight: Flight) -> Check:
    """Field length variation and range over the log; whether it follows the throttle."""
    name, title = "compass", "Compass field and interference"
    mag = flight.extras.mag
    if mag is None:
        return na(name, title, "no magnetometer data in the log (RAW_IMU / MAG)")
    mag = mag.with_columns(field=(pl.col("mx") ** 2 + pl.col("my") ** 2 + pl.col("mz") ** 2).sqrt())
    mag = mag.filter(pl.col("field") > 0)  # all-zero samples: no reading (LogAnalyzer skips them)
    if mag.height < 2:
        return na(name, title, "no magnetometer samples with a field (all zero)")
    lo, hi = float(mag["field"].min()), float(mag["field"].max())
    change = (hi - lo) / lo
    status: Status = "fail" if change > FIELD_CHANGE_FAIL else "warn" if change > FIELD_CHANGE_WARN else "pass"
    notes = [f"field {lo:.0f}-{hi:.0f} mGauss, {change:.0%} change"]
    if lo < FIELD_RANGE[0] or hi > FIELD_RANGE[1]:
        status = "warn" if status == "pass" else status
        notes.append(f"outside {FIELD_RANGE[0]:.0f}-{FIELD_RANGE[1]:.0f} mGauss")
    thr = flight.extras.throttle
    r = None
    if thr is not None:
        joined = mag.sort("ts_event").join_asof(thr.sort("ts_event"), on="ts_event").drop_nulls("throttle")
        if joined.height >= 2 and joined["throttle"].std() and joined["field"].std():
            r = float(np.corrcoef(joined["field"].to_numpy(), joined["throttle"].to_numpy())[0, 1])
            if abs(r) >= THROTTLE_CORRELATION and status != "pass":
                notes.append(f"it follows the throttle (r={r:.2f}): motor interference, calibrate COMPASS_MOT")
            else:
                notes.append(f"throttle correlation r={r:.2f}")
    at = [(int(mag["ts_event"][int(mag["field"].arg_min())]), f"min field {lo:.0f} mGauss"),
          (int(mag["ts_event"][int(mag["field"].arg_max())]), f"max field {hi:.0f} mGauss")]
    evidence = tuple(Interval(ts, ts, detail) for ts, detail in sorted(at)) if status != "pass" else ()
    thresholds = {"change_warn": FIELD_CHANGE_WARN, "change_fail": FIELD_CHANGE_FAIL,
                  "field_min_mgauss": FIELD_RANGE[0], "field_max_mgauss": FIELD_RANGE[1]}
    if r is not None:
        thresholds["throttle_r"] = r
    return Check(name, title, status, "; ".join(notes), change, "fraction", thresholds, evidence)


def filtered_mismatch(a: pl.DataFrame, b: pl.DataFrame, columns: list[str]) -> tuple[float, int]:
    """The largest length of the difference of ``columns`` between IMU ``b`` (its latest
    sample at each of ``a``'s) and ``a``, low-pass filtered with FILTER_TC; and when."""
    joined = a.sort("ts_event").join_asof(b.sort("ts_event"), on="ts_event", suffix="_b").drop_nulls()
    if not joined.height:
        return 0.0, 0
    ts = joined["ts_event"].to_numpy()
    diff = np.column_stack([(joined[c] - joined[f"{c}_b"]).to_numpy() for c in columns])
    state = np.zeros(len(columns))
    worst, when, last = 0.0, int(ts[0]), None
    for t, d in zip(ts.tolist(), diff):
        dt = 0.0 if last is None else (t - last) / NS
        alpha = 1.0 if last is None else dt / (FILTER_TC + dt)
        state = alpha * d + (1.0 - alpha) * state
        size = float(np.sqrt(state @ state))
        if size > worst:
            worst, when = size, t
        last = t
    return worst, when


def imu_mismatch(flight: Flight) -> Check:
    """Accelerometers and gyros of every further IMU against the first, filtered over FILTER_TC."""
    name, title = "imu_mismatch", "IMU mismatch"
    imus = flight.extras.imus
    if len(imus) < 2:
        return na(name, title, "no second IMU in the log (RAW_IMU + SCALED_IMU2, or IMU instances)")
    (first, base), *others = sorted(imus.items())
    status: Status = "pass"
    worst_acc = worst_gyro = 0.0
    evidence = []
    for inst, frame in others:
        acc, acc_at = filtered_mismatch(base, frame, ["ax", "ay", "az"])
        gyro, gyro_at = filtered_mismatch(base, frame, ["gx", "gy", "gz"])
        worst_acc, worst_gyro = max(worst_acc, acc), max(worst_gyro, gyro)
        for value, at, warn, fail, what, unit in ((acc, acc_at, ACCEL_WARN, ACCEL_FAIL, "accel", "m/s^2"),
                                                  (gyro, gyro_at, GYRO_WARN, GYRO_FAIL, "gyro", "rad/s")):
            level: Status = "fail" if value > fail else "warn" if value > warn else "pass"
            if level != "pass":
                status = "fail" if "fail" in (status, level) else "warn"
                evidence.append(Interval(at, at, f"IMU{inst} vs IMU{first} {what} {value:.2f} {unit}"))
    summary = (f"largest mismatch: accel {worst_acc:.2f} m/s^2 (warn {ACCEL_WARN:g}, fail {ACCEL_FAIL:g}), "
               f"gyro {math.degrees(worst_gyro):.1f} deg/s (warn 5, fail 10)")
    if status != "pass":
        summary += ": check vibration isolation and the accelerometer calibration"
    return Check(name, title, status, summary, worst_acc, "m/s^2",
                 {"accel_warn": ACCEL_WARN, "accel_fail": ACCEL_FAIL, "gyro_warn": GYRO_WARN, "gyro_fail": GYRO_FAIL},
                 tuple(evidence))
