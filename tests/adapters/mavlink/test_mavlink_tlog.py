"""Telemetry logs: the fast tlog reader against pymavlink's own parser, damage, units, CLI."""

from __future__ import annotations

import subprocess

import pyarrow as pa
import pytest
from pymavlink import mavutil

from qsframework.adapters.mavlink.decode import TelemetryDecoder, decode_messages
from qsframework.adapters.mavlink.tlog import TlogStats, read_tlog
from qsframework.errors import UserError
from qsframework.recording import Recording

from ...conftest import qsf_cmd
from ...fakes.tlog_gen import START_US, write_tlog


def by_kind(pairs) -> dict[str, pa.Table]:
    out: dict[str, list[pa.Table]] = {}
    for kind, table in pairs:
        out.setdefault(kind, []).append(table)
    return {k: pa.concat_tables(v).sort_by("seq") for k, v in out.items()}


def reference(path, system_id=1, component_id=1) -> dict[str, pa.Table]:
    """pymavlink reads the log; the vehicle's messages go through the live decoder."""
    conn = mavutil.mavlink_connection(str(path), dialect="ardupilotmega")
    msgs, ts = [], []
    while (m := conn.recv_match(blocking=False)) is not None:
        if m.get_type() == "BAD_DATA" or (m.get_srcSystem(), m.get_srcComponent()) != (system_id, component_id):
            continue
        msgs.append(m)
        ts.append(round(m._timestamp * 1e6) * 1000)
    conn.close()
    return by_kind(decode_messages(TelemetryDecoder(), msgs, ts))


def test_fast_reader_gives_exactly_what_pymavlink_gives(tmp_path):
    path = write_tlog(tmp_path / "flight.tlog", 120)
    stats = TlogStats()
    fast = by_kind(read_tlog(path, stats=stats, chunk=1000))  # several chunks
    ref = reference(path)
    assert sorted(fast) == sorted(ref) == sorted(
        ["position", "gps", "battery", "attitude", "vibration", "ekf", "heartbeat", "statustext", "fence"])
    for kind in fast:
        assert fast[kind].equals(ref[kind]), kind
    assert (stats.system_id, stats.component_id) == (1, 1)
    assert stats.foreign == 240 and stats.other == 120 and stats.skipped_bytes == 0


def test_units_sentinels_and_the_ground_station(tmp_path):
    path = write_tlog(tmp_path / "flight.tlog", 60)
    t = by_kind(read_tlog(path))
    pos = t["position"].to_pylist()
    assert pos[0]["ts_event"] == (START_US + 100_000) * 1000 and pos[0]["key"] == "1"
    assert pos[0]["lat"] == 47.3977 and pos[0]["lon"] == 8.5455 and pos[0]["relative_alt"] == 20.0
    assert pos[0]["heading"] is None and pos[1]["heading"] == 90.0  # 65535 = unknown
    gps = t["gps"].to_pylist()
    assert gps[0]["satellites"] is None and gps[1]["satellites"] == 12 and gps[0]["hdop"] is None
    assert gps[1]["hdop"] == 0.8 and gps[0]["ground_speed"] == 5.0
    batt = t["battery"].to_pylist()
    status = [b for b in batt if b["msg"] == "BATTERY_STATUS"]
    assert status[0]["voltage"] == pytest.approx(12.3) and status[0]["current"] == 15.0
    assert any(b["current"] is None for b in batt if b["msg"] == "SYS_STATUS")
    hb = t["heartbeat"].to_pylist()
    assert len(hb) == 60  # the ground station's heartbeats are not the vehicle's
    assert (hb[0]["armed"], hb[0]["mode"]) == (False, "STABILIZE") and (hb[-1]["armed"], hb[-1]["mode"]) == (True, "AUTO")
    assert max(a["roll"] for a in t["attitude"].to_pylist()) < 1  # the GCS's roll of 9 rad is not there
    assert t["statustext"].column("text")[1].as_py() == "Reached waypoint #1"


def test_clipping_increments_survive_a_reboot(tmp_path):
    vib = by_kind(read_tlog(write_tlog(tmp_path / "f.tlog", 40)))["vibration"].to_pylist()
    inc2 = [v["clip_inc_2"] for v in vib]
    counts = [v["clipping_2"] for v in vib]
    reboot = counts.index(1)
    assert counts[reboot - 1] == 5 and inc2[reboot] == 1  # went down: the new count is the increment
    assert all(v["clip_inc_0"] >= 0 for v in vib) and sum(v["clip_inc_0"] for v in vib) == vib[-1]["clipping_0"]


def test_damaged_log_keeps_every_intact_packet(tmp_path):
    clean = by_kind(read_tlog(write_tlog(tmp_path / "clean.tlog", 60)))
    stats = TlogStats()
    damaged = by_kind(read_tlog(write_tlog(tmp_path / "bad.tlog", 60, damage=True), stats=stats))
    assert stats.skipped_bytes > 0
    lost = 0
    for kind, table in clean.items():
        keep = set(zip(damaged[kind].column("ts_event").to_pylist(), damaged[kind].column("seq").to_pylist()))
        # a lost vibration message changes the next clipping increment: compare the rest
        drop = ["seq", "clip_inc_0", "clip_inc_1", "clip_inc_2"] if kind == "vibration" else ["seq"]
        got = damaged[kind].drop(drop).to_pylist()
        want = clean[kind].drop(drop).to_pylist()
        assert all(row in want for row in got), kind  # nothing invented
        lost += len(want) - len(got)
        assert len(keep) == len(got)
    assert 0 < lost <= 2 * (clean["position"].num_rows * 3 // 89 + 5)  # only the corrupted ones


def test_not_a_tlog_and_empty_files_are_user_errors(tmp_path):
    junk = tmp_path / "x.tlog"
    junk.write_bytes(bytes(range(256)) * 100)
    with pytest.raises(UserError, match="no vehicle telemetry"):
        list(read_tlog(junk))
    (tmp_path / "e.tlog").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        list(read_tlog(tmp_path / "e.tlog"))


def test_cli_import_tlog_then_backtest(tmp_path):
    path = write_tlog(tmp_path / "flight.tlog", 120)
    out = tmp_path / "rec"
    r = subprocess.run([*qsf_cmd(), "recordings", "import", "tlog", str(path), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "system 1 component 1" in r.stdout
    rec = Recording(out)
    assert set(rec.kinds) >= {"position", "gps", "battery", "heartbeat"}
    assert rec.rows(["position"]) == 1200
    again = subprocess.run([*qsf_cmd(), "recordings", "import", "tlog", str(path), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = subprocess.run([*qsf_cmd(), "recordings", "import", "tlog", str(tmp_path / "nope.tlog"), "--out",
                          str(tmp_path / "r3")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
