"""Dashboard loaders: how long the backtest dashboard's price panel takes to load on a large
recording (target: 100M events < 3 s), and how many points reach the browser.

Usage:
    python bench/dashboard.py [--events 100000000] [--seed 1] [--data bench/data] [--repeat 3]

Generates (once, shared with bench/backtest_memory.py) a synthetic BTCUSDT/ETHUSDT recording of
at least ``--events`` trades, then times (best of ``--repeat`` but the first view):
- the baseline: one DuckDB pass over the same files computing each key's min and max price
  (the least a loader reading every row must read);
- the full scan (``scan.minmax_files``, what ``load_prices`` did before the overviews);
- ``load_prices``' first view, building the files' overviews (in a fresh cache directory);
- ``load_prices`` over the whole span and over a tenth of it, from the overviews;
and checks each view equals the full scan's. Prints seconds, the ratio to the baseline, rows
out, and PASS/FAIL of the cached views against 3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

TARGET_S = 3.0


def best_of(repeat: int, fn) -> tuple[float, object]:
    """The fastest of REPEAT calls and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from backtest_memory import ensure_recording

    path = ensure_recording(args.data, args.events, args.seed)
    cache = tempfile.mkdtemp(prefix="qsf-bench-overview-")
    os.environ["XDG_CACHE_HOME"] = cache  # the first view builds the overviews from nothing

    from qsframework.dashboards import POINTS, load_prices
    from qsframework.dashboards.downsample import bucket_width, points_of
    from qsframework.dashboards.loaders import _con
    from qsframework.dashboards.scan import minmax_files
    from qsframework.recording import Recording

    rec = Recording(path)
    files = [str(f.path) for f in rec.files("trade")]
    first, last = rec.span() or (0, 0)
    rows = rec.rows()

    def baseline() -> object:
        return _con().sql("SELECT key, min(price), max(price) FROM read_parquet($f) GROUP BY key",
                          params={"f": files}).fetchall()

    def scan(lo: int, hi: int) -> object:
        return points_of(minmax_files(files, "price", start=lo, end=hi, width=bucket_width(lo, hi)), name="price")

    tenth = first + (last - first) // 10
    base_s, _ = best_of(args.repeat, baseline)
    print(f"{rows:,} events in {len(files)} files; at most {POINTS:,} points per key")
    print(f"{'what':<36}{'s':>8}{'x base':>8}{'rows out':>10}  target")
    print(f"{'baseline: min/max per key':<36}{base_s:>8.2f}{1.0:>8.2f}{2:>10}")
    failed = False
    try:
        views = (("full scan, whole span", 1, lambda: scan(first, last), None),
                 ("load_prices, first view (builds)", 1, lambda: load_prices(path), (first, last)),
                 ("load_prices, whole span", args.repeat, lambda: load_prices(path), (first, last)),
                 ("load_prices, a tenth of it", args.repeat, lambda: load_prices(path, start=first, end=tenth),
                  (first, tenth)))
        for name, repeat, fn, span in views:
            secs, frame = best_of(repeat, fn)
            target = ""
            if span is not None:
                same = frame.equals(scan(*span))  # type: ignore[attr-defined]
                cached = "first" not in name
                ok = same and (secs < TARGET_S or not cached)
                failed |= not ok
                target = ("" if same else "DIFFERS from the full scan; ") + (
                    f"{'PASS' if ok else 'FAIL'} (< {TARGET_S:g} s)" if cached else "once per file")
            print(f"{name:<36}{secs:>8.2f}{secs / base_s:>8.2f}{frame.height:>10,}  {target}")  # type: ignore[attr-defined]
        size = sum(p.stat().st_size for p in Path(cache).rglob("*.parquet"))
        print(f"overviews: {size / 2**20:,.1f} MiB in the cache")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
