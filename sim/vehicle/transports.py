"""The vehicle emulator's transports: UDP in (scaled) real time, packets in memory, a
``.tlog`` file, and the truth file of what was injected and when it showed.

:func:`emulate` streams a scenario over UDP like ``sim_vehicle.py -v ArduCopter`` (where
ArduPilot is not installed), :func:`render` yields the packets without sockets or sleeping,
:func:`write_tlog` writes them as a MAVProxy-style ``.tlog``; :func:`write_truth` writes the
truth record (:meth:`~.telemetry.VehicleEmulator.truth`).
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qsframework.errors import UserError

from .scenario import Scenario
from .telemetry import VehicleEmulator

BURST_S = 0.01
"""emulate() sends in bursts on this wall-clock grid."""


@dataclass(frozen=True, kw_only=True)
class EmulationStats:
    """What a run sent. ``max_late_s`` is the worst wall-clock lateness behind schedule."""

    scenario: str
    packets: int
    bytes: int
    dropped: int
    send_errors: int
    mission_s: float
    wall_s: float
    max_late_s: float
    start_wall_ns: int
    faults: tuple[str, ...]  # the faults that began, in order
    onsets_s: tuple[float, ...]  # their onsets (mission s), one per fault

    @classmethod
    def of(cls, emu: VehicleEmulator, *, packets: int, size: int, send_errors: int, wall_s: float,
           max_late_s: float, start_wall_ns: int) -> EmulationStats:
        """The stats of a flight ``emu`` has flown (its scenario, drops, clock and faults)."""
        began = emu.began()
        return cls(scenario=emu.scenario.name, packets=packets, bytes=size, dropped=emu.dropped,
                   send_errors=send_errors, mission_s=emu.t, wall_s=wall_s, max_late_s=max_late_s,
                   start_wall_ns=start_wall_ns, faults=tuple(i.name for i in began),
                   onsets_s=tuple(i.onset_s for i in began))


def render(scenario: Scenario, *, seed: int = 0, duration: float | None = None,
           start_unix_us: int = 1_700_000_000_000_000) -> Iterator[tuple[float, bytes]]:
    """(mission time s, MAVLink v2 packet) for the whole flight, without sockets or sleeping."""
    emu = VehicleEmulator(scenario, seed=seed, start_unix_us=start_unix_us)
    for t, packets in emu.frames(duration=duration):
        for p in packets:
            yield t, p


def write_tlog(scenario: Scenario, path: str | Path, *, seed: int = 0,
               start_unix_us: int | None = None, duration: float | None = None,
               truth: str | Path | None = None) -> EmulationStats:
    """Write the flight as a ``.tlog``: each packet prefixed by its time as a big-endian uint64
    of unix microseconds (MAVProxy's format), start_unix_us + mission time."""
    start_us = int(time.time() * 1e6) if start_unix_us is None else start_unix_us
    emu = VehicleEmulator(scenario, seed=seed, start_unix_us=start_us)
    pack_ts = struct.Struct(">Q").pack
    count = size = 0
    t0 = time.monotonic()
    path = Path(path)
    try:
        with path.open("wb") as f:
            chunk: list[bytes] = []
            for t, packets in emu.frames(duration=duration):
                ts_us = start_us + round(t * 1e6)
                prefix = pack_ts(ts_us)
                for p in packets:
                    chunk.append(prefix)
                    chunk.append(p)
                    size += len(p)
                count += len(packets)
                emu.stamp(t, ts_us * 1000)
                if len(chunk) > 8192:
                    f.write(b"".join(chunk))
                    chunk.clear()
            f.write(b"".join(chunk))
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    if truth is not None:
        record = emu.truth(start_wall_ns=start_us * 1000, speedup=1.0, target=f"tlog:{path}")
        write_truth(truth, record)
    return EmulationStats.of(emu, packets=count, size=size, send_errors=0,
                             wall_s=time.monotonic() - t0, max_late_s=0.0,
                             start_wall_ns=start_us * 1000)


def write_truth(path: str | Path, record: Mapping[str, Any]) -> None:
    """Write a truth record (:meth:`VehicleEmulator.truth`) as JSON, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write truth file {path}: {exc.strerror or exc}") from None


def parse_target(to: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` or ``udpout:HOST:PORT`` -> (host, port)."""
    for prefix in ("udpout:", "udp:"):
        if to.startswith(prefix):
            host, _, port = to[len(prefix):].rpartition(":")
            break
    else:
        raise UserError(f"unsupported target {to!r}: use udp:HOST:PORT or udpout:HOST:PORT")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"bad target {to!r}: expected udp:HOST:PORT with a port in 1-65535")
    return host.strip("[]"), int(port)


def emulate(scenario: Scenario, *, to: str, speedup: float = 1.0,
            duration: float | None = None, truth: str | Path | None = None, seed: int = 0,
            on_progress: Callable[[float, float], None] | None = None,
            stop: threading.Event | None = None) -> EmulationStats:
    """Stream the flight to ``to`` over UDP, one MAVLink packet per datagram, mission time
    running ``speedup`` times faster than the wall clock (sent in bursts on a 10 ms grid).
    Blocks until the flight (or ``duration`` mission seconds) is over or ``stop`` is set;
    ``on_progress(mission_s, total_s)`` is called every mission second. The truth file is
    written at the end, also when interrupted."""
    if not speedup > 0:
        raise UserError(f"speedup must be > 0, not {speedup}")
    host, port = parse_target(to)
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve {host!r}: {exc.strerror}") from None
    total = scenario.duration_s if duration is None else duration
    sock = socket.socket(family, socket.SOCK_DGRAM)
    start_wall_ns = time.time_ns()
    emu = VehicleEmulator(scenario, seed=seed, start_unix_us=start_wall_ns // 1000)
    count = size = errors = 0
    max_late = 0.0
    start_mono = time.monotonic()
    next_progress = 0.0
    try:
        for t, packets in emu.frames(duration=duration):
            due = start_mono + t / speedup
            now = time.monotonic()
            if due > now:
                wake = start_mono + math.ceil((due - start_mono) / BURST_S - 1e-6) * BURST_S
                if stop is not None:
                    if stop.wait(wake - now):
                        break
                else:
                    time.sleep(wake - now)
            elif stop is not None and stop.is_set():
                break
            else:
                max_late = max(max_late, now - due)
            for p in packets:
                try:
                    sock.sendto(p, addr)
                    count += 1
                    size += len(p)
                except OSError:
                    errors += 1
            emu.stamp(t, time.time_ns())
            if on_progress is not None and t >= next_progress:
                next_progress += 1.0
                on_progress(t, total)
    finally:
        sock.close()
        if truth is not None:
            write_truth(truth, emu.truth(start_wall_ns=start_wall_ns, speedup=speedup, target=to))
    return EmulationStats.of(emu, packets=count, size=size, send_errors=errors,
                             wall_s=time.monotonic() - start_mono, max_late_s=max_late,
                             start_wall_ns=start_wall_ns)
