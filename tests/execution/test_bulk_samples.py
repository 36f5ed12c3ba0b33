"""The equity samples the execution loop builds in bulk while no order is open: every sample's
time, seq, cash, positions and equity against a pure-Python recomputation from the trades and
the run's fills (same float operations, so compared exactly), with many held keys, keys
without trades for long stretches, grid times equal to trade times, batch sizes 1/7/65,536,
signals and ``ctx.equity()`` between samples, and gaps longer than one spill chunk."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework import Context, ExecutionConfig, Strategy
from qsframework.engine import Engine

from ..conftest import T0

SECOND = 1_000_000_000
CHUNK = 65_536  # samples of one quiet gap handed to the outputs at a time
KEYS = [f"K{i:02d}" for i in range(12)]


@dataclass(frozen=True, kw_only=True)
class HoldParams:
    keys: int = 6
    every: int = 7 * SECOND + 300_000_000  # the timer: off the grid
    probe: int = 97  # a signal with ctx.equity() on every trade whose seq is a multiple


class Holder(Strategy):
    """Buys every key at the start, then on a timer sells a slice of one key (orders open
    briefly, then none for a long while) or emits a signal; on some trades it reports
    ``ctx.equity()`` as a signal."""

    kinds = ("trade",)
    fields = {"trade": ("key", "seq", "price")}  # noqa: RUF012
    rows = "tuple"
    Params = HoldParams

    def __init__(self, params: HoldParams, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.count = 0

    def on_start(self) -> None:
        for i, key in enumerate(KEYS[: self.p.keys]):
            self.ctx.order(key, (i + 1) * 0.25 if i % 3 else -(i + 1) * 0.125)
        self.ctx.every(self.p.every, "tick", first=self.ctx.now + self.p.every)

    def on_trade(self, t: tuple) -> None:
        if t[2] % self.p.probe == 0:
            self.ctx.signal(t[1], "equity", self.ctx.equity)

    def on_timer(self, name: str, ts: int) -> None:
        self.count += 1
        if self.count % 3 == 0:
            self.ctx.order(KEYS[self.count % self.p.keys], -0.0625)
        else:
            self.ctx.signal("", "tick", float(self.count))


def recording(seed: int, n: int, keys: int, lattice: int, quiet: int) -> pa.Table:
    """``n`` trades in total order on a ``lattice`` of times (so many fall on grid times),
    keys drawn with very unequal weights (some absent for long stretches), one quiet gap of
    ``quiet`` ns in the middle."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([0, 0, 1, 1, 2, 5, 40], size=n).astype(np.int64) * lattice
    steps[n // 2] += quiet
    ts = T0 + np.cumsum(steps)
    weights = 0.5 ** np.arange(keys)
    key = rng.choice(np.array(KEYS[:keys]), size=n, p=weights / weights.sum())
    price = rng.integers(9_000, 11_000, size=n) / 64  # dyadic: exact sums of a few
    table = pa.table({
        "ts_event": pa.array(ts, pa.int64()), "ts_recv": pa.array(ts, pa.int64()),
        "source": pa.array(["x"] * n), "key": pa.array(key.tolist()),
        "seq": pa.array(np.arange(n), pa.int64()), "price": price,
        "qty": rng.integers(1, 64, size=n) / 8, "is_buyer_maker": [False] * n,
    })
    order = sorted(range(n), key=lambda i: (int(ts[i]), str(key[i]), i))  # the total order
    return table.take(pa.array(order))


def run(trades: pa.Table, batch: int, cfg: ExecutionConfig, params: HoldParams) -> tuple[dict, list]:
    """The outputs, and the number of equity rows handed over at each ``on_outputs``."""
    spills: list[int] = []
    handed: list[pa.Table] = []

    def on_outputs() -> None:
        handed.append(engine.ctx.outputs.equity.drain())
        spills.append(sum(t.num_rows for t in handed))

    engine = Engine(Holder, params=params, path="event", execution=cfg, on_outputs=on_outputs)
    engine.prepare()
    for lo in range(0, trades.num_rows, batch):
        for part in trades.slice(lo, batch).to_batches():
            engine.process("trade", part)
    engine.finish()
    outputs = engine.ctx.outputs
    out = {name: buf.drain() for name, buf in (outputs.buffers() | outputs.execution()).items()}
    out["equity"] = pa.concat_tables([*handed, out["equity"]])
    return out, spills


class Book:
    """Cash and positions after a run's fills, by the issue's rules (a buy pays qty x price +
    fee, a sell receives |qty| x price - fee), and equity by its definition."""

    def __init__(self, cash: float, fills: pa.Table) -> None:
        self.cash, self.held = cash, {}
        self.fills = list(zip(*(fills.column(c).to_pylist()
                                for c in ("ts_event", "key", "qty", "price", "fee")), strict=True))
        self.next = 0

    def fill_until(self, done) -> None:
        """Book the fills (in order) while ``done(fill time)``."""
        while self.next < len(self.fills) and done(self.fills[self.next][0]):
            _, key, q, p, fee = self.fills[self.next]
            self.cash = self.cash - (q * p + fee) if q > 0 else self.cash + (-q * p - fee)
            self.held[key] = self.held.get(key, 0.0) + q
            if self.held[key] == 0.0:
                del self.held[key]
            self.next += 1

    def equity(self, marks: dict[str, float]) -> float:
        value = self.cash
        for key in sorted(self.held):
            value += self.held[key] * marks[key]
        return value


def expected(trades: pa.Table, fills: pa.Table, cfg: ExecutionConfig) -> list[tuple]:
    """(ts, cash, positions, equity) of every sample, by the rules: every multiple of
    mark_every from the first trade to the last, and the last trade's time; the state after
    the events at or before it; equity = cash + each position x its key's last price at or
    before it, added in key order."""
    ts = trades.column("ts_event").to_pylist()
    keys = trades.column("key").to_pylist()
    prices = trades.column("price").to_pylist()
    m = cfg.mark_every_ns
    grid = list(range(-(-ts[0] // m) * m, ts[-1] + 1, m))
    if grid[-1] != ts[-1]:
        grid.append(ts[-1])
    book, marks = Book(cfg.cash, fills), {}
    j = 0
    out = []
    for t in grid:
        while j < len(ts) and ts[j] <= t:
            marks[keys[j]] = prices[j]
            j += 1
        book.fill_until(lambda when, t=t: when <= t)
        out.append((t, book.cash, dict(sorted(book.held.items())), book.equity(marks)))
    return out


def spill_points(trades: pa.Table, cfg: ExecutionConfig) -> list[int]:
    """Samples handed over before each spill: every CHUNK samples into a quiet gap between two
    trades, before its end (sample counts from the run's start)."""
    ts = np.array(trades.column("ts_event").to_pylist(), np.int64)
    m = cfg.mark_every_ns
    first = -(-int(ts[0]) // m) * m
    grid = np.arange(first, int(ts[-1]) + 1, m, dtype=np.int64)
    gap = np.searchsorted(ts, grid, side="right")  # samples with the same row bound share a gap
    edges = [0, *(np.flatnonzero(np.diff(gap)) + 1).tolist(), len(grid)]
    return [c for lo, hi in pairwise(edges) for c in range(lo + CHUNK, hi, CHUNK)]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(200, 6_000), keys=st.integers(1, 12),
       lattice_ms=st.sampled_from([125, 250, 1000]), mark_ms=st.sampled_from([250, 1000, 3000]))
def test_bulk_samples_are_those_of_the_rules_whatever_the_batch_size(seed, n, keys, lattice_ms,
                                                                     mark_ms):
    trades = recording(seed, n, keys, lattice_ms * 1_000_000, quiet=90 * SECOND)
    cfg = ExecutionConfig(mark_every_ns=mark_ms * 1_000_000, taker_fee_bps=7.5, cash=10_000.0)
    params = HoldParams(keys=keys)
    runs = {batch: run(trades, batch, cfg, params)[0] for batch in (1, 7, 65_536)}
    whole = runs[65_536]
    eq = whole["equity"]
    want = expected(trades, whole["fills"], cfg)
    got = list(zip(eq.column("ts_event").to_pylist(), eq.column("cash").to_pylist(),
                   [dict(p) for p in eq.column("positions").to_pylist()],
                   eq.column("equity").to_pylist(), strict=True))
    assert got == want  # exactly: the same float operations in the same order
    check_seqs(trades, whole, params)
    check_probes(trades, whole, cfg)
    for batch, out in runs.items():
        for name in ("signals", "orders", "fills", "equity"):
            assert out[name].equals(whole[name]), (name, batch)


def check_seqs(trades: pa.Table, out: dict, params: HoldParams) -> None:
    """Every output's seq follows the processing order: a sample at T as the first trade after
    T arrives (before its timers), a timer's outputs at the first trade after its time (in
    timer order), a handler's after its trade."""
    ts = np.array(trades.column("ts_event").to_pylist(), np.int64)
    n = len(ts)
    rows = []
    for t, seq in zip(*(out["equity"].column(c).to_pylist() for c in ("ts_event", "seq")), strict=True):
        at = int(np.searchsorted(ts, t, side="right"))
        rows.append(((at, 0, t) if at < n else (n, 0, t), seq))
    sig = out["signals"]
    for t, name, seq in zip(*(sig.column(c).to_pylist() for c in ("ts_event", "name", "seq")), strict=True):
        if name == "tick":  # a timer at t, fired as the first trade after t arrives
            rows.append(((int(np.searchsorted(ts, t, side="right")), 1, t), seq))
        else:  # ctx.equity() in the handler of a trade at t
            rows.append(((int(np.searchsorted(ts, t, side="left")), 2, t), seq))
    placed = out["orders"].filter(pc.equal(out["orders"].column("status"), "accepted"))
    for t, seq in zip(*(placed.column(c).to_pylist() for c in ("ts_event", "seq")), strict=True):
        first = t == ts[0] and seq < params.keys  # on_start's, before everything
        rows.append(((-1, 0, t) if first else (int(np.searchsorted(ts, t, side="right")), 1, t), seq))
    by_seq = [key for key, _ in sorted(rows, key=lambda r: r[1])]
    assert by_seq == sorted(by_seq)


def check_probes(trades: pa.Table, out: dict, cfg: ExecutionConfig) -> None:
    """``ctx.equity()`` in a trade's handler: cash and positions after the fills before that
    trade, each held key at its last price up to and including it."""
    fills = out["fills"]
    fill_ts = set(fills.column("ts_event").to_pylist())
    probes = out["signals"].filter(pc.equal(out["signals"].column("name"), "equity"))
    ts = trades.column("ts_event").to_pylist()
    keys = trades.column("key").to_pylist()
    prices = trades.column("price").to_pylist()
    seqs = trades.column("seq").to_pylist()
    probe_values = probes.column("value").to_pylist()
    book, marks = Book(cfg.cash, fills), {}
    want = []
    for t, key, price, seq in zip(ts, keys, prices, seqs, strict=True):
        marks[key] = price
        book.fill_until(lambda when, t=t: when < t)
        if seq % HoldParams().probe == 0:
            want.append((t, book.equity(marks)))
    assert len(want) == len(probe_values)
    for (t, value), got in zip(want, probe_values, strict=True):
        if t not in fill_ts:  # fills at the same time may come before or after it
            assert got == value, t


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batch=st.sampled_from([7, 65_536]))
def test_a_gap_longer_than_a_chunk_is_handed_over_a_chunk_at_a_time(seed, batch):
    """1 ms grid and a 150 s quiet gap: 150,000 samples of one gap, spilled every 65,536."""
    trades = recording(seed, 400, 3, 250_000_000, quiet=150 * SECOND)
    cfg = ExecutionConfig(mark_every_ns=1_000_000)
    out, spills = run(trades, batch, cfg, HoldParams(keys=3, every=40 * SECOND))
    assert spills == spill_points(trades, cfg)
    want = expected(trades, out["fills"], cfg)
    assert out["equity"].num_rows == len(want)
    assert out["equity"].column("equity").to_pylist() == [w[3] for w in want]
