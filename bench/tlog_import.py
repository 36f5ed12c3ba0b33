"""tlog import rate: messages/s of `qsf recordings import tlog` against pymavlink's own loop.

Usage: python bench/tlog_import.py [--hours 5]

Generates a synthetic telemetry log (every telemetry message type at ArduCopter-like rates,
a ground station on the link; about 43 vehicle messages per second of flight), then times
(1) pymavlink's parser reading the first 100k records (recv_match, the pure-Python loop),
(2) the fast reader alone, (3) the whole import into a recording (Parquet files). Target
(issue 5): >= 150,000 messages/s for the import.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # tests.fakes (the tests' log generator); qsframework: the installed one

from qsframework.adapters.mavlink.tlog import TlogStats, import_tlog, read_tlog  # noqa: E402
from tests.fakes.tlog_gen import write_tlog  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=5.0)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    args = ap.parse_args()
    path = args.data / f"flight-{args.hours:g}h.tlog"
    if not path.exists():
        args.data.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        write_tlog(path, int(args.hours * 3600))
        print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")

    from pymavlink import mavutil

    conn = mavutil.mavlink_connection(str(path), dialect="ardupilotmega")
    t, n = time.perf_counter(), 0
    while n < 100_000 and conn.recv_match(blocking=False) is not None:
        n += 1
    ref = n / (time.perf_counter() - t)
    conn.close()
    print(f"pymavlink recv_match loop:        {ref:>10,.0f} messages/s (first {n:,} records)")

    stats = TlogStats()
    t = time.perf_counter()
    for _ in read_tlog(path, stats=stats):
        pass
    read_s = time.perf_counter() - t
    print(f"fast reader (scan, CRC, decode):  {stats.packets / read_s:>10,.0f} messages/s ({stats.packets:,} messages)")

    out = Path(tempfile.mkdtemp(prefix="qsf-tlog-")) / "rec"
    try:
        t = time.perf_counter()
        stats = import_tlog(path, out=out)
        s = time.perf_counter() - t
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    rate = stats.packets / s
    print(f"import into a recording:          {rate:>10,.0f} messages/s "
          f"({'PASS' if rate >= 150_000 else 'MISS'} target 150,000)")


if __name__ == "__main__":
    main()
