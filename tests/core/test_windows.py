"""The window route (several kinds walked in one pass) against the per-run route: random
interleavings of 2-4 kinds and several keys, with timers, duplicates, key filters, batch
handlers and orders give the outputs of each run of one kind fed to ``Engine.process``, bit
for bit, on every path and batch size (DESIGN.md invariants 1-3 over several kinds)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qsframework.engine import Engine
from qsframework.execution.config import ExecutionConfig
from qsframework.order import merge_kinds, merge_windows
from qsframework.window import Window

from ..execution.batch_traders import Stepper
from .multikind import (
    KINDS,
    OUTPUTS,
    BatchMixer,
    BatchPair,
    Mixer,
    Trader,
    TupleMixer,
    failure,
    make_kinds,
    outputs,
    reference,
    windowed,
)

SIZES = (1, 7, 65_536)
kinds_st = st.lists(st.sampled_from(KINDS), min_size=2, max_size=4, unique=True)
rows_st = st.integers(0, 120)


def same(got: dict, want: dict, label: object) -> None:
    for name in (*OUTPUTS, "events_in", "duplicates"):
        if isinstance(want[name], pa.Table):
            assert got[name].equals(want[name]), (label, name)
        else:
            assert got[name] == want[name], (label, name)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), kinds=kinds_st, n=st.lists(rows_st, min_size=4, max_size=4),
       every=st.sampled_from([0, 3, 7, 50]), only=st.sampled_from(["", "K1", "K1,K3"]),
       cls=st.sampled_from([Mixer, TupleMixer]))
def test_per_event_walk_equals_the_runs_one_by_one(seed, kinds, n, every, only, cls):
    tables = make_kinds(seed, dict(zip(kinds, n)))
    params = {"every_ms": every, "only": only}
    want = reference(cls, tables, overrides=params)
    for size in SIZES:
        for path in ("event", "auto"):
            same(windowed(cls, tables, batch_size=size, overrides=params, path=path), want, (path, size))


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), kinds=kinds_st, n=st.lists(rows_st, min_size=4, max_size=4),
       every=st.sampled_from([0, 3, 7]), small=st.sampled_from([1, 3, 512]))
def test_batch_handlers_take_their_runs(seed, kinds, n, every, small):
    """Path "batch" and "auto" (runs of at least ``small_batch`` rows to the batch handler,
    the rest walked): the outputs of the per-event reference."""
    tables = make_kinds(seed, dict(zip(kinds, n)), spread_ms=1)
    params = {"every_ms": every}
    want = reference(BatchMixer, tables, overrides=params)
    for size in SIZES:
        got = windowed(BatchMixer, tables, batch_size=size, overrides=params, path="auto", small_batch=small)
        same(got, want, ("auto", small, size))
    pair = {k: t for k, t in tables.items() if k in BatchPair.kinds}
    want = reference(BatchPair, pair, overrides=params)
    for size in SIZES:
        same(windowed(BatchPair, pair, batch_size=size, overrides=params, path="batch"), want, ("batch", size))


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), trades=st.integers(1, 150), ticks=st.integers(1, 150),
       every=st.sampled_from([0, 5, 40]), latency_ms=st.sampled_from([0, 3]))
def test_orders_from_a_second_kind_fill_as_on_the_runs(seed, trades, ticks, every, latency_ms):
    """A strategy ordering from wk_a events on trades: orders, fills and equity (the
    execution loop takes over mid-window at the first order) equal the reference."""
    tables = make_kinds(seed, {"trade": trades, "wk_a": ticks})
    execution = ExecutionConfig(latency_ns=latency_ms * 1_000_000, mark_every_ns=5_000_000)
    options = {"overrides": {"every_ms": every}, "execution": execution}
    want = reference(Trader, tables, **options)
    for size in SIZES:
        same(windowed(Trader, tables, batch_size=size, **options), want, size)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), kinds=kinds_st, n=st.lists(st.integers(1, 80), min_size=4, max_size=4),
       fail=st.sampled_from([0.9, 0.97]))
def test_a_failing_handler_stops_with_the_same_line(seed, kinds, n, fail):
    tables = make_kinds(seed, dict(zip(kinds, n)))
    params = {"fail": fail, "every_ms": 3}
    want = failure(lambda: reference(Mixer, tables, overrides=params))
    for size in SIZES:
        assert failure(lambda size=size: windowed(Mixer, tables, batch_size=size, overrides=params)) == want


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), kinds=kinds_st, n=st.lists(rows_st, min_size=4, max_size=4),
       size=st.integers(1, 50))
def test_windows_hold_the_total_order(seed, kinds, n, size):
    """The windows' rows, and merge_kinds' runs, in (ts_event, source, key, kind, seq)
    order, sorted apart by Python; every row of a window's batches is in its order."""
    tables = make_kinds(seed, dict(zip(kinds, n)), dup=0.3)
    streams = {k: t.to_batches(max_chunksize=size) for k, t in tables.items() if t.num_rows}
    got = []
    for w in merge_windows(streams):
        taken = [0] * len(w.kinds)
        for k in w.which.tolist():
            b = w.batches[k]
            got.append(tuple(b.column(c)[taken[k]].as_py() for c in ("ts_event", "source", "key"))
                       + (w.kinds[k], b.column("seq")[taken[k]].as_py()))
            taken[k] += 1
        assert taken == [b.num_rows for b in w.batches]
    want = sorted((ts, src, key, kind, seq) for kind, t in tables.items()
                  for ts, src, key, seq in zip(*(t.column(c).to_pylist() for c in ("ts_event", "source", "key", "seq"))))
    assert got == want
    runs = merge_kinds({k: t.to_batches(max_chunksize=size) for k, t in tables.items() if t.num_rows})
    assert [(*r[:3], kind, r[3]) for kind, b in runs
            for r in zip(*(b.column(c).to_pylist() for c in ("ts_event", "source", "key", "seq")))] == want


def test_generated_data_exercises_the_route():
    """Guard: the data above has ties across kinds, duplicates and one-shot timers, and the
    toy strategies emit on every path; the trader orders and fills."""
    tables = make_kinds(3, {"wk_a": 100, "wk_b": 100, "wk_c": 60})
    window = Window.merge([(k, t.to_batches()[0]) for k, t in tables.items()])
    ts = np.concatenate([t.column("ts_event").to_numpy() for t in tables.values()])
    assert len(np.unique(ts)) < len(ts) and len(set(window.which[:50].tolist())) == 3
    got = reference(Mixer, tables, overrides={"every_ms": 3})
    assert got["duplicates"] > 0 and got["signals"].num_rows > got["events_in"]
    names = set(got["signals"].column("name").to_pylist())
    assert {"wk_a", "wk_b", "wk_c", "beat"} <= names and any(n.startswith("once:") for n in names)
    trades = make_kinds(5, {"trade": 120, "wk_a": 120})
    traded = reference(Trader, trades, overrides={"every_ms": 5})
    assert traded["fills"].num_rows > 2 and traded["equity"].num_rows > 0


def test_a_window_of_kinds_the_strategy_does_not_read_is_skipped():
    tables = make_kinds(4, {"wk_a": 30, "trade": 30})
    engine = Engine(Mixer, path="event")
    for window in merge_windows({k: t.to_batches() for k, t in tables.items()}):
        engine.process_window(window)
    engine.finish()
    want = reference(Mixer, {"wk_a": tables["wk_a"]})
    got = {name: buf.drain() for name, buf in engine.ctx.outputs.buffers().items()}
    assert got["signals"].equals(want["signals"]) and engine.events_in == want["events_in"]


@pytest.mark.parametrize("rows", ["named", "tuple"])
def test_one_kind_windows_take_the_one_kind_path(rows):
    """A window of one kind goes to ``Engine.process`` as it is."""
    cls = Mixer if rows == "named" else TupleMixer
    tables = make_kinds(9, {"wk_b": 200})
    want = reference(cls, tables)
    for size in SIZES:
        same(windowed(cls, tables, batch_size=size), want, size)


def chunked(table: pa.Table, sizes: list[int]) -> list[pa.RecordBatch]:
    """``table`` cut into batches of the given sizes, in turn."""
    out, pos, i = [], 0, 0
    while pos < table.num_rows:
        out += table.slice(pos, sizes[i % len(sizes)]).to_batches()
        pos, i = pos + sizes[i % len(sizes)], i + 1
    return out


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), kinds=kinds_st, n=st.lists(rows_st, min_size=4, max_size=4),
       sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), cut=st.integers(0, 8))
def test_uneven_batches_and_a_restore_midway_change_nothing(seed, kinds, n, sizes, cut):
    """Batches of varying sizes per kind (live-like), path "auto" with batch handlers taking
    some runs, and the engine snapshotted after ``cut`` windows and restored into a new one:
    the outputs of the per-event reference, and the same bytes on a second run."""
    tables = make_kinds(seed, dict(zip(kinds, n)), spread_ms=1)
    params = {"every_ms": 3}
    want = reference(BatchMixer, tables, overrides=params)
    runs = []
    for _ in range(2):
        engine = Engine(BatchMixer, overrides=params, path="auto", small_batch=4)
        windows = list(merge_windows({k: chunked(t, sizes) for k, t in tables.items() if t.num_rows}))
        before = None
        for i, window in enumerate(windows):
            if i == cut:  # what was emitted so far, then the state into a new engine
                before, blob = outputs(engine), engine.snapshot()
                engine = Engine(BatchMixer, overrides=params, path="auto", small_batch=4)
                engine.restore(blob)
            engine.process_window(window)
        engine.finish()
        got = outputs(engine)
        if before is not None:
            got.update({name: pa.concat_tables([before[name], got[name]]) for name in OUTPUTS})
        runs.append(got)
    same(runs[0], want, "uneven")
    for name in OUTPUTS:
        assert runs[1][name].equals(runs[0][name])
    value = runs[0]["signals"].column("value").combine_chunks()
    assert value.buffers()[1] is None or value.buffers()[1].to_pybytes() == \
        runs[1]["signals"].column("value").combine_chunks().buffers()[1].to_pybytes()


class StepMix(Stepper):
    """The batch-handler trader of tests/execution beside a second kind, read per event."""

    kinds = ("trade", "wk_a")
    fields = {"trade": ("key", "price"), "wk_a": ("key", "value")}

    def on_wk_a(self, e) -> None:
        self.ctx.signal(e.key, "wk_a", e.value)


@settings(max_examples=20)
# an order from the plain loop's handler between a grid time and its sample: the samples due
# come before the order's row (the per-event reference had them after)
@example(seed=9998, trades=153, ticks=1, every=2, small=1)
@given(seed=st.integers(0, 2**32 - 1), trades=st.integers(20, 160), ticks=st.integers(1, 120),
       every=st.sampled_from([2, 3, 5]), small=st.sampled_from([1, 2, 6]))
def test_a_batch_handler_ordering_mid_window_hands_over_as_on_the_runs(seed, trades, ticks, every, small):
    """Trade runs of a window go to on_trade_batch, which orders at a data-dependent row: the
    execution loop takes the rest of the run and of the window; orders, fills, equity and
    signals equal the per-event reference."""
    tables = make_kinds(seed, {"trade": trades, "wk_a": ticks}, dup=0.0)
    options = {"overrides": {"after": 5, "every": every, "tick_ms": 9},
               "execution": ExecutionConfig(latency_ns=2_000_000, mark_every_ns=5_000_000)}
    want = reference(StepMix, tables, **options)
    for size in SIZES:
        got = windowed(StepMix, tables, batch_size=size, path="auto", small_batch=small, **options)
        same(got, want, (small, size))


def test_the_batch_trader_orders_from_its_batch_handler_inside_a_window():
    """Guard: the property above reaches the hand-over (an order from on_trade_batch)."""
    tables = make_kinds(0, {"trade": 120, "wk_a": 60}, dup=0.0)
    engine = Engine(StepMix, path="auto", small_batch=2, overrides={"after": 5, "every": 3, "tick_ms": 9},
                    execution=ExecutionConfig(latency_ns=2_000_000, mark_every_ns=5_000_000))
    for window in merge_windows({k: t.to_batches() for k, t in tables.items()}):
        engine.process_window(window)
    engine.finish()
    assert any(ordered for _, _, ordered in engine.strategy.returns)
    assert engine.ctx.outputs.fills.count > 0
