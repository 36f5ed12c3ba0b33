"""Dashboard loaders: how long the backtest dashboard's price panel takes to load on a large
recording (target: 100M events < 3 s), and how many points reach the browser.

Usage:
    python bench/dashboard.py [--events 100000000] [--seed 1] [--data bench/data] [--repeat 3]

Generates (once, shared with bench/backtest_memory.py) a synthetic BTCUSDT/ETHUSDT recording of
at least ``--events`` trades, then times, best of ``--repeat``:
- the baseline: one DuckDB pass over the same files computing each key's min and max price
  (the least any loader must read);
- ``load_prices`` over the whole span (both keys, 4,000 points per key at most);
- ``load_prices`` over a tenth of the span, as when the time-range control narrows it.
Prints seconds, the ratio to the baseline, rows out, and PASS/FAIL against 3 s.
"""

from __future__ import annotations

import argparse
import sys
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

    from qsframework.dashboards import POINTS, load_prices
    from qsframework.dashboards.loaders import _con
    from qsframework.recording import Recording

    path = ensure_recording(args.data, args.events, args.seed)
    rec = Recording(path)
    files = [str(f.path) for f in rec.files("trade")]
    first, last = rec.span() or (0, 0)
    rows = rec.rows()

    def baseline() -> object:
        return _con().sql("SELECT key, min(price), max(price) FROM read_parquet($f) GROUP BY key",
                          params={"f": files}).fetchall()

    base_s, _ = best_of(args.repeat, baseline)
    tenth = first + (last - first) // 10
    print(f"{rows:,} events in {len(files)} files; at most {POINTS:,} points per key")
    print(f"{'what':<32}{'s':>8}{'x base':>8}{'rows out':>10}  target")
    print(f"{'baseline: min/max per key':<32}{base_s:>8.2f}{1.0:>8.2f}{2:>10}")
    failed = False
    for name, fn in (("load_prices, whole span", lambda: load_prices(path)),
                     ("load_prices, a tenth of it", lambda: load_prices(path, start=first, end=tenth))):
        secs, frame = best_of(args.repeat, fn)
        ok = secs < TARGET_S
        failed |= not ok
        print(f"{name:<32}{secs:>8.2f}{secs / base_s:>8.2f}{frame.height:>10,}  "  # type: ignore[attr-defined]
              f"{'PASS' if ok else 'FAIL'} (< {TARGET_S:g} s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
