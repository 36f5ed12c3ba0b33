"""Binance dump import throughput: rows/s from a zipped trades dump to a recording.

Usage: python bench/binance_import.py [--rows 5000000] [--seed 1] [--data bench/data] [--repeat 1]

Generates (once, cached under --data) a synthetic ``BTCUSDT-trades-2025-01.zip`` in the
data.binance.vision format (no header, µs timestamps, prices with 8 decimals, a
``.CHECKSUM`` file), then imports it into a fresh recording and prints rows/s: checksum,
unzip, CSV parse, checks, Parquet write, all on one core. Figures depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from qsframework.adapters.binance.importer import import_binance_csv

ROOT = Path(__file__).resolve().parent.parent

START_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z


def _fixed(units: np.ndarray, decimals: int) -> pa.Array:
    """Integers of 10**-decimals as text with exactly ``decimals`` decimals, like Binance."""
    scale = 10**decimals
    whole = pc.cast(pa.array(units // scale), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(units % scale), pa.string()), decimals, "0")
    return pc.binary_join_element_wise(whole, frac, ".")


def make_dump(directory: Path, rows: int, seed: int) -> Path:
    """A zipped trades dump of ``rows`` rows (and its CHECKSUM), cached by rows and seed."""
    directory = directory / f"binance-trades-{rows}-{seed}"
    name = "BTCUSDT-trades-2025-01"
    path = directory / f"{name}.zip"
    if path.exists() and (directory / f"{name}.zip.CHECKSUM").exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gaps = rng.choice(np.array([0, 0, 0, 40, 300, 1_000, 5_000, 90_000], np.int64), rows)
    cents = 4_200_000 + np.cumsum(rng.integers(-3, 4, rows))  # price in 0.01
    qty = rng.geometric(1e-5, rows).astype(np.int64)  # in 1e-8
    table = pa.table({
        "id": np.arange(4_000_000_000, 4_000_000_000 + rows, dtype=np.int64),
        "price": _fixed(cents * 10**6, 8),
        "qty": _fixed(qty, 8),
        "quote_qty": _fixed(cents * qty // 100, 8),
        "time": START_US + np.cumsum(gaps),
        "is_buyer_maker": pa.array(np.where(rng.random(rows) < 0.5, "True", "False")),
        "is_best_match": pa.array(np.full(rows, "True")),
    })
    tmp = directory / f".{name}.zip.tmp"
    with (
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open(f"{name}.csv", "w", force_zip64=True) as fh,
    ):
        pacsv.write_csv(table, fh, write_options=pacsv.WriteOptions(
            include_header=False, quoting_style="none", batch_size=65_536))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(path)
    (directory / f"{name}.zip.CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    ap.add_argument("--repeat", type=int, default=1, help="runs; the fastest counts")
    args = ap.parse_args()
    t0 = time.perf_counter()
    dump = make_dump(args.data, args.rows, args.seed)
    print(f"dump: {dump} ({dump.stat().st_size / 1e6:,.0f} MB zipped, "
          f"ready in {time.perf_counter() - t0:.1f} s)")
    best = None
    for _ in range(args.repeat):
        out = Path(tempfile.mkdtemp(prefix="qsf-binance-bench-")) / "rec"
        try:
            t0 = time.perf_counter()
            stats = import_binance_csv([dump], out=out)
            dt = time.perf_counter() - t0
        finally:
            shutil.rmtree(out.parent, ignore_errors=True)
        assert stats.rows == args.rows and stats.bad_rows == 0, stats
        best = dt if best is None else min(best, dt)
    assert best is not None
    print(f"import: {args.rows:,} rows in {best:.2f} s = {args.rows / best:,.0f} rows/s "
          f"(checksum {stats.files[0].checksum}, {stats.files[0].time_unit} timestamps)")


if __name__ == "__main__":
    main()
