"""Engine snapshots pickle so that unchanged state keeps its bytes: they read back as the
state was (hypothesis: deques with and without maxlen, shared and self-holding ones), and a
window that slid shares most of its content-defined chunks with the snapshot before, for a
plain deque and for both spread strategies' engines (the definition and the compiled one)."""

from __future__ import annotations

import pickle
from collections import deque

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from qsframework import state_pickle
from qsframework.engine import Engine
from qsframework.events import TRADE
from qsframework.live.state_topic import snapshot_records
from qsframework.strategies.btc_eth_spread import BtcEthSpread
from qsframework.window import Window

atoms = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none(), st.booleans())
deques = st.builds(lambda items, maxlen: deque(items, maxlen=maxlen), st.lists(atoms, max_size=30),
                   st.none() | st.integers(0, 40))
values = st.recursive(atoms | deques, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=4), max_leaves=30)


@given(values)
def test_state_reads_back_as_it_was(value):
    back = pickle.loads(state_pickle.dumps(value))
    assert back == value
    assert repr(back) == repr(value)  # maxlen, and ints stay ints, floats floats


@given(deques)
def test_a_deque_held_twice_is_one_deque_and_one_holding_itself_survives(d):
    back = pickle.loads(state_pickle.dumps({"a": d, "b": [d]}))
    assert back["a"] is back["b"][0] and back["a"] == d and back["a"].maxlen == d.maxlen
    holder = deque(d)
    holder.append(holder)
    again = pickle.loads(state_pickle.dumps(holder))
    assert again[-1] is again and list(again)[:-1] == list(d)


def _sent_fraction(before: bytes, after: bytes) -> float:
    """The share of ``after``'s bytes a save sends when the topic holds ``before``'s chunks."""
    _, held = snapshot_records("g", before, checkpoint=1)
    records, _ = snapshot_records("g", after, checkpoint=2, held=frozenset(held))
    return sum(len(v) for _, v, _ in records[:-1]) / len(after)


def test_a_slid_deque_keeps_its_bytes():
    rng = np.random.default_rng(1)
    window = deque(rng.random(200_000).tolist())
    original = deque(window)
    before = state_pickle.dumps({"px": window, "n": 1})
    for _ in range(10_000):  # 5% left, 5% came in
        window.popleft()
        window.append(float(rng.random()))
    assert _sent_fraction(before, state_pickle.dumps({"px": window, "n": 2})) < 0.1
    # the default pickle (frames, batches of 1000 items) shares next to nothing
    assert _sent_fraction(pickle.dumps({"px": original, "n": 1}, protocol=5),
                          pickle.dumps({"px": window, "n": 2}, protocol=5)) > 0.5


def _trades(seconds: int, rate: int = 5000) -> pa.Table:
    n = seconds * rate
    rng = np.random.default_rng(0)
    ts = 1_767_571_200_000_000_000 + np.arange(n, dtype=np.int64) * (1_000_000_000 // rate)
    return pa.table({"ts_event": ts, "ts_recv": ts, "source": ["bench"] * n,
                     "key": rng.choice(["BTCUSDT", "ETHUSDT"], n).tolist(), "seq": np.arange(n, dtype=np.int64),
                     "price": 100 + rng.random(n), "qty": np.ones(n), "is_buyer_maker": np.zeros(n, bool)},
                    schema=TRADE.schema)


def test_the_spread_strategys_snapshot_after_5_s_of_a_60_s_window_sends_a_fraction():
    """5k trades/s: 300,000 trades in the window, 25,000 new between two checkpoints 5 s
    apart (8% of it): a save sends well under a fifth, compiled or as written."""
    batches = _trades(70).to_batches(5000)
    for cls in (BtcEthSpread, BtcEthSpread.plain):
        engine = Engine(cls)
        for b in batches[:65]:
            engine.process_window(Window.single("trade", b))
        before = engine.snapshot()
        for b in batches[65:]:
            engine.process_window(Window.single("trade", b))
        after = engine.snapshot()
        assert len(after) > 4_000_000
        assert _sent_fraction(before, after) < 0.2, cls


def test_the_compiled_spreads_snapshots_reuse_the_last_arrays_and_restore_exactly():
    """A snapshot converts only the trades that came since the one before (the arrays of
    the last snapshot give the rest): across trims of the legs' lists and the batch path's
    new lists, every snapshot restores to the engine's state, ints as ints, floats as floats."""
    engine = Engine(BtcEthSpread)
    for i, batch in enumerate(_trades(70).to_batches(2500)):
        engine.process_window(Window.single("trade", batch))
        if i % 9 == 4:
            restored = Engine(BtcEthSpread)
            restored.restore(engine.snapshot())
            got, want = restored.strategy.s.sequences(), engine.strategy.s.sequences()
            assert got == want
            assert {type(v) for v in got["a_ts"] + got["b_ts"]} == {int}
            assert {type(v) for v in got["a_px"] + got["b_px"]} == {float}
    assert engine.strategy.s.cut_a > 0 and engine.strategy.s.cut_b > 0  # the lists were trimmed
