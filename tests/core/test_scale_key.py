"""``scale = "key"``: a key's outputs do not depend on which other keys share its engine, so
N engines over a split of the keys (N scaled-out processors) give exactly one engine's rows;
such a strategy may not order; ``scale`` takes only its two values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework import Context, Strategy
from qsframework.errors import UserError
from qsframework.testing import run_strategy

from ..conftest import make_trades

SYMBOLS = ("K0", "K1", "K2", "K3", "K4")


@dataclass(frozen=True)
class _Params:
    step: float = 0.002


class PerKeyJumps(Strategy):
    """Per key: a signal when the price moved by ``step`` since the last signal, an alert and a
    quiet-key timer (1 s after each trade: a second signal) with it."""

    kinds = ("trade",)
    scale = "key"
    Params = _Params

    def __init__(self, params: _Params, ctx: Context) -> None:
        super().__init__(params, ctx)
        self.last: dict[str, float] = {}

    def on_trade(self, t: Any) -> None:
        ref = self.last.setdefault(t.key, t.price)
        if abs(t.price / ref - 1) >= self.p.step:
            self.last[t.key] = t.price
            self.ctx.signal(t.key, "jump", t.price / ref - 1)
            self.ctx.alert(t.key, "jump", f"{t.key} moved")
            self.ctx.at(self.ctx.now + 1_000_000_000, f"quiet:{t.key}")

    def on_timer(self, name: str, ts: int) -> None:
        key = name.partition(":")[2]
        self.ctx.signal(key, "after_jump", self.last[key])


class OrdersPerKey(PerKeyJumps):
    def on_trade(self, t: Any) -> None:
        self.ctx.order(t.key, 1.0)


def _with_a_last_trade_per_key(trades: pa.Table) -> pa.Table:
    """``trades`` and, 10 s after the last, each key's last trade again (a new seq, the same
    price): every key's stream then outlives its timers, so each engine fires them all (a
    timer due after its partition's last event does not fire: see README "Scale-out")."""
    last = {}
    for i, key in enumerate(trades.column("key").to_pylist()):
        last[key] = i
    tail = trades.take(pa.array(sorted(last.values())))
    end = pc.max(trades.column("ts_event")).as_py() + 10_000_000_000
    seq0 = pc.max(trades.column("seq")).as_py() + 1
    for col, values in (("ts_event", [end] * tail.num_rows), ("ts_recv", [end] * tail.num_rows),
                        ("seq", list(range(seq0, seq0 + tail.num_rows)))):
        i = tail.schema.get_field_index(col)
        tail = tail.set_column(i, tail.schema.field(i), pa.array(values, tail.schema.field(i).type))
    return pa.concat_tables([trades, tail])


def _rows(tables: list[pa.Table]) -> list[tuple]:
    """Every row of ``tables``, sorted (the order engines emitted them in is theirs)."""
    table = pa.concat_tables(tables)
    return sorted(zip(*(table.column(c).to_pylist() for c in table.schema.names)))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), groups=st.lists(st.integers(0, 2), min_size=len(SYMBOLS), max_size=len(SYMBOLS)))
def test_engines_over_a_split_of_the_keys_give_one_engines_rows(seed, groups):
    trades = _with_a_last_trade_per_key(make_trades(seed, 1500, symbols=SYMBOLS, gaps_ms=(0, 1, 40, 250, 7000)))
    whole = run_strategy(PerKeyJumps, {"trade": trades})
    assert whole["signals"].num_rows and whole["alerts"].num_rows
    parts: dict[str, list[pa.Table]] = {"signals": [], "alerts": []}
    for group in set(groups):
        keys = pa.array([k for k, g in zip(SYMBOLS, groups) if g == group])
        mine = trades.filter(pc.is_in(trades.column("key"), value_set=keys))
        out = run_strategy(PerKeyJumps, {"trade": mine})
        for name in parts:
            parts[name].append(out[name])
    for name, tables in parts.items():
        assert _rows(tables) == _rows([whole[name]]), name
    # sequence numbers count per key (over signals and alerts), from 0 with no gaps
    both = pa.concat_tables([whole[name].select(["key", "seq"]) for name in parts])
    for key in SYMBOLS:
        seqs = sorted(pc.filter(both.column("seq"), pc.equal(both.column("key"), key)).to_pylist())
        assert seqs == list(range(len(seqs)))


def test_a_key_scaled_strategy_may_not_order():
    with pytest.raises(UserError, match='orders need one engine over every key: OrdersPerKey declares scale = "key"'):
        run_strategy(OrdersPerKey, {"trade": make_trades(1, 10)})


def test_scale_takes_single_or_key():
    with pytest.raises(TypeError, match=r'Wide.scale must be "single" or "key", not \'keys\''):
        type("Wide", (Strategy,), {"scale": "keys"})
    assert Strategy.scale == "single"
