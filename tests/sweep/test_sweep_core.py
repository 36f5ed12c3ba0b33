"""A grid sweep through the Python entry (run_sweep + ProcessExecutor): one row and one
directory per point, each point's files and metrics those of a single ``qsf backtest``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qsframework.loader import load_strategy
from qsframework.sweep import GridSearch, ProcessExecutor, parse_grid, run_sweep

from ..conftest import ROOT, qsf_cmd

PAIRS = str(ROOT / "strategies" / "btc_eth_pairs.py") + ":BtcEthPairs"
METRICS = ["pnl", "return", "fees", "fills", "turnover", "max_drawdown", "sharpe", "sortino",
           "exposure", "win_rate"]  # report.json's, as the README defines them
GRID = ["window=30s,60s", "threshold=0.001:0.002:0.001"]


def qsf(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*qsf_cmd(), *map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "rec"
    r = qsf("recordings", "generate", "--symbols", "BTCUSDT,ETHUSDT", "--minutes", "6", "--seed", "8",
            "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_every_point_equals_a_single_backtest(recording, tmp_path):
    space = parse_grid(load_strategy(PAIRS).Params, GRID)
    with ProcessExecutor(workers=2) as executor:
        table = run_sweep(spec=PAIRS, recording=recording, out=tmp_path / "sw", search=GridSearch(space),
                          executor=executor)
    assert table.num_rows == 4
    assert table.equals(pq.read_table(tmp_path / "sw" / "sweep.parquet"))
    meta = table.schema.metadata
    assert json.loads(meta[b"qsf.params"]) == ["window", "threshold"]
    assert (meta[b"qsf.objective"], meta[b"qsf.direction"]) == (b"sharpe", b"max")
    # the grid: every combination once, typed as declared (durations as text)
    combos = {(r["window"], r["threshold"]) for r in table.to_pylist()}
    assert combos == {("30s", 0.001), ("30s", 0.002), ("1m", 0.001), ("1m", 0.002)}
    traded = 0
    for row in table.to_pylist():
        point = tmp_path / "sw" / "points" / row["point"]
        assert json.loads((point / "params.json").read_text()) == {"window": row["window"],
                                                                  "threshold": row["threshold"]}
        single = tmp_path / f"single-{row['point']}"
        r = qsf("backtest", PAIRS, "--recording", recording, "--out", single,
                "-p", f"window={row['window']}", "-p", f"threshold={row['threshold']}")
        assert r.returncode == 0, r.stderr
        files = sorted(p.name for p in single.glob("*.parquet"))
        assert files == sorted(p.name for p in point.glob("*.parquet"))
        for name in files:
            assert pq.read_table(point / name).equals(pq.read_table(single / name)), name
        want = json.loads((single / "report.json").read_text())
        got = json.loads((point / "report.json").read_text())
        assert got.get("metrics") == want.get("metrics")
        assert got["events_in"] == row["events"] == want["events_in"]
        metrics = want.get("metrics") or dict.fromkeys(METRICS)  # never ordered: all undefined
        assert {m: row[m] for m in METRICS} == metrics
        traded += "fills.parquet" in files
    assert traded >= 2  # points that ordered: their metrics are defined and compared
    assert not list((tmp_path / "sw" / "points").glob(".tmp-*"))
