"""qsf uav review's sensor checks on constructed logs: the compass's field strength and its
interference with the throttle (LogAnalyzer's Compass test) and the IMUs' agreement (its IMU
Mismatch test, gyros too), from a tlog and a DataFlash log holding the same samples. The
expected verdicts come from the constructed values and the published thresholds, not from
the checks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("MAVLINK20", "1")

from pymavlink.dialects.v20 import ardupilotmega as apm  # noqa: E402

from qsframework.adapters.mavlink.review.review import review  # noqa: E402

from ...fakes.dataflash_gen import FORMATS, Writer, gps_week_ms  # noqa: E402
from ...fakes.review_logs import START_US  # noqa: E402

G = 9.80665
HZ, SECONDS = 10, 60
SENSOR_FORMATS = {
    "IMU": (90, "QBffffff", "TimeUS,I,GyrX,GyrY,GyrZ,AccX,AccY,AccZ"),
    "MAG": (91, "QBfff", "TimeUS,I,MagX,MagY,MagZ"),
    "CTUN": (92, "Qf", "TimeUS,ThO"),
}
# (field growth with the throttle, IMU 2's accel bias m/s^2, gyro bias rad/s)
CASES = {"clean": (0.05, 0.3, 0.02), "interference": (0.3, 1.0, 0.02), "broken": (0.5, 2.5, 0.15)}


def throttle(t: float) -> float:
    """0 on the ground, then a slow sweep 0..1 and back."""
    return 0.0 if t < 5 else 0.5 - 0.5 * math.cos(2 * math.pi * (t - 5) / 40)


def samples(case: str) -> list[tuple[int, float, tuple[int, int, int], tuple[float, ...], tuple[float, ...]]]:
    """(µs, throttle, field mGauss as whole numbers (what RAW_IMU carries), IMU 1, IMU 2)."""
    grow, acc_bias, gyro_bias = CASES[case]
    out = []
    for k in range(HZ * SECONDS):
        t = k / HZ
        thr = throttle(t)
        field = 300.0 * (1 + grow * thr)  # along a fixed direction: 0.6, 0.48, 0.64 (length 1)
        mag = (round(0.6 * field), round(0.48 * field), round(0.64 * field))
        imu1 = (0.1, -0.2, -G, 0.01, 0.0, -0.01)
        imu2 = (0.1 + acc_bias, -0.2, -G, 0.01 + gyro_bias, 0.0, -0.01)
        out.append((START_US + round(t * 1e6), thr, mag, imu1, imu2))
    return out


def write_tlog(case: str, path: Path) -> Path:
    """HEARTBEAT (armed) each second; RAW_IMU (IMU 1 and the compass: mG, mrad/s, mGauss),
    SCALED_IMU2 and VFR_HUD (throttle %) at 10 Hz."""
    mav = apm.MAVLink(None, srcSystem=1, srcComponent=1)
    out = bytearray()
    armed = apm.MAV_MODE_FLAG_SAFETY_ARMED | apm.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
    for k, (us, thr, mag, a, b) in enumerate(samples(case)):
        head = us.to_bytes(8, "big")
        boot_ms = (us - START_US) // 1000
        if k % HZ == 0:
            out += head + mav.heartbeat_encode(apm.MAV_TYPE_QUADROTOR, apm.MAV_AUTOPILOT_ARDUPILOTMEGA,
                                               armed, 3, apm.MAV_STATE_ACTIVE).pack(mav)
        acc = lambda v: [round(x * 1000 / G) for x in v[:3]]  # noqa: E731
        gyro = lambda v: [round(x * 1000) for x in v[3:]]  # noqa: E731
        out += head + mav.raw_imu_encode(boot_ms * 1000, *acc(a), *gyro(a), *mag).pack(mav)
        out += head + mav.scaled_imu2_encode(boot_ms, *acc(b), *gyro(b), *mag).pack(mav)
        out += head + mav.vfr_hud_encode(0.0, 0.0, 0, round(thr * 100), 20.0, 0.0).pack(mav)
    path.write_bytes(bytes(out))
    return path


def write_dataflash(case: str, path: Path) -> Path:
    """A GPS fix (the log's clock), ARM, then at 10 Hz ATT, IMU instances 0 and 1 (m/s^2,
    rad/s), MAG and CTUN.ThO."""
    w = Writer({**{k: FORMATS[k] for k in ("MODE", "ARM", "ATT", "GPS")}, **SENSOR_FORMATS})
    week, ms = gps_week_ms(START_US)
    w.write("GPS", 20_000_000, 0, 3, ms, week, 12, 0.8, -35.36, 149.16, 584.0, 0.0, 0.0, 0.0, 0.0, 1)
    w.write("MODE", 20_000_000, 3, 3, 0)
    w.write("ARM", 20_000_000, 1, 0, 0, 0)
    for us, thr, mag, a, b in samples(case):
        t_us = 20_000_000 + us - START_US
        w.write("ATT", t_us, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
        for inst, v in ((0, a), (1, b)):
            w.write("IMU", t_us, inst, *v[3:], *v[:3])
        w.write("MAG", t_us, 0, *map(float, mag))
        w.write("CTUN", t_us, thr)
    path.write_bytes(bytes(w.buf))
    return path


def expected(case: str) -> tuple[str, str, float]:
    """Compass and IMU verdicts from the constructed values and LogAnalyzer's limits: the
    field's (max - min) / min against 25% / 35% (and 120-550 mGauss); a steady bias between
    the IMUs is what their low-passed difference settles at, against 0.75 / 1.5 m/s^2 and
    5 / 10 deg/s."""
    fields = [math.sqrt(sum(c * c for c in mag)) for _, _, mag, _, _ in samples(case)]
    change = (max(fields) - min(fields)) / min(fields)
    compass = "fail" if change > 0.35 else "warn" if change > 0.25 else "pass"
    if min(fields) < 120 or max(fields) > 550:
        compass = "warn" if compass == "pass" else compass
    _, acc_bias, gyro_bias = CASES[case]
    acc = "fail" if acc_bias > 1.5 else "warn" if acc_bias > 0.75 else "pass"
    deg = math.degrees(gyro_bias)
    gyro = "fail" if deg > 10 else "warn" if deg > 5 else "pass"
    rank = ["pass", "warn", "fail"]
    return compass, max(acc, gyro, key=rank.index), change


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> dict[tuple[str, str], dict]:
    out = tmp_path_factory.mktemp("sensors")
    docs = {}
    for case in CASES:
        for fmt, write in (("tlog", write_tlog), ("bin", write_dataflash)):
            log = write(case, out / f"{case}.{fmt}")
            doc = review(log, out=out / f"{case}-{fmt}", detectors=False)
            docs[case, fmt] = {t["name"]: t for t in doc["tests"]}
    return docs


@pytest.mark.parametrize("fmt", ["tlog", "bin"])
@pytest.mark.parametrize("case", list(CASES))
def test_compass_and_imu_verdicts(case, fmt, reviews):
    tests = reviews[case, fmt]
    compass, imu, change = expected(case)
    assert (tests["compass"]["status"], tests["imu_mismatch"]["status"]) == (compass, imu)
    assert tests["compass"]["value"] == pytest.approx(change, abs=0.01 if fmt == "bin" else 1e-9)
    # the growth follows the throttle: named as motor interference when the change is a problem
    assert ("follows the throttle" in tests["compass"]["summary"]) == (compass != "pass")
    assert bool(tests["compass"]["evidence"]) == (compass != "pass")
    assert bool(tests["imu_mismatch"]["evidence"]) == (imu != "pass")
    _, acc_bias, _ = CASES[case]
    assert tests["imu_mismatch"]["value"] == pytest.approx(acc_bias, abs=0.01)
