"""What the sweep tests share: the pairs strategy (it orders, so metrics are defined), a
small generated recording made once, and ``qsf`` as a user runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..conftest import ROOT, run_qsf

PAIRS = str(ROOT / "strategies" / "btc_eth_pairs.py") + ":BtcEthPairs"
METRICS = ["pnl", "return", "fees", "fills", "turnover", "max_drawdown", "sharpe", "sortino",
           "exposure", "win_rate"]  # report.json's, as the README defines them


def qsf(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_qsf(*args, cwd=cwd, timeout=900)


@pytest.fixture(scope="session")
def recording(tmp_path_factory) -> Path:
    """Six minutes of BTCUSDT/ETHUSDT trades (about 28k events)."""
    out = tmp_path_factory.mktemp("sweep-rec") / "rec"
    r = qsf("recordings", "generate", "--symbols", "BTCUSDT,ETHUSDT", "--minutes", "6", "--seed", "8",
            "--out", out)
    assert r.returncode == 0, r.stderr
    return out
