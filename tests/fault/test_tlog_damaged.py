"""Damaged telemetry logs: garbage shaped like MAVLink packets never costs a valid record.

The expected events come from pymavlink's own parser over the undamaged log (the reference
of tests/adapters/mavlink/test_mavlink_tlog.py); the damaged logs are that log with garbage
put between records, so every record of the clean log must still be found.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from qsframework.adapters.mavlink.tlog import TlogStats, read_tlog
from qsframework.recording import Recording

from ..conftest import qsf_cmd
from ..adapters.mavlink.test_mavlink_tlog import by_kind, reference
from ..fakes.tlog_gen import packets

MAGIC = (0xFD, 0xFE)


def _stamp(rng: random.Random) -> bytes:
    """Eight bytes that read as a record's time stamp but hold no magic byte."""
    return bytes(rng.choice([b for b in range(256) if b not in MAGIC]) for _ in range(8))


def _fakes(rng: random.Random) -> list[bytes]:
    """Starts of records that claim a long packet but are garbage."""
    tail = bytes(rng.randrange(0, 0xFD) for _ in range(rng.randint(0, 6)))
    return [
        _stamp(rng) + bytes([0xFD, 255, 0, 0, 7, 1, 1, 0x3F, 0x11, 0x2A]) + tail,  # v2, type unknown to the dialect
        _stamp(rng) + bytes([0xFE, 250, 7, 1, 1, 52]) + tail,  # v1, type 52 is unknown
        _stamp(rng) + bytes([0xFD, 25, 0, 0, 9, 1, 1, 22, 0, 0]) + tail,  # PARAM_VALUE (not telemetry), bad CRC
        _stamp(rng) + bytes([0xFD, 28, 0, 0, 9, 1, 1, 30, 0, 0]) + tail,  # ATTITUDE, bad CRC
        _stamp(rng) + bytes([0xFD, 200, 0x80, 0, 9, 1, 1, 30, 0, 0]) + tail,  # undefined incompat flag
    ]


def _write(path: Path, records: list[bytes], inserts: dict[int, bytes]) -> Path:
    with open(path, "wb") as fh:
        for i, record in enumerate(records):
            if i in inserts:
                fh.write(inserts[i])
            fh.write(record)
        if len(records) in inserts:
            fh.write(inserts[len(records)])
    return path


def _records(seconds: int) -> list[bytes]:
    return [t.to_bytes(8, "big") + buf for t, buf in packets(seconds)]


def damaged_against_clean(tmp_path: Path, records: list[bytes],
                          inserts: dict[int, bytes]) -> tuple[TlogStats, TlogStats]:
    """Read the log of ``records`` with ``inserts`` put before the records they are keyed by;
    check it gives exactly pymavlink's events of the clean log; return both reads' stats."""
    clean = _write(tmp_path / "clean.tlog", records, {})
    clean_stats = TlogStats()
    by_kind(read_tlog(clean, stats=clean_stats))
    want = reference(clean)
    stats = TlogStats()
    got = by_kind(read_tlog(_write(tmp_path / "bad.tlog", records, inserts), stats=stats, chunk=5000))
    assert sorted(got) == sorted(want)
    for kind in want:
        assert got[kind].equals(want[kind]), kind  # every record, with the same seq: nothing lost
    assert stats.packets == clean_stats.packets
    return stats, clean_stats


def test_garbage_shaped_like_packets_loses_no_record(tmp_path):
    records = _records(60)
    rng = random.Random(10)
    places = sorted(rng.sample(range(1, len(records) - 10), 30)) + [len(records) - 3]  # one near the end
    inserts = {i: rng.choice(_fakes(rng)) for i in places}
    stats, clean_stats = damaged_against_clean(tmp_path, records, inserts)
    assert stats.skipped_bytes == sum(len(b) for b in inserts.values()) and stats.other == clean_stats.other


def test_a_fake_header_whose_length_lands_on_a_later_record_swallows_nothing(tmp_path):
    records = _records(30)
    rng = random.Random(5)
    inserts = {}
    for i in rng.sample(range(1, len(records) - 3), 25):
        # an unknown type claiming exactly the next two records: its "end" is a valid record
        claimed = len(records[i]) + len(records[i + 1]) - 2
        if claimed <= 255 and not inserts.keys() & {i - 1, i, i + 1, i + 2}:
            inserts[i] = _stamp(rng) + bytes([0xFD, claimed, 0, 0, 7, 1, 1, 0x3F, 0x11, 0x2A])
    assert len(inserts) >= 10
    stats, clean_stats = damaged_against_clean(tmp_path, records, inserts)
    assert stats.skipped_bytes == 18 * len(inserts) and stats.other == clean_stats.other


def test_packets_of_unknown_types_are_passed_over_not_counted_as_damage(tmp_path):
    records = _records(30)
    rng = random.Random(3)

    def unknown() -> bytes:  # well formed, a type this dialect does not know (its CRC cannot be checked)
        payload = bytes(rng.randrange(0, 0xFD) for _ in range(12))
        return bytes(8) + bytes([0xFD, 12, 0, 0, 5, 1, 1, 0x3F, 0x11, 0x2A]) + payload + bytes([0x12, 0x34])

    inserts = {i: unknown() for i in rng.sample(range(1, len(records)), 20)} | {len(records): unknown()}
    stats, clean_stats = damaged_against_clean(tmp_path, records, inserts)
    assert stats.other == clean_stats.other + len(inserts) and stats.skipped_bytes == 0


def test_cli_import_of_a_damaged_log_keeps_every_record(tmp_path):
    records = _records(20)
    rng = random.Random(16)
    inserts = {i: rng.choice(_fakes(rng)) for i in rng.sample(range(1, len(records)), 16)}
    path = _write(tmp_path / "bad.tlog", records, inserts)
    want = reference(_write(tmp_path / "clean.tlog", records, {}))
    out = tmp_path / "rec"
    r = subprocess.run([*qsf_cmd(), "recordings", "import", "tlog", str(path), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rec = Recording(out)
    assert {k: rec.rows([k]) for k in want} == {k: t.num_rows for k, t in want.items()}
    assert f"{sum(len(b) for b in inserts.values()):,} damaged bytes passed over" in r.stdout
