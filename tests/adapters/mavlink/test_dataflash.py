"""DataFlash (.bin) logs: units, counts against pymavlink's DFReader, heartbeats at changes,
clipping increments, GPS-derived time, damage, bad files, import and a backtest."""

from __future__ import annotations

import math
from collections import Counter

import pyarrow as pa
import pytest
from pymavlink.DFReader import DFReader_binary
from qsframework.adapters.mavlink.dataflash import DataflashStats, import_dataflash, read_dataflash

from qsframework.backtest import run_backtest
from qsframework.errors import UserError
from qsframework.loader import load_strategy
from qsframework.recording import Recording

from ...conftest import ROOT
from ...fakes.dataflash_gen import (
    AUTO_AGAIN_S,
    CLIP_RESET_S,
    DISARM_S,
    GPS_LOSS,
    START_US,
    T0_US,
    attitude_deg,
    clip_count,
    curr_volts,
    modes_expected,
    unix_us,
    write_dataflash,
)

KIND_OF = {"POS": "position", "GPS": "gps", "BAT": "battery", "ATT": "attitude", "VIBE": "vibration",
           "XKF4": "ekf", "NKF4": "ekf", "MSG": "statustext"}
INSTANCE = {"GPS": "I", "VIBE": "IMU", "XKF4": "C"}
SEC = 1_000_000_000


def by_kind(pairs) -> dict[str, pa.Table]:
    out: dict[str, list[pa.Table]] = {}
    for kind, table in pairs:
        out.setdefault(kind, []).append(table)
    return {k: pa.concat_tables(v).sort_by("seq") for k, v in out.items()}


def reference_counts(path) -> tuple[Counter, list[float]]:
    """Events per kind (but heartbeat) as DFReader yields the messages, instance 0, and their times."""
    r = DFReader_binary(str(path))
    counts: Counter = Counter()
    times = []
    while (m := r.recv_msg()) is not None:
        name = m.get_type()
        if name not in KIND_OF:
            continue
        inst = INSTANCE.get(name)
        if inst in m._fieldnames and getattr(m, inst) != 0:
            continue
        counts[KIND_OF[name]] += 1
        times.append(m._timestamp)
    r.close()
    return counts, times


@pytest.fixture(scope="module")
def flight(tmp_path_factory):
    path = write_dataflash(tmp_path_factory.mktemp("df") / "flight.bin", 120)
    stats = DataflashStats()
    return path, by_kind(read_dataflash(path, stats=stats, chunk=1000)), stats  # several chunks


def test_values_and_units(flight):
    _, t, stats = flight
    att = t["attitude"].to_pylist()
    for k in (0, 1, 37, 1199):
        roll, pitch, yaw = attitude_deg(k)
        assert att[k]["roll"] == pytest.approx(math.radians(roll), abs=1e-12)
        assert att[k]["pitch"] == pytest.approx(math.radians(pitch), abs=1e-12)
        assert att[k]["yaw"] == pytest.approx(math.radians(yaw), abs=1e-12)
    assert att[0]["roll"] == pytest.approx(-10 * math.pi / 180) and att[0]["yaw"] == pytest.approx(math.pi / 2)
    assert att[0]["rollspeed"] is None and att[0]["key"] == "1" and att[0]["source"] == "dataflash"
    pos = t["position"].to_pylist()
    assert pos[0]["lat"] == 473977000 / 1e7 and pos[0]["lon"] == 85455000 / 1e7  # degE7 -> degrees
    assert pos[10]["lat"] == 473977100 / 1e7 and pos[10]["alt"] == 502.5 and pos[10]["relative_alt"] == 22.5
    assert pos[0]["vx"] is None and pos[0]["heading"] is None
    gps = t["gps"].to_pylist()
    assert (gps[0]["fix_type"], gps[0]["satellites"], gps[0]["hdop"]) == (3, 14, 0.8)  # receiver 0 (1 has 15)
    assert gps[0]["alt"] == 512.34 and gps[0]["ground_speed"] == 5.5 and gps[0]["course"] == 270.0
    assert gps[0]["lat"] == 47.3977 and gps[0]["vdop"] is None
    lost = [g for g in gps if g["fix_type"] == 1]
    assert len(lost) == (GPS_LOSS[1] - GPS_LOSS[0]) * 5 and all(g["satellites"] == 4 for g in lost)
    assert lost[0]["ts_event"] == START_US * 1000 + int(GPS_LOSS[0] * SEC)
    bat = t["battery"].to_pylist()
    main = [b for b in bat if b["battery_id"] == 0]
    assert len(main) == 120 and sum(b["battery_id"] == 1 for b in bat) == 24 and {b["msg"] for b in bat} == {"BAT"}
    assert (main[0]["voltage"], main[0]["current"], main[0]["remaining"]) == (16.5, 12.5, 100.0)
    assert (main[-1]["voltage"], main[-1]["remaining"]) == (16.5 - 119 * 0.03125, 41.0)
    ekf = t["ekf"].to_pylist()
    assert len(ekf) == 240 and {e["compass_variance"] for e in ekf} == {0.3}  # core 0 only (core 1: 1.3)
    assert (ekf[0]["velocity_variance"], ekf[0]["pos_horiz_variance"], ekf[0]["pos_vert_variance"]) == (0.1, 0.2, 0.05)
    assert ekf[0]["terrain_alt_variance"] == 0.0 and ekf[0]["flags"] == 0x1FF
    text = t["statustext"].to_pylist()
    assert [s["text"] for s in text] == ["ArduCopter V4.5.7 (2a3dc4b7)"] + [f"Reached waypoint #{i}" for i in range(4)]
    assert {s["severity"] for s in text} == {6}
    assert stats.system_id == 1 and stats.other_instance == 600 + 240 + 240  # GPS 1, IMU 1, EKF core 1


def test_counts_match_dfreader_and_time_is_gps_time(flight):
    path, t, stats = flight
    counts, times = reference_counts(path)
    got = Counter({k: v.num_rows for k, v in t.items() if k != "heartbeat"})
    assert got == counts and counts["attitude"] == 1200 and counts["gps"] == 600
    assert stats.events == sum(v.num_rows for v in t.values()) == sum(counts.values()) + 7
    every = pa.concat_tables([v.select(["seq", "ts_event", "ts_recv"]) for v in t.values()]).sort_by("seq")
    assert every.column("seq").to_pylist() == list(range(stats.events))
    ts = every.column("ts_event").to_pylist()
    assert ts == every.column("ts_recv").to_pylist() and ts == sorted(ts)
    assert sorted(ts) == sorted([round(x * 1e6) * 1000 for x in times] + t["heartbeat"].column("ts_event").to_pylist())
    att = t["attitude"].column("ts_event").to_pylist()
    assert att == [unix_us(T0_US + k * 100_000) * 1000 for k in range(1200)]
    assert att[0] == START_US * 1000  # the first GPS fix's GWk/GMS: 2026-01-05T00:00:00Z
    assert (stats.first_ts, stats.last_ts) == (ts[0], ts[-1])


def test_heartbeats_at_arming_and_mode_changes(flight):
    _, t, _ = flight
    hb = t["heartbeat"].to_pylist()
    got = [((h["ts_event"] - START_US * 1000) / SEC, h["armed"], h["mode"]) for h in hb]
    assert got == [(pytest.approx(s), a, m) for s, a, m in modes_expected()]
    assert not any(abs(s - AUTO_AGAIN_S) < 0.01 for s, _, _ in got)  # MODE AUTO again: no change
    assert [h["custom_mode"] for h in hb] == [0, 0, 5, 3, 6, 6, 0]
    assert [(h["base_mode"], h["system_status"]) for h in hb] == [(1, 3)] + [(129, 4)] * 4 + [(1, 3)] * 2
    assert {(h["vehicle_type"], h["autopilot"]) for h in hb} == {(2, 3)}


def test_clipping_increments_and_a_counter_going_down(flight):
    _, t, _ = flight
    vib = t["vibration"].to_pylist()
    assert [v["clipping_0"] for v in vib] == [clip_count(k) for k in range(0, 1200, 5)]
    assert {v["clipping_1"] for v in vib} == {v["clip_inc_2"] for v in vib} == {0}  # one counter in new logs
    assert (vib[0]["vibe_x"], vib[0]["vibe_y"], vib[0]["vibe_z"]) == (10.5, 11.25, 20.0)  # IMU 0 (IMU 1: 11.5)
    inc = [v["clip_inc_0"] for v in vib]
    reset = CLIP_RESET_S * 2
    assert vib[reset - 1]["clipping_0"] == 29 and vib[reset]["clipping_0"] == 1 and inc[reset] == 1
    assert inc[0] == 0 and inc[4] == 1 and inc[3] == 0 and all(i >= 0 for i in inc)
    assert sum(inc[:reset]) == vib[reset - 1]["clipping_0"] and sum(inc[reset:]) == vib[-1]["clipping_0"]


def test_older_log_layouts(tmp_path):
    path = write_dataflash(tmp_path / "old.bin", 60, legacy=True, sysid=3)
    stats = DataflashStats()
    t = by_kind(read_dataflash(path, stats=stats))
    assert stats.system_id == 3 and {r["key"] for k in t.values() for r in k.select(["key"]).to_pylist()} == {"3"}
    vib = t["vibration"].to_pylist()
    assert [v["clipping_1"] for v in vib[:6]] == [0, 0, 0, 0, 2, 2] and vib[4]["clip_inc_1"] == 2
    ekf = t["ekf"].to_pylist()  # EKF2's NKF4
    assert len(ekf) == 120 and ekf[0]["flags"] == 0x1FF and ekf[0]["compass_variance"] == 0.3
    assert {b["remaining"] for b in t["battery"].to_pylist()} == {None}  # no RemPct
    hb = [(h["armed"], h["mode"]) for h in t["heartbeat"].to_pylist()]  # arming from EV only
    assert hb == [(False, "STABILIZE"), (True, "STABILIZE"), (True, "LOITER"), (True, "AUTO")]
    counts, _ = reference_counts(path)
    assert Counter({k: v.num_rows for k, v in t.items() if k != "heartbeat"}) == counts


def test_curr_is_the_battery_of_older_logs(tmp_path):
    """ArduCopter 3.2 logs CURR (V and A times 100, as integers), not BAT: it becomes the battery,
    but not where it reads 0 V or the log's BATT_MONITOR is 0 (no monitor: zeros)."""
    path = write_dataflash(tmp_path / "curr.bin", 60, legacy=True, curr=True)
    bat = by_kind(read_dataflash(path))["battery"].to_pylist()
    raw = []  # the CURR messages as pymavlink reads them
    reader = DFReader_binary(str(path), zero_time_base=False)
    while (m := reader.recv_match(type="CURR")) is not None:
        raw.append((round(m._timestamp * 1e6) * 1000, m.Volt, m.Curr))
    assert [(r[0], r[1] / 100, r[2] / 100) for r in raw if r[1]] == \
        [(b["ts_event"], b["voltage"], b["current"]) for b in bat]
    assert [b["voltage"] for b in bat] == [curr_volts(sec)[0] / 100 for sec in range(5, 60)]
    assert {(b["battery_id"], b["remaining"], b["msg"]) for b in bat} == {(0, None, "CURR")}
    monitored = write_dataflash(tmp_path / "monitored.bin", 60, legacy=True, curr=True, batt_monitor=4)
    assert by_kind(read_dataflash(monitored))["battery"].to_pylist() == bat
    unmonitored = write_dataflash(tmp_path / "unmonitored.bin", 60, legacy=True, curr=True, batt_monitor=0)
    assert "battery" not in by_kind(read_dataflash(unmonitored))


def test_a_damaged_log_yields_the_intact_messages(tmp_path):
    path = write_dataflash(tmp_path / "f.bin", 60)
    data = bytearray(path.read_bytes())
    full = by_kind(read_dataflash(path))
    mid = len(data) // 2
    data[mid:mid + 500] = bytes(range(250)) * 2  # garbage in the middle
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(bytes(data[:-37]))  # and cut off in the middle of a message
    t = by_kind(read_dataflash(damaged))
    counts, _ = reference_counts(damaged)
    assert Counter({k: v.num_rows for k, v in t.items() if k != "heartbeat"}) == counts
    assert 0 < counts["attitude"] < full["attitude"].num_rows
    assert full["attitude"].num_rows - counts["attitude"] < 20  # only what was damaged is lost
    ts = pa.concat_tables([v.select(["seq", "ts_event"]) for v in t.values()]).sort_by("seq").column("ts_event")
    assert ts.to_pylist() == sorted(ts.to_pylist())
    assert t["heartbeat"].num_rows == full["heartbeat"].num_rows


def test_not_a_dataflash_log(tmp_path):
    junk = tmp_path / "x.bin"
    junk.write_bytes(bytes(range(256)) * 100)
    (tmp_path / "e.bin").write_bytes(b"")
    text = tmp_path / "t.bin"
    text.write_text("hello, this is not a log\n" * 50)
    for path, match in ((junk, "not an ArduPilot DataFlash log"), (text, "not an ArduPilot DataFlash log"),
                        (tmp_path / "e.bin", "empty"), (tmp_path / "missing.bin", "cannot read")):
        with pytest.raises(UserError, match=match) as exc:
            list(read_dataflash(path))
        assert "\n" not in str(exc.value)
    with pytest.raises(UserError):
        import_dataflash(junk, out=tmp_path / "rec")
    assert not (tmp_path / "rec").exists()


def test_import_then_backtest_uav_anomaly(tmp_path):
    path = write_dataflash(tmp_path / "flight.bin", 120)
    out = tmp_path / "rec"
    rows: list[int] = []
    stats = import_dataflash(path, out=out, progress=rows.append)
    rec = Recording(out)
    assert rec.origin == {"source": "dataflash", "imported_from": "flight.bin", "format": "dataflash",
                          "synthetic": False}
    assert set(rec.kinds) == {"position", "gps", "battery", "attitude", "vibration", "ekf", "heartbeat",
                              "statustext"}
    assert rec.rows() == stats.events == sum(rows) and rec.rows(["attitude"]) == 1200
    with pytest.raises(UserError, match="not empty"):
        import_dataflash(path, out=out)
    uav = load_strategy(str(ROOT / "strategies" / "uav_anomaly.py") + ":UavAnomaly")
    res = run_backtest(uav, rec, overrides={"link": "false"})
    alerts = [(round((a["ts_event"] - START_US * 1000) / SEC, 1), a["name"])
              for a in res.tables["alerts"].to_pylist()]
    # battery 1: 5 V; each episode's end is an info alert clear_time (3 s) after its condition
    # ends: the GPS fix's return, and the disarm (fences hold only while armed)
    clear = 3.0
    assert alerts == [(10.0, "battery_low"), (32.1, "fence_breach"), (GPS_LOSS[0], "gps_loss"),
                      (GPS_LOSS[1] + clear, "gps_loss_cleared"), (DISARM_S + clear, "fence_breach_cleared")]
    # with the link detector on, the sparse heartbeats of an onboard log look like link losses
    noisy = run_backtest(uav, rec)
    assert any(a["name"] == "link_loss" for a in noisy.tables["alerts"].to_pylist())


def test_cli_import_dataflash_then_backtest(tmp_path):
    import json
    import subprocess

    from ...conftest import qsf_cmd

    log = write_dataflash(tmp_path / "00000001.BIN", 120)
    r = subprocess.run([*qsf_cmd(), "recordings", "import", "dataflash", str(log), "--out", str(tmp_path / "rec")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "telemetry events of system 1" in r.stdout
    bt = subprocess.run([*qsf_cmd(), "backtest", "strategies/uav_anomaly.py:UavAnomaly", "--recording",
                         str(tmp_path / "rec"), "--out", str(tmp_path / "bt"), "-p", "link=false"],
                        capture_output=True, text=True, timeout=120)
    assert bt.returncode == 0, bt.stderr
    assert json.loads((tmp_path / "bt" / "report.json").read_text())["outputs"]["alerts"] >= 1
    bad = subprocess.run([*qsf_cmd(), "recordings", "import", "dataflash", str(tmp_path / "rec"), "--out",
                          str(tmp_path / "r2")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
