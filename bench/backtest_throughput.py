"""Backtest throughput: events/s of the engine against a bare Python loop over the same Parquet.

Usage: python bench/backtest_throughput.py [--events 5000000] [--seed 1] [--data bench/data]

Prints one row per run: a no-op strategy and the BTC/ETH spread strategy, each on the
per-event and the batch path (and, when the spread strategy's core is compiled, its
per-event path with the core interpreted; and its plain definition, without the accelerated
implementation), and the bare loop (read the files, iterate, keep the last price per
symbol) for comparison. Each row is the fastest of --repeat runs, after a
warm-up run that loads compiled kernels. Figures depend on the machine.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

from qsframework import Strategy, TimerFires  # noqa: E402
from qsframework.backtest import run_backtest  # noqa: E402
from qsframework.loader import load_strategy  # noqa: E402
from qsframework.recording import Recording, RecordingWriter  # noqa: E402
from qsframework.sim.market import estimate_rate, simulate_trades  # noqa: E402
from qsframework.strategies.accel import compiled, spread as spread_accel  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


class NoOp(Strategy):
    """Receives every trade and does nothing: the engine's own cost."""

    def on_trade(self, t) -> None:
        pass

    def on_trade_batch(self, batch: pa.RecordBatch, fires: TimerFires) -> None:
        pass


def ensure_recording(root: Path, events: int, seed: int) -> Path:
    minutes = events / estimate_rate(SYMBOLS) / 60 * 1.06  # margin: at least `events` rows
    path = root / f"trades-{events}-{seed}"
    if (path / "recording.json").exists():
        return path
    t0 = time.perf_counter()
    with RecordingWriter(path) as w:
        for table in simulate_trades(SYMBOLS, minutes=minutes, seed=seed):
            w.write("trade", table)
    print(f"generated {Recording(path).rows():,} events in {time.perf_counter() - t0:.1f} s -> {path}")
    return path


def bare_loop(rec: Recording) -> tuple[int, float]:
    """Read each file, iterate rows in Python, keep the last price per symbol."""
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    n = 0
    for f in rec.files("trade"):
        for batch in pq.ParquetFile(f.path).iter_batches(65_536, columns=["key", "price"]):
            keys = batch.column(0).to_pylist()
            prices = batch.column(1).to_numpy().tolist()
            for k, p in zip(keys, prices):
                last[k] = p
            n += len(prices)
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    ap.add_argument("--only", choices=["bare", "noop", "spread"], action="append")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest counts")
    args = ap.parse_args()
    rec = Recording(ensure_recording(args.data, args.events, args.seed))
    spread = load_strategy(str(ROOT / "strategies" / "btc_eth_spread.py") + ":BtcEthSpread")
    only = set(args.only or ["bare", "noop", "spread"])

    rows: list[tuple[str, int, float]] = []
    if "bare" in only:
        n, s = min((bare_loop(rec) for _ in range(args.repeat)), key=lambda r: r[1])
        rows.append(("bare Python loop (read, iterate, last price)", n, s))
    bare_s = rows[0][2] if rows else None
    first = rec.span()[0]  # type: ignore[index]
    results: dict[tuple[str, str], float] = {}
    compiled_core = spread_accel.core
    runs_wanted = [("no-op", NoOp, "event", ""), ("no-op", NoOp, "batch", ""),
                   ("spread", spread, "event", ""), ("spread", spread, "batch", "")]
    if compiled.is_compiled(compiled_core):
        runs_wanted.append(("spread", spread, "event", "interpreted"))
    runs_wanted.append(("spread", spread.plain, "event", "plain"))
    for label, cls, path, core in runs_wanted:
        if label.replace("-", "") not in only:
            continue
        spread_accel.core = (
            compiled.import_source(compiled_core.__name__, as_name="spread_core_interpreted")
            if core == "interpreted" else compiled_core
        )
        # warm up: load compiled kernels and caches, as any long run amortizes them
        run_backtest(cls, rec, path=path, end=first + 60 * 10**9)
        runs = []
        for _ in range(args.repeat):
            gc.collect()
            runs.append(run_backtest(cls, rec, path=path))
        r = min(runs, key=lambda x: x.wall_s)
        note = {"interpreted": ", core interpreted", "plain": ", plain definition"}.get(core, "")
        rows.append((f"{label} strategy, {path} path{note} ({r.signals:,} signals)", r.events_in, r.wall_s))
        results[(label, path, core)] = r.events_in / r.wall_s
    spread_accel.core = compiled_core
    state = "compiled (mypyc)" if compiled.is_compiled(compiled_core) else "interpreted (no build)"
    print(f"\nspread strategy's per-event core: {state}")
    print(f"\n{'run':<66} {'events':>11} {'seconds':>8} {'events/s':>12} {'x bare':>7}")
    for label, n, s in rows:
        ratio = f"{s / bare_s:6.2f}x" if bare_s else ""
        print(f"{label:<66} {n:>11,} {s:>8.2f} {n / s:>12,.0f} {ratio:>7}")
    if ("spread", "event", "") in results:
        ev, ba = results[("spread", "event", "")], results[("spread", "batch", "")]
        print("\ntargets (issue 2):")
        print(f"  spread per-event >= 500,000 events/s: {ev:,.0f} {'PASS' if ev >= 5e5 else 'MISS'}")
        if bare_s:
            x = rows[0][1] / bare_s / ev
            print(f"  spread per-event within 3x of the bare loop's time: {x:.2f}x {'PASS' if x <= 3 else 'MISS'}")
        print(f"  spread batch path >= 10,000,000 events/s: {ba:,.0f} {'PASS' if ba >= 1e7 else 'MISS'}")


if __name__ == "__main__":
    main()
