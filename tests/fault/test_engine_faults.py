"""Engine faults: exact duplicates, long timer catch-ups, strategies that raise."""

from __future__ import annotations

import tracemalloc

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework import Strategy, TimerFires
from qsframework.backtest import run_backtest
from qsframework.engine import Engine
from qsframework.errors import StrategyError, UserError
from qsframework.recording import Recording, RecordingWriter

from ..conftest import T0, make_trades

SECOND = 1_000_000_000
SPREAD = {"window": "2s", "sample": "500ms", "threshold": "0.004"}


def run(cls, table: pa.Table, *, path: str, batch_size: int, **overrides) -> tuple[Engine, pa.Table, pa.Table]:
    engine = Engine(cls, overrides=overrides, path=path)
    for batch in table.to_batches(max_chunksize=batch_size):
        engine.process("trade", batch)
    engine.finish()
    return engine, engine.ctx.outputs.signals.drain(), engine.ctx.outputs.alerts.drain()


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), picks=st.lists(st.integers(0, 10**6), max_size=40))
def test_exact_duplicates_are_dropped_and_counted_on_both_paths(spread_cls, seed, n, picks):
    """A stream with exact duplicates inserted (next to their original, as total order puts
    them) gives the outputs of the stream without them, on both paths and any batch size."""
    table = make_trades(seed, n, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    positions = sorted(p % n for p in picks)
    order = sorted([*range(n), *positions])  # each picked row twice, side by side
    doubled = table.take(pa.array(order))
    _, ref_signals, ref_alerts = run(spread_cls, table, path="event", batch_size=65536, **SPREAD)
    wanted = sum(1 for p in positions if table.column("key")[p].as_py() in ("BTCUSDT", "ETHUSDT"))
    for path in ("event", "batch"):
        for size in (1, 7, 65536):
            engine, signals, alerts = run(spread_cls, doubled, path=path, batch_size=size, **SPREAD)
            assert signals.equals(ref_signals), (path, size)
            assert alerts.equals(ref_alerts), (path, size)
            assert engine.duplicates == wanted, (path, size)
            assert engine.events_in == n - (table.num_rows - sum(
                1 for k in table.column("key").to_pylist() if k in ("BTCUSDT", "ETHUSDT")))


def test_same_seq_but_another_source_or_key_is_not_a_duplicate():
    class Count(Strategy):
        def on_trade(self, t):
            self.ctx.signal(t.key, "seen", float(t.seq))

    base = make_trades(1, 3)
    ts = [T0, T0, T0, T0]
    table = pa.table({
        "ts_event": ts, "ts_recv": ts, "source": ["a", "a", "b", "b"], "key": ["X", "Y", "Y", "Y"],
        "seq": [1, 1, 1, 1], "price": [1.0] * 4, "qty": [1.0] * 4, "is_buyer_maker": [True] * 4,
    }, schema=base.schema)
    engine, signals, _ = run(Count, table, path="event", batch_size=1)
    assert signals.num_rows == 3 and engine.duplicates == 1


class Ticker(Strategy):
    """A 1 s periodic timer from the first event on; counts fires, emits nothing."""

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.fires = 0

    def on_start(self):
        self.ctx.every(SECOND, "tick", first=self.ctx.now + SECOND)

    def on_trade(self, t):
        pass

    def on_timer(self, name, ts):
        self.fires += 1

    def on_trade_batch(self, batch, fires: TimerFires):
        self.fires += len(fires)


GAP_S = 1_500_000  # ~17 days of 1 s ticks


def gap_table() -> pa.Table:
    """Rows, then a quiet span of GAP_S seconds inside one batch, then more rows."""
    before, after = make_trades(2, 50), make_trades(3, 50, start=T0 + GAP_S * SECOND)
    return pa.concat_tables([before, after]).combine_chunks()


@pytest.mark.parametrize("path", ["event", "batch"])
def test_long_timer_catch_up_costs_bounded_memory(path):
    table = gap_table()
    span = table.column("ts_event")[-1].as_py() - table.column("ts_event")[0].as_py()
    expected = span // SECOND  # ticks strictly before the last event, counted apart
    tracemalloc.start()
    try:
        engine, _, _ = run(Ticker, table, path=path, batch_size=65536)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert engine.strategy.fires == expected
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # 1.5M fires as arrays: > 36 MiB


class Beeper(Strategy):
    """A signal on every 1 s tick: a long catch-up emits many outputs."""

    def on_start(self):
        self.ctx.every(SECOND, "beep", first=self.ctx.now + SECOND)

    def on_trade(self, t):
        pass

    def on_timer(self, name, ts):
        self.ctx.signal("beep", "beep", 1.0)


def test_outputs_of_a_long_catch_up_are_written_out_as_they_come(tmp_path):
    gap = 400_000
    before, after = make_trades(4, 20), make_trades(5, 20, start=T0 + gap * SECOND)
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", pa.concat_tables([before, after]))
    tracemalloc.start()
    try:
        result = run_backtest(Beeper, Recording(tmp_path / "rec"), out=tmp_path / "out", flush_rows=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    span = after.column("ts_event")[-1].as_py() - before.column("ts_event")[0].as_py()
    assert result.signals == span // SECOND
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # all kept: > 150 MiB


def test_fire_bound_caps_the_fires_of_several_timers():
    from qsframework.timers import TimerQueue

    q = TimerQueue()
    q.add(0, "a", 3)
    q.add(1, "b", 5)
    q.add(7, "once")
    b = q.fire_bound(10**6, 100)
    count = sum((b - 1 - w) // p + 1 for w, p in ((0, 3), (1, 5)))
    assert count <= 100 < count + (b % 3 == 0) + (b % 5 == 1) + 1
    assert q.fire_bound(30, 100) == 30


# -- strategies that raise ---------------------------------------------------------
class Boom(Strategy):
    """Raises where told: on the 5th trade, in its batch handler, a timer, start or stop."""

    name = "boom"

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.n = 0

    def on_start(self):
        if WHERE[0] == "start":
            raise RuntimeError("no start")
        self.ctx.every(SECOND, "tick", first=self.ctx.now + SECOND)

    def on_trade(self, t):
        self.n += 1
        if WHERE[0] == "event" and self.n == 5:
            raise ZeroDivisionError("float division\nby zero")

    def on_trade_batch(self, batch, fires):
        if WHERE[0] == "batch":
            raise ValueError("bad batch")

    def on_timer(self, name, ts):
        if WHERE[0] == "timer":
            raise KeyError(name)

    def on_stop(self):
        if WHERE[0] == "stop":
            raise RuntimeError("no stop")


WHERE = [""]


@pytest.mark.parametrize(("where", "path", "needle"), [
    ("event", "event", "failed in on_trade on trade {key5} at {ts5_text} (ts_event {ts5}): "
                       "ZeroDivisionError: float division by zero"),
    ("batch", "batch", "failed in on_trade_batch on trade rows at"),
    ("timer", "event", "failed in on_timer on timer 'tick' at"),
    ("timer", "batch", "failed in on_timer on timer 'tick' at"),
    ("start", "event", "failed in on_start: RuntimeError: no start"),
    ("stop", "batch", "failed in on_stop: RuntimeError: no stop"),
])
def test_a_raising_strategy_is_one_strategy_error_naming_handler_and_event(where, path, needle):
    from qsframework.durations import format_time

    table = make_trades(6, 300, gaps_ms=(0, 400, 900))
    WHERE[0] = where
    try:
        with pytest.raises(StrategyError) as info:
            run(Boom, table, path=path, batch_size=100)
    finally:
        WHERE[0] = ""
    text = str(info.value)
    ts5 = table.column("ts_event")[4].as_py()
    assert text.startswith("strategy Boom (boom) failed in on_")
    assert needle.format(key5=table.column("key")[4].as_py(), ts5=ts5, ts5_text=format_time(ts5)) in text
    assert "\n" not in text
    assert isinstance(info.value, UserError) and info.value.__cause__ is not None


def test_duplicates_survive_snapshot_and_restore(spread_cls):
    """The row a duplicate repeats may sit before a snapshot, the duplicate after it."""
    table = make_trades(8, 200)
    doubled = table.take(pa.array(sorted([*range(200), 99, 100, 150])))  # ..99 99 100 100..
    _, ref, _ = run(spread_cls, table, path="event", batch_size=65536, **SPREAD)
    first = Engine(spread_cls, overrides=SPREAD, path="event")
    first.process("trade", doubled.slice(0, 102).to_batches()[0])  # ends on the first 100
    second = Engine(spread_cls, overrides=SPREAD, path="event")
    second.restore(first.snapshot())
    second.process("trade", doubled.slice(102).to_batches()[0])  # starts on the second 100
    second.finish()
    assert second.duplicates == 3
    signals = pa.concat_tables([first.ctx.outputs.signals.drain(), second.ctx.outputs.signals.drain()])
    assert signals.equals(ref)


def test_a_strategy_failing_to_construct_is_a_strategy_error():
    class Broken(Strategy):
        def __init__(self, params, ctx):
            super().__init__(params, ctx)
            raise AttributeError("no such table")

    with pytest.raises(StrategyError, match=r"^strategy Broken \(broken\) failed in __init__: "
                                            r"AttributeError: no such table$"):
        Engine(Broken)


def test_a_live_catch_up_packs_its_outputs_as_it_goes():
    """qsf process cannot write to its sinks from inside the engine (they are async), so
    between chunks of a catch-up it packs the outputs into Arrow chunks instead of holding
    hundreds of thousands of rows of Python objects."""
    from qsframework.engine import FIRE_CHUNK
    from qsframework.live import ProcessConfig, Processor

    gap = 400_000
    proc = Processor(Beeper, ProcessConfig(bootstrap="127.0.0.1:9", group="catch-up"))
    before, after = make_trades(4, 20), make_trades(5, 20, start=T0 + gap * SECOND)
    tracemalloc.start()
    try:
        for table in (before, after):
            for batch in table.to_batches():
                proc.engine.process("trade", batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    buf = proc.engine.ctx.outputs.signals
    span = after.column("ts_event")[-1].as_py() - before.column("ts_event")[0].as_py()
    assert len(buf) == span // SECOND and len(buf.rows) < FIRE_CHUNK
    assert peak < 96 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # as rows: > 150 MiB
