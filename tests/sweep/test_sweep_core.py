"""The Python entry: ``qsframework.sweep(...)`` returns the sweep table as a Polars
DataFrame, each point's metrics those of a single backtest with its parameters."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq

import qsframework
from qsframework.backtest import run_backtest
from qsframework.loader import load_strategy
from qsframework.recording import Recording

from .conftest import METRICS, PAIRS


def test_the_python_entry_returns_the_table_as_a_polars_dataframe(recording, tmp_path):
    df = qsframework.sweep(PAIRS, recording=recording, out=tmp_path / "sw", workers=2,
                           grid={"window": ["30s", "1m"], "threshold": "0.001:0.001:0.001"},
                           objective="pnl")
    assert isinstance(df, pl.DataFrame)
    assert df.equals(pl.read_parquet(tmp_path / "sw" / "sweep.parquet"))
    assert pq.read_schema(tmp_path / "sw" / "sweep.parquet").metadata[b"qsf.objective"] == b"pnl"
    assert sorted(df["window"].to_list()) == ["1m", "30s"]
    cls = load_strategy(PAIRS)
    for row in df.iter_rows(named=True):
        single = run_backtest(cls, Recording(recording), overrides={"window": row["window"], "threshold": "0.001"})
        metrics = single.report.get("metrics") or dict.fromkeys(METRICS)
        assert {m: row[m] for m in METRICS} == metrics
        assert row["events"] == single.events_in
