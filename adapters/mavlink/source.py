"""Live MAVLink: a pymavlink connection (``udpin:``, ``udpout:``, ``tcp:``, serial) -> telemetry events.

Only the vehicle's own messages become events: the vehicle is the given system/component
id, or the sender of the first heartbeat that is not a ground station's (messages that
arrive before it are held, then sorted out). Event time is the receive time, or with
``clock="vehicle"`` the vehicle's own ``time_boot_ms`` (anchored to the receive time of
the first message), which keeps event time right when a log or an emulator is replayed
faster than real time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from qsframework.io import Batch, Emit, LiveSource, Rejected
from qsframework.validity import describe_rejected
from qsframework.wire import encode

from .decode import TelemetryDecoder, decode_messages, is_vehicle_heartbeat, valid_rows

log = logging.getLogger("qsf.mavlink")

Clock = Literal["receive", "vehicle"]
#: takes one hand-over: the batches of every kind decoded since the last one
Handover = Callable[[list[Batch]], Awaitable[None]]
_HELD_MAX = 20_000  # messages held while waiting for the vehicle's first heartbeat
_LEAP_MS = 60_000  # vehicle clock: a time_boot_ms this far ahead counts once a second message confirms it
_UNCONFIRMED = f"time_boot_ms more than {_LEAP_MS // 1000} s ahead of the vehicle's clock, not confirmed by the next message"


@dataclass(frozen=True, kw_only=True)
class MavlinkConfig:
    url: str
    system_id: int | None = None
    component_id: int | None = None
    clock: Clock = "receive"
    heartbeat: bool = True  # send a ground-station heartbeat each second (tcp/udpout need one)
    flush_interval: float = 0.2

    def __post_init__(self) -> None:
        if not self.url or ":" not in self.url and not self.url.startswith("/dev/"):
            raise ValueError(f"not a MAVLink connection: {self.url!r} (e.g. udpin:0.0.0.0:14550, tcp:127.0.0.1:5760)")
        if self.clock not in ("receive", "vehicle"):
            raise ValueError("clock must be 'receive' or 'vehicle'")


@dataclass(slots=True)
class SourceStats:
    received: int = 0
    events: int = 0
    foreign: int = 0
    bad: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # events that break a validity rule, by reason
    epoch_ns: int | None = None  # vehicle clock: ts_event = epoch_ns + time_boot_ms * 1e6
    system_id: int | None = None
    component_id: int | None = None
    started: float = field(default_factory=time.monotonic)
    last_message: float | None = None


class MavlinkSource(LiveSource):
    """Reads a MAVLink link and hands telemetry events over every flush interval: as
    ``(kind, table)`` batches (:meth:`produce`, the :class:`~qsframework.io.Source` way), or
    each hand-over's batches at once (:meth:`run`, for a consumer that merges them into the
    total order itself). Events that break a validity rule go to ``on_reject``."""

    def __init__(self, config: MavlinkConfig) -> None:
        self.cfg = config
        self.stats = SourceStats(system_id=config.system_id, component_id=config.component_id)
        self.decoder = TelemetryDecoder()
        self._stop = asyncio.Event()
        self._held: list[tuple[object, int]] = []
        self._batch: list[object] = []
        self._batch_ts: list[int] = []
        self._untimed: list[object] = []  # vehicle clock: messages before the first time_boot_ms
        self._boot_ms = 0
        self._leap: tuple[object, int] | None = None  # (message, time_boot_ms) held until confirmed
        self._unconfirmed: list[tuple[object, int]] = []  # leaps the next message did not confirm

    def stop(self) -> None:
        self._stop.set()

    async def produce(self, emit: Emit) -> None:
        async def handover(batches: list[Batch]) -> None:
            for kind, table in batches:
                await emit(kind, table)

        await self.run(handover)

    async def run(self, sink: Handover, *, duration: float | None = None,
                  until: Callable[[], bool] | None = None,
                  tick: Callable[[object], None] | None = None) -> SourceStats:
        """Read until ``stop()``, ``duration`` seconds, or ``until()`` is true.

        ``tick(connection)`` runs on every pass of the loop (to send commands on the link).
        Events that break a validity rule are counted in ``stats.rejected`` and handed to
        ``on_reject`` with their reasons, never to ``sink``.
        """
        from pymavlink import mavutil

        try:
            conn = mavutil.mavlink_connection(self.cfg.url, dialect="ardupilotmega", source_system=255,
                                              source_component=190, autoreconnect=True)
        except Exception as exc:  # noqa: BLE001 - pymavlink raises many kinds for a bad URL
            raise ValueError(f"cannot open {self.cfg.url}: {exc}") from None
        udp = isinstance(conn, mavutil.mavudp)
        if udp:
            _big_receive_buffer(conn)
        deadline = None if duration is None else time.monotonic() + duration
        last_flush = last_hb = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline or (until is not None and until()):
                    break
                if self.cfg.heartbeat and now - last_hb >= 1.0:
                    last_hb = now
                    try:
                        conn.mav.heartbeat_send(mavutil.mavlink.MAV_TYPE_GCS, mavutil.mavlink.MAV_AUTOPILOT_INVALID,
                                                0, 0, 0)
                    except OSError:
                        pass  # udpin before anyone talked to us: nowhere to send yet
                if tick is not None:
                    tick(conn)
                got = self._read_datagrams(conn) if udp else self._read_stream(conn)
                if time.monotonic() - last_flush >= self.cfg.flush_interval:
                    last_flush = time.monotonic()
                    await self._flush(sink)
                if not got:
                    await asyncio.sleep(0.002)
                else:
                    await asyncio.sleep(0)
            if not udp:
                self._drain(conn)
            if self._leap is not None:  # nothing came after it to confirm it
                self._unconfirmed.append(self._leap)
                self._leap = None
            await self._flush(sink)
        finally:
            conn.close()
        return self.stats

    def _read_stream(self, conn, limit: int = 2000) -> int:
        """TCP and serial: pymavlink's stream parser."""
        got = 0
        while got < limit:
            try:
                msg = conn.recv_match(blocking=False)
            except (OSError, ConnectionError) as exc:
                log.warning("link error: %s", exc)
                msg = None
            if msg is None:
                break
            got += 1
            self._on_message(msg, time.time_ns())
        return got

    def _read_datagrams(self, conn, limit: int = 500) -> int:
        """UDP: each datagram is parsed on its own, so junk in one never swallows the next."""
        got = 0
        for _ in range(limit):
            try:
                data = conn.recv()
            except (OSError, ConnectionError) as exc:
                log.warning("link error: %s", exc)
                break
            if not data:
                break
            now = time.time_ns()
            msgs, bad = split_datagram(conn.mav, bytes(data) if not isinstance(data, str) else data.encode("latin-1"))
            self.stats.bad += bad
            for msg in msgs:
                self._on_message(msg, now)
            got += len(msgs) + bad
        return got

    def _drain(self, conn) -> None:
        """Messages still in pymavlink's buffer: a UDP read yields one message per datagram,
        so bad datagrams leave good messages queued behind them."""
        misses = 0
        while misses < 3:
            try:
                msg = conn.recv_match(blocking=False)
            except (OSError, ConnectionError):
                msg = None
            if msg is None:
                misses += 1
                continue
            misses = 0
            self._on_message(msg, time.time_ns())

    # -- messages ------------------------------------------------------------------------
    def _on_message(self, msg, recv_ns: int) -> None:
        kind = msg.get_type()
        if kind == "BAD_DATA":
            self.stats.bad += 1
            return
        self.stats.received += 1
        self.stats.last_message = time.monotonic()
        if self.stats.system_id is None:
            if kind == "HEARTBEAT" and is_vehicle_heartbeat(msg.autopilot, msg.type):
                self.stats.system_id = msg.get_srcSystem()
                if self.stats.component_id is None:
                    self.stats.component_id = msg.get_srcComponent()
                log.info("vehicle: system %d component %d", self.stats.system_id, self.stats.component_id)
                held, self._held = self._held, []
                for m, ts in held:
                    self._accept(m, ts)
                self._accept(msg, recv_ns)
            elif len(self._held) < _HELD_MAX:
                self._held.append((msg, recv_ns))
            else:
                self.stats.foreign += 1
            return
        self._accept(msg, recv_ns)

    def _accept(self, msg, recv_ns: int) -> None:
        s = self.stats
        if msg.get_srcSystem() != s.system_id or (s.component_id is not None and msg.get_srcComponent() != s.component_id):
            s.foreign += 1
            return
        if self.cfg.clock == "vehicle":
            boot = getattr(msg, "time_boot_ms", None)
            if s.epoch_ns is None:
                if boot is None:  # wait for the first message that tells the vehicle's time
                    if len(self._untimed) < _HELD_MAX:
                        self._untimed.append(msg)
                    return
                s.epoch_ns = recv_ns - boot * 1_000_000
                self._boot_ms = boot
                held, self._untimed = self._untimed, []
                for m in held:
                    self._batch.append(m)
                    self._batch_ts.append(s.epoch_ns + boot * 1_000_000)
            if boot is not None and not self._advance_clock(msg, boot):
                return
            ts = s.epoch_ns + self._boot_ms * 1_000_000
        else:
            ts = recv_ns
        self._batch.append(msg)
        self._batch_ts.append(ts)

    def _advance_clock(self, msg, boot: int) -> bool:
        """Move the vehicle clock to ``boot`` (ms since boot); False when ``msg`` is held back.

        The clock only moves forward (every later event time follows it), so one bad packet
        must not move it far ahead: a leap of more than _LEAP_MS (a link back after a long
        gap, or a corrupted field) counts only once the next timed message confirms it; an
        unconfirmed one is rejected (see :meth:`_flush`)."""
        leap = self._leap
        if boot > self._boot_ms + _LEAP_MS and (leap is None or abs(boot - leap[1]) > _LEAP_MS):
            if leap is not None:
                self._unconfirmed.append(leap)
            self._leap = (msg, boot)
            return False
        self._leap = None
        if leap is not None:
            if boot > self._boot_ms + _LEAP_MS:  # confirmed: the held message takes its place first
                self._boot_ms = leap[1]
                self._batch.append(leap[0])
                self._batch_ts.append(self.stats.epoch_ns + leap[1] * 1_000_000)
            else:
                self._unconfirmed.append(leap)
        self._boot_ms = max(self._boot_ms, boot)
        return True

    async def _reject(self, kind: str, rows: pa.Table, reasons: list[str]) -> None:
        """Rejected events (already counted in ``stats.rejected``): logged, and each handed
        to ``on_reject`` as JSON with its reason."""
        log.warning("%d %s event(s) rejected; so far %s", rows.num_rows, kind, describe_rejected(self.stats.rejected))
        if self.on_reject is None:
            return
        origin = (("source", self.cfg.url.encode()),)
        for (_key, value), why in zip(encode(rows), reasons, strict=True):
            await self.reject(Rejected(value, why, kind=kind, origin=origin))

    async def _flush(self, sink: Handover) -> None:
        if self._unconfirmed:
            held, self._unconfirmed = self._unconfirmed, []
            epoch = self.stats.epoch_ns or 0
            for kind, rows in decode_messages(self.decoder, [m for m, _ in held],
                                              [epoch + boot * 1_000_000 for _, boot in held]):
                why = f"{kind}: {_UNCONFIRMED}"
                self.stats.rejected[why] = self.stats.rejected.get(why, 0) + rows.num_rows
                await self._reject(kind, rows, [_UNCONFIRMED] * rows.num_rows)
        if not self._batch:
            return
        msgs, ts = self._batch, self._batch_ts
        self._batch, self._batch_ts = [], []
        out = []
        for kind, decoded in decode_messages(self.decoder, msgs, ts):
            table, invalid = valid_rows(kind, decoded, self.stats.rejected)
            if invalid:
                await self._reject(kind, decoded.take([b.index for b in invalid]), [b.reason for b in invalid])
            if table.num_rows:
                out.append((kind, table))
        self.stats.events += sum(t.num_rows for _, t in out)
        if out:
            await sink(out)


def _big_receive_buffer(conn, size: int = 8 << 20) -> None:
    """UDP links: room for bursts while events are being written (the kernel may cap it)."""
    import socket

    sock = getattr(conn, "port", None)
    if isinstance(sock, socket.socket) and sock.type == socket.SOCK_DGRAM:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass


def split_datagram(mav, data: bytes) -> tuple[list, int]:
    """The MAVLink packets of one datagram, CRC-checked by pymavlink; and how many bad
    stretches (junk bytes, broken or cut packets) were passed over."""
    out, bad, pos, n = [], 0, 0, len(data)
    while pos < n:
        magic = data[pos]
        size = 0
        if magic == 0xFD and pos + 3 <= n:
            size = 12 + data[pos + 1] + (13 if data[pos + 2] & 1 else 0)
        elif magic == 0xFE and pos + 2 <= n:
            size = 8 + data[pos + 1]
        if size and pos + size <= n:
            try:
                out.append(mav.decode(bytearray(data[pos:pos + size])))
                pos += size
                continue
            except Exception:  # noqa: BLE001 - pymavlink's MAVError and struct errors alike
                pass
        bad += 1
        nxt = [i for i in (data.find(b"\xfd", pos + 1), data.find(b"\xfe", pos + 1)) if i >= 0]
        pos = min(nxt) if nxt else n
    return out, bad
