"""Backtest memory: peak RSS of a backtest over a large recording (target: 100M events < 1.5 GiB).

Usage:
    python bench/backtest_memory.py [--events 100000000] [--seed 1] [--data bench/data]
                                    [--path event|batch|both] [--batch-size 65536]

1. Generates (once) a synthetic BTCUSDT/ETHUSDT trade recording with at least ``--events``
   rows under ``DATA/trades-<events>-<seed>`` (written to ``...partial`` and renamed when
   complete, so an interrupted run is never mistaken for a finished recording; reused if
   ``recording.json`` exists). 100M events is about 30 simulated days, ~1.3 GiB of Parquet
   and about two minutes of generation. This runs in a child process of its own.
2. Backtests ``strategies/btc_eth_spread.py:BtcEthSpread`` over it in a child process,
   outputs streamed to Parquet in a temporary directory, and measures the child's peak
   RSS: ``VmHWM`` from ``/proc/<pid>/status`` polled every 0.2 s, and ``ru_maxrss`` from
   ``wait4`` (this child) and ``getrusage(RUSAGE_CHILDREN)`` (max over all children so far).
3. Prints one row per path: events, wall seconds, events/s, peak RSS and PASS/FAIL
   against 1.5 GiB. Exit status is 1 if any run fails the limit or crashes.

The child also reports its RSS after imports, after opening the recording, and every
~10M events on stderr, to show where memory goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
STRATEGY = str(ROOT / "strategies" / "btc_eth_spread.py") + ":BtcEthSpread"
LIMIT_BYTES = int(1.5 * 1024**3)
MiB = 1024**2
RESULT_TAG = "QSF_MEMORY_RESULT "


# -- helpers -------------------------------------------------------------------------
def _status_kib(pid: int | str, field: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status, in KiB; None if unavailable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _self_rss_mib() -> float:
    kib = _status_kib("self", "VmRSS")
    if kib is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        kib = _maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) // 1024
    return kib / 1024


def _maxrss_bytes(ru_maxrss: int) -> int:
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- 1. the recording ------------------------------------------------------------------
def ensure_recording(root: Path, events: int, seed: int) -> Path:
    """``root/trades-<events>-<seed>`` with >= ``events`` trades; generated once."""
    from qsframework.recording import Recording
    from qsframework.sim.market import estimate_rate

    path = root / f"trades-{events}-{seed}"
    if (path / "recording.json").exists():
        rec = Recording(path)
        print(f"reusing {path}: {rec.rows():,} events, {_dir_size(path) / MiB:,.1f} MiB on disk")
        return path
    margin = 1.05  # ~5% more simulated time than the mean rate needs: count >= events
    t0 = time.perf_counter()
    while True:
        minutes = events * margin / estimate_rate(SYMBOLS) / 60
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        print(f"generating ~{events:,} events ({minutes / 1440:.1f} simulated days) -> {path}")
        _generate(partial, minutes, seed)
        written = Recording(partial).rows()
        if written >= events:
            break
        # short spans can fall below the mean rate; a longer run is a superset (same prefix)
        print(f"only {written:,} events; retrying with more simulated time")
        margin *= events / written * 1.02
    gen_s = time.perf_counter() - t0
    os.replace(partial, path)
    print(f"generated {written:,} events in {gen_s:.1f} s ({written / gen_s:,.0f} rows/s), "
          f"{_dir_size(path) / MiB:,.1f} MiB on disk -> {path}")
    return path


def _generate(dest: Path, minutes: float, seed: int, chunk_seconds: int = 600) -> None:
    """simulate_trades -> RecordingWriter(dest), with a progress bar (or periodic prints)."""
    from qsframework.recording import RecordingWriter
    from qsframework.sim.market import simulate_trades

    n_chunks = int(-(-minutes * 60 // chunk_seconds))
    tables = simulate_trades(SYMBOLS, minutes=minutes, seed=seed, chunk_seconds=chunk_seconds)
    t0 = time.perf_counter()
    rows = 0
    try:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        Progress = None
    with RecordingWriter(dest) as w:
        if Progress is not None:
            progress = Progress(
                TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rows]:>14,} rows"), TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            with progress:
                task = progress.add_task("gen", total=n_chunks, rows=0)
                for table in tables:
                    w.write("trade", table)
                    rows += table.num_rows
                    progress.update(task, advance=1, rows=rows)
        else:
            for k, table in enumerate(tables):
                w.write("trade", table)
                rows += table.num_rows
                if k % 200 == 0:
                    print(f"  {k}/{n_chunks} chunks, {rows:,} rows, "
                          f"{time.perf_counter() - t0:.0f} s", flush=True)
        print(f"  simulated {rows:,} rows in {time.perf_counter() - t0:.1f} s; "
              "flushing the writer ...", flush=True)


# -- 2a. the child: one backtest ----------------------------------------------------------
def child(rec_dir: Path, out: Path, path: str, batch_size: int) -> None:
    from qsframework.backtest import run_backtest
    from qsframework.loader import load_strategy
    from qsframework.recording import Recording

    log = sys.stderr
    print(f"  [child {os.getpid()}] after imports: RSS {_self_rss_mib():,.0f} MiB",
          file=log, flush=True)
    cls = load_strategy(STRATEGY)
    rec = Recording(rec_dir)
    total = rec.rows()
    print(f"  [child] recording opened ({len(rec.files('trade'))} files): "
          f"RSS {_self_rss_mib():,.0f} MiB", file=log, flush=True)
    seen = 0
    next_report = 10_000_000
    t0 = time.perf_counter()

    def on_progress(n: int, _ts: int) -> None:
        nonlocal seen, next_report
        seen += n
        if seen >= next_report:
            next_report += 10_000_000
            hwm = (_status_kib("self", "VmHWM") or 0) / 1024
            el = time.perf_counter() - t0
            print(f"  [child] {seen:>12,}/{total:,} events, {el:6.1f} s, "
                  f"RSS {_self_rss_mib():,.0f} MiB (peak {hwm:,.0f})", file=log, flush=True)

    r = run_backtest(cls, rec, out=out, path=path, batch_size=batch_size, on_progress=on_progress)
    outputs = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    result = {
        "path": r.report.get("path", path), "events": r.events_in, "wall_s": r.wall_s,
        "signals": r.signals, "alerts": r.alerts, "outputs": outputs,
        "self_hwm_kib": _status_kib("self", "VmHWM"),
    }
    print(RESULT_TAG + json.dumps(result), flush=True)


# -- 2b. the parent: run and watch the child -----------------------------------------------
def measure(rec_dir: Path, path: str, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="qsf-memory-") as tmp:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--path", path,
               "--rec", str(rec_dir), "--out", str(Path(tmp) / "out"),
               "--batch-size", str(batch_size)]
        print(f"\nbacktest ({path} path) in a child process ...", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        hwm_kib = 0
        while True:
            kib = _status_kib(proc.pid, "VmHWM")  # readable until the child is reaped
            if kib is not None:
                hwm_kib = max(hwm_kib, kib)
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not Popen
        stdout = proc.stdout.read() if proc.stdout else ""
        children_maxrss = _maxrss_bytes(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    result = {"path": path, "events": 0, "wall_s": wall}
    for line in stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        elif line.strip():
            print(line)
    result["returncode"] = proc.returncode
    result["process_wall_s"] = wall
    result["vmhwm_bytes"] = hwm_kib * 1024
    result["wait4_maxrss_bytes"] = _maxrss_bytes(ru.ru_maxrss)
    result["children_maxrss_bytes"] = children_maxrss
    result["parent_hwm_bytes"] = (_status_kib("self", "VmHWM") or 0) * 1024
    result["peak_bytes"] = max(result["vmhwm_bytes"], result["wait4_maxrss_bytes"])
    if proc.returncode != 0:
        print(f"child exited with status {proc.returncode}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    ap.add_argument("--events", type=int, default=100_000_000,
                    help="minimum events in the recording")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "data",
                    help="where recordings live")
    ap.add_argument("--path", choices=["event", "batch", "both"], default="batch",
                    help="engine path to measure (default: batch)")
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rec", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.events < 1:
        ap.error("--events must be at least 1")

    if args.child:
        child(args.rec, args.out, args.path, args.batch_size)
        return

    if args.generate:
        ensure_recording(args.data, args.events, args.seed)
        return

    # Generation runs in its own child too, so this process stays small: on Linux a
    # child's ru_maxrss includes the high-water mark of the image it was forked from
    # (the parent's), so a parent that had generated 100M rows would inflate it by GBs.
    rec_dir = args.data / f"trades-{args.events}-{args.seed}"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--generate",
                             "--events", str(args.events), "--seed", str(args.seed),
                             "--data", str(args.data)])
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"generating the recording failed (status {proc.returncode})")
    print(f"(recording step peak RSS {_maxrss_bytes(ru.ru_maxrss) / MiB:,.0f} MiB)")
    size = _dir_size(rec_dir)
    paths = ["event", "batch"] if args.path == "both" else [args.path]
    results = [measure(rec_dir, p, args.batch_size) for p in paths]

    print(f"\nrecording: {rec_dir} ({size / MiB:,.1f} MiB on disk)")
    print(f"limit: {LIMIT_BYTES / MiB:,.0f} MiB (1.5 GiB)\n")
    head = (f"{'path':<6} {'events':>13} {'wall s':>8} {'events/s':>11} "
            f"{'peak RSS MiB':>12} {'VmHWM MiB':>9} {'ru_maxrss MiB':>13} {'result':>6}")
    print(head)
    print("-" * len(head))
    failed = False
    for r in results:
        ok = r["returncode"] == 0 and r["peak_bytes"] < LIMIT_BYTES and r["events"] > 0
        failed |= not ok
        verdict = "PASS" if ok else ("FAIL" if r["returncode"] == 0 else "ERROR")
        eps = r["events"] / r["wall_s"] if r["wall_s"] > 0 else 0.0
        print(f"{r['path']:<6} {r['events']:>13,} {r['wall_s']:>8.1f} {eps:>11,.0f} "
              f"{r['peak_bytes'] / MiB:>12,.0f} {r['vmhwm_bytes'] / MiB:>9,.0f} "
              f"{r['wait4_maxrss_bytes'] / MiB:>13,.0f} {verdict:>6}")
    print("\npeak RSS = max(VmHWM of the child polled every 0.2 s, ru_maxrss from wait4() of it); "
          f"RUSAGE_CHILDREN max over all children (incl. generation): "
          f"{results[-1]['children_maxrss_bytes'] / MiB:,.0f} MiB; ru_maxrss can include up to "
          f"{results[-1]['parent_hwm_bytes'] / MiB:,.0f} MiB inherited from this launcher")
    print("wall s = run_backtest's own timer (process wall incl. start-up: "
          + ", ".join(f"{r['path']} {r['process_wall_s']:.1f} s" for r in results) + ")")
    for r in results:
        if "signals" in r:
            own = (r.get("self_hwm_kib") or 0) / 1024
            print(f"{r['path']}: child's own VmHWM at the end {own:,.0f} MiB; "
                  f"{r['signals']:,} signals, {r['alerts']:,} alerts, outputs "
                  + ", ".join(f"{k} {v / MiB:.1f} MiB"
                              for k, v in sorted(r.get("outputs", {}).items())))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
