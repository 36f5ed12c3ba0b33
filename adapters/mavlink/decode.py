"""MAVLink messages -> telemetry events (SI units), the same way for live links and log files.

Both paths gather each message type's raw fields (MAVLink units) into numpy columns, then one
converter per type makes the event table, so a tlog decoded by the fast byte-level reader
and a live stream decoded by pymavlink give identical events.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

from qsframework.events import get_kind
from qsframework.validity import DEFAULT_BOUNDS, Invalid, TimeBounds, check

os.environ.setdefault("MAVLINK20", "1")

SOURCE = "mavlink"
UINT16_MAX = 0xFFFF
MAV_AUTOPILOT_INVALID = 8
MAV_TYPE_GCS = 6
MAV_MODE_FLAG_SAFETY_ARMED = 128

Raw = dict[str, np.ndarray]


def dialect():
    """pymavlink's ardupilotmega dialect module (MAVLink 2)."""
    from pymavlink.dialects.v20 import ardupilotmega

    return ardupilotmega


def _f(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64)


def _null_where(values: np.ndarray, mask: np.ndarray) -> pa.Array:
    return pa.array(values, mask=np.asarray(mask, bool))


def _position(raw: Raw) -> dict[str, object]:
    hdg = raw["hdg"].astype(np.int64)
    return {
        "lat": _f(raw["lat"]) / 1e7, "lon": _f(raw["lon"]) / 1e7,
        "alt": _f(raw["alt"]) / 1e3, "relative_alt": _f(raw["relative_alt"]) / 1e3,
        "vx": _f(raw["vx"]) / 100, "vy": _f(raw["vy"]) / 100, "vz": _f(raw["vz"]) / 100,
        "heading": _null_where(_f(hdg) / 100, hdg == UINT16_MAX),
    }


def _gps(raw: Raw) -> dict[str, object]:
    eph, epv = raw["eph"].astype(np.int64), raw["epv"].astype(np.int64)
    vel, cog = raw["vel"].astype(np.int64), raw["cog"].astype(np.int64)
    sats = raw["satellites_visible"].astype(np.int64)
    return {
        "fix_type": raw["fix_type"].astype(np.int64), "satellites": _null_where(sats, sats == 255),
        "hdop": _null_where(_f(eph) / 100, eph == UINT16_MAX), "vdop": _null_where(_f(epv) / 100, epv == UINT16_MAX),
        "lat": _f(raw["lat"]) / 1e7, "lon": _f(raw["lon"]) / 1e7, "alt": _f(raw["alt"]) / 1e3,
        "ground_speed": _null_where(_f(vel) / 100, vel == UINT16_MAX),
        "course": _null_where(_f(cog) / 100, cog == UINT16_MAX),
    }


def _sys_status(raw: Raw) -> dict[str, object]:
    volt = raw["voltage_battery"].astype(np.int64)
    cur = raw["current_battery"].astype(np.int64)
    rem = raw["battery_remaining"].astype(np.int64)
    n = len(volt)
    return {
        "battery_id": np.zeros(n, np.int64),
        "voltage": _null_where(_f(volt) / 1e3, volt == UINT16_MAX),
        "current": _null_where(_f(cur) / 100, cur == -1),
        "remaining": _null_where(_f(rem), rem == -1),
        "msg": pa.array(["SYS_STATUS"] * n, pa.string()),
    }


def _battery_status(raw: Raw) -> dict[str, object]:
    cells = raw["voltages"].astype(np.int64).reshape(len(raw["voltages"]), -1)
    valid = cells != UINT16_MAX
    mv = np.where(valid, cells, 0).sum(axis=1)
    ext = raw.get("voltages_ext")
    if ext is not None:
        ext = ext.astype(np.int64).reshape(len(ext), -1)
        ok = (ext != 0) & (ext != UINT16_MAX)  # 0: unused (extension); UINT16_MAX: none
        mv = mv + np.where(ok, ext, 0).sum(axis=1)
    cur = raw["current_battery"].astype(np.int64)
    rem = raw["battery_remaining"].astype(np.int64)
    n = len(cur)
    return {
        "battery_id": raw["id"].astype(np.int64),
        "voltage": _null_where(_f(mv) / 1e3, ~valid.any(axis=1)),
        "current": _null_where(_f(cur) / 100, cur == -1),
        "remaining": _null_where(_f(rem), rem == -1),
        "msg": pa.array(["BATTERY_STATUS"] * n, pa.string()),
    }


def _attitude(raw: Raw) -> dict[str, object]:
    return {k: _f(raw[k]) for k in ("roll", "pitch", "yaw", "rollspeed", "pitchspeed", "yawspeed")}


def _ekf(raw: Raw) -> dict[str, object]:
    out: dict[str, object] = {"flags": raw["flags"].astype(np.int64)}
    for k in ("velocity_variance", "pos_horiz_variance", "pos_vert_variance", "compass_variance",
              "terrain_alt_variance"):
        out[k] = _f(raw[k])
    return out


def _fence(raw: Raw) -> dict[str, object]:
    return {
        "breach_status": raw["breach_status"].astype(np.int64),
        "breach_count": raw["breach_count"].astype(np.int64),
        "breach_type": raw["breach_type"].astype(np.int64),
        "breach_time": raw["breach_time"].astype(np.int64),
    }


def _statustext(raw: Raw) -> dict[str, object]:
    texts = [_text(t) for t in raw["text"]]
    return {"severity": raw["severity"].astype(np.int64), "text": pa.array(texts, pa.string())}


def _text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return str(value).split("\0", 1)[0]


def _heartbeat(raw: Raw) -> dict[str, object]:
    from pymavlink import mavutil

    base = raw["base_mode"].astype(np.int64)
    custom = raw["custom_mode"].astype(np.int64)
    vtype = raw["type"].astype(np.int64)
    modes = []
    for t, c in zip(vtype.tolist(), custom.tolist()):
        mapping = mavutil.mode_mapping_bynumber(t) or {}
        modes.append(mapping.get(c, f"Mode({c})"))
    return {
        "armed": (base & MAV_MODE_FLAG_SAFETY_ARMED) != 0, "mode": pa.array(modes, pa.string()),
        "custom_mode": custom, "base_mode": base, "system_status": raw["system_status"].astype(np.int64),
        "vehicle_type": vtype, "autopilot": raw["autopilot"].astype(np.int64),
    }


@dataclass(frozen=True, slots=True)
class MessageSpec:
    name: str
    kind: str
    convert: Callable[[Raw], dict[str, object]]


SPECS: tuple[MessageSpec, ...] = (
    MessageSpec("GLOBAL_POSITION_INT", "position", _position),
    MessageSpec("GPS_RAW_INT", "gps", _gps),
    MessageSpec("SYS_STATUS", "battery", _sys_status),
    MessageSpec("BATTERY_STATUS", "battery", _battery_status),
    MessageSpec("ATTITUDE", "attitude", _attitude),
    MessageSpec("VIBRATION", "vibration", lambda raw: {}),  # stateful: see TelemetryDecoder
    MessageSpec("EKF_STATUS_REPORT", "ekf", _ekf),
    MessageSpec("HEARTBEAT", "heartbeat", _heartbeat),
    MessageSpec("STATUSTEXT", "statustext", _statustext),
    MessageSpec("FENCE_STATUS", "fence", _fence),
)
BY_NAME = {s.name: s for s in SPECS}


def raw_fields(name: str) -> tuple[str, ...]:
    """The MAVLink fields of message ``name`` that its converter reads."""
    cls = dialect().mavlink_map[getattr(dialect(), f"MAVLINK_MSG_ID_{name}")]
    return tuple(cls.ordered_fieldnames)


@dataclass(slots=True)
class DecodeStats:
    messages: int = 0  # decoded into events
    foreign: int = 0  # from another system/component (e.g. a ground station)
    ignored: int = 0  # message types that are not telemetry events
    bad: int = 0  # CRC errors, truncated or unparseable packets


@dataclass(slots=True)
class TelemetryDecoder:
    """Stateful: per vehicle message count (``seq``) and vibration clipping counters."""

    source: str = SOURCE
    stats: DecodeStats = field(default_factory=DecodeStats)
    _seq: dict[str, int] = field(default_factory=dict)
    _clip: dict[str, np.ndarray] = field(default_factory=dict)

    def tables(self, name: str, raw: Raw, ts: np.ndarray, keys: np.ndarray, seq: np.ndarray) -> pa.Table:
        """Events of one message type: raw fields, event times (ns), vehicle keys, seqs."""
        spec = BY_NAME[name]
        cols = self._vibration(raw, keys) if name == "VIBRATION" else spec.convert(raw)
        kind = get_kind(spec.kind)
        n = len(ts)
        arrays = [pa.array(np.asarray(ts, np.int64)), pa.array(np.asarray(ts, np.int64)),
                  pa.array([self.source] * n, pa.string()), pa.array(keys.astype(str).tolist(), pa.string()),
                  pa.array(np.asarray(seq, np.int64))]
        for f in list(kind.schema)[5:]:
            col = cols[f.name]
            arrays.append(col.cast(f.type) if isinstance(col, pa.Array) else pa.array(col, f.type))
        return pa.Table.from_arrays(arrays, schema=kind.schema)

    def next_seqs(self, keys: Iterable[str]) -> list[int]:
        out = []
        seq = self._seq
        for k in keys:
            s = seq.get(k, 0)
            out.append(s)
            seq[k] = s + 1
        return out

    def _vibration(self, raw: Raw, keys: np.ndarray) -> dict[str, object]:
        clips = np.stack([raw[f"clipping_{i}"].astype(np.int64) for i in range(3)], axis=1)
        inc = np.zeros_like(clips)
        for r, key in enumerate(keys.astype(str).tolist()):
            prev = self._clip.get(key)
            now = clips[r]
            inc[r] = clip_increments(prev, now)
            self._clip[key] = now
        out: dict[str, object] = {"vibe_x": _f(raw["vibration_x"]), "vibe_y": _f(raw["vibration_y"]),
                                  "vibe_z": _f(raw["vibration_z"])}
        for i in range(3):
            out[f"clipping_{i}"] = clips[:, i]
            out[f"clip_inc_{i}"] = inc[:, i]
        return out


def clip_increments(prev: np.ndarray | None, now: np.ndarray) -> np.ndarray:
    """Clipping counts gained per axis since ``prev`` (0 for a first sample); a count that
    went down means the vehicle rebooted, so the new count is the increment."""
    if prev is None:
        return np.zeros_like(now)
    return np.where(now >= prev, now - prev, now)


def is_vehicle_heartbeat(autopilot: int, vehicle_type: int) -> bool:
    """A heartbeat of a vehicle (not of a ground station or another component)."""
    return autopilot != MAV_AUTOPILOT_INVALID and vehicle_type != MAV_TYPE_GCS


def valid_rows(kind: str, table: pa.Table, rejected: dict[str, int], *,
               bounds: TimeBounds = DEFAULT_BOUNDS) -> tuple[pa.Table, list[Invalid]]:
    """The rows of ``table`` that keep :mod:`qsframework.validity`'s rules (a latitude out of
    range, a NaN, an event time out of bounds are not telemetry), and the others (row of
    ``table``, reason), also counted in ``rejected`` by ``"kind: reason"``, so nothing is
    dropped without a trace."""
    table, bad = check(kind, table, bounds)
    for b in bad:
        why = f"{kind}: {b.reason}"
        rejected[why] = rejected.get(why, 0) + 1
    return table, bad


class EventCounts(Protocol):
    events: int
    first_ts: int | None
    last_ts: int | None


def count_events(stats: EventCounts, table: pa.Table) -> None:
    """Add ``table``'s events to ``stats.events`` and widen ``stats.first_ts``/``last_ts`` by theirs."""
    ts = table.column("ts_event").to_numpy()
    lo, hi = int(ts.min()), int(ts.max())
    stats.events += len(ts)
    stats.first_ts = lo if stats.first_ts is None else min(stats.first_ts, lo)
    stats.last_ts = hi if stats.last_ts is None else max(stats.last_ts, hi)


def decode_messages(decoder: TelemetryDecoder, msgs: list, ts_ns: list[int]) -> list[tuple[str, pa.Table]]:
    """Events of pymavlink messages (the vehicle's, of telemetry types), received at ``ts_ns``."""
    keep = [i for i, m in enumerate(msgs) if m.get_type() in BY_NAME]
    keys = [str(msgs[i].get_srcSystem()) for i in keep]
    seqs = decoder.next_seqs(keys)
    groups: dict[str, list[int]] = {}
    for j, i in enumerate(keep):
        groups.setdefault(msgs[i].get_type(), []).append(j)
    decoder.stats.messages += len(keep)
    decoder.stats.ignored += len(msgs) - len(keep)
    out = []
    for name, rows in groups.items():
        group = [msgs[keep[j]] for j in rows]
        raw = {f: np.array([getattr(m, f) for m in group]) for f in raw_fields(name)}
        out.append((BY_NAME[name].kind, decoder.tables(
            name, raw, np.array([ts_ns[keep[j]] for j in rows], np.int64),
            np.array([keys[j] for j in rows]), np.array([seqs[j] for j in rows], np.int64))))
    return out
