"""Multi-kind streams: backtest events/s of strategies that read several interleaved kinds.

Usage: python bench/multikind.py [--hours 1] [--vehicles 3] [--events 2000000] [--repeat 3]

1. ``UavAnomaly`` (nine telemetry kinds) on a recording imported from an emulated tlog
   (the endurance flight, ``--vehicles`` vehicles on one link, ``--hours`` long), as
   ``report.json`` counts it (target >= 100,000 events/s; default parameters), against the
   per-run route in the same process, run once: each run of one kind through
   ``Engine.process``, as backtests ran before windows (outputs checked equal).
2. A toy strategy (a running mean per key) on one kind against the same logic on two
   interleaved kinds, as many events in all (target: two kinds within 1.5x of one), and
   the two-kind run on the per-run route (its first 100,000 events: it is slow).

Each figure is the best of ``--repeat`` runs, with the CPU time of the process beside the
wall time (on a loaded machine the wall time says more about the load). Figures depend on
the machine.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

from qsframework import Strategy, define_kind  # noqa: E402
from qsframework.backtest import run_backtest  # noqa: E402
from qsframework.engine import Engine  # noqa: E402
from qsframework.loader import load_strategy  # noqa: E402
from qsframework.recording import Recording, RecordingWriter  # noqa: E402

START_US = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z
BENCH_A = define_kind("bench_a", [("value", pa.float64())])
BENCH_B = define_kind("bench_b", [("value", pa.float64())])


def flight_tlog(path: Path, *, hours: float, vehicles: int) -> None:
    """The emulator's endurance flight flown by ``vehicles`` vehicles (system ids 1..n, each
    its own seed) on one link, as a MAVProxy-style tlog."""
    from qsframework.sim.vehicle import Scenario
    from qsframework.sim.vehicle.telemetry import VehicleEmulator

    plan = Scenario.load("endurance")
    emus = [VehicleEmulator(plan, system_id=i + 1, seed=i, start_unix_us=START_US) for i in range(vehicles)]
    pack = struct.Struct(">Q").pack
    with path.open("wb") as f:
        for frames in zip(*(e.frames(duration=hours * 3600) for e in emus)):
            chunk = []
            for (t, packets), emu in zip(frames, emus):
                ts_us = START_US + round(t * 1e6)
                chunk += [b for p in packets for b in (pack(ts_us), p)]
                emu.stamp(t, ts_us * 1000)
            f.write(b"".join(chunk))


def flight_recording(data: Path, *, hours: float, vehicles: int) -> Path:
    """The tlog imported per vehicle (``qsf recordings import tlog --system-id``), the
    vehicles' events written together as one recording."""
    out = data / f"uav-{hours:g}h-{vehicles}v"
    if (out / "recording.json").exists():
        return out
    from qsframework.adapters.mavlink.tlog import import_tlog

    data.mkdir(parents=True, exist_ok=True)
    tlog = data / f"uav-{hours:g}h-{vehicles}v.tlog"
    t0 = time.perf_counter()
    if not tlog.exists():
        flight_tlog(tlog, hours=hours, vehicles=vehicles)
    tmp = Path(tempfile.mkdtemp(prefix="qsf-multikind-"))
    try:
        with RecordingWriter(out) as writer:
            for sid in range(1, vehicles + 1):
                import_tlog(tlog, out=tmp / str(sid), system_id=sid)
                for part in sorted((tmp / str(sid)).glob("kind=*/date=*/*.parquet")):
                    writer.write(part.parent.parent.name.split("=", 1)[1], pq.read_table(part))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"generated {Recording(out).rows():,} events ({vehicles} vehicles, {hours:g} h) "
          f"in {time.perf_counter() - t0:.0f} s -> {out}")
    return out


def per_run(cls: type[Strategy], rec: Recording, *, limit: int | None = None,
            **options: Any) -> tuple[int, float, float, dict]:
    """The per-run route: the recording's runs of one kind, each through ``Engine.process``
    (what a backtest did before windows), stopping after ``limit`` events if given.
    Returns events, seconds, CPU seconds, outputs."""
    engine = Engine(cls, **options)
    engine.prepare()
    kinds = [k for k in engine.kinds if k in rec.kinds]
    runs = rec.stream_all(kinds, keys=engine.keys, columns={k: engine.columns(k) for k in kinds})
    t0, c0 = time.perf_counter(), time.process_time()
    for kind, batch in runs:
        engine.process(kind, batch, filtered=True)
        if limit is not None and engine.events_in >= limit:
            break
    engine.finish()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {name: buf.drain() for name, buf in engine.ctx.outputs.buffers().items()}
    return engine.events_in, wall, cpu, out


def windowed(cls: type[Strategy], rec: Recording, **options: Any) -> tuple[int, float, float, dict]:
    """A backtest (the window route): events and seconds as report.json counts them, and the
    CPU seconds of the whole call."""
    c0 = time.process_time()
    res = run_backtest(cls, rec, **options)
    return res.events_in, res.report["wall_s"], time.process_time() - c0, res.tables


def best(run: Callable[[], tuple[int, float, float, dict]], repeat: int) -> tuple[float, float, dict]:
    """The best events/s of ``repeat`` runs by wall and by CPU time, and the last outputs."""
    rate = cpu_rate = 0.0
    out: dict = {}
    for _ in range(repeat):
        events, wall, cpu, out = run()
        rate, cpu_rate = max(rate, events / wall), max(cpu_rate, events / cpu)
    return rate, cpu_rate, out


def row(label: str, rate: float, cpu_rate: float, note: str = "") -> None:
    print(f"  {label:<24} {rate:>10,.0f} events/s   (CPU time: {cpu_rate:>10,.0f}/s)   {note}")


# -- the toy: one kind against two --------------------------------------------------
class MeanOne(Strategy):
    """A running mean per key of one kind's values, and a signal when a value strays."""

    kinds = ("bench_a",)
    fields = {"bench_a": ("key", "value"), "bench_b": ("key", "value")}
    rows = "tuple"

    def __init__(self, params: Any, ctx: Any) -> None:
        super().__init__(params, ctx)
        self.mean: dict[str, float] = {}

    def on_bench_a(self, e: tuple[int, str, float]) -> None:
        _, key, value = e
        m = self.mean.get(key, value)
        self.mean[key] = m = m + (value - m) * 0.01
        if value - m > 4.0:
            self.ctx.signal(key, "stray", value)


class MeanTwo(MeanOne):
    """The same logic over two kinds."""

    kinds = ("bench_a", "bench_b")
    on_bench_b = MeanOne.on_bench_a


def toy_recordings(data: Path, events: int) -> tuple[Path, Path]:
    """``events`` rows of bench_a; and as many split between bench_a and bench_b, alternating
    at random (runs of one kind ~2 rows long), over 8 keys."""
    rng = np.random.default_rng(1)
    ts = START_US * 1000 + np.cumsum(rng.integers(1, 2_000_000, events))
    keys = np.array([f"k{i}" for i in range(8)])[rng.integers(0, 8, events)]
    cols = {"ts_event": ts, "ts_recv": ts, "source": pa.array(["bench"] * events),
            "key": pa.array(keys.tolist()), "seq": np.arange(events), "value": rng.normal(0, 1.5, events)}
    one, two = data / f"toy-one-{events}", data / f"toy-two-{events}"
    if not (one / "recording.json").exists():
        with RecordingWriter(one) as w:
            w.write("bench_a", pa.table(cols, schema=BENCH_A.schema))
    if not (two / "recording.json").exists():
        b = rng.random(events) < 0.5
        table = pa.table(cols, schema=BENCH_A.schema)
        with RecordingWriter(two) as w:
            w.write("bench_a", table.filter(pa.array(~b)))
            w.write("bench_b", table.filter(pa.array(b)).cast(BENCH_B.schema))
    return one, two


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--vehicles", type=int, default=3)
    ap.add_argument("--events", type=int, default=2_000_000, help="rows of the toy recordings")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    args = ap.parse_args()

    uav = load_strategy(str(ROOT / "strategies" / "uav_anomaly.py") + ":UavAnomaly")
    rec = Recording(flight_recording(args.data, hours=args.hours, vehicles=args.vehicles))
    before, before_cpu, old = best(lambda: per_run(uav, rec), 1)  # slow: once
    after, after_cpu, new = best(lambda: windowed(uav, rec), args.repeat)
    for name in ("signals", "alerts"):
        assert new[name].equals(old[name]), f"UavAnomaly {name} differ between the routes"
    print(f"UavAnomaly, {rec.rows():,} events ({args.vehicles} vehicles, {args.hours:g} h, "
          f"{new['alerts'].num_rows} alerts, outputs equal):")
    row("per-run route (before)", before, before_cpu)
    row("windows (backtest)", after, after_cpu, f"x{after / before:.1f}   "
        f"{'PASS' if after >= 100_000 else 'MISS'} target 100,000 (report.json)")

    one, two = (Recording(p) for p in toy_recordings(args.data, args.events))
    single, single_cpu, _ = best(lambda: windowed(MeanOne, one), args.repeat)
    double, double_cpu, _ = best(lambda: windowed(MeanTwo, two), args.repeat)
    old_double, old_cpu, _ = best(lambda: per_run(MeanTwo, two, limit=100_000), 1)
    print(f"toy running mean, {args.events:,} events:")
    row("one kind", single, single_cpu)
    row("two kinds, windows", double, double_cpu, f"one/two = {single / double:.2f}   "
        f"{'PASS' if single / double <= 1.5 else 'MISS'} target 1.5")
    row("two kinds, per-run", old_double, old_cpu, f"one/two = {single / old_double:.2f} (first 100,000)")


if __name__ == "__main__":
    main()
