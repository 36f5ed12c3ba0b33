"""The live MAVLink source over real UDP never dies from a bad packet: out-of-range values are
rejected with their reason and counted, and packets of every telemetry type with random
payloads (right CRC) are all accounted for: an event, a counted reject, or a bad packet.

The sender waits for the source to have read what it sent before sending more (no pacing by
sleeps); the source stops when everything sent is accounted for.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections import Counter

import orjson
import pyarrow as pa
from pymavlink.generator.mavcrc import x25crc

from qsframework.adapters.mavlink.decode import BY_NAME, dialect
from qsframework.adapters.mavlink.source import MavlinkConfig, MavlinkSource
from qsframework.io import Rejected

from ..fakes.tlog_gen import _Sink, mavlink, packets
from .test_mavlink_imports import bad_value_records, bad_value_tlog, expected_rejects

WINDOW = 64  # datagrams in flight at most
SAFETY_S = 300.0  # only if something is broken


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accounted(source: MavlinkSource) -> int:
    """Datagrams the source has dealt with (each holds one packet; a broken one may count
    as more than one bad stretch)."""
    return source.stats.received + source.stats.bad


Lettered = list[tuple[str, pa.Table, list[str]]]


def feed(pkts: list[bytes], *, clock: str = "receive") -> tuple[MavlinkSource, list[tuple[str, pa.Table]], Lettered]:
    """Send ``pkts`` (one per datagram) to a live source; return it, what it handed on, and
    what it dead-lettered."""
    port = free_udp_port()
    source = MavlinkSource(MavlinkConfig(url=f"udpin:127.0.0.1:{port}", heartbeat=False, flush_interval=0.05,
                                         clock=clock))  # type: ignore[arg-type]
    bound = threading.Event()
    got: list[tuple[str, pa.Table]] = []
    dead: Lettered = []
    failure: list[BaseException] = []

    def send() -> None:
        try:
            bound.wait(SAFETY_S)
            deadline = time.monotonic() + SAFETY_S
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i, buf in enumerate(pkts):
                    while i - accounted(source) >= WINDOW and time.monotonic() < deadline:
                        time.sleep(0.001)  # wait for the reader to catch up (flow control)
                    s.sendto(buf, ("127.0.0.1", port))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failure.append(exc)

    async def sink(tables: list[tuple[str, pa.Table]]) -> None:
        got.extend(tables)

    async def dead_letter(bad: Rejected) -> None:  # one event, as JSON
        dead.append((bad.kind, pa.Table.from_pylist([orjson.loads(bad.value)]), [bad.reason]))

    source.on_reject = dead_letter

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    asyncio.run(source.run(sink, duration=SAFETY_S, until=lambda: accounted(source) >= len(pkts),
                           tick=lambda conn: bound.set()))
    sender.join(SAFETY_S)
    assert not failure, failure
    assert accounted(source) >= len(pkts), (accounted(source), len(pkts))  # not the safety net
    return source, got, dead


def rows(got: list[tuple[str, pa.Table]]) -> Counter:
    out: Counter = Counter()
    for kind, table in got:
        out[kind] += table.num_rows
    return out


def test_out_of_range_values_are_rejected_with_the_reason_and_the_source_goes_on(tmp_path):
    valid, rejected = expected_rejects(bad_value_tlog(tmp_path / "ref.tlog"))
    pkts = [buf for _, buf in bad_value_records()]
    source, got, dead = feed(pkts)
    assert source.stats.received == len(pkts) and source.stats.bad == 0
    assert source.stats.rejected == dict(rejected)
    assert rows(got) == valid and source.stats.events == sum(valid.values())
    for kind, table in got:
        if kind == "position":
            assert pa.compute.max(table.column("lat")).as_py() <= 90
    # the rejected events themselves went to the dead letter, each with its reason
    lettered = Counter(f"{kind}: {why}" for kind, table, reasons in dead for why in reasons)
    assert lettered == rejected and all(t.num_rows == len(r) for _, t, r in dead)
    lats = [lat for kind, t, _ in dead if kind == "position" for lat in t.column("lat").to_pylist()]
    assert lats and all(lat == 200.0 for lat in lats)


def random_packet(rng: random.Random, msgid: int, seq: int) -> bytes:
    """A MAVLink 2 packet of type ``msgid`` from the vehicle with random payload bytes and the right CRC."""
    cls = dialect().mavlink_map[msgid]
    payload = rng.randbytes(rng.randint(1, cls.unpacker.size))
    head = bytes([0xFD, len(payload), 0, 0, seq & 0xFF, 1, 1, msgid & 0xFF, msgid >> 8 & 0xFF, msgid >> 16])
    crc = x25crc(head[1:] + payload)
    crc.accumulate(bytes([cls.crc_extra]))
    return head + payload + crc.crc.to_bytes(2, "little")


def test_random_payloads_of_every_telemetry_type_never_kill_the_source():
    rng = random.Random(7)
    mav = dialect()
    ids = [getattr(mav, f"MAVLINK_MSG_ID_{name}") for name in BY_NAME]
    flight = [buf for _, buf in packets(20)]
    fuzz = [random_packet(rng, ids[i % len(ids)], i) for i in range(60 * len(ids))]
    pkts = flight[:20] + [p for pair in zip(flight[20:], fuzz) for p in pair] + flight[20 + len(fuzz):]
    # what pymavlink itself makes of each packet: the independent count of decodable ones
    parser = mav.MAVLink(None)
    parser.robust_parsing = True
    decodable: Counter = Counter()
    total = 0
    for buf in pkts:
        try:
            m = parser.decode(bytearray(buf))
        except Exception:  # noqa: BLE001 - pymavlink's MAVError and struct errors alike
            continue
        total += 1
        if (m.get_srcSystem(), m.get_srcComponent()) == (1, 1) and m.get_type() in BY_NAME:
            decodable[BY_NAME[m.get_type()].kind] += 1
    source, got, dead = feed(pkts)
    assert source.stats.received == total
    rejected: Counter = Counter()
    for why, n in source.stats.rejected.items():
        rejected[why.split(":", 1)[0]] += n
    assert rows(got) + rejected == decodable  # every decodable vehicle packet: an event or a counted reject
    assert sum(rejected.values()) > 0 and source.stats.events == sum(rows(got).values())
    assert sum(len(reasons) for _, _, reasons in dead) == sum(rejected.values())


def test_one_packet_with_a_wild_vehicle_time_does_not_move_the_clock():
    veh = mavlink.MAVLink(_Sink(), srcSystem=1, srcComponent=1)
    veh.WIRE_PROTOCOL_VERSION = "2.0"
    flight = [buf for _, buf in packets(20)]
    wild = veh.attitude_encode(4_000_000_000, 0.1, 0.0, 1.0, 0.0, 0.0, 0.0).pack(veh)  # 46 days after boot
    # then the link comes back after a real gap of 1000 s: confirmed by the next message
    later = [veh.global_position_int_encode(1_000_000 + 100 * k, 473977000, 85455000, 500000, 20000, 0, 0, 0, 0)
             .pack(veh) for k in range(5)]
    source, got, dead = feed(flight[:1000] + [wild] + flight[1000:] + later, clock="vehicle")
    why = ("attitude: time_boot_ms more than 60 s ahead of the vehicle's clock, not confirmed by the next message")
    assert source.stats.rejected == {why: 1}
    assert [(k, t.num_rows, r) for k, t, r in dead] == [("attitude", 1, [why.split(": ", 1)[1]])]
    pos = pa.concat_tables([t for k, t in got if k == "position"]).sort_by("ts_event").column("ts_event").to_pylist()
    epoch = source.stats.epoch_ns
    assert pos == [epoch + 100_000_000 * k for k in range(200)] + [epoch + (1_000_000 + 100 * k) * 1_000_000
                                                                    for k in range(5)]
    att = pa.concat_tables([t for k, t in got if k == "attitude"]).column("ts_event").to_pylist()
    assert len(att) == 200 and max(att) == epoch + 19_900_000_000
