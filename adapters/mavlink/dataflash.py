"""ArduPilot DataFlash logs (``.bin``, the autopilot's onboard log) -> telemetry events.

pymavlink's ``DFReader_binary`` parses the log (message by message, in file order, skipping
damaged bytes); each message's ``_timestamp`` is unix time derived from the GPS week/ms of
the log's GPS messages (without GPS messages it is seconds since boot). Event fields:
``key`` = the log's ``SYSID_THISMAV`` parameter (else "1"), ``source`` = "dataflash", ``seq`` =
running count of emitted events, ``ts_event = ts_recv`` = the message's time in ns (rounded
to the microsecond). Only instance/core 0 of the messages that have one (GPS ``I``/``Instance``,
VIBE ``IMU``, XKF4/NKF4 ``C``); every battery instance is kept (``battery_id`` tells them apart).

Mapping (ArduCopter 4.x messages; SI units, angles of attitude in radians):

- ``POS`` Lat, Lng (deg), Alt (m AMSL), RelHomeAlt (m) -> ``position`` (vx/vy/vz/heading null).
- ``GPS`` Status (fix type), NSats, HDop, Lat, Lng, Alt (m), Spd (m/s), GCrs (deg) -> ``gps``
  (vdop null).
- ``BAT`` Inst, Volt (V), Curr (A), RemPct (%, null when the log has none) -> ``battery``
  (battery_id = Inst, msg = "BAT"). Older logs (ArduCopter 3.2-3.3) have ``CURR`` instead:
  Volt, Curr (integers V*100 and A*100 in 3.2, floats in V and A later) -> ``battery``
  (battery_id 0, remaining null, msg = "CURR"), left out where the voltage is 0 or the log's
  BATT_MONITOR is 0 (no battery monitor: the autopilot logs zeros).
- ``ATT`` Roll, Pitch, Yaw (deg) -> ``attitude`` in radians (rates null).
- ``VIBE`` VibeX/Y/Z (m/s^2) and clipping: ``Clip`` (newer logs, one counter -> clipping_0,
  clipping_1/2 = 0) or ``Clip0/1/2`` -> ``vibration``; ``clip_inc_*`` are the increments since
  the previous VIBE (0 for the first; a counter that goes down means a reboot: the new count).
- ``XKF4`` (EKF3) or ``NKF4`` (EKF2) SV, SP, SH, SM, SVT (test ratios), SS (status) -> ``ekf``
  (velocity, pos_horiz, pos_vert, compass, terrain_alt variances; flags = SS or 0).
- ``MODE`` (ModeNum, else Mode) and arming (``ARM`` ArmState, or ``EV`` Id 10 armed / 11
  disarmed) -> ``heartbeat`` at each change of mode or armed state, with the current state:
  mode name from pymavlink's copter table (null before the first MODE), custom_mode = the
  mode number, vehicle_type 2 (quadrotor), autopilot 3 (ArduPilot), base_mode 129 armed / 1
  disarmed, system_status 4 (active) armed / 3 (standby) disarmed.
- ``MSG`` Message -> ``statustext`` (severity 6, info).

An onboard log has no radio link: its heartbeat events mark changes only, they are not
periodic, so run ``UavAnomaly`` with ``-p link=false`` on an imported DataFlash log (else
every quiet stretch longer than link_timeout would look like a link loss).

:class:`DataflashSource` reads a log as a :class:`~qsframework.io.FileSource`;
:func:`import_dataflash` writes it as a new recording.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from qsframework.errors import UserError
from qsframework.events import get_kind
from qsframework.io import Batch
from qsframework.recording.imports import import_recording
from qsframework.validity import DEFAULT_FLOOR_NS, describe_rejected

from .decode import clip_increments
from .log_source import LogSource

SOURCE = "dataflash"
COPTER = 2  # MAV_TYPE_QUADROTOR
AUTOPILOT_ARDUPILOT = 3  # MAV_AUTOPILOT_ARDUPILOTMEGA
EV_ARMED, EV_DISARMED = 10, 11
TYPES = frozenset({"POS", "GPS", "BAT", "CURR", "ATT", "VIBE", "XKF4", "NKF4", "MODE", "ARM", "EV", "MSG"})
_INSTANCE_FIELDS = {"GPS": ("I", "Instance"), "VIBE": ("IMU",), "XKF4": ("C",), "NKF4": ("C",)}


@dataclass(slots=True)
class DataflashStats:
    messages: int = 0  # messages of the mapped types read from the log
    events: int = 0  # telemetry events emitted (they keep qsframework.validity's rules)
    other_instance: int = 0  # messages of a second GPS, IMU or EKF core (not emitted)
    damaged_bytes: int = 0  # bytes pymavlink passed over as not a message
    system_id: int = 1
    first_ts: int | None = None
    last_ts: int | None = None
    boot_clock: bool = False  # the log has no GPS time: its times count from boot
    by_kind: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # events that break a rule, by "kind: reason"


_SKIPPED = re.compile(r"Skipped (\d+) bad bytes")


class _Complaints:
    """A text stream for what pymavlink prints as it parses: its indexer a line per damaged
    byte ("bad header ..."), its parser a line per damaged stretch ("Skipped N bad bytes").
    It counts the bytes the parser skipped, keeps nothing and shows nothing: the importer
    reports the count in one line."""

    def __init__(self) -> None:
        self.damaged_bytes = 0

    def write(self, text: str) -> int:
        self.damaged_bytes += sum(int(n) for n in _SKIPPED.findall(text))
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _quiet(complaints: _Complaints, *, native: bool = False) -> Iterator[None]:
    """pymavlink's prints go to ``complaints``; with ``native``, also what its C indexer
    writes to file descriptors 1 and 2 itself (a junk file would print a line per byte)."""
    with contextlib.redirect_stdout(complaints), contextlib.redirect_stderr(complaints):  # type: ignore[type-var]
        if not native:
            yield
            return
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        with tempfile.TemporaryFile() as sink:
            saved = [os.dup(1), os.dup(2)]
            try:
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
                yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
                sink.seek(0)
                while block := sink.read(1 << 20):
                    complaints.write(block.decode("utf-8", "replace"))


@dataclass(slots=True)
class _State:
    armed: bool = False
    mode: int | None = None
    clip: tuple[int, int, int] | None = None
    battery_monitor: bool = True  # the log's BATT_MONITOR is not 0 (0: CURR's zeros are no battery)
    bat: bool = False  # a BAT message was seen: CURR (if any) would say it again


def _rad(deg: float) -> float:
    return math.radians(deg)


def _instance(m: Any, name: str) -> int:
    for f in _INSTANCE_FIELDS.get(name, ()):
        if f in m._fieldnames:
            return int(getattr(m, f))
    return 0


def _get(m: Any, name: str, default: Any = None) -> Any:
    return getattr(m, name) if name in m._fieldnames else default


def _scaled(m: Any, name: str, per_unit: float) -> float | None:
    """Field ``name`` in SI units: logged as a float it is one already; as an integer (ArduCopter
    3.2 and before) it counts 1/``per_unit`` of the unit."""
    value = _get(m, name)
    if value is None:
        return None
    is_int = m.fmt.format[m.fmt.columns.index(name)] in "bBhHiIqQ"
    return value / per_unit if is_int else float(value)


def _rows(m: Any, name: str, st: _State, modes: dict[int, str]) -> list[tuple[str, dict[str, Any]]]:
    """The events (kind, fields) of one message: none, one, or (heartbeat) one at a change."""
    if name == "POS":
        return [("position", {"lat": m.Lat, "lon": m.Lng, "alt": m.Alt, "relative_alt": m.RelHomeAlt})]
    if name == "GPS":
        return [("gps", {"fix_type": m.Status, "satellites": m.NSats, "hdop": m.HDop, "lat": m.Lat,
                         "lon": m.Lng, "alt": m.Alt, "ground_speed": m.Spd, "course": m.GCrs})]
    if name == "CURR":  # ArduCopter 3.2-3.3's battery: V*100 and A*100 as integers (3.2), else V and A
        volt = _scaled(m, "Volt", 100)
        if st.bat or not st.battery_monitor or not volt:  # a zero voltage: no battery monitor
            return []
        return [("battery", {"battery_id": 0, "voltage": volt, "current": _scaled(m, "Curr", 100),
                             "remaining": None, "msg": "CURR"})]
    if name == "BAT":
        st.bat = True
        rem = _get(m, "RemPct")
        return [("battery", {"battery_id": m.Inst, "voltage": m.Volt, "current": m.Curr,
                             "remaining": None if rem is None else float(rem), "msg": "BAT"})]
    if name == "ATT":
        return [("attitude", {"roll": _rad(m.Roll), "pitch": _rad(m.Pitch), "yaw": _rad(m.Yaw)})]
    if name == "VIBE":
        if "Clip" in m._fieldnames:
            clip = (int(m.Clip), 0, 0)
        else:
            clip = (int(m.Clip0), int(m.Clip1), int(m.Clip2))
        now = np.array(clip, np.int64)
        inc = clip_increments(None if st.clip is None else np.array(st.clip, np.int64), now).tolist()
        st.clip = clip
        row = {"vibe_x": m.VibeX, "vibe_y": m.VibeY, "vibe_z": m.VibeZ}
        for i in range(3):
            row[f"clipping_{i}"], row[f"clip_inc_{i}"] = clip[i], inc[i]
        return [("vibration", row)]
    if name in ("XKF4", "NKF4"):
        return [("ekf", {"flags": int(_get(m, "SS", 0)), "velocity_variance": m.SV, "pos_horiz_variance": m.SP,
                         "pos_vert_variance": m.SH, "compass_variance": m.SM, "terrain_alt_variance": m.SVT})]
    if name == "MSG":
        return [("statustext", {"severity": 6, "text": str(m.Message)})]
    armed, mode = st.armed, st.mode
    if name == "MODE":
        mode = int(_get(m, "ModeNum", m.Mode))
    elif name == "ARM":
        armed = bool(m.ArmState)
    elif name == "EV" and m.Id in (EV_ARMED, EV_DISARMED):
        armed = m.Id == EV_ARMED
    if (armed, mode) == (st.armed, st.mode):
        return []
    st.armed, st.mode = armed, mode
    return [("heartbeat", {
        "armed": armed, "mode": None if mode is None else modes.get(mode, f"Mode({mode})"), "custom_mode": mode,
        "base_mode": 129 if armed else 1, "system_status": 4 if armed else 3,
        "vehicle_type": COPTER, "autopilot": AUTOPILOT_ARDUPILOT})]


class _Columns:
    """One kind's pending events as Python column lists."""

    def __init__(self, kind: str) -> None:
        self.kind = get_kind(kind)
        self.names = [f.name for f in list(self.kind.schema)[5:]]
        self.ts: list[int] = []
        self.seq: list[int] = []
        self.cols: dict[str, list[Any]] = {n: [] for n in self.names}

    def add(self, ts: int, seq: int, row: dict[str, Any]) -> None:
        self.ts.append(ts)
        self.seq.append(seq)
        for n in self.names:
            self.cols[n].append(row.get(n))

    def table(self, key: str) -> pa.Table:
        n = len(self.ts)
        schema = self.kind.schema
        arrays = [pa.array(self.ts, pa.int64()), pa.array(self.ts, pa.int64()), pa.array([SOURCE] * n, pa.string()),
                  pa.array([key] * n, pa.string()), pa.array(self.seq, pa.int64())]
        arrays += [pa.array(self.cols[f.name], f.type) for f in list(schema)[5:]]
        return pa.Table.from_arrays(arrays, schema=schema)


def stamp_ns(seconds: float, *, boot_start_ns: int | None = None) -> int:
    """A message's time (pymavlink's ``_timestamp``, s) in ns, to the microsecond. In a log
    without GPS time it counts from boot (1970-01-01 on the clock): with ``boot_start_ns`` it
    counts from there instead."""
    ns = round(seconds * 1e6) * 1000
    if boot_start_ns is not None and ns < DEFAULT_FLOOR_NS:
        ns += boot_start_ns
    return ns


def _open(path: Path) -> Any:
    from pymavlink.DFReader import DFReader_binary

    if not path.is_file():
        raise UserError(f"cannot read {path}: no such file" if not path.exists() else f"cannot read {path}: not a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty")
    try:
        with _quiet(_Complaints(), native=True):
            reader = DFReader_binary(str(path), zero_time_base=False)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except Exception:  # noqa: BLE001 - pymavlink raises plain exceptions on malformed formats
        raise UserError(f"{path} is not an ArduPilot DataFlash log (.bin)") from None
    if len(reader.formats) <= 1:  # only FMT's own built-in format: no FMT message was found
        reader.close()
        raise UserError(f"{path} is not an ArduPilot DataFlash log (.bin): it has no message formats")
    return reader


def _parameters(reader: Any, *names: str) -> dict[str, float]:
    """The first value of each parameter of ``names`` in the log's PARM messages (those it
    has), in one pass that stops once all are found."""
    found: dict[str, float] = {}
    with _quiet(_Complaints()):
        while len(found) < len(names) and (m := reader.recv_match(type="PARM", strict=True)) is not None:
            if m.Name in names:
                found.setdefault(m.Name, float(m.Value))
        reader.rewind()
    return found


class DataflashSource(LogSource):
    """The telemetry in the DataFlash log ``path`` as ``(kind, table)`` batches, about
    ``chunk`` events at a time, counted in :attr:`stats`. Events that break a validity rule
    are counted (``stats.rejected``) and, with :attr:`on_reject`, handed over as JSON with
    their reason. A log without GPS time is timed from boot, before every validity floor:
    refused, unless ``boot_start_ns`` says where its clock starts (see :func:`stamp_ns`)."""

    stats: DataflashStats

    def __init__(self, path: str | Path, *, stats: DataflashStats | None = None, chunk: int = 100_000,
                 progress: Callable[[int], None] | None = None, boot_start_ns: int | None = None) -> None:
        super().__init__(path, stats if stats is not None else DataflashStats(), source=SOURCE,
                         format="dataflash", progress=progress)
        self.chunk = chunk
        self.boot_start_ns = boot_start_ns  # where a log without GPS time starts (None: refused)

    def __iter__(self) -> Iterator[Batch]:
        from pymavlink import mavutil

        path, stats, chunk = self.path, self.stats, self.chunk
        reader = _open(path)
        complaints = _Complaints()  # of the one pass that makes the events
        try:
            params = _parameters(reader, "SYSID_THISMAV", "BATT_MONITOR")
            stats.system_id = int(params.get("SYSID_THISMAV") or 1)
            key = str(stats.system_id)
            modes: dict[int, str] = mavutil.mode_mapping_bynumber(COPTER) or {}
            st = _State(battery_monitor=params.get("BATT_MONITOR") != 0)
            pending: dict[str, _Columns] = {}
            npending = seq = ts = 0
            while True:
                with _quiet(complaints):
                    m = reader.recv_msg()
                if m is None:
                    break
                name = m.get_type()
                if name not in TYPES:
                    continue
                if _instance(m, name) != 0:
                    stats.other_instance += 1
                    continue
                stats.messages += 1
                if stats.messages == 1:
                    stats.boot_clock = m._timestamp * 1e9 < DEFAULT_FLOOR_NS
                ts = stamp_ns(m._timestamp, boot_start_ns=self.boot_start_ns)
                for kind, row in _rows(m, name, st, modes):
                    cols = pending.get(kind)
                    if cols is None:
                        cols = pending[kind] = _Columns(kind)
                    cols.add(ts, seq, row)
                    seq += 1
                    npending += 1
                if npending >= chunk:
                    stats.damaged_bytes = complaints.damaged_bytes
                    yield from self._valid_tables(pending, key)
                    pending, npending = {}, 0
            stats.damaged_bytes = complaints.damaged_bytes
            yield from self._valid_tables(pending, key)
            if not seq:
                raise UserError(f"no telemetry in {path}: is it an ArduPilot DataFlash log (.bin)?")
            if not stats.events:
                boot = " (its times count from boot: the log has no GPS time)" if ts < DEFAULT_FLOOR_NS else ""
                raise UserError(f"no valid telemetry in {path}: {describe_rejected(stats.rejected)}{boot}")
        finally:
            reader.close()

    def _valid_tables(self, pending: dict[str, _Columns], key: str) -> Iterator[Batch]:
        """The pending events as tables, less (and counting) those that break a validity rule."""
        for kind, cols in pending.items():
            table = self.valid(kind, cols.table(key))
            if table.num_rows:
                self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + table.num_rows
                yield kind, table


def read_dataflash(path: str | Path, *, stats: DataflashStats | None = None,
                   chunk: int = 100_000) -> Iterator[tuple[str, pa.Table]]:
    """(kind, table) of the telemetry in the DataFlash log ``path``, about ``chunk`` events at
    a time (a :class:`DataflashSource` read synchronously)."""
    return iter(DataflashSource(path, stats=stats, chunk=chunk))


def import_dataflash(path: str | Path, *, out: str | Path,
                     progress: Callable[[int], None] | None = None) -> DataflashStats:
    """Write the telemetry in the DataFlash log ``path`` as the recording ``out`` (new or
    empty); a failed import leaves nothing there. Rejected events are counted in the
    recording's origin (``rejected``)."""
    source = DataflashSource(path, progress=progress)
    import_recording(source, out)
    return source.stats
