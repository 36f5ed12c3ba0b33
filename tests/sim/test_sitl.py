"""The SITL vehicle emulator, received over real UDP with pymavlink (and read back from tlogs).

Each flight runs in a thread at high speedup while the test listens on a UDP port with
``mavutil.mavlink_connection("udpin:...")``, as a ground station would.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from pymavlink import mavutil
from qsframework.sim.vehicle import (
    BOOT_OFFSET_S,
    MODES,
    STREAM_RATES,
    EmulationStats,
    Fault,
    Scenario,
    VehicleEmulator,
    emulate,
    list_scenarios,
    parse_target,
    render,
    write_tlog,
)
from qsframework.sim.vehicle.telemetry import TICK_S

from qsframework.adapters.mavlink.tlog import import_tlog
from qsframework.backtest import run_backtest
from qsframework.errors import UserError
from qsframework.geo import offset_latlon
from qsframework.loader import load_strategy
from qsframework.recording import Recording

SPEEDUP = 50.0
MODE_NAMES = {v: k for k, v in MODES.items()}
START_US = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
ARMED = mavutil.mavlink.MAV_MODE_FLAG_SAFETY_ARMED


@dataclass
class Flight:
    """What a ground station received: (arrival wall-clock ns, message), the run's stats, truth."""

    msgs: list[tuple[int, Any]]
    stats: EmulationStats
    truth: dict[str, Any]
    by_type: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for _, m in self.msgs:
            self.by_type.setdefault(m.get_type(), []).append(m)

    def of(self, kind: str) -> list[Any]:
        return self.by_type.get(kind, [])

    def texts(self) -> list[str]:
        return [m.text for m in self.of("STATUSTEXT")]

    def modes(self) -> list[str]:
        """Flight modes in heartbeat order, repeats collapsed."""
        modes = [MODE_NAMES[m.custom_mode] for m in self.of("HEARTBEAT")]
        return [x for i, x in enumerate(modes) if i == 0 or x != modes[i - 1]]

    @staticmethod
    def mission_s(m: Any) -> float:
        boot_s = m.time_boot_ms / 1000 if hasattr(m, "time_boot_ms") else m.time_usec / 1e6
        return boot_s - BOOT_OFFSET_S


def fly(tmp_path: Path, name: str, *, duration: float | None = None) -> Flight:
    """Emulate scenario ``name`` to a pymavlink UDP listener and collect everything."""
    scenario = Scenario.load(name)
    conn = mavutil.mavlink_connection("udpin:127.0.0.1:0")
    conn.port.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    port = conn.port.getsockname()[1]
    truth = tmp_path / f"{name}.truth.json"
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["stats"] = emulate(scenario, to=f"udp:127.0.0.1:{port}", speedup=SPEEDUP,
                                      duration=duration, truth=truth, seed=1)
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    msgs: list[tuple[float, Any]] = []
    try:
        while True:
            m = conn.recv_match(blocking=True, timeout=0.3)
            if m is None:
                if not thread.is_alive():
                    break
                continue
            if m.get_type() != "BAD_DATA":
                msgs.append((time.time_ns(), m))
    finally:
        conn.close()
    thread.join()
    if "error" in result:
        raise result["error"]
    return Flight(msgs, result["stats"], json.loads(truth.read_text()))


#: mission times in messages are whole milliseconds: the slack when comparing with the wall clock
CLOCK_NS = 1_000_000


def assert_paced(f: Flight) -> None:
    """The emulator never sends a message before its mission time / speedup (wall clock from
    the run's start); how much later it arrives depends on the machine's load, not checked."""
    start = f.stats.start_wall_ns
    for arrival, m in f.msgs:
        if hasattr(m, "time_boot_ms"):
            assert arrival >= start + f.mission_s(m) / SPEEDUP * 1e9 - CLOCK_NS, m.get_type()


def distance_m(a: Any, b: Any) -> float:
    """Horizontal metres between two messages with lat/lon in degE7."""
    dn = (b.lat - a.lat) / 1e7 * 111_319.49
    de = (b.lon - a.lon) / 1e7 * 111_319.49 * math.cos(math.radians(a.lat / 1e7))
    return math.hypot(dn, de)


@dataclass
class Home:
    lat: int
    lon: int


def home_of(scenario: Scenario) -> Home:
    return Home(round(scenario.home[0] * 1e7), round(scenario.home[1] * 1e7))


def window(flight: Flight, kind: str, start: float, end: float) -> list[Any]:
    return [m for m in flight.of(kind) if start <= flight.mission_s(m) < end]


def by_seconds(flight: Flight, kind: str) -> list[tuple[float, Any]]:
    """Messages without a boot time, placed at the GLOBAL_POSITION_INT received just before."""
    out, now = [], 0.0
    for _, m in flight.msgs:
        if m.get_type() == "GLOBAL_POSITION_INT":
            now = flight.mission_s(m)
        elif m.get_type() == kind:
            out.append((now, m))
    return out


# ---------------------------------------------------------------------------------------------


def test_bundled_scenarios_load_and_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    names = list_scenarios()
    for expected in ("clean", "battery_sag", "gps_loss", "gps_glitch", "vibration",
                     "motor_failure", "fence_breach", "link_loss", "multi"):
        assert expected in names
    for name in names:
        scenario = Scenario.load(name)
        assert scenario.name == name and scenario.duration_s >= 60
    assert Scenario.load("clean").faults == ()
    multi = [f.name for f in Scenario.load("multi").faults]
    assert multi == ["gps_glitch", "vibration_high", "link_loss", "gps_loss"]
    own = tmp_path / "mine.toml"
    own.write_text('duration_s = 30\n[[faults]]\nparam = "SIM_GPS1_ENABLE"\n'
                   "value = 0\nat_s = 10\nduration_s = 5\n")
    loaded = Scenario.load(own)
    assert loaded.name == "mine" and loaded.faults == (
        Fault(param="SIM_GPS1_ENABLE", value=0.0, at_s=10.0, duration_s=5.0),)
    assert loaded.faults[0].name == "gps_loss"
    with pytest.raises(UserError, match="unknown scenario"):
        Scenario.load("no_such_scenario")
    for text, error in [
        ('[[faults]]\nparam = "SIM_NOPE"\nvalue = 1\nat_s = 1\n', "unknown fault parameter"),
        ('[[faults]]\nparam = "LINK_LOSS"\nvalue = 1\nat_s = 1\nduration_s = 0\n', "> 0"),
        ("duraton_s = 30\n", "duraton_s"),
        ("duration_s = [\n", "not valid TOML"),
        ("[mission]\nwaypoints = [[1]]\n", "waypoint"),
        ("[rates]\nHEARTBEET = 1\n", "HEARTBEET"),
    ]:
        own.write_text(text)
        with pytest.raises(UserError, match=error):
            Scenario.load(own)
    assert parse_target("udp:127.0.0.1:14550") == ("127.0.0.1", 14550)
    assert parse_target("udpout:localhost:14551") == ("localhost", 14551)
    for bad in ("tcp:127.0.0.1:5760", "udp:127.0.0.1", "udp::14550", "udp:h:0", "udp:h:70000"):
        with pytest.raises(UserError):
            parse_target(bad)
    with pytest.raises(UserError, match="speedup"):
        emulate(Scenario.load("clean"), to="udp:127.0.0.1:9", speedup=0)


def test_clean_flight_over_udp(tmp_path: Path) -> None:
    f = fly(tmp_path, "clean")
    scenario = Scenario.load("clean")
    # MAVLink v2 from the autopilot (system 1, component 1), nothing lost on loopback
    assert f.msgs and all(m.get_msgbuf()[0] == 0xFD for _, m in f.msgs)
    assert {(m.get_srcSystem(), m.get_srcComponent()) for _, m in f.msgs} == {(1, 1)}
    seqs = [m.get_seq() for _, m in f.msgs]
    lost = sum((b - a - 1) % 256 for a, b in itertools.pairwise(seqs))
    assert lost <= len(seqs) // 200 and f.stats.packets == len(f.msgs) + lost
    # the default stream rates, per mission second; boot times only go up
    for kind, hz in STREAM_RATES.items():
        assert len(f.of(kind)) == pytest.approx(hz * scenario.duration_s, rel=0.05), kind
    for kind in ("GLOBAL_POSITION_INT", "ATTITUDE", "SYSTEM_TIME"):
        boots = [m.time_boot_ms for m in f.of(kind)]
        assert all(a < b for a, b in itertools.pairwise(boots)), kind
    # scaled real time: no message arrives before its mission time / speedup on the wall clock
    # (a loaded machine may only make them later), so the flight lasts at least that long
    assert_paced(f)
    assert f.msgs[-1][0] - f.stats.start_wall_ns >= (scenario.duration_s - 1) / SPEEDUP * 1e9
    # heartbeats: an ArduPilot quadrotor; disarmed -> armed -> disarmed; the mode sequence
    hbs = f.of("HEARTBEAT")
    assert {(m.type, m.autopilot) for m in hbs} == {
        (mavutil.mavlink.MAV_TYPE_QUADROTOR, mavutil.mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA)}
    assert all(m.base_mode & mavutil.mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED for m in hbs)
    armed = [bool(m.base_mode & ARMED) for m in hbs]
    assert [a for i, a in enumerate(armed) if i == 0 or a != armed[i - 1]] == [False, True, False]
    assert f.modes() == ["STABILIZE", "GUIDED", "AUTO", "RTL", "LAND"]
    texts = f.texts()
    assert "Arming motors" in texts and "Disarming motors" in texts
    reached = [t for t in texts if t.startswith("Reached waypoint")]
    assert reached == [f"Reached waypoint #{i}" for i in range(1, 5)]
    # positions: near home, inside the fence, up to the mission altitude, back home at the end
    home = home_of(scenario)
    pos = f.of("GLOBAL_POSITION_INT")
    dist = [distance_m(home, m) for m in pos]
    assert 150 < max(dist) < scenario.fence.radius_m
    assert max(m.relative_alt for m in pos) == pytest.approx(30_000, abs=1_000)
    assert all(abs(m.alt - m.relative_alt - scenario.home[2] * 1000) < 5 for m in pos)
    assert dist[-1] < 5 and abs(pos[-1].relative_alt) < 300
    assert max(math.hypot(m.vx, m.vy) for m in pos) == pytest.approx(800, abs=60)  # cm/s
    assert all(m.breach_status == 0 for m in f.of("FENCE_STATUS"))
    # healthy sensors: 3D fix, 10-14 satellites, hdop 0.7-1.0; small EKF variances; vibration
    assert all(m.fix_type == 3 and 10 <= m.satellites_visible <= 14 and 70 <= m.eph <= 100
               for m in f.of("GPS_RAW_INT"))
    assert all(m.pos_horiz_variance < 0.3 and m.velocity_variance < 0.3
               for m in f.of("EKF_STATUS_REPORT"))
    assert all(m.vibration_x < 15 and m.vibration_z < 15 for m in f.of("VIBRATION"))
    # battery: a 3S pack draining in flight
    flying = [m for t, m in by_seconds(f, "SYS_STATUS") if 25 <= t <= 100]
    volts = [m.voltage_battery for m in flying]
    assert 12_000 < volts[0] < 12_600 and 11_000 < volts[-1] < volts[0] - 150
    assert sum(volts[:20]) > sum(volts[-20:])
    assert 9 < sum(m.current_battery for m in flying) / len(flying) / 100 < 16  # amps
    remaining = [m.battery_remaining for m in f.of("BATTERY_STATUS")]
    assert remaining[0] >= 99 and remaining[-1] < remaining[0]
    assert remaining == sorted(remaining, reverse=True)
    # truth: no fault
    assert f.truth["scenario"] == "clean" and f.truth["speedup"] == SPEEDUP
    assert f.truth["faults"] == []


FAULTS = {  # scenario: (anomaly name, onset mission s (None: observed), mission s we fly)
    "battery_sag": ("battery_low", 60.0, 90.0),
    "gps_loss": ("gps_loss", 60.0, 90.0),
    "gps_glitch": ("gps_glitch", 60.0, 80.0),
    "vibration": ("vibration_high", 60.0, 85.0),
    "motor_failure": ("motor_failure", 70.0, 90.0),
    "fence_breach": ("fence_breach", None, 70.0),
    "link_loss": ("link_loss", 60.0, 75.0),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_signature_and_truth(tmp_path: Path, name: str) -> None:
    fault_name, at_s, duration = FAULTS[name]
    f = fly(tmp_path, name, duration=duration)
    # the truth file lists the anomaly with its onset, in mission time and wall time
    truth = f.truth
    assert truth["scenario"] == name and truth["speedup"] == SPEEDUP
    [rec] = truth["faults"]
    assert rec["name"] == fault_name
    onset = rec["onset_s"]
    if at_s is not None:
        assert rec["planned_at_s"] == at_s and onset == at_s
    assert onset <= rec["onset_msg_s"] <= onset + 1.0
    # the onset's wall time: its packets went out no earlier than scheduled, and before the
    # packets of the next tick (sent after the stamp) reached the ground station
    scheduled = truth["start_wall_ns"] + rec["onset_msg_s"] / SPEEDUP * 1e9
    next_tick = min(arrival for arrival, m in f.msgs
                    if hasattr(m, "time_boot_ms") and f.mission_s(m) > rec["onset_msg_s"] + TICK_S / 2)
    assert scheduled - CLOCK_NS <= rec["onset_wall_ns"] <= next_tick
    assert_paced(f)
    SIGNATURES[name](f, onset, rec)


def _battery(f: Flight, onset: float, rec: dict[str, Any]) -> None:
    before = [m.voltage_battery for t, m in by_seconds(f, "SYS_STATUS") if 30 <= t < onset]
    after = [m.voltage_battery for t, m in by_seconds(f, "SYS_STATUS") if t >= onset + 6]
    assert min(before) > 11_500 and max(after) < 10_500
    pack = [m.voltages[0] for t, m in by_seconds(f, "BATTERY_STATUS") if t >= onset + 6]
    assert pack and max(pack) < 10_500
    assert any(t.startswith("Battery 1 is low") for t in f.texts())
    assert "RTL" in f.modes()
    assert rec["param"] == "SIM_BATT_VOLTAGE" and rec["value"] == 10.2 and rec["end_s"] is None


def _gps_loss(f: Flight, onset: float, rec: dict[str, Any]) -> None:
    end = rec["end_s"]
    assert end == onset + 20
    assert all(m.fix_type == 3 for m in window(f, "GPS_RAW_INT", 20, onset))
    lost = window(f, "GPS_RAW_INT", onset + 0.05, end)
    assert len(lost) >= 5 * (end - onset) - 2
    assert all(m.fix_type < 3 and m.satellites_visible == 0 and m.eph == 9999 for m in lost)
    back = window(f, "GPS_RAW_INT", end, 1e9)
    assert back and all(m.fix_type == 3 and m.satellites_visible >= 10 for m in back)
    ekf = [m for t, m in by_seconds(f, "EKF_STATUS_REPORT") if onset <= t < end]
    assert max(m.pos_horiz_variance for m in ekf) > 1.0
    assert "LAND" in f.modes()  # the EKF failsafe


def _gps_glitch(f: Flight, onset: float, rec: dict[str, Any]) -> None:
    gps = {round(f.mission_s(m) * 10): m for m in f.of("GPS_RAW_INT")}  # by 0.1 s
    pos = {round(f.mission_s(m) * 10): m for m in f.of("GLOBAL_POSITION_INT")}

    def gps_vs_estimate(lo: float, hi: float) -> list[float]:
        return [distance_m(pos[k], m) for k, m in gps.items() if lo <= k / 10 < hi and k in pos]

    assert max(gps_vs_estimate(25, onset)) < 15  # GPS agrees with the estimate before
    during = gps_vs_estimate(onset, onset + 10)
    assert min(during) > 60 and max(during) < 130  # ~111 m north; the EKF follows ~30 m of it
    assert max(gps_vs_estimate(onset + 16, 1e9)) < 15  # and after
    raw = f.of("GPS_RAW_INT")
    assert max(distance_m(a, b) for a, b in itertools.pairwise(raw)) > 100  # one-sample jump
    assert "GPS Glitch or Compass error" in f.texts() and "Glitch cleared" in f.texts()
    ekf = [m for t, m in by_seconds(f, "EKF_STATUS_REPORT") if t >= onset]
    assert max(m.pos_horiz_variance for m in ekf) > 1.0
    assert rec["param"] == "SIM_GPS1_GLTCH_X" and rec["value"] == 0.001
    assert rec["end_s"] == onset + 10


def _vibration(f: Flight, onset: float, rec: dict[str, Any]) -> None:
    before = window(f, "VIBRATION", 25, onset)
    during = window(f, "VIBRATION", onset, onset + 20)
    after = window(f, "VIBRATION", onset + 20.5, 1e9)

    def peak(m: Any) -> float:
        return max(m.vibration_x, m.vibration_y, m.vibration_z)

    assert max(map(peak, before)) < 20 and min(map(peak, during)) > 30
    assert max(map(peak, during)) > 60 and max(map(peak, after)) < 20
    assert before[-1].clipping_2 == before[0].clipping_2 < during[-1].clipping_2
    assert after[0].clipping_2 >= during[-1].clipping_2  # counts since boot never go down
    assert rec["end_s"] == onset + 20


def _motor(f: Flight, onset: float, rec: dict[str, Any]) -> None:
    before = window(f, "ATTITUDE", 25, onset)
    after = window(f, "ATTITUDE", onset, onset + 8)
    assert max(abs(m.roll) for m in before) < 0.3
    assert max(abs(m.roll) for m in after) > max(abs(m.roll) for m in before) + 0.05
    assert min(abs(m.yawspeed) for m in after[5:]) > 0.5  # spinning
    alt = [m.relative_alt for m in window(f, "GLOBAL_POSITION_INT", onset, onset + 6)]
    assert alt[0] > 25_000 and alt[-1] < alt[0] - 10_000  # falling
    assert max(m.vibration_z for m in window(f, "VIBRATION", onset, onset + 8)) > 30
    assert "Potential Thrust Loss (1)" in f.texts() and "Crash: Disarming" in f.texts()
    assert not f.of("HEARTBEAT")[-1].base_mode & ARMED
    assert rec["also"] == {"SIM_ENGINE_MUL": 0.3} and "vibration_high" in rec["expect"]


def _fence(f: Flight, onset: float, rec: dict[str, Any]) -> None:
    scenario = Scenario.load("fence_breach")
    fence = by_seconds(f, "FENCE_STATUS")
    assert all(m.breach_status == 0 for t, m in fence if t < onset)
    breached = [(t, m) for t, m in fence if m.breach_status == 1]
    assert breached and breached[0][1].breach_count == 1
    assert breached[0][1].breach_type == mavutil.mavlink.FENCE_BREACH_BOUNDARY
    assert onset <= breached[0][0] <= onset + 1.1
    home = home_of(scenario)
    crossing = next(m for m in f.of("GLOBAL_POSITION_INT")
                    if distance_m(home, m) > scenario.fence.radius_m)
    assert f.mission_s(crossing) == pytest.approx(onset, abs=0.25)
    modes = f.modes()
    assert "RTL" in modes and modes.index("RTL") > modes.index("AUTO")
    assert fence[-1][1].breach_status == 0 and fence[-1][1].breach_count == 1  # back inside
    assert rec["param"] == "FENCE_RADIUS" and rec["value"] == 150 and rec["end_s"] > onset


def _link(f: Flight, onset: float, rec: dict[str, Any]) -> None:
    times = [(arrival, f.mission_s(m)) for arrival, m in f.msgs
             if m.get_type() == "GLOBAL_POSITION_INT"]
    gaps = sorted((b[1] - a[1], b[0] - a[0], a[1]) for a, b in itertools.pairwise(times))
    gap, _, last_before = gaps[-1]
    assert gap == pytest.approx(8.0, abs=0.25) and last_before == pytest.approx(onset, abs=0.25)
    assert gaps[-2][0] < 0.25  # the only gap
    assert f.stats.dropped > 35 * 8 * 0.9  # ~35 messages a second lost
    assert rec["end_s"] == onset + 8 and rec["end_wall_ns"] > rec["onset_wall_ns"]


SIGNATURES = {
    "battery_sag": _battery, "gps_loss": _gps_loss, "gps_glitch": _gps_glitch,
    "vibration": _vibration, "motor_failure": _motor, "fence_breach": _fence, "link_loss": _link,
}


def test_stop_ends_the_stream_and_still_writes_the_truth(tmp_path: Path) -> None:
    stop = threading.Event()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    truth = tmp_path / "t.json"
    progress: list[float] = []
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    t0 = time.monotonic()
    stats = emulate(Scenario.load("multi"), to=f"udpout:127.0.0.1:{sink.getsockname()[1]}",
                    speedup=100, truth=truth, stop=stop,
                    on_progress=lambda t, total: progress.append(t))
    sink.close()
    assert time.monotonic() - t0 < 2.0 and 20 < stats.mission_s < 150
    assert progress == [float(i) for i in range(len(progress))] and len(progress) > 20
    record = json.loads(truth.read_text())
    assert record["mission_s"] == pytest.approx(stats.mission_s, abs=0.2)
    began = [x.name for x in Scenario.load("multi").faults if x.at_s <= stats.mission_s]
    assert [x["name"] for x in record["faults"]] == began == list(stats.faults)


def test_write_tlog_reads_back_with_pymavlink(tmp_path: Path) -> None:
    scenario = Scenario.load("gps_glitch")
    path = tmp_path / "flight.tlog"
    stats = write_tlog(scenario, path, seed=3, start_unix_us=START_US, duration=90,
                       truth=tmp_path / "truth.json")
    packets = [p for _, p in render(scenario, seed=3, duration=90, start_unix_us=START_US)]
    assert stats.packets == len(packets)
    assert path.stat().st_size == sum(8 + len(p) for p in packets)
    log = mavutil.mavlink_connection(str(path))
    msgs = []
    while (m := log.recv_match()) is not None:
        msgs.append(m)
    log.close()
    assert len(msgs) == stats.packets and not [m for m in msgs if m.get_type() == "BAD_DATA"]
    assert [m.get_msgbuf() for m in msgs] == packets  # the same stream as render()
    stamps = [m._timestamp for m in msgs]
    assert stamps[0] == START_US / 1e6 and stamps == sorted(stamps)
    assert stamps[-1] - stamps[0] == pytest.approx(90.0, abs=0.01)
    for m in msgs:
        elapsed = m._timestamp - START_US / 1e6
        if m.get_type() == "SYSTEM_TIME":  # the prefix is the vehicle's clock
            assert m.time_unix_usec == round(m._timestamp * 1e6)
        if hasattr(m, "time_boot_ms"):
            assert m.time_boot_ms / 1000 - BOOT_OFFSET_S == pytest.approx(elapsed, abs=1e-3)
    [rec] = json.loads((tmp_path / "truth.json").read_text())["faults"]
    first_glitched = next(m for m in msgs if m.get_type() == "GPS_RAW_INT"
                          and m._timestamp >= START_US / 1e6 + 60)
    assert rec["onset_wall_ns"] == round(first_glitched._timestamp * 1e9)
    # deterministic for a seed, different for another
    again = tmp_path / "again.tlog"
    write_tlog(scenario, again, seed=3, start_unix_us=START_US, duration=90)
    assert again.read_bytes() == path.read_bytes()
    write_tlog(scenario, again, seed=4, start_unix_us=START_US, duration=90)
    assert again.read_bytes() != path.read_bytes()


def test_a_polygon_fence_is_the_same_fence_for_the_emulator_and_the_detector(tmp_path: Path) -> None:
    """The emulator breaches its polygon fence (north/east metres) when UavAnomaly, given the
    same polygon in latitude/longitude, sees the vehicle leave it."""
    base = Scenario.load("clean")  # the first leg flies north to 120 m: out of this box at 60 m
    box = ((-100.0, -100.0), (60.0, -100.0), (60.0, 200.0), (-100.0, 200.0))
    scenario = replace(base, name="polygon", fence=replace(base.fence, polygon=box))
    write_tlog(scenario, tmp_path / "p.tlog", seed=2, start_unix_us=START_US, duration=60,
               truth=tmp_path / "truth.json")
    [breach] = json.loads((tmp_path / "truth.json").read_text())["faults"]
    assert breach["name"] == "fence_breach" and breach["onset_s"] > 20
    lat0, lon0, _ = scenario.home
    corners = ";".join("{:.9f},{:.9f}".format(*offset_latlon(lat0, lon0, n, e)) for n, e in box)
    import_tlog(tmp_path / "p.tlog", out=tmp_path / "rec")
    result = run_backtest(load_strategy("uav_anomaly:UavAnomaly"), Recording(tmp_path / "rec"),
                          overrides={"fence_polygon": corners, "fence_radius": "0"})
    alerts = [a for a in result.tables["alerts"].to_pylist() if a["name"] == "fence_breach"]
    assert alerts and "outside the polygon fence" in alerts[0]["text"]
    seen_s = alerts[0]["ts_event"] / 1e9 - START_US / 1e6
    assert seen_s == pytest.approx(breach["onset_s"], abs=0.15)  # the same 10 Hz position sample
    log = mavutil.mavlink_connection(str(tmp_path / "p.tlog"))
    texts = []
    while (m := log.recv_match(type="STATUSTEXT")) is not None:
        texts.append(m.text)
    log.close()
    assert "Fence Breach: polygon" in texts and texts.index("Mode RTL") > texts.index("Fence Breach: polygon")


def test_emulator_api_steps_and_schedules_messages() -> None:
    rates = (("GLOBAL_POSITION_INT", 4.0), ("VIBRATION", 0.0))
    scenario = replace(Scenario.load("clean"), rates=rates)
    emu = VehicleEmulator(scenario, system_id=7, component_id=1, seed=0, start_unix_us=START_US)
    counts: dict[str, int] = {}
    for i in range(301):  # 0 .. 30 s
        if i:
            emu.step(0.1)
        for m in emu.messages(round(i * 0.1, 6)):
            counts[m.get_type()] = counts.get(m.get_type(), 0) + 1
    assert counts["GLOBAL_POSITION_INT"] == pytest.approx(4 * 30, abs=2)
    assert counts["ATTITUDE"] == 301 and counts["HEARTBEAT"] == 31 and "VIBRATION" not in counts
    assert emu.armed and emu.mode == "AUTO" and emu.h == pytest.approx(30, abs=1)
    emu.step(0.1)
    packet = emu.packets()[0]
    assert packet[0] == 0xFD and packet[5] == 7  # MAVLink v2 header: magic, ..., system id
