"""Small real data for the dashboard tests: a generated recording, a backtest of BtcEthPairs on
it (``qsf backtest``'s outputs), and a sweep table in ``qsf sweep``'s format built from a few
``run_backtest`` runs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from qsframework.backtest import run_backtest
from qsframework.loader import load_strategy
from qsframework.recording import Recording

ROOT = Path(__file__).resolve().parents[2]
PAIRS_SPEC = f"{ROOT / 'strategies' / 'btc_eth_pairs.py'}:BtcEthPairs"
#: the sweep's grid: small, so the whole module stays a few seconds
GRID = {"threshold": ("0.002", "0.005"), "window": ("30s", "1m")}
MINUTES = 30


def make_recording(root: Path, *, minutes: float = MINUTES, seed: int = 3) -> Path:
    """A synthetic BTC/ETH trade recording (the market simulator, as ``qsf demo`` uses)."""
    from qsframework.sim.market import simulate_trades

    from qsframework.recording import RecordingWriter

    with RecordingWriter(root) as writer:
        for table in simulate_trades(["BTCUSDT", "ETHUSDT"], minutes=minutes, seed=seed):
            writer.write("trade", table)
    return root


def make_backtest(recording: Path, out: Path, **params: str) -> dict:
    """``qsf backtest`` of BtcEthPairs into OUT; returns report.json."""
    cls = load_strategy(PAIRS_SPEC)
    run_backtest(cls, Recording(recording), out=out, overrides=dict(params), spec=PAIRS_SPEC)
    return json.loads((out / "report.json").read_text())


def make_sweep(recording: Path, out: Path) -> pl.DataFrame:
    """``OUT/sweep.parquet`` over GRID in the sweep contract's format; returns the table."""
    rows = []
    for threshold in GRID["threshold"]:
        for window in GRID["window"]:
            point = f"{threshold}-{window}"
            report = make_backtest(recording, out / "points" / point, threshold=threshold, window=window)
            rows.append({"point": point, "threshold": float(threshold), "window": window,
                         **report["metrics"], "events": report["events_in"],
                         "events_per_s": report["events_per_s"], "wall_s": report["wall_s"]})
    table = pl.DataFrame(rows)
    arrow = table.to_arrow()
    arrow = arrow.replace_schema_metadata({"qsf.params": json.dumps(list(GRID)), "qsf.objective": "sharpe",
                                           "qsf.direction": "max"})
    pq.write_table(arrow, out / "sweep.parquet")
    return table
