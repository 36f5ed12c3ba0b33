"""The live MAVLink source over real UDP: the vehicle's messages become the same events as
from a log; a ground station's do not; the vehicle clock follows time_boot_ms."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa

from qsframework.adapters.mavlink.live import record_mavlink
from qsframework.adapters.mavlink.source import MavlinkConfig
from qsframework.adapters.mavlink.tlog import read_tlog
from qsframework.recording import Recording

from ...conftest import qsf_cmd
from ...fault.processes import wait_for
from ...fakes.tlog_gen import packets, write_tlog


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_bound(port: int) -> bool:
    """Whether a socket on this machine listens on UDP ``port`` (read from the kernel's table,
    so asking never takes the port from the receiver)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in lines):
            return True
    return False


def send_later(port: int, pkts: list[bytes]) -> threading.Thread:
    """Send ``pkts`` to ``port`` from a thread, once a receiver listens there."""
    def run() -> None:
        wait_for(lambda: udp_bound(port), f"a receiver on UDP port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, buf in enumerate(pkts):
                s.sendto(buf, ("127.0.0.1", port))
                if i % 20 == 19:
                    time.sleep(0.005)  # a link, not a flood
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def read_all(path) -> dict[str, pa.Table]:
    rec = Recording(path)
    return {k: pa.Table.from_batches(list(rec.stream(k))).sort_by("seq") for k in rec.kinds}


def test_udp_stream_gives_the_same_events_as_the_log(tmp_path):
    pkts = packets(30)
    port = free_udp_port()
    sender = send_later(port, [b for _, b in pkts])
    cfg = MavlinkConfig(url=f"udpin:127.0.0.1:{port}", heartbeat=False)
    stats = asyncio.run(record_mavlink(cfg, tmp_path / "rec", duration=4.0))
    sender.join()
    live = read_all(tmp_path / "rec")
    log = {}
    for kind, table in read_tlog(write_tlog(tmp_path / "f.tlog", 30)):
        log.setdefault(kind, []).append(table)
    assert stats.system_id == 1 and stats.foreign == 60  # the ground station's heartbeats and attitudes
    for kind, tables in log.items():
        want = pa.concat_tables(tables).sort_by("seq").drop(["ts_event", "ts_recv"])
        assert live[kind].drop(["ts_event", "ts_recv"]).equals(want), kind
        ts = live[kind].column("ts_event").to_numpy()
        assert (ts > time.time_ns() - 60e9).all()  # receive time


def test_vehicle_clock_follows_time_boot_ms(tmp_path):
    pkts = packets(20)
    port = free_udp_port()
    sender = send_later(port, [b for _, b in pkts])
    cfg = MavlinkConfig(url=f"udpin:127.0.0.1:{port}", heartbeat=False, clock="vehicle")
    stats = asyncio.run(record_mavlink(cfg, tmp_path / "rec", duration=3.0))
    sender.join()
    pos = read_all(tmp_path / "rec")["position"].to_pylist()
    # GLOBAL_POSITION_INT every 100 ms of boot time: event times 100 ms apart, whatever the send pace
    steps = {b["ts_event"] - a["ts_event"] for a, b in zip(pos, pos[1:])}
    assert steps == {100_000_000}
    assert pos[0]["ts_event"] == stats.epoch_ns  # time_boot_ms 0


def test_record_mavlink_cli(tmp_path):
    port = free_udp_port()
    sender = send_later(port, [b for _, b in packets(10)])
    r = subprocess.run([*qsf_cmd(), "record", "mavlink", "--url", f"udpin:127.0.0.1:{port}", "--out",
                        str(tmp_path / "rec"), "--duration", "5"], capture_output=True, text=True, timeout=60)
    sender.join()
    assert r.returncode == 0, r.stderr
    assert "from system 1 component 1" in r.stdout
    assert Recording(tmp_path / "rec").rows(["position"]) == 100
    bad = subprocess.run([*qsf_cmd(), "record", "mavlink", "--url", "nonsense", "--out", str(tmp_path / "r2")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_malformed_bytes_and_crc_errors_are_counted_not_fatal(tmp_path):
    """Junk datagrams and packets with a broken CRC on the port: counted as bad, and every
    intact packet still becomes its event."""
    good = [b for _, b in packets(10)]
    mixed: list[bytes] = []
    for i, buf in enumerate(good):
        if i % 25 == 3:
            mixed.append(b"\xfd\x09garbage that is not mavlink")
        if i % 40 == 7:
            broken = bytearray(buf)
            broken[-3] ^= 0xFF  # payload changed: the CRC no longer matches
            mixed.append(bytes(broken))
        mixed.append(buf)
    port = free_udp_port()
    sender = send_later(port, mixed)
    cfg = MavlinkConfig(url=f"udpin:127.0.0.1:{port}", heartbeat=False)
    stats = asyncio.run(record_mavlink(cfg, tmp_path / "rec", duration=3.0))
    sender.join()
    assert stats.bad > 0
    assert Recording(tmp_path / "rec").rows(["position"]) == 100  # every intact position message


def test_emulator_tlog_counts_match_pymavlink(tmp_path):
    """A log written by the emulator: the importer keeps as many messages of each type as
    pymavlink reads from the vehicle."""
    from collections import Counter

    from pymavlink import mavutil

    from qsframework.adapters.mavlink.decode import BY_NAME
    from qsframework.sim.vehicle import Scenario
    from qsframework.sim.vehicle import write_tlog as emulate_to_tlog

    path = tmp_path / "multi.tlog"
    emulate_to_tlog(Scenario.load("multi"), path, duration=120, start_unix_us=1_767_571_200_000_000)
    conn = mavutil.mavlink_connection(str(path), dialect="ardupilotmega")
    ref: Counter[str] = Counter()
    while (m := conn.recv_match(blocking=False)) is not None:
        if m.get_type() in BY_NAME and m.get_srcSystem() == 1:
            ref[BY_NAME[m.get_type()].kind] += 1
    conn.close()
    got: Counter[str] = Counter()
    for kind, table in read_tlog(path):
        got[kind] += table.num_rows
    assert got == ref and got["position"] >= 1000
