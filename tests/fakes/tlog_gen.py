"""Synthetic telemetry logs for decoder tests: every telemetry message type, unknown-value
sentinels, a ground station on the same link, and optional damage."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("MAVLINK20", "1")

from pymavlink.dialects.v20 import ardupilotmega as mavlink  # noqa: E402

START_US = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z


class _Sink:
    def write(self, b: bytes) -> None:  # pymavlink wants a file for its send(); we only pack
        pass


def packets(seconds: int, *, seed: int = 1, start_us: int = START_US) -> list[tuple[int, bytes]]:
    """(unix time us, packet) at 10 Hz ticks, like a flight controller streams them."""
    veh = mavlink.MAVLink(_Sink(), srcSystem=1, srcComponent=1)
    gcs = mavlink.MAVLink(_Sink(), srcSystem=255, srcComponent=190)
    for m in (veh, gcs):
        m.WIRE_PROTOCOL_VERSION = "2.0"
    rng = random.Random(seed)
    out: list[tuple[int, bytes]] = []
    t = start_us
    clip = 0
    for s in range(seconds * 10):
        t += 100_000
        boot_ms = s * 100
        armed = s > 50
        msgs = [
            (veh, veh.global_position_int_encode(boot_ms, 473977000 + s, 85455000 - s, 500000 + s % 9000,
                                                 20000 + s % 5000, rng.randint(-900, 900), -50, 3,
                                                 9000 if s % 7 else 65535)),
            (veh, veh.attitude_encode(boot_ms, 0.1 * rng.random(), -0.02, 1.5, 0.001, 0.0, -0.1)),
        ]
        if s % 2 == 0:
            msgs += [
                (veh, veh.gps_raw_int_encode(boot_ms * 1000, 3 if s % 13 else 1, 473977000, 85455000, 500000,
                                             80 if s % 9 else 65535, 120, 500, 9000, 12 if s % 11 else 255)),
                (veh, veh.sys_status_encode(0, 0, 0, 500, 12600 - s % 3000, 1500 if s % 5 else -1,
                                            80 if s % 17 else -1, 0, 0, 0, 0, 0, 0)),
                (veh, veh.vibration_encode(boot_ms * 1000, 10.5, 11.0 + rng.random(), 20.0, clip, 0,
                                           5 if s < 300 else 1)),  # a counter that goes down: reboot
                (veh, veh.ekf_status_report_encode(0x1FF, 0.1, 0.2, 0.05, 0.3 * rng.random(), 0.0)),
            ]
            clip += 1 if s % 4 == 0 else 0
        if s % 10 == 0:
            msgs += [
                (veh, veh.heartbeat_encode(2, 3, (128 if armed else 0) | 1, 3 if armed else 0, 4, 3)),
                (gcs, gcs.heartbeat_encode(6, 8, 0, 0, 0, 3)),
                (gcs, gcs.attitude_encode(0, 9.0, 9.0, 9.0, 0, 0, 0)),  # not the vehicle's
                (veh, veh.battery_status_encode(0, 1, 1, 2500, [4100, 4110, 4090] + [65535] * 7, 1500, 1000,
                                                500, 70)),
                (veh, veh.fence_status_encode(1 if s > 400 else 0, 2, 1, 123456)),
                (veh, veh.system_time_encode(t, boot_ms)),
            ]
        if s % 50 == 0:
            msgs.append((veh, veh.statustext_encode(6, b"Reached waypoint #%d" % (s // 50))))
        for enc, msg in msgs:
            out.append((t, msg.pack(enc)))
    return out


def write_tlog(path: Path, seconds: int, *, seed: int = 1, damage: bool = False) -> Path:
    """A tlog; with ``damage``, garbage between records and a corrupted packet now and then."""
    rng = random.Random(seed + 1)
    with open(path, "wb") as fh:
        for i, (t, buf) in enumerate(packets(seconds, seed=seed)):
            record = t.to_bytes(8, "big") + buf
            if damage and i % 97 == 13:
                fh.write(bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))))
            if damage and i % 89 == 7:
                b = bytearray(record)
                b[-3] ^= 0x55  # inside the payload: the CRC no longer matches
                record = bytes(b)
            fh.write(record)
    return path
