"""The engine with orders: the same fills, orders and equity whatever the batch size, run
after run, and across a snapshot/restore; a strategy's bad order is its one-line error."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from qsframework import ExecutionConfig, Strategy
from qsframework.engine import Engine
from qsframework.errors import StrategyError
from qsframework.testing import TableSource, run_strategy

from ..conftest import make_trades

SECOND = 1_000_000_000
OUTPUTS = ("signals", "alerts", "orders", "fills", "equity")


class RandomTrader(Strategy):
    """Orders at random (market and limit, both sides), cancels some, flattens on a timer,
    reacts to fills; starts ordering only after ``quiet`` events or from its first timer."""

    from_timer = False
    quiet = 40

    def on_start(self) -> None:
        self.seen = 0
        self.open: list[int] = []
        self.ctx.every(3 * SECOND, "flatten", first=self.ctx.now + SECOND)

    def on_trade(self, t) -> None:
        self.seen += 1
        ctx = self.ctx
        ctx.signal(t.key, "seen", ctx.position(t.key), {"cash": ctx.cash, "equity": ctx.equity})
        if self.seen < self.quiet or (self.from_timer and not ctx.sim.trading):
            return
        r = ctx.rng.random()
        side = 1.0 if ctx.rng.random() < 0.5 else -1.0
        if r < 0.04:
            self.open.append(ctx.order(t.key, side * round(ctx.rng.uniform(0.01, 0.3), 3)))
        elif r < 0.10:
            limit = t.price * (1 - side * ctx.rng.uniform(0, 0.004))
            self.open.append(ctx.order(t.key, side * 0.05, price=limit, tag="limit"))
        elif r < 0.13 and self.open:
            ctx.cancel(self.open.pop(0))

    def on_timer(self, name: str, ts: int) -> None:
        if self.open and self.ctx.rng.random() < 0.3:
            self.ctx.cancel(self.open.pop())
        for key in ("BTCUSDT", "ETHUSDT"):
            pos = self.ctx.position(key)
            if pos:
                self.ctx.order(key, -pos, tag="flatten")
            elif self.from_timer and self.ctx.rng.random() < 0.5:
                self.ctx.order(key, 0.1, tag="timer")

    def on_fill(self, fill) -> None:
        self.ctx.signal(fill.key, "filled", fill.qty, {"equity": self.ctx.equity})
        if fill.liquidity == "maker" and self.ctx.rng.random() < 0.3:
            self.ctx.order(fill.key, -fill.qty, tag="unwind")

    def on_order(self, order) -> None:
        if order.status != "accepted" and order.order_id in self.open:
            self.open.remove(order.order_id)


class TimerTrader(RandomTrader):
    from_timer = True


def _run(cls, trades, batch_size: int, config: ExecutionConfig) -> dict[str, pa.Table]:
    return run_strategy(cls, {"trade": trades}, batch_size=batch_size, execution=config)


@settings(max_examples=12)
@given(seed=st.integers(0, 10_000), latency_ms=st.sampled_from([0, 1, 250]),
       participation=st.sampled_from([None, 0.5, 1.0]), from_timer=st.booleans())
def test_fills_orders_and_equity_do_not_depend_on_batch_size_or_the_run(seed, latency_ms, participation,
                                                                       from_timer):
    trades = make_trades(seed, 1_500)
    config = ExecutionConfig(latency_ns=latency_ms * 1_000_000, max_participation=participation,
                             slippage_bps=1.5, mark_every_ns=SECOND // 2)
    cls = TimerTrader if from_timer else RandomTrader
    whole = _run(cls, trades, 65_536, config)
    assert whole["fills"].num_rows > 0 and whole["equity"].num_rows > 0
    for batch_size in (1, 7, 65_536):
        out = _run(cls, trades, batch_size, config)
        for name in OUTPUTS:
            assert out[name].equals(whole[name]), (name, batch_size)


def _feed(engine: Engine, batches: list[tuple[str, pa.Table]]) -> None:
    for kind, table in batches:
        for batch in table.to_batches():
            engine.process(kind, batch)


def _drain(engine: Engine) -> dict[str, pa.Table]:
    outputs = engine.ctx.outputs
    return {n: b.drain() for n, b in (outputs.buffers() | outputs.execution()).items()}


@pytest.mark.parametrize("cut", [2, 9, 25])  # before the first order (at ~40 events), and after
def test_snapshot_and_restore_mid_run_gives_the_fills_of_an_uninterrupted_run(cut):
    trades = make_trades(11, 3_000)
    config = ExecutionConfig(latency_ns=3_000_000, max_participation=0.5, mark_every_ns=SECOND)
    batches = list(TableSource({"trade": trades}, batch_size=60))
    whole = Engine(RandomTrader, execution=config)
    _feed(whole, batches)
    whole.finish()
    expected = _drain(whole)
    first = Engine(RandomTrader, execution=config)
    _feed(first, batches[:cut])
    blob = first.snapshot()
    before = _drain(first)
    second = Engine(RandomTrader, execution=config)
    second.restore(blob)
    _feed(second, batches[cut:])
    second.finish()
    after = _drain(second)
    assert expected["fills"].num_rows > 10
    for name in OUTPUTS:
        assert pa.concat_tables([before[name], after[name]]).equals(expected[name]), name


class Orders(Strategy):
    """Places one order of the class's ``args`` at its first trade."""

    args: tuple = ()
    kwargs: dict = {}

    def on_trade(self, t) -> None:
        if not self.ctx.sim.trading:
            self.ctx.order(*self.args, **self.kwargs)


def _ordering(*args, **kwargs) -> type[Strategy]:
    return type("BadOrder", (Orders,), {"args": args, "kwargs": kwargs})


@pytest.mark.parametrize("args, kwargs, message", [
    (("BTCUSDT", 0.0), {}, "qty must be a non-zero finite number, not 0.0"),
    (("BTCUSDT", float("nan")), {}, "qty must be a non-zero finite number, not nan"),
    (("BTCUSDT", 1.0), {"price": -5.0}, "a limit price must be a positive finite number, not -5.0"),
    (("BTCUSDT", 1.0), {"price": float("inf")}, "a limit price must be a positive finite number, not inf"),
])
def test_a_bad_order_is_the_strategy_s_one_line_error(args, kwargs, message):
    with pytest.raises(StrategyError) as info:
        run_strategy(_ordering(*args, **kwargs), {"trade": make_trades(1, 50)})
    text = str(info.value)
    assert "\n" not in text and "failed in on_trade on trade" in text and message in text


def test_cancelling_an_order_that_does_not_exist_is_an_error():
    class CancelsNothing(Strategy):
        def on_trade(self, t) -> None:
            self.ctx.cancel(7)

    with pytest.raises(StrategyError, match="no order 7"):
        run_strategy(CancelsNothing, {"trade": make_trades(1, 50)})


def test_orders_for_a_key_the_strategy_does_not_read_are_refused():
    class OnlyBtc(Orders):
        args = ("ETHUSDT", 1.0)

        def keys(self):
            return frozenset({"BTCUSDT"})

    with pytest.raises(StrategyError, match="not among the strategy's keys"):
        run_strategy(OnlyBtc, {"trade": make_trades(1, 50)})


def test_an_order_from_a_batch_handler_needs_its_row_time():
    class BatchOrders(Strategy):
        def on_trade(self, t) -> None:
            pass

        def on_trade_batch(self, batch, fires) -> None:
            self.ctx.order("BTCUSDT", 1.0)

    with pytest.raises(StrategyError, match="from a batch handler needs at="):
        run_strategy(BatchOrders, {"trade": make_trades(1, 50)}, path="batch")


def test_orders_need_trades():
    class Gaps(Strategy):
        kinds = ("gap",)

        def on_gap(self, g) -> None:
            pass

    engine = Engine(Gaps)
    with pytest.raises(ValueError, match="orders need trades"):
        engine.ctx.order("BTCUSDT", 1.0)


def test_cancel_takes_a_timer_name_or_an_order_id():
    class Both(Strategy):
        def on_start(self) -> None:
            self.ctx.at(self.ctx.now + SECOND, "never")
            self.ctx.cancel("never")
            self.ctx.cancel(self.ctx.order("BTCUSDT", 1.0, price=1.0))

        def on_timer(self, name, ts) -> None:
            self.ctx.signal("x", name, 1.0)

        def on_trade(self, t) -> None:
            pass

    out = run_strategy(Both, {"trade": make_trades(2, 200)})
    assert out["signals"].num_rows == 0  # the timer was cancelled
    assert out["orders"].column("status").to_pylist() == ["accepted", "cancelled"]


def test_an_order_from_another_kind_s_handler_fills_at_the_next_trade_of_its_key():
    class OnGaps(Strategy):
        kinds = ("trade", "gap")

        def on_trade(self, t) -> None:
            pass

        def on_gap(self, g) -> None:
            self.ctx.order(g.key, 1.0, tag="gap")

    trades = make_trades(4, 300)
    at = trades.slice(100, 1).to_pylist()[0]
    gap = {**at, "seq": at["seq"], "first_id": 1, "last_id": 2, "filled": 0}
    for name in ("price", "qty", "is_buyer_maker"):
        gap.pop(name)
    out = run_strategy(OnGaps, {"trade": trades, "gap": [gap]}, batch_size=7)
    # the next trade of the gap's key after it in the total order (ts_event, source, key,
    # kind, seq) fills the order, whatever the batches
    events = sorted([(r["ts_event"], r["source"], r["key"], "trade", r["seq"], r["price"])
                     for r in trades.to_pylist()] + [(gap["ts_event"], gap["source"], gap["key"], "gap", gap["seq"], None)])
    after = events[events.index(next(e for e in events if e[3] == "gap")) + 1:]
    nxt = next(e for e in after if e[2] == at["key"])
    nxt = {"ts_event": nxt[0], "price": nxt[5]}
    assert out["fills"].select(["ts_event", "key", "price"]).to_pylist() == [
        {"ts_event": nxt["ts_event"], "key": at["key"], "price": nxt["price"]}]
    assert out["equity"].num_rows > 0
    assert out["fills"].equals(run_strategy(OnGaps, {"trade": trades, "gap": [gap]})["fills"])
