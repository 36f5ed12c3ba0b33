"""``qsf uav review``: on the emulator's flights with known faults (tlog, and the same flights
as DataFlash logs) each fault makes its test fail or warn at the time truth.json gives, the
others pass; measured values agree with an independent pass over the log with pymavlink;
the CLI's bad-input lines, exit codes and the recording it leaves (none unless asked)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsframework.adapters.mavlink.review.review import review
from qsframework.adapters.mavlink.review.series import runs
from qsframework.errors import UserError
from qsframework.recording import Recording

from ...conftest import qsf_cmd
from ...fakes.review_logs import (
    START_US,
    emulator_tlog,
    motor_outputs,
    tlog_with_extras,
    vehicle_messages,
    write_dataflash_from_tlog,
)

SCENARIOS = ["clean", "battery_sag", "vibration", "gps_glitch", "gps_loss", "link_loss", "fence_breach", "motor_failure"]
# the test each injected fault must fail
FAILS = {"battery_low": "battery", "vibration_high": "vibration", "gps_glitch": "gps_glitch", "gps_loss": "gps",
         "link_loss": "link", "fence_breach": "fence", "motor_failure": "crash"}
# what else each scenario's fault shows, as the vehicle reacts (status by test)
SIDE_EFFECTS = {
    "battery_sag": {"battery_sag": "warn"},
    "vibration": {"clipping": "fail"},
    "gps_glitch": {"ekf": "warn"},
    "gps_loss": {"ekf": "fail"},
    "motor_failure": {"vibration": "warn", "clipping": "fail", "motor_balance": "warn", "thrust": "warn"},
}
# tests without data: the emulator's tlog has no servo outputs, supply voltage or parameters;
# a DataFlash log has no telemetry link; neither has IMU or compass samples
NO_DATA = {"tlog": {"vcc", "motor_balance", "thrust", "parameters", "compass", "imu_mismatch"},
           "dataflash": {"link", "compass", "imu_mismatch"}}
WITH_SERVOS = {"motor_balance", "thrust"}
EVIDENCE_WINDOW = (-1.5, 5.0)  # seconds around the truth's onset in which the first evidence lies


@pytest.fixture(scope="module")
def flights(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("flights")
    return {name: emulator_tlog(name, out) for name in SCENARIOS}


def _dataflash(tlog: Path, truth: dict, out: Path) -> Path:
    from qsframework.sim.vehicle import Scenario

    radius = Scenario.load(truth["scenario"]).fence.radius_m
    params = {"FENCE_ENABLE": 1, "FENCE_RADIUS": radius, "BATT_LOW_VOLT": 10.5, "ARMING_CHECK": 1}
    return write_dataflash_from_tlog(tlog, out, params=params, motors=motor_outputs(truth), vcc=lambda t: 5.1)


@pytest.fixture(scope="module")
def reviews(flights, tmp_path_factory) -> dict[tuple[str, str], dict]:
    out = tmp_path_factory.mktemp("reviews")
    docs = {}
    for name, (tlog, truth) in flights.items():
        docs[name, "tlog"] = review(tlog, out=out / f"{name}-tlog")
        docs[name, "dataflash"] = review(_dataflash(tlog, truth, out / f"{name}.bin"), out=out / f"{name}-bin")
    return docs


def _tests(doc: dict) -> dict[str, dict]:
    return {t["name"]: t for t in doc["tests"]}


def test_a_log_without_gps_time_is_reviewed_from_its_boot(flights, tmp_path):
    """An indoor flight's log has no GPS time: its times count from boot. It is reviewed (the
    import alone refuses it), as if it booted at the validity floor, and says so; every test
    that needs no GPS gives what the same flight with GPS gives, at the same times."""
    tlog, truth = flights["vibration"]
    params = {"FENCE_ENABLE": 0, "BATT_LOW_VOLT": 10.5, "ARMING_CHECK": 1}
    log = write_dataflash_from_tlog(tlog, tmp_path / "indoor.bin", params=params, motors=motor_outputs(truth),
                                    vcc=lambda t: 5.1, gps=False)
    doc = review(log, out=tmp_path / "review")
    assert doc["log"]["boot_clock"] is True
    assert doc["log"]["start"].startswith("2000-01-01T00:")
    with_gps = review(write_dataflash_from_tlog(tlog, tmp_path / "outdoor.bin", params=params,
                                                motors=motor_outputs(truth), vcc=lambda t: 5.1), out=tmp_path / "r2")
    assert with_gps["log"]["boot_clock"] is False
    indoor, outdoor = _tests(doc), _tests(with_gps)
    assert indoor["gps"]["status"] == indoor["gps_glitch"]["status"] == "na"
    assert outdoor["vibration"]["status"] == "fail"
    for name in set(indoor) - {"gps", "gps_glitch", "ekf", "fence"}:  # (EKF and fence lean on the GPS)
        assert indoor[name]["status"] == outdoor[name]["status"], name
        assert [e["start"]["t_s"] for e in indoor[name]["evidence"]] == \
            [e["start"]["t_s"] for e in outdoor[name]["evidence"]], name
    assert [a["name"] for a in doc["alerts"] if not a["name"].startswith("gps")] == \
        [a["name"] for a in with_gps["alerts"] if not a["name"].startswith("gps")]


@pytest.mark.parametrize("fmt", ["tlog", "dataflash"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_each_fault_fails_its_test_and_the_others_pass(name, fmt, flights, reviews):
    doc, truth = reviews[name, fmt], flights[name][1]
    tests = _tests(doc)
    expected = {t: "pass" for t in tests} | dict.fromkeys(NO_DATA[fmt], "na")
    for fault in truth["faults"]:
        check = FAILS[fault["name"]]
        expected[check] = "na" if check in NO_DATA[fmt] else "fail"
    for check, status in SIDE_EFFECTS.get(name, {}).items():
        if check not in WITH_SERVOS or fmt == "dataflash":
            expected[check] = status
    assert {t: tests[t]["status"] for t in tests} == expected
    assert doc["verdict"] == ("pass" if name == "clean" or (name == "link_loss" and fmt == "dataflash") else "fail")
    for t in tests.values():
        assert t["summary"] and "\n" not in t["summary"]
        assert bool(t["evidence"]) == (t["status"] in ("warn", "fail") and t["name"] not in ("vcc", "parameters"))
        if t["status"] == "na":
            assert "no " in t["summary"] or "has no" in t["summary"]  # says which data is missing
    for fault in truth["faults"]:
        check = tests[FAILS[fault["name"]]]
        if check["status"] == "na":
            continue
        first = check["evidence"][0]["start"]["t_s"]
        lo, hi = EVIDENCE_WINDOW
        assert fault["onset_s"] + lo <= first <= fault["onset_s"] + hi, (fault, check["evidence"][0])


def test_evidence_spans_the_fault(flights, reviews):
    """The stretches the tests show last as long as the injected fault did."""
    for name, check, slack in (("gps_loss", "gps", 0.5), ("link_loss", "link", 1.5), ("vibration", "vibration", 1.0)):
        fault = flights[name][1]["faults"][0]
        evidence = _tests(reviews[name, "tlog"])[check]["evidence"]
        span = evidence[-1]["end"]["t_s"] - evidence[0]["start"]["t_s"]
        assert abs(span - (fault["end_s"] - fault["onset_s"])) <= slack, (name, evidence)


def _independent(tlog: Path) -> dict[str, float]:
    """The figures the review reports, computed from pymavlink's messages in pure Python."""
    volts, vibe, ekf, fixes, times = [], [], [], [], []
    telemetry = {"GLOBAL_POSITION_INT", "GPS_RAW_INT", "SYS_STATUS", "BATTERY_STATUS", "ATTITUDE", "VIBRATION",
                 "EKF_STATUS_REPORT", "HEARTBEAT", "STATUSTEXT", "FENCE_STATUS"}
    for us, m in vehicle_messages(tlog):
        kind = m.get_type()
        if kind in telemetry:
            times.append(us)
        if kind == "SYS_STATUS":
            volts.append(m.voltage_battery / 1000)
        elif kind == "BATTERY_STATUS":
            volts.append(m.voltages[0] / 1000)
        elif kind == "VIBRATION":
            vibe.append(max(m.vibration_x, m.vibration_y, m.vibration_z))
        elif kind == "EKF_STATUS_REPORT":
            ekf.append(max(m.velocity_variance, m.pos_horiz_variance, m.pos_vert_variance, m.compass_variance))
        elif kind == "GPS_RAW_INT" and m.fix_type >= 2:
            fixes.append((us, math.radians(m.lat / 1e7), math.radians(m.lon / 1e7)))
    speeds = []
    for (t1, la1, lo1), (t2, la2, lo2) in zip(fixes, fixes[1:]):
        a = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
        speeds.append(2 * 6_371_000.0 * math.asin(math.sqrt(a)) / ((t2 - t1) / 1e6))
    gaps = [(b - a) / 1e6 for a, b in zip(times, times[1:])]
    return {"battery": min(volts), "vibration": max(vibe), "ekf": max(ekf), "gps_glitch": max(speeds),
            "silence": max(gaps), "duration": (times[-1] - times[0]) / 1e6}


@pytest.mark.parametrize("name", ["clean", "battery_sag", "gps_glitch", "link_loss"])
def test_values_agree_with_an_independent_pass(name, flights, reviews):
    doc = reviews[name, "tlog"]
    tests, ref = _tests(doc), _independent(flights[name][0])
    for check in ("battery", "vibration", "ekf", "gps_glitch"):
        assert tests[check]["value"] == pytest.approx(ref[check], rel=1e-6, abs=1e-4), check
    if tests["link"]["status"] != "pass":
        assert tests["link"]["value"] == pytest.approx(ref["silence"], abs=1e-6)
    assert doc["log"]["duration_s"] == pytest.approx(ref["duration"], abs=1e-3)
    assert doc["log"]["start"] == "2026-01-05T00:00:00Z" and START_US == 1_767_571_200_000_000


def test_alerts_are_listed_and_attributed(reviews):
    doc = reviews["gps_loss", "tlog"]
    names = {a["name"] for a in doc["alerts"]}
    assert "gps_loss" in names
    assert _tests(doc)["gps"]["alerts"].get("gps_loss", 0) >= 1
    assert reviews["clean", "tlog"]["alerts"] == [] and reviews["clean", "dataflash"]["alerts"] == []


def test_the_logs_parameters_set_the_thresholds(flights, tmp_path):
    """BATT_LOW_VOLT in the log (PARAM_VALUE) is the threshold the battery test and UavAnomaly use;
    a switched-off safety check warns; the board supply dipping under 4.6 V fails VCC."""
    tlog, truth = flights["clean"]
    lowest = _independent(tlog)["battery"]
    path = tlog_with_extras(tlog, tmp_path / "params.tlog", params={"BATT_LOW_VOLT": lowest + 0.05, "ARMING_CHECK": 0},
                            motors=motor_outputs(truth), vcc=lambda t: 4.4 if 50 <= t < 52 else 5.05)
    doc = review(path, out=tmp_path / "out")
    tests = _tests(doc)
    assert tests["battery"]["status"] in ("warn", "fail")
    assert tests["battery"]["thresholds"]["BATT_LOW_VOLT"] == pytest.approx(lowest + 0.05)
    assert doc["parameters"]["batt_low_volt"] == f"{lowest + 0.05:g}"
    assert tests["parameters"]["status"] == "warn" and "ARMING_CHECK 0" in tests["parameters"]["summary"]
    assert tests["vcc"]["status"] == "fail" and tests["vcc"]["value"] == pytest.approx(4.4)
    assert 50 <= tests["vcc"]["evidence"][0]["start"]["t_s"] < 50.5
    assert tests["motor_balance"]["status"] == "pass" and tests["thrust"]["status"] == "pass"


def test_high_throttle_without_climbing_is_underpowered(flights, tmp_path):
    """LogAnalyzer's Thrust test: motors at 80 % for 10 s of level cruise (no climb) fail it;
    the motors stay balanced."""
    tlog, truth = flights["clean"]
    normal = motor_outputs(truth)

    def motors(t: float, armed: bool) -> list[int]:
        return [1800] * 4 if armed and 40 <= t < 50 else normal(t, armed)

    doc = review(tlog_with_extras(tlog, tmp_path / "heavy.tlog", motors=motors), out=tmp_path / "out")
    thrust = _tests(doc)["thrust"]
    assert thrust["status"] == "fail" and "without climbing" in thrust["summary"], thrust
    [stretch] = thrust["evidence"]
    assert 40 <= stretch["start"]["t_s"] < 40.2 and 49.8 < stretch["end"]["t_s"] < 50
    assert _tests(doc)["motor_balance"]["status"] == "pass"


def test_a_recording_reviews_like_its_log(flights, tmp_path):
    tlog = flights["battery_sag"][0]
    direct = review(tlog, out=tmp_path / "a", keep=tmp_path / "rec")
    assert Recording(tmp_path / "rec").rows() == sum(direct["log"]["events"].values())
    again = review(tmp_path / "rec", out=tmp_path / "b")
    assert [(t["name"], t["status"], t["value"]) for t in again["tests"]] == \
        [(t["name"], t["status"], t["value"]) for t in direct["tests"]]
    quick = review(tmp_path / "rec", out=tmp_path / "d", detectors=False)
    assert quick["alerts"] == [] and direct["alerts"]
    assert [(t["name"], t["status"]) for t in quick["tests"]] == [(t["name"], t["status"]) for t in direct["tests"]]
    with pytest.raises(UserError, match="recording already"):
        review(tmp_path / "rec", out=tmp_path / "c", keep=tmp_path / "rec2")


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 10**9)), min_size=1, max_size=60))
def test_runs_are_the_stretches_of_a_condition(rows):
    ts, t = [], 0
    for _, step in rows:
        t += step
        ts.append(t)
    flags = [f for f, _ in rows]
    frame = pl.DataFrame({"ts_event": ts, "flag": flags, "v": list(range(len(ts)))})
    got = runs(frame, pl.col("flag"), value=pl.col("v")).select("start", "last", "end", "rows", "worst").rows()
    expected, i = [], 0
    while i < len(ts):
        if not flags[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(ts) and flags[j + 1]:
            j += 1
        expected.append((ts[i], ts[j], ts[j + 1] if j + 1 < len(ts) else ts[j], j - i + 1, float(j)))
        i = j + 1
    assert got == expected


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*qsf_cmd(), "uav", "review", *args], capture_output=True, text=True, timeout=300, **kw)


def test_cli_writes_the_review_and_leaves_no_recording(flights, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "COLUMNS": "160"}
    r = _run([str(flights["gps_loss"][0]), "--out", str(tmp_path / "out")], env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "review.json").read_text())
    assert doc["schema"] == 1 and doc["verdict"] == "fail"
    assert "GPS quality" in r.stdout and "FAIL" in r.stdout and "verdict: FAIL" in r.stdout
    assert list(tmp.iterdir()) == []  # the imported recording is gone
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["review.json"]
    code = _run([str(flights["gps_loss"][0]), "--out", str(tmp_path / "ci"), "--fail-on", "fail"], env=env)
    assert code.returncode == 1, code.stderr
    clean = _run([str(flights["clean"][0]), "--out", str(tmp_path / "ci2"), "--fail-on", "warn"], env=env)
    assert clean.returncode == 0, clean.stderr


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty.tlog"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.tlog"
    garbage.write_bytes(bytes(range(256)) * 64)
    fake_bin = tmp_path / "noise.bin"
    fake_bin.write_bytes(b"\x00\x01" * 500)
    not_rec = tmp_path / "dir"
    not_rec.mkdir()
    cases = {
        str(tmp_path / "missing.tlog"): "no such file",
        str(empty): "is empty",
        str(garbage): "no vehicle telemetry",
        str(fake_bin): "not an ArduPilot DataFlash log",
        str(not_rec): "is not a recording",
    }
    for path, words in cases.items():
        r = _run([path, "--out", str(tmp_path / "out")])
        assert r.returncode == 2, (path, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qsf: error: ") and words in lines[0], (path, r.stderr)
    r = _run([str(garbage), "--out", str(tmp_path / "out"), "-p", "nope=1"])
    assert r.returncode == 2 and "unknown parameter 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
