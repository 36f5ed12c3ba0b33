"""Sweep speed: a 16-point ``qsf sweep --workers 2`` of the spread strategy against 16
sequential ``qsf backtest`` runs of the same points (the baseline, measured in the same run).

Usage: python bench/sweep.py [--events 5000000] [--seed 1] [--workers 2] [--data bench/data]

Both go through the command line as a user runs them (a process per backtest; the sweep's
workers decode nothing: they memory-map the recording decoded once). A warm-up backtest
first loads (or compiles) the kernels, so neither side pays for that. Prints both wall
times and their ratio (the issue's target: at most 0.55x on the 2-core machine).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from backtest_throughput import ensure_recording  # noqa: E402 - the same 5M-event recording

SPEC = str(ROOT / "strategies" / "btc_eth_spread.py") + ":BtcEthSpread"
GRID = {"window": ["30s", "1m", "2m", "4m"], "threshold": ["0.003", "0.005", "0.007", "0.01"]}


def qsf() -> list[str]:
    exe = Path(sys.executable).with_name("qsf")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "qsframework.cli"]


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*qsf(), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    args = ap.parse_args()
    rec = str(ensure_recording(args.data, args.events, args.seed))
    points = [dict(zip(GRID, combo)) for combo in itertools.product(*GRID.values())]
    work = Path(tempfile.mkdtemp(prefix="qsf-bench-sweep-"))
    try:
        timed(["backtest", SPEC, "--recording", rec, "--out", str(work / "warm")])
        sequential = 0.0
        for i, point in enumerate(points):
            params = [a for k, v in point.items() for a in ("-p", f"{k}={v}")]
            sequential += timed(["backtest", SPEC, "--recording", rec, "--out", str(work / f"b{i}"), *params])
        grid = [a for k, v in GRID.items() for a in ("-g", f"{k}={','.join(v)}")]
        swept = timed(["sweep", SPEC, "--recording", rec, "--out", str(work / "sweep"),
                       "--workers", str(args.workers), *grid])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(points)} points of the spread strategy over {rec}")
    print(f"{'16 sequential qsf backtest runs':<40} {sequential:8.1f} s")
    print(f"{f'qsf sweep --workers {args.workers}':<40} {swept:8.1f} s")
    print(f"{'ratio (target <= 0.55x)':<40} {swept / sequential:8.2f}x")


if __name__ == "__main__":
    main()
