"""Several interleaved kinds for the window route's tests: random data with ties across kinds,
exact duplicates and several keys; toy strategies whose outputs depend on the order of every
event and timer; and the reference run, each run of one kind fed to ``Engine.process``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from qsframework import Context, Strategy, define_kind
from qsframework.engine import Engine
from qsframework.events import get_kind
from qsframework.order import merge_windows

KINDS = ("wk_a", "wk_b", "wk_c", "wk_d")
for _name in KINDS:
    define_kind(_name, [("value", pa.float64())])
KEYS = ("K1", "K2", "K3")
SOURCES = ("s1", "s2")
T0 = 1_767_571_200_000_000_000
MS = 1_000_000
OUTPUTS = ("signals", "alerts", "orders", "fills", "equity")


def _sorted(kind: str, rows: list[tuple]) -> pa.Table:
    """``rows`` (tuples in the kind's field order) sorted by (ts_event, source, key, seq), by
    Python's own sort (stable: duplicates keep their order)."""
    rows = sorted(rows, key=lambda r: (r[0], r[2], r[3], r[4]))
    schema = get_kind(kind).schema
    return pa.table({f.name: pa.array([r[i] for r in rows], f.type) for i, f in enumerate(schema)},
                    schema=schema)


def make_kinds(seed: int, sizes: dict[str, int], *, spread_ms: int = 3, dup: float = 0.1) -> dict[str, pa.Table]:
    """Per kind a table of ``sizes[kind]`` rows in total order: times on a coarse grid (many
    ties, across kinds too), random sources, keys and small seqs (equal rows by chance), plus
    rows repeated on purpose; trades get prices and quantities."""
    rng = np.random.default_rng(seed)
    tables = {}
    for kind, n in sizes.items():
        span = max(1, n * spread_ms // max(1, len(sizes)))
        rows = []
        for _ in range(n):
            ts = T0 + int(rng.integers(0, span)) * MS
            head = (ts, ts + 5 * MS, str(rng.choice(SOURCES)), str(rng.choice(KEYS[:2] if kind == "trade" else KEYS)),
                    int(rng.integers(0, 4)))
            if kind == "trade":
                row = (*head, round(float(100 + rng.normal(0, 2)), 2), float(rng.lognormal(-2, 1)), bool(rng.random() < 0.5))
            else:
                row = (*head, float(rng.random()))
            rows.append(row)
            if rng.random() < dup:
                rows.append(row)
        tables[kind] = _sorted(kind, rows) if rows else get_kind(kind).empty()
    return tables


def _run_order(tables: dict[str, pa.Table]) -> list[tuple[str, list[int]]]:
    """The runs of one kind in total order (ts_event, source, key, kind, seq), computed apart
    from the engine: every row's order tuple sorted by Python."""
    rows = []
    for kind, t in tables.items():
        cols = [t.column(c).to_pylist() for c in ("ts_event", "source", "key", "seq")]
        rows += [(ts, src, key, kind, seq, i) for i, (ts, src, key, seq) in enumerate(zip(*cols))]
    rows.sort()
    runs: list[tuple[str, list[int]]] = []
    for r in rows:
        if runs and runs[-1][0] == r[3]:
            runs[-1][1].append(r[5])
        else:
            runs.append((r[3], [r[5]]))
    return runs


def outputs(engine: Engine) -> dict[str, Any]:
    out = engine.ctx.outputs
    got: dict[str, Any] = {name: buf.drain() for name, buf in (out.buffers() | out.execution()).items()}
    got["events_in"], got["duplicates"] = engine.events_in, engine.duplicates
    return got


def reference(cls: type[Strategy], tables: dict[str, pa.Table], **options: Any) -> dict[str, Any]:
    """The per-run route: each run of one kind through ``Engine.process``, path "event"."""
    engine = Engine(cls, path="event", **options)
    for kind, idx in _run_order(tables):
        engine.process(kind, tables[kind].take(pa.array(idx)).to_batches()[0])
    engine.finish()
    return outputs(engine)


def windowed(cls: type[Strategy], tables: dict[str, pa.Table], *, batch_size: int, **options: Any) -> dict[str, Any]:
    """The window route: the kinds merged into windows from batches of ``batch_size`` rows."""
    engine = Engine(cls, **options)
    streams = {k: t.to_batches(max_chunksize=batch_size) for k, t in tables.items() if t.num_rows}
    for window in merge_windows(streams):
        engine.process_window(window)
    engine.finish()
    return outputs(engine)


def failure(run: Any) -> str | None:
    """The one-line error a run stopped with, or None."""
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - the message is what is compared
        return f"{type(exc).__name__}: {exc}"
    return None


# -- toy strategies -------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MixParams:
    every_ms: int = 7  # a periodic timer (0: none)
    once: float = 0.8  # events with a value above set a one-shot timer (per-event toy only)
    only: str = ""  # keys() as a comma list ("": every key)
    fail: float = 2.0  # a handler raises on a value above (never by default)


class Mixer(Strategy):
    """Every event and timer folds into one running hash emitted as a signal, so any change
    in order, count or time shows; values above ``once`` set one-shot timers."""

    kinds = KINDS
    Params = MixParams

    def __init__(self, params: MixParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.h = 1

    def keys(self) -> frozenset[str] | None:
        return frozenset(self.p.only.split(",")) if self.p.only else None

    def on_start(self) -> None:
        if self.p.every_ms:
            self.ctx.every(self.p.every_ms * MS, "beat", first=self.ctx.now + self.p.every_ms * MS // 2)

    def fold(self, code: int, ts: int, key: str, seq: int, value: float) -> None:
        if value > self.p.fail:
            raise RuntimeError(f"value {value:.3f} too high")
        self.h = (self.h * 1_000_003 + code * 7919 + seq * 31 + ts % 1_000_007 + int(value * 1e6)) % (1 << 61)
        self.ctx.signal(key, KINDS[code], float(self.h % 1_000_003), ts=ts)

    def event(self, code: int, e: Any) -> None:
        self.fold(code, e.ts_event, e.key, e.seq, e.value)
        if e.value > self.p.once:
            self.ctx.at(self.ctx.now + int(e.value * 10) * MS, f"once:{e.key}")

    def on_wk_a(self, e: Any) -> None:
        self.event(0, e)

    def on_wk_b(self, e: Any) -> None:
        self.event(1, e)

    def on_wk_c(self, e: Any) -> None:
        self.event(2, e)

    def on_wk_d(self, e: Any) -> None:
        self.event(3, e)

    def on_timer(self, name: str, ts: int) -> None:
        self.h = (self.h * 1_000_003 + ts % 1_000_007 + len(name)) % (1 << 61)
        self.ctx.signal("timer", name, float(self.h % 1_000_003), ts=ts)


class TupleMixer(Mixer):
    """The same on plain tuples (``rows = "tuple"``: ts_event, ts_recv, source, key, seq, value)."""

    rows = "tuple"

    def event(self, code: int, e: Any) -> None:
        self.fold(code, e[0], e[3], e[4], e[5])
        if e[5] > self.p.once:
            self.ctx.at(self.ctx.now + int(e[5] * 10) * MS, f"once:{e[3]}")


class BatchMixer(Mixer):
    """With batch handlers for wk_a and wk_b (the same outputs; no one-shot timers, which a
    batch handler cannot place inside its batch)."""

    Params = MixParams

    def event(self, code: int, e: Any) -> None:
        self.fold(code, e.ts_event, e.key, e.seq, e.value)

    def batch(self, code: int, batch: pa.RecordBatch, fires: Any) -> None:
        cols = [batch.column(c).to_pylist() for c in ("ts_event", "key", "seq", "value")]
        j = 0
        for i, (ts, key, seq, value) in enumerate(zip(*cols)):
            while j < len(fires) and fires.pos[j] <= i:
                self.on_timer(fires.names[j], int(fires.times[j]))
                j += 1
            self.fold(code, ts, key, seq, value)
        for name, t in zip(fires.names[j:], fires.times[j:].tolist()):
            self.on_timer(name, t)

    def on_wk_a_batch(self, batch: pa.RecordBatch, fires: Any) -> None:
        self.batch(0, batch, fires)

    def on_wk_b_batch(self, batch: pa.RecordBatch, fires: Any) -> None:
        self.batch(1, batch, fires)


class BatchPair(BatchMixer):
    """BatchMixer on wk_a and wk_b alone: every kind it reads has a batch handler (path "batch")."""

    kinds = ("wk_a", "wk_b")


class Trader(Strategy):
    """Trades on a second kind: wk_a values above 0.7 buy the key at market, below 0.3 sell
    what is held with a limit at the last trade price; fills, timers and equity as signals."""

    kinds = ("trade", "wk_a")
    Params = MixParams

    def __init__(self, params: MixParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.last: dict[str, float] = {}

    def on_start(self) -> None:
        if self.p.every_ms:
            self.ctx.every(self.p.every_ms * MS, "beat", first=self.ctx.now)

    def on_trade(self, t: Any) -> None:
        self.last[t.key] = t.price

    def on_wk_a(self, e: Any) -> None:
        price = self.last.get(e.key)
        if price is None:
            return
        held = self.ctx.position(e.key)
        if e.value > 0.7 and held < 3:
            self.ctx.order(e.key, 1.0)
        elif e.value < 0.3 and held > 0:
            self.ctx.order(e.key, -held, price=price)

    def on_fill(self, fill: Any) -> None:
        self.ctx.signal(fill.key, "fill", fill.qty)

    def on_timer(self, name: str, ts: int) -> None:
        self.ctx.signal("timer", name, self.ctx.equity)


