"""Engine semantics: event-time timers, handlers, key filters, seeded randomness."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework import Duration, Strategy
from qsframework.engine import Engine
from qsframework.errors import UserError

from ..conftest import make_trades


@dataclass(frozen=True, kw_only=True)
class ProbeParams:
    period: Duration = Duration("1s")
    delay: Duration = Duration("300ms")


class TimerProbe(Strategy):
    """Logs every callback with the time it ran at; sets one-shot and periodic timers."""

    Params = ProbeParams

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.log: list[tuple] = []

    def on_start(self):
        self.log.append(("start", self.ctx.now))
        self.ctx.every(self.p.period, "tick", first=self.ctx.now - self.ctx.now % self.p.period + self.p.period)

    def on_trade(self, t):
        self.log.append(("trade", t.ts_event, t.seq))
        if t.seq % 5 == 0:
            self.ctx.at(t.ts_event + self.p.delay, f"once-{t.seq}")
        if t.seq % 7 == 0:
            self.ctx.at(t.ts_event, f"same-{t.seq}")  # due now: fires once time moves on
        self.ctx.signal(t.key, "draw", self.ctx.rng.random())

    def on_timer(self, name, ts):
        assert self.ctx.now == ts
        self.log.append(("timer", ts, name))

    def on_stop(self):
        self.log.append(("stop", self.ctx.now))


def run_probe(table: pa.Table, batch_size: int, **overrides) -> TimerProbe:
    engine = Engine(TimerProbe, overrides=overrides, path="event")
    for batch in table.to_batches(max_chunksize=batch_size):
        engine.process("trade", batch)
    engine.finish()
    return engine.strategy  # type: ignore[return-value]


def expected_timer_log(table: pa.Table, period: int, delay: int) -> list[tuple]:
    """The timer contract written out independently: a timer due at T runs after every
    event with ts_event <= T and before the first event with ts_event > T; never after
    the last event."""
    ts = table.column("ts_event").to_pylist()
    seq = table.column("seq").to_pylist()
    pending: list[tuple[int, int, str]] = []  # (due, creation order, name)
    order = 0
    first = ts[0] - ts[0] % period + period
    pending.append((first, order, "tick"))
    order += 1
    log: list[tuple] = [("start", ts[0])]
    for t, s in zip(ts, seq):
        while True:
            due = sorted(p for p in pending if p[0] < t)
            if not due:
                break
            when, o, name = due[0]
            pending.remove(due[0])
            log.append(("timer", when, name))
            if name == "tick":
                pending.append((when + period, o, "tick"))
        log.append(("trade", t, s))
        if s % 5 == 0:
            pending.append((t + delay, order, f"once-{s}"))
            order += 1
        if s % 7 == 0:
            pending.append((t, order, f"same-{s}"))
            order += 1
    log.append(("stop", ts[-1]))
    return log


@settings(max_examples=30)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 200), batch=st.sampled_from([1, 3, 64, 10_000]))
def test_timers_fire_strictly_after_due_in_event_time(seed, n, batch):
    table = make_trades(seed, n, gaps_ms=(0, 1, 100, 300, 1000, 2500))
    probe = run_probe(table, batch, period="1s", delay="300ms")
    assert probe.log == expected_timer_log(table, 1_000_000_000, 300_000_000)


def test_no_timer_after_last_event_and_none_before_due():
    t0 = 1_000_000_000_000
    ts = np.array([t0, t0 + 500_000_000, t0 + 1_000_000_000, t0 + 1_000_000_000, t0 + 2_500_000_000])
    table = make_trades(0, 5).set_column(0, "ts_event", pa.array(ts))
    probe = run_probe(table, 2, period="1s", delay="10s")
    timers = [e for e in probe.log if e[0] == "timer"]
    # tick at t0+1s fires only after both events at exactly t0+1s; tick at t0+2s fires
    # before the event at t0+2.5s; tick at t0+3s never fires (no later event)
    assert [e[1:] for e in timers if e[2] == "tick"] == [(t0 + 1_000_000_000, "tick"), (t0 + 2_000_000_000, "tick")]
    i_tick = probe.log.index(("timer", t0 + 1_000_000_000, "tick"))
    assert [e[0] for e in probe.log[i_tick - 2 : i_tick]] == ["trade", "trade"]
    assert not any(e[2].startswith("once") for e in timers)  # due 10 s later: never reached


def test_seeded_rng_is_deterministic_and_seed_dependent():
    table = make_trades(3, 300)

    def draws(seed: int) -> list[float]:
        engine = Engine(TimerProbe, path="event", seed=seed)
        engine.process("trade", table.to_batches()[0])
        return engine.ctx.outputs.signals.drain().column("value").to_pylist()

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


def test_key_filter_applies_to_unfiltered_input(spread_cls):
    table = make_trades(5, 500, symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT"))
    engine = Engine(spread_cls, path="event")
    engine.process("trade", table.to_batches()[0])
    xrp = sum(1 for k in table.column("key").to_pylist() if k == "XRPUSDT")
    assert xrp > 0
    assert engine.events_in == table.num_rows - xrp


def test_unknown_and_bad_parameters_are_user_errors(spread_cls):
    with pytest.raises(UserError, match="unknown parameter 'windw'"):
        Engine(spread_cls, overrides={"windw": "30s"})
    with pytest.raises(UserError, match="window='soon'"):
        Engine(spread_cls, overrides={"window": "soon"})
    with pytest.raises(UserError, match="multiple of sample"):
        Engine(spread_cls, overrides={"window": "1500ms"})
    engine = Engine(spread_cls, overrides={"window": "5m", "threshold": "0.01"})
    assert engine.params.window == 300_000_000_000 and engine.params.threshold == 0.01


def test_batch_path_required_but_missing():
    with pytest.raises(UserError, match="on_trade_batch"):
        Engine(TimerProbe, path="batch")


def test_a_new_kind_runs_end_to_end_without_engine_changes(tmp_path):
    """Register a kind, record it next to trades, backtest a strategy on both: the engine
    dispatches to on_<kind> in the one total order."""
    import pyarrow.compute as pc

    from qsframework import define_kind
    from qsframework.backtest import run_backtest
    from qsframework.recording import Recording, RecordingWriter

    level = define_kind("test_level", [("level", pa.float64())])

    class Both(Strategy):
        kinds = ("trade", "test_level")

        def on_trade(self, t):
            self.ctx.signal(t.key, "trade", t.price)

        def on_test_level(self, e):
            self.ctx.signal(e.key, "level", e.level)

    trades = make_trades(21, 400, gaps_ms=(0, 1, 3))
    ts = np.sort(np.random.default_rng(1).choice(trades.column("ts_event").to_numpy(), 150))
    levels = pa.table(
        {"ts_event": ts, "ts_recv": ts, "source": ["sensor"] * 150, "key": ["BTCUSDT"] * 150,
         "seq": np.arange(150), "level": np.arange(150, dtype=float)},
        schema=level.schema,
    )
    with RecordingWriter(tmp_path) as w:
        w.write("trade", trades)
        w.write("test_level", levels)
    result = run_backtest(Both, Recording(tmp_path), batch_size=13)
    got = result.tables["signals"]
    assert got.num_rows == 550
    # expected: all rows of both kinds in (ts_event, source, key, kind, seq) order
    rows = [(r["ts_event"], r["source"], r["key"], "test_level", r["seq"], r["level"]) for r in levels.to_pylist()]
    rows += [(r["ts_event"], r["source"], r["key"], "trade", r["seq"], r["price"]) for r in trades.to_pylist()]
    rows.sort(key=lambda r: r[:5])
    assert got.column("ts_event").to_pylist() == [r[0] for r in rows]
    assert got.column("value").to_pylist() == [r[5] for r in rows]
    names = pc.unique(got.column("name")).to_pylist()
    assert sorted(names) == ["level", "trade"]


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), cut=st.floats(0.05, 0.95), path=st.sampled_from(["event", "batch"]))
def test_snapshot_and_restore_resume_exactly(spread_cls, seed, cut, path):
    """Stop anywhere, snapshot, restore into a fresh engine: the outputs are those of one run."""
    table = make_trades(seed, 600)
    k = int(table.num_rows * cut)
    overrides = {"window": "2s", "sample": "500ms", "threshold": "0.004"}
    whole = Engine(spread_cls, overrides=overrides, path=path)
    whole.process("trade", table.to_batches()[0])
    whole.finish()
    first = Engine(spread_cls, overrides=overrides, path=path)
    first.process("trade", table.slice(0, k).to_batches()[0])
    blob = first.snapshot()
    second = Engine(spread_cls, overrides=overrides, path=path)
    second.restore(blob)
    second.process("trade", table.slice(k).to_batches()[0])
    second.finish()
    signals = pa.concat_tables([first.ctx.outputs.signals.drain(), second.ctx.outputs.signals.drain()])
    assert signals.equals(whole.ctx.outputs.signals.drain())


@settings(max_examples=60)
@given(
    timers=st.lists(st.tuples(st.integers(0, 50), st.integers(1, 20)), min_size=1, max_size=4),
    before=st.integers(0, 200),
)
def test_periodic_fires_equal_popping_one_by_one(timers, before):
    """The batch path's fires (one timer or several merged) are the per-event path's pops."""
    from qsframework.timers import TimerQueue

    bulk, single = TimerQueue(), TimerQueue()
    for k, (first, period) in enumerate(timers):
        bulk.add(first, f"t{k}", period)
        single.add(first, f"t{k}", period)
    ts = np.arange(0, 200, 3, dtype=np.int64)
    fires = bulk.periodic_fires(ts, before=before)
    popped = []
    while (fire := single.pop_before(before)) is not None:
        popped.append(fire)
    assert list(zip(fires.times.tolist(), fires.names)) == popped
    assert fires.pos.tolist() == np.searchsorted(ts, [t for t, _ in popped], side="right").tolist()
    assert bulk.due == single.due and sorted(bulk._heap) == sorted(single._heap)
