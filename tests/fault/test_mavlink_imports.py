"""Imports that fail leave nothing behind; junk logs give one line; out-of-range telemetry in a
log is rejected with its reason and counted, and the rest is imported.

Expected counts come from pymavlink's own parsers (``mavutil`` for tlogs, ``DFReader`` for
DataFlash logs) and plain Python reading the values, not from the importers under test.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

from pymavlink import mavutil

from qsframework.adapters.mavlink.tlog import TlogStats, read_tlog
from qsframework.recording import MANIFEST, Recording

from ..conftest import run_qsf as qsf
from ..fakes.dataflash_gen import write_boot_time_log, write_dataflash
from ..adapters.mavlink.test_dataflash import reference_counts
from ..fakes.tlog_gen import _Sink, mavlink, packets
from ..fakes.tlog_gen import write_tlog as write_good_tlog


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qsf: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stdout == ""
    return lines[0]


def entries(directory: Path) -> list[str]:
    """Everything below ``directory``, hidden files too."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# -- failed imports ------------------------------------------------------------------------
def test_failed_tlog_import_leaves_nothing_and_the_retry_works(tmp_path):
    junk = tmp_path / "junk.tlog"
    junk.write_bytes(random.Random(1).randbytes(50_000))
    before = entries(tmp_path)
    line = one_error_line(qsf("recordings", "import", "tlog", junk, "--out", tmp_path / "new" / "rec"))
    assert "no vehicle telemetry" in line
    assert entries(tmp_path) == before  # not the recording, not its parent, no hidden temporary
    (tmp_path / "empty").mkdir()
    one_error_line(qsf("recordings", "import", "tlog", junk, "--out", tmp_path / "empty"))
    assert entries(tmp_path / "empty") == []
    good = write_good_tlog(tmp_path / "flight.tlog", 20)
    for out in (tmp_path / "new" / "rec", tmp_path / "empty"):
        r = qsf("recordings", "import", "tlog", good, "--out", out)
        assert r.returncode == 0, r.stderr
        assert Recording(out).rows(["position"]) == 200
    again = one_error_line(qsf("recordings", "import", "tlog", good, "--out", tmp_path / "empty"))
    assert "not empty" in again and Recording(tmp_path / "empty").rows(["position"]) == 200


def test_junk_dataflash_log_is_one_line_and_leaves_nothing(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(random.Random(2).randbytes(200_000))  # pymavlink complains once per byte
    before = entries(tmp_path)
    line = one_error_line(qsf("recordings", "import", "dataflash", junk, "--out", tmp_path / "rec"))
    assert "not an ArduPilot DataFlash log" in line
    assert entries(tmp_path) == before


def test_damaged_dataflash_log_is_imported_with_one_summary_line(tmp_path):
    path = write_dataflash(tmp_path / "f.bin", 60)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 700] = random.Random(3).randbytes(700)
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(bytes(data))
    r = qsf("recordings", "import", "dataflash", damaged, "--out", tmp_path / "rec")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == "" and len(r.stdout.strip().splitlines()) == 1, (r.stdout[-2000:], r.stderr[-2000:])
    skipped = int(r.stdout.split(" damaged bytes passed over")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 0 < skipped <= 700 + 200  # the garbage and the messages it cut
    want, _ = reference_counts(damaged)
    rec = Recording(tmp_path / "rec")
    assert Counter({k: rec.rows([k]) for k in rec.kinds if k != "heartbeat"}) == want


def test_dataflash_log_without_gps_time_is_refused_in_one_line(tmp_path):
    path = write_boot_time_log(tmp_path / "nogps.bin", 100)  # times since boot: before the floor
    before = entries(tmp_path)
    line = one_error_line(qsf("recordings", "import", "dataflash", path, "--out", tmp_path / "rec"))
    assert "100 rejected (attitude: ts_event before the floor" in line and "no GPS time" in line
    assert entries(tmp_path) == before


def test_failed_binance_import_leaves_nothing(tmp_path):
    rng = random.Random(4)
    text = "".join(f"{i},{rng.uniform(90_000, 100_000):.2f},0.001,95.0,{1_735_689_600_000_000 + i * 1000},True,True\n"
                   for i in range(200_000)).encode()
    path = tmp_path / "BTCUSDT-trades-2025-01-01.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BTCUSDT-trades-2025-01-01.csv", text)
    data = bytearray(path.read_bytes())
    for i in range(len(data) * 2 // 3, len(data) * 2 // 3 + 64):  # the deflate stream, late in the file
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    before = entries(tmp_path)
    line = one_error_line(qsf("recordings", "import", "binance-csv", path, "--out", tmp_path / "rec"))
    assert "BTCUSDT-trades-2025-01-01.zip" in line
    assert entries(tmp_path) == before


# -- out-of-range telemetry ------------------------------------------------------------------
def bad_value_records() -> list[tuple[int, bytes]]:
    """A clean 30 s flight, plus vehicle packets (right CRC) whose values cannot be true:
    (unix time us, packet)."""
    veh = mavlink.MAVLink(_Sink(), srcSystem=1, srcComponent=1)
    veh.WIRE_PROTOCOL_VERSION = "2.0"
    good = packets(30)
    bad = []
    for i in range(0, len(good), 40):
        t = good[i][0]
        if i % 120 == 0:
            bad.append((t, veh.global_position_int_encode(1, 2_000_000_000, 85455000, 500000, 20000, 0, 0, 0, 0)))
        elif i % 120 == 40:
            bad.append((t, veh.attitude_encode(1, math.nan, 0.0, 1.0, 0.0, 0.0, 0.0)))
        else:
            bad.append((t, veh.gps_raw_int_encode(1, 3, 473977000, -1_900_000_000, 500000, 80, 120, 500, 9000, 12)))
    return sorted([*good, *((t, m.pack(veh)) for t, m in bad)], key=lambda r: r[0])


def bad_value_tlog(path: Path) -> Path:
    path.write_bytes(b"".join(t.to_bytes(8, "big") + buf for t, buf in bad_value_records()))
    return path


def expected_rejects(path: Path) -> tuple[Counter, Counter]:
    """(valid rows per kind, rejects per reason) by reading every vehicle message with pymavlink."""
    kinds = {"GLOBAL_POSITION_INT": "position", "GPS_RAW_INT": "gps", "SYS_STATUS": "battery",
             "BATTERY_STATUS": "battery", "ATTITUDE": "attitude", "VIBRATION": "vibration",
             "EKF_STATUS_REPORT": "ekf", "HEARTBEAT": "heartbeat", "STATUSTEXT": "statustext",
             "FENCE_STATUS": "fence"}
    conn = mavutil.mavlink_connection(str(path), dialect="ardupilotmega")
    valid, rejected = Counter(), Counter()
    while (m := conn.recv_match(blocking=False)) is not None:
        kind = kinds.get(m.get_type())
        if kind is None or (m.get_srcSystem(), m.get_srcComponent()) != (1, 1):
            continue
        if kind == "position" and not -90 <= m.lat / 1e7 <= 90:
            rejected["position: lat must be within [-90, 90]"] += 1
        elif kind == "gps" and not -180 <= m.lon / 1e7 <= 180:
            rejected["gps: lon must be within [-180, 180]"] += 1
        elif kind == "attitude" and not math.isfinite(m.roll):
            rejected["attitude: roll is not finite"] += 1
        else:
            valid[kind] += 1
    conn.close()
    return valid, rejected


def test_out_of_range_telemetry_in_a_tlog_is_rejected_with_its_reason(tmp_path):
    path = bad_value_tlog(tmp_path / "bad.tlog")
    valid, rejected = expected_rejects(path)
    assert len(rejected) == 3 and sum(rejected.values()) >= 9
    stats = TlogStats()
    got = Counter()
    for kind, table in read_tlog(path, stats=stats):
        got[kind] += table.num_rows
    assert got == valid and stats.rejected == dict(rejected)
    assert stats.events == sum(valid.values()) and stats.packets == stats.events + sum(rejected.values())
    out = tmp_path / "rec"
    r = qsf("recordings", "import", "tlog", path, "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"{sum(rejected.values()):,} rejected (" in r.stdout
    assert all(f"{why} {n:,}" in r.stdout for why, n in rejected.items())
    rec = Recording(out)
    assert Counter({k: rec.rows([k]) for k in rec.kinds}) == valid
    assert json.loads((out / MANIFEST).read_text())["origin"]["rejected"] == dict(rejected)
    info = qsf("recordings", "info", out)
    assert info.returncode == 0 and f"events {sum(rejected.values()):,} rejected (" in info.stdout


def test_a_log_of_nothing_but_bad_values_is_one_line(tmp_path):
    veh = mavlink.MAVLink(_Sink(), srcSystem=1, srcComponent=1)
    veh.WIRE_PROTOCOL_VERSION = "2.0"
    msgs = [veh.heartbeat_encode(2, 3, 1, 0, 4, 3)] + [
        veh.global_position_int_encode(i, 2_000_000_000, 0, 0, 0, 0, 0, 0, 0) for i in range(5)]
    path = tmp_path / "bad.tlog"
    path.write_bytes(b"".join((16 + i).to_bytes(8, "big") + m.pack(veh) for i, m in enumerate(msgs)))  # 1970
    line = one_error_line(qsf("recordings", "import", "tlog", path, "--out", tmp_path / "rec"))
    assert "no valid telemetry" in line and "6 rejected" in line and "before the floor" in line
    assert not (tmp_path / "rec").exists()
