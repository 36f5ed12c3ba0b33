"""SITL emulator commands: a scenario with a fault ends cleanly, a second scenario run never
joins the first one's recording, and the emulator's recordings say what they are."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from qsframework.recording import Recording

from ..conftest import run_qsf as qsf


def test_emulate_a_scenario_with_a_fault_ends_with_its_summary(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:  # somewhere for the stream to go
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        truth = tmp_path / "truth.json"
        r = qsf("sitl", "emulate", "--to", f"udp:127.0.0.1:{port}", "--scenario", "gps_loss", "--speedup", 50,
                "--duration", 70, "--truth", truth)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    onset = json.loads(truth.read_text())["faults"][0]
    assert onset["name"] == "gps_loss"
    assert f"gps_loss at {onset['onset_s']:.1f} s" in r.stdout and f"truth in {truth}" in r.stdout


def test_a_second_scenario_run_is_refused_and_the_recording_is_labelled_a_flight(tmp_path):
    out = tmp_path / "gps_loss"
    first = qsf("sitl", "scenario", "run", "gps_loss", "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (out / "report.json").read_text()
    rows = Recording(out / "recording").rows()
    assert json.loads(report)["detected"] == 1 and rows > 0
    again = qsf("sitl", "scenario", "run", "gps_loss", "--out", out)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines() == [f"qsf: error: {out} is not empty: write into a new directory"]
    assert Recording(out / "recording").rows() == rows and (out / "report.json").read_text() == report
    # --all checks every target before it flies anything
    every = qsf("sitl", "scenario", "run", "--all", "--out", tmp_path)
    assert every.returncode == 2 and len(every.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gps_loss"]
    info = qsf("recordings", "info", out / "recording")
    assert info.returncode == 0, info.stderr
    head = info.stdout.splitlines()[0]
    assert head.endswith("SYNTHETIC (simulated flight: SITL emulator, scenario gps_loss)") and "market" not in head


def test_sitl_run_refuses_a_used_out(tmp_path: Path):
    out = tmp_path / "real"
    (out / "recording").mkdir(parents=True)
    (out / "recording" / "recording.json").write_text("{}")
    r = qsf("sitl", "run", "--connect", "tcp:127.0.0.1:1", "--out", out, "--duration", 1)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"qsf: error: {out} is not empty: write into a new directory"]
    assert sorted(p.name for p in out.rglob("*")) == ["recording", "recording.json"]
