"""Execution overhead: a trading strategy's backtest with the simulator and without it.

Usage: python bench/execution_overhead.py [--events 2000000] [--seed 1] [--repeat 3]

Each strategy runs twice over the same generated recording, differing in one parameter:
``orders=true`` places its orders (the engine switches to the execution loop at the first
one: matching, fills, the equity grid), ``orders=false`` does the very same work but emits a
signal where it would order (the plain per-event loop, no simulator). Strategies: a minimal
per-event strategy that trades every ``every`` of event time (the worst case: the engine's own
loop is nearly all the work), and the BTC/ETH pairs strategy (a dozen positions an hour).
Runs alternate on/off and each figure is the fastest of --repeat, in events per second of the
process's CPU time (a shared machine's load moves wall time far more than CPU time). Target
(issue 12): a strategy that trades rarely pays at most 20% over the same strategy without the
simulator.
"""

from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from backtest_throughput import ensure_recording  # noqa: E402

from qsframework import Context, Duration, Strategy  # noqa: E402
from qsframework.backtest import BacktestResult, run_backtest  # noqa: E402
from qsframework.recording import Recording  # noqa: E402
from qsframework.strategies.btc_eth_pairs import BtcEthPairs, PairsParams  # noqa: E402
from qsframework.strategies.btc_eth_spread import BtcEthSpread  # noqa: E402

TARGET = 0.20


@dataclass(frozen=True, kw_only=True)
class RareParams:
    orders: bool = True
    every: Duration = Duration("10m")
    key: str = "BTCUSDT"
    qty: float = 0.01


class RareTrader(Strategy):
    """Keeps the last price per event; every ``every`` buys or sells ``qty`` (or signals)."""

    kinds = ("trade",)
    fields = {"trade": ("key", "price")}  # noqa: RUF012
    rows = "tuple"
    Params = RareParams

    def __init__(self, params: RareParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.last = 0.0
        self.side = 1.0

    def on_start(self) -> None:
        every = int(self.p.every)
        self.ctx.every(every, "trade", first=-(-self.ctx.now // every) * every)

    def on_trade(self, t: tuple[int, str, float]) -> None:
        self.last = t[2]

    def on_timer(self, name: str, ts: int) -> None:
        if self.p.orders:
            self.ctx.order(self.p.key, self.side * self.p.qty)
        else:
            self.ctx.signal(self.p.key, "order", self.side * self.p.qty)
        self.side = -self.side


@dataclass(frozen=True, kw_only=True)
class PaperParams(PairsParams):
    orders: bool = True


class PairsSwitch(BtcEthPairs):
    """BtcEthPairs; with ``orders=false`` its divergences only signal, as the spread's do."""

    Params = PaperParams

    def diverged(self, ts: int, d: float) -> None:
        if self.p.orders:
            super().diverged(ts, d)
        else:
            BtcEthSpread.diverged(self, ts, d)


def best(cls: type[Strategy], rec: Recording, repeat: int) -> dict[bool, tuple[BacktestResult, float]]:
    """The fastest of ``repeat`` runs with orders on and off, alternating, with its CPU seconds."""
    first = rec.span()[0]  # type: ignore[index]
    for orders in (True, False):  # warm-up: imports, caches
        run_backtest(cls, rec, path="event", overrides={"orders": orders},
                     end=first + 20 * 60 * 10**9)
    runs: dict[bool, list[tuple[BacktestResult, float]]] = {True: [], False: []}
    for _ in range(repeat):
        for orders in (True, False):
            gc.collect()
            cpu = time.process_time()
            result = run_backtest(cls, rec, path="event", overrides={"orders": orders})
            runs[orders].append((result, time.process_time() - cpu))
    return {k: min(v, key=lambda r: r[1]) for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest counts")
    args = ap.parse_args()
    rec = Recording(ensure_recording(args.data, args.events, args.seed))
    print("\nevents per CPU second, with the simulator and without; the extra CPU time per event")
    print(f"{'strategy':<34} {'events':>11} {'fills':>6} {'with sim':>12} {'without':>12} "
          f"{'overhead':>9} {'extra':>9}")
    misses = 0
    for label, cls in (("minimal, an order every 10 min", RareTrader),
                       ("BTC/ETH pairs", PairsSwitch)):
        (with_sim, cpu_on), (without, cpu_off) = best(cls, rec, args.repeat).values()
        on, off = with_sim.events_in / cpu_on, without.events_in / cpu_off
        overhead = off / on - 1  # extra CPU time per event with the simulator
        misses += overhead > TARGET
        fills = with_sim.report["outputs"].get("fills", 0)
        print(f"{label:<34} {with_sim.events_in:>11,} {fills:>6,} {on:>12,.0f} {off:>12,.0f} "
              f"{overhead:>8.1%} {(1 / on - 1 / off) * 1e6:>6.2f} µs")
    print(f"\ntarget (issue 12): overhead <= {TARGET:.0%} for a strategy that trades rarely: "
          f"{'PASS' if not misses else 'MISS'}")


if __name__ == "__main__":
    main()
