"""Anomaly runs end to end: emulator -> real UDP -> MAVLink adapter -> UavAnomaly -> report.

Every bundled fault scenario must be detected by the alert its fault should cause, and
the clean flight must raise no warning or critical alert.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from pymavlink import mavutil

from qsframework.sim.vehicle.runs import RunConfig, run_scenario, score
from qsframework.recording import Recording

from ..conftest import qsf_cmd

FAST = RunConfig(speedup=40)


@pytest.mark.parametrize("name", ["clean", "battery_sag", "gps_loss", "gps_glitch", "vibration",
                                  "motor_failure", "fence_breach", "link_loss", "multi"])
def test_scenario_faults_are_detected_without_false_alarms(name, tmp_path):
    report = run_scenario(name, tmp_path, config=FAST)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(report["faults"]) == len(truth["faults"]) == (0 if name == "clean" else report["detected"])
    assert report["missed"] == 0 and report["false_positives"] == []
    assert report["in_time"] == len(report["faults"])  # within 1 s (+ the battery/link timer)
    for f in report["faults"]:
        assert f["detected"] and f["in_time"] and -10 <= f["latency_s"] <= f["target_s"], f
    assert json.loads((tmp_path / "report.json").read_text()) == report
    rec = Recording(tmp_path / "recording")
    assert {"position", "heartbeat", "battery", "gps"} <= set(rec.kinds)
    assert report["events"] == rec.rows()


def test_switching_the_detector_off_misses_the_fault(tmp_path):
    report = run_scenario("gps_loss", tmp_path, config=RunConfig(speedup=40, overrides={"gps": "false", "ekf": "false"}))
    assert report["missed"] == 1 and not report["faults"][0]["detected"]


def test_scoring_rules():
    truth = {"mission_s": 100, "faults": [{"name": "gps_loss", "param": "SIM_GPS1_ENABLE", "value": 0,
                                           "onset_s": 50, "end_s": 60}]}
    epoch = 0
    at = lambda s: int((s + 20) * 1e9)  # noqa: E731 - mission s -> vehicle clock ns (boot offset 20 s)
    alerts = [
        {"name": "vibration_high", "severity": "warning", "ts_event": at(10), "text": "x"},  # false positive
        {"name": "ekf_variance", "severity": "critical", "ts_event": at(51), "text": "x"},  # side effect
        {"name": "gps_loss", "severity": "critical", "ts_event": at(52.5), "text": "x"},  # the detection
        {"name": "link_restored", "severity": "info", "ts_event": at(95), "text": "x"},  # not counted
    ]
    r = score(truth, alerts, epoch_ns=epoch)
    assert r["faults"][0]["detected"] and r["faults"][0]["latency_s"] == 2.5
    assert r["faults"][0]["side_effects"] == ["ekf_variance"]
    assert [a["name"] for a in r["false_positives"]] == ["vibration_high"]


def test_cli_emulate_and_scenario_run(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}", dialect="ardupilotmega")
    r = subprocess.run([*qsf_cmd(), "sitl", "emulate", "--to", f"udp:127.0.0.1:{port}", "--scenario", "clean",
                        "--duration", "20", "--speedup", "20", "--truth", str(tmp_path / "t.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    types = set()
    while (m := conn.recv_match(blocking=False)) is not None:
        types.add(m.get_type())
    conn.close()
    assert {"HEARTBEAT", "GLOBAL_POSITION_INT", "ATTITUDE", "GPS_RAW_INT", "SYS_STATUS"} <= types
    assert json.loads((tmp_path / "t.json").read_text())["faults"] == []
    r = subprocess.run([*qsf_cmd(), "sitl", "scenario", "run", "vibration", "--out", str(tmp_path / "v"),
                        "--speedup", "40"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "1 of 1 faults detected (1 in time), 0 false positives" in r.stdout
    for args in (["no_such"], [], ["clean", "--all"], ["clean", "-p", "nope=1"]):
        bad = subprocess.run([*qsf_cmd(), "sitl", "scenario", "run", *args, "--out", str(tmp_path / "n")],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, (args, bad.stderr)


def test_real_sitl_tier_runs_against_a_live_link(tmp_path):
    """`qsf sitl run` needs a real SITL for fault injection; here the emulator stands in for
    the vehicle on the link, which checks the recording, detection and report path."""
    import threading

    from qsframework.sim.vehicle.runs import run_real_sitl
    from qsframework.sim.vehicle import Scenario, emulate

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flight = threading.Thread(target=emulate, args=(Scenario.load("clean"),),
                              kwargs={"to": f"udp:127.0.0.1:{port}", "speedup": 10, "duration": 40}, daemon=True)
    threading.Timer(0.5, flight.start).start()
    report = run_real_sitl(f"udpin:127.0.0.1:{port}", tmp_path, duration=5.0)
    flight.join()
    assert report["events"] > 500 and report["faults"] == []
    assert json.loads((tmp_path / "report.json").read_text())["events"] == report["events"]
    assert Recording(tmp_path / "recording").rows(["position"]) > 100
