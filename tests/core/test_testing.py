"""qsframework.testing: run_strategy equals a backtest of the same events; TableSource hands
out one total order whatever the batch size; ListSink keeps what it is given."""

from __future__ import annotations

import asyncio

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.backtest import run_backtest
from qsframework.errors import UserError
from qsframework.events import Trade, get_kind
from qsframework.io import Sink
from qsframework.recording import Recording, RecordingWriter
from qsframework.strategy import Strategy
from qsframework.testing import ListSink, TableSource, run_strategy

from ..conftest import T0, make_trades
from .multikind import Mixer, make_kinds, reference

OVERRIDES = {"window": "2s", "sample": "500ms", "threshold": "0.004"}


@pytest.mark.parametrize("path", ["event", "batch"])
def test_run_strategy_equals_a_backtest_of_the_same_trades(tmp_path, spread_cls, path):
    trades = make_trades(41, 5000)
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    clean = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES, path=path)
    assert clean.signals > 0
    shuffled = trades.take(pa.array(list(reversed(range(trades.num_rows)))))  # any order in
    got = run_strategy(spread_cls, {"trade": shuffled}, params=OVERRIDES, path=path, batch_size=777)
    assert got["signals"].equals(clean.tables["signals"])
    assert got["alerts"].equals(clean.tables["alerts"])


def test_rows_of_the_kind_s_row_type_are_events():
    class Count(Strategy):
        name = "count"
        kinds = ("trade",)

        def on_trade(self, t) -> None:
            self.ctx.signal(t.key, "price", t.price)

    rows = [Trade(T0 + i, T0 + i, "t", "BTCUSDT", i, 100.0 + i, 1.0, False) for i in (2, 0, 1)]
    out = run_strategy(Count, rows)
    assert out["signals"].column("value").to_pylist() == [100.0, 101.0, 102.0]
    bad = [*rows, Trade(T0 + 3, T0 + 3, "t", "BTCUSDT", 3, -1.0, 1.0, False)]
    with pytest.raises(UserError, match="1 price <= 0|price"):
        run_strategy(Count, bad)


@given(st.integers(1, 400), st.integers(0, 2**16))
def test_table_source_hands_out_one_total_order_at_any_batch_size(batch_size, seed):
    trades = make_trades(seed, 300)
    gaps = pa.Table.from_pylist(
        [{"ts_event": trades.column("ts_event")[i].as_py(), "ts_recv": trades.column("ts_recv")[i].as_py(),
          "source": "binance", "key": "BTCUSDT", "seq": i, "first_id": i, "last_id": i, "filled": 0}
         for i in range(0, 300, 7)], schema=get_kind("gap").schema)
    source = TableSource({"trade": trades, "gap": gaps}, batch_size=batch_size)
    got = [(kind, row["ts_event"], row["source"], row["key"], row["seq"])
           for kind, table in source for row in table.to_pylist()]
    # the independent order: DuckDB over both kinds, (ts_event, source, key, kind, seq)
    con = duckdb.connect()
    con.register("t", trades)
    con.register("g", gaps)
    want = con.execute(
        "SELECT kind, ts_event, source, key, seq FROM ("
        " SELECT 'trade' AS kind, ts_event, source, key, seq FROM t"
        " UNION ALL SELECT 'gap', ts_event, source, key, seq FROM g)"
        " ORDER BY ts_event, source, key, kind, seq").fetchall()
    assert got == [tuple(r) for r in want]
    assert all(t.num_rows <= batch_size for _, t in source)


def test_a_sink_is_the_write_method_and_list_sink_keeps_what_it_gets():
    class Counting(Sink):  # the smallest third-party sink
        def __init__(self) -> None:
            self.rows = 0

        async def write(self, kind, table):
            self.rows += table.num_rows
            return []

    trades = make_trades(3, 1000)

    async def run() -> tuple[ListSink, Counting]:
        sinks = (ListSink(), Counting())
        for s in sinks:
            await s.start()
        async for kind, table in TableSource({"trade": trades}, batch_size=100).batches():
            for s in sinks:
                await s.write(kind, table)
        for s in sinks:
            await s.flush()
            await s.close()
        return sinks

    keep, count = asyncio.run(run())
    assert count.rows == 1000
    assert keep.started and keep.closed and keep.flushes == 1
    con = duckdb.connect()
    con.register("t", trades)
    want = con.execute("SELECT * FROM t ORDER BY ts_event, source, key, seq").fetchall()
    assert [tuple(r.values()) for r in keep.table("trade").to_pylist()] == want
    assert keep.table("gap").num_rows == 0
    with pytest.raises(TypeError):
        Sink()  # write() must be written


def test_the_readme_s_strategy_test_passes(tmp_path):
    """The README's unit test of its 20-line strategy, both copied out as a user would."""
    import re
    import sys

    from ..conftest import ROOT

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    strategy = next(b for b in blocks if "class VwapBand" in b)
    test = next(b for b in blocks if "run_strategy(VwapBand" in b)
    (tmp_path / "vwap.py").write_text(strategy)
    (tmp_path / "test_vwap.py").write_text("from vwap import VwapBand\n" + test)
    sys.path.insert(0, str(tmp_path))
    try:
        namespace: dict = {}
        exec(compile((tmp_path / "test_vwap.py").read_text(), "test_vwap.py", "exec"), namespace)
        namespace["test_a_print_far_from_vwap_alerts"]()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vwap", None)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 90), min_size=3, max_size=3),
       batch_size=st.sampled_from([1, 5, 65_536]))
def test_run_strategy_over_interleaved_kinds_equals_the_runs_one_by_one(seed, sizes, batch_size):
    """run_strategy hands the engine windows of several kinds: the outputs are those of each
    run of one kind fed to Engine.process (the per-run reference), whatever the batch size."""
    tables = make_kinds(seed, dict(zip(("wk_a", "wk_b", "wk_c"), sizes)), dup=0.0)
    want = reference(Mixer, tables, overrides={"every_ms": 7})
    got = run_strategy(Mixer, tables, params={"every_ms": 7}, batch_size=batch_size, path="event")
    for name in ("signals", "alerts"):
        assert got[name].equals(want[name]), name
