"""Fast ``.tlog`` reading: MAVLink packets found and checked in one pass, payloads decoded in bulk.

A tlog (MAVProxy, Mission Planner, QGroundControl) is a sequence of records: an 8-byte
big-endian unix time in microseconds, then one MAVLink v1 (0xFE) or v2 (0xFD) packet. The
scan walks the records, checks the CRC (with the type's CRC_EXTRA) of every packet of a type
the dialect knows, keeps those of the telemetry message types, and resynchronizes on the next
magic byte after damage; a packet of an unknown type (its CRC cannot be checked) is looked
into like damage, so garbage that looks like a packet header never swallows valid records.
Each type's payloads are then gathered with numpy (MAVLink 2's trailing-zero truncation
undone) and viewed through a structured dtype built from pymavlink's wire layout, so no
Python code runs per message after the scan. pymavlink's own parser is the reference:
the tests check both give the same events. :class:`TlogSource` is the reader as a
:class:`~qsframework.io.FileSource`; :func:`import_tlog` writes it as a new recording.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from fastcrc import crc16

from qsframework.errors import UserError
from qsframework.io import Batch
from qsframework.recording.imports import import_recording
from qsframework.validity import describe_rejected

from .decode import BY_NAME, SPECS, TelemetryDecoder, dialect, is_vehicle_heartbeat
from .log_source import LogSource

_TYPES = {"B": "u1", "b": "i1", "H": "<u2", "h": "<i2", "I": "<u4", "i": "<i4", "Q": "<u8", "q": "<i8",
          "f": "<f4", "d": "<f8", "c": "S1"}


@dataclass(frozen=True, slots=True)
class _Wire:
    msgid: int
    name: str
    size: int
    dtype: np.dtype
    crc_extra: bytes


def _wire_specs() -> dict[int, _Wire]:
    mav = dialect()
    out = {}
    for spec in SPECS:
        msgid = getattr(mav, f"MAVLINK_MSG_ID_{spec.name}")
        cls = mav.mavlink_map[msgid]
        fields = []
        tokens = re.findall(r"(\d*)([a-zA-Z?])", cls.unpacker.format)
        for name, (count, code) in zip(cls.ordered_fieldnames, tokens, strict=True):
            if code == "s":
                fields.append((name, f"S{int(count or 1)}"))
            elif count:
                fields.append((name, _TYPES[code], (int(count),)))
            else:
                fields.append((name, _TYPES[code]))
        dtype = np.dtype(fields)
        assert dtype.itemsize == cls.unpacker.size, spec.name
        out[msgid] = _Wire(msgid, spec.name, cls.unpacker.size, dtype, bytes([cls.crc_extra]))
    return out


@dataclass(slots=True)
class _Packets:
    record: list[int]  # offset of the record (its 8-byte time stamp)
    head: list[int]  # header length: 10 (MAVLink 2) or 6 (MAVLink 1)
    plen: list[int]
    msgid: list[int]


def _known_ids(wire: dict[int, _Wire]) -> dict[int, tuple[bytes, int, bool]]:
    """Every message id of the dialect: its CRC_EXTRA, its longest payload, whether it is telemetry."""
    return {msgid: (bytes([cls.crc_extra]), cls.unpacker.size, msgid in wire)
            for msgid, cls in dialect().mavlink_map.items()}


def _scan(data, pos: int, end: int, known: dict[int, tuple[bytes, int, bool]],
          limit: int) -> tuple[_Packets, int, int, int]:
    """Records from ``pos`` until ``end`` or ``limit`` kept packets.

    Returns the kept packets, where scanning stopped, bytes skipped as damaged, and how
    many intact packets were of other types. Every packet of a known type must have its
    right CRC. One of a type the dialect does not know cannot be checked, so the scan looks
    inside it as if it were damage: when the next intact packet starts right where it ends
    (or the data ends there), it was a packet of another type; when one starts inside it,
    it was garbage shaped like a header, and the records it claimed are kept. Only what
    decides a packet's length, type and CRC is read here; the rest is gathered in bulk.
    """
    p = _Packets([], [], [], [])
    rec_l, head_l, pl_l, id_l = p.record, p.head, p.plen, p.msgid
    view = memoryview(data)
    crc = crc16.mcrf4xx
    get = known.get
    skipped = other = kept = 0
    unknown = unknown_end = -1  # an unknown-type packet, until the next intact one tells what it was
    while pos < end and kept < limit:
        ok = False
        if pos + 16 <= end:
            magic = data[pos + 8]
            if magic == 0xFD:
                flags = data[pos + 10]
                plen = data[pos + 9]
                head = 10
                tail = pos + 20 + plen + 13 * flags
                msgid = data[pos + 15] | data[pos + 16] << 8 | data[pos + 17] << 16
                ok = flags < 2 and tail <= end  # only the signing flag is defined
            elif magic == 0xFE:
                plen = data[pos + 9]
                head = 6
                tail = pos + 16 + plen
                msgid = data[pos + 13]
                ok = tail <= end
        if ok:
            k = get(msgid)
            if k is None:
                if unknown < 0:
                    unknown, unknown_end = pos, tail
                ok = False
            else:
                body = pos + 8 + head + plen
                ok = plen <= k[1] and crc(k[0], crc(view[pos + 9:body])) == data[body] | data[body + 1] << 8
        if ok:
            if unknown >= 0:
                if pos == unknown_end:
                    other += 1
                else:
                    skipped += pos - unknown
                unknown = -1
            if k[2]:
                rec_l.append(pos)
                head_l.append(head)
                pl_l.append(plen)
                id_l.append(msgid)
                kept += 1
            else:
                other += 1
            pos = tail
            continue
        nxt = _resync(data, pos + 1, end)
        if unknown < 0:
            skipped += nxt - pos
        pos = nxt
    if unknown >= 0:  # no intact packet after it
        if unknown_end == end:
            other += 1
        else:
            skipped += end - unknown
    view.release()
    return p, pos, skipped, other


def _resync(data, pos: int, end: int) -> int:
    """The next record start: 8 bytes before the next magic byte (or ``end``)."""
    best = end
    for magic in (b"\xfd", b"\xfe"):
        i = data.find(magic, pos + 8, end)
        if i >= 0:
            best = min(best, i - 8)
    return max(best, pos)


def _payloads(arr: np.ndarray, start: np.ndarray, plen: np.ndarray, w: _Wire) -> np.ndarray:
    """Structured records of one type: payloads gathered, zero-padded to the full size."""
    k = len(start)
    width = int(plen.max()) if k else 0
    out = np.zeros((k, w.size), np.uint8)
    if width:
        cols = np.arange(width)
        idx = start[:, None] + cols[None, :]
        np.minimum(idx, len(arr) - 1, out=idx)
        vals = arr[idx]
        vals[cols[None, :] >= plen[:, None]] = 0  # MAVLink 2 drops trailing zero bytes
        out[:, :width] = vals
    return out.view(w.dtype).reshape(k)


@dataclass(slots=True)
class TlogStats:
    packets: int = 0  # telemetry packets of the vehicle, decoded
    events: int = 0  # events they made that keep qsframework.validity's rules
    rejected: dict[str, int] = field(default_factory=dict)  # the others, by "kind: reason"
    foreign: int = 0  # telemetry packets of another system or component
    other: int = 0  # packets of message types that are not telemetry events
    skipped_bytes: int = 0  # damaged data passed over
    system_id: int | None = None
    component_id: int | None = None
    first_ts: int | None = None
    last_ts: int | None = None


class TlogSource(LogSource):
    """The vehicle's telemetry in the tlog ``path`` as ``(kind, table)`` batches, ``chunk``
    packets at a time, counted in :attr:`stats`. The vehicle is ``system_id``/``component_id``
    or, by default, the sender of the first heartbeat that is not a ground station's. Events
    that break a validity rule are counted (``stats.rejected``) and, with :attr:`on_reject`,
    handed over as JSON with their reason."""

    stats: TlogStats

    def __init__(self, path: str | Path, *, system_id: int | None = None, component_id: int | None = None,
                 chunk: int = 1 << 20, stats: TlogStats | None = None,
                 decoder: TelemetryDecoder | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        super().__init__(path, stats if stats is not None else TlogStats(), source="mavlink", format="tlog",
                         progress=progress)
        self.system_id, self.component_id = system_id, component_id
        self.chunk = chunk
        self.decoder = decoder or TelemetryDecoder()

    def __iter__(self) -> Iterator[Batch]:
        path, stats, decoder, chunk = self.path, self.stats, self.decoder, self.chunk
        system_id, component_id = self.system_id, self.component_id
        wire = _wire_specs()
        known = _known_ids(wire)
        hb_id = next(i for i, w in wire.items() if w.name == "HEARTBEAT")
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        with fh:
            size = fh.seek(0, 2)
            if size == 0:
                raise UserError(f"{path} is empty")
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                arr = np.frombuffer(data, np.uint8)
                pos = 0
                while pos < size:
                    pk, new_pos, skipped, other = _scan(data, pos, size, known, chunk)
                    stats.skipped_bytes += skipped
                    stats.other += other
                    if new_pos == pos and not pk.msgid:
                        break
                    pos = new_pos
                    if not pk.msgid:
                        continue
                    msgid = np.array(pk.msgid, np.int64)
                    rec = np.array(pk.record, np.int64)
                    head = np.array(pk.head, np.int64)
                    plen = np.array(pk.plen, np.int64)
                    start = rec + 8 + head
                    v2 = head == 10
                    sysid = arr[rec + np.where(v2, 13, 11)].astype(np.int64)
                    compid = arr[rec + np.where(v2, 14, 12)].astype(np.int64)
                    ts = arr[rec[:, None] + np.arange(8)].copy().view(">u8").reshape(-1).astype(np.int64) * 1000
                    if system_id is None:
                        hb = np.flatnonzero(msgid == hb_id)
                        recs = _payloads(arr, start[hb], plen[hb], wire[hb_id])
                        for j, r in zip(hb.tolist(), recs):
                            if is_vehicle_heartbeat(int(r["autopilot"]), int(r["type"])):
                                system_id = int(sysid[j])
                                component_id = int(compid[j]) if component_id is None else component_id
                                break
                        else:
                            continue  # no vehicle yet: these packets cannot be attributed
                    mine = sysid == system_id
                    if component_id is not None:
                        mine &= compid == component_id
                    stats.foreign += int((~mine).sum())
                    idx = np.flatnonzero(mine)
                    if not len(idx):
                        continue
                    stats.system_id, stats.component_id = system_id, component_id
                    stats.packets += len(idx)
                    key = np.full(len(idx), system_id)
                    seq = np.array(decoder.next_seqs([str(system_id)] * len(idx)), np.int64)
                    for mid in np.unique(msgid[idx]).tolist():
                        sel = idx[msgid[idx] == mid]
                        w = wire[mid]
                        recs = _payloads(arr, start[sel], plen[sel], w)
                        raw = {name: recs[name] for name in w.dtype.names}
                        pos_in_idx = np.searchsorted(idx, sel)
                        kind = BY_NAME[w.name].kind
                        table = self.valid(kind, decoder.tables(w.name, raw, ts[sel], key[pos_in_idx], seq[pos_in_idx]))
                        if table.num_rows:
                            yield kind, table
                if not stats.packets:
                    which = "" if system_id is None else f" of system {system_id}"
                    raise UserError(f"no vehicle telemetry{which} in {path}: is it a telemetry log (.tlog)?")
                if not stats.events:
                    raise UserError(f"no valid telemetry in {path}: {describe_rejected(stats.rejected)}")
            finally:
                del arr
                data.close()


def read_tlog(path: str | Path, *, system_id: int | None = None, component_id: int | None = None,
              chunk: int = 1 << 20, stats: TlogStats | None = None,
              decoder: TelemetryDecoder | None = None) -> Iterator[tuple[str, pa.Table]]:
    """(kind, table) of the vehicle's telemetry in ``path``, ``chunk`` packets at a time
    (a :class:`TlogSource` read synchronously)."""
    return iter(TlogSource(path, system_id=system_id, component_id=component_id, chunk=chunk,
                           stats=stats, decoder=decoder))


def import_tlog(path: str | Path, *, out: str | Path, system_id: int | None = None,
                component_id: int | None = None, progress: Callable[[int], None] | None = None) -> TlogStats:
    """Write the vehicle's telemetry in the tlog ``path`` as the recording ``out`` (new or
    empty); a failed import leaves nothing there. Rejected events are counted in the
    recording's origin (``rejected``)."""
    source = TlogSource(path, system_id=system_id, component_id=component_id, progress=progress)
    import_recording(source, out)
    return source.stats
