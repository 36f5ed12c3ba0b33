"""``qsf backtest`` with orders, as a user runs it: the execution options and the run-config
file, the new outputs, and a strategy that never orders left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from ..conftest import SPREAD_SPEC, run_qsf as qsf

TRADER = '''
from qsframework import Strategy


class Trader(Strategy):
    """Buys at its 50th trade of a key, sells it at its 400th, and rests a limit below."""

    def on_start(self):
        self.count = {}

    def on_trade(self, t):
        n = self.count[t.key] = self.count.get(t.key, 0) + 1
        if n == 50:
            self.ctx.order(t.key, 0.5)
            self.ctx.order(t.key, 0.5, price=t.price * 0.999, tag="dip")
        elif n == 400:
            self.ctx.order(t.key, -self.ctx.position(t.key))

    def on_fill(self, fill):
        self.ctx.signal(fill.key, "equity", self.ctx.equity)
'''
SETTINGS = {"latency": "5ms", "slippage_bps": 3.0, "taker_fee_bps": 4.0, "maker_fee_bps": 2.0,
            "cash": 50_000.0, "mark_every": "250ms", "max_participation": 0.5}


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exec-cli") / "rec"
    r = qsf("recordings", "generate", "--symbols", "BTCUSDT,ETHUSDT", "--minutes", "4", "--seed", "8",
            "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def trader(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("user") / "trader.py"
    path.write_text(TRADER)
    return f"{path}:Trader"


def test_a_strategy_that_never_orders_writes_the_same_files_whatever_the_settings(recording, tmp_path):
    plain, tuned = tmp_path / "plain", tmp_path / "tuned"
    config = tmp_path / "run.toml"
    config.write_text('[execution]\nlatency = "2s"\ncash = 5.0\n')
    assert qsf("backtest", SPREAD_SPEC, "--recording", recording, "--out", plain).returncode == 0
    r = qsf("backtest", SPREAD_SPEC, "--recording", recording, "--out", tuned, "--config", config,
            "--slippage-bps", "9", "--mark-every", "1ms", "--max-participation", "0.1")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in plain.iterdir())
    assert files == ["alerts.parquet", "rejected.parquet", "report.json", "signals.parquet"]
    assert sorted(p.name for p in tuned.iterdir()) == files
    for name in files:
        if name.endswith(".parquet"):
            assert (plain / name).read_bytes() == (tuned / name).read_bytes(), name
    report = json.loads((tuned / "report.json").read_text())
    assert "execution" not in report and "metrics" not in report
    assert set(report["outputs"]) == {"signals", "alerts"}
    assert "fills" not in r.stdout and "PnL" not in r.stdout


def test_a_user_strategy_that_orders_gets_orders_fills_equity_and_metrics(recording, trader, tmp_path):
    out = tmp_path / "out"
    options = [arg for name, value in SETTINGS.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    r = qsf("backtest", trader, "--recording", recording, "--out", out, *options)
    assert r.returncode == 0, r.stderr
    for name in ("orders", "fills", "equity"):
        assert (out / f"{name}.parquet").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["execution"] == SETTINGS
    db = duckdb.connect()
    fills = db.execute(f"select count(*), sum(fee) from '{out}/fills.parquet'").fetchone()
    last = db.execute(f"select equity from '{out}/equity.parquet' order by ts_event desc limit 1").fetchone()[0]
    grid = db.execute(f"select count(*) filter (where ts_event % 250000000 <> 0) from '{out}/equity.parquet'").fetchone()[0]
    assert grid <= 1  # samples on the 250ms grid, plus the last event's
    metrics = report["metrics"]
    assert metrics["fills"] == fills[0] > 2 and metrics["fees"] == pytest.approx(fills[1], rel=1e-12)
    assert metrics["pnl"] == last - 50_000.0
    assert report["outputs"]["fills"] == fills[0]
    summary = r.stdout.strip().splitlines()[-1]
    assert f"{fills[0]:,} fills (PnL {metrics['pnl']:,.2f}, return " in summary
    assert "max drawdown" in summary and "Sharpe" in summary


def test_options_on_the_command_line_win_over_the_config_file(recording, trader, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[execution]\nlatency = "20ms"\ncash = 5000\ntaker_fee_bps = 3\n')
    out = tmp_path / "out"
    r = qsf("backtest", trader, "--recording", recording, "--out", out, "--config", config, "--cash", "7000")
    assert r.returncode == 0, r.stderr
    execution = json.loads((out / "report.json").read_text())["execution"]
    assert execution == {"latency": "20ms", "slippage_bps": 0.0, "taker_fee_bps": 3.0,
                         "maker_fee_bps": 10.0, "cash": 7000.0, "mark_every": "1s",
                         "max_participation": None}


@pytest.mark.parametrize("args, config, message", [
    (["--latency", "-5ms"], None, "--latency: "),
    (["--latency", "5x"], None, "--latency: "),
    (["--slippage-bps", "abc"], None, "--slippage-bps: expected a number"),
    (["--slippage-bps", "-1"], None, "slippage bps must be a finite number >= 0"),
    (["--taker-fee-bps", "nan"], None, "--taker-fee-bps: expected a finite number"),
    (["--cash", "-100"], None, "cash must be a finite number >= 0"),
    (["--mark-every", "0s"], None, "mark every must be a positive duration"),
    (["--max-participation", "0"], None, "max participation must be in (0, 1]"),
    (["--max-participation", "1.5"], None, "max participation must be in (0, 1]"),
    ([], '[execution]\nlatancy = "5ms"\n', "[execution] has no setting 'latancy'"),
    ([], '[risk]\nmax = 1\n', "unknown table or key 'risk'"),
    ([], '[execution]\nlatency = 5\n', 'a duration is text such as "250ms"'),
    ([], '[execution]\ncash = "lots"\n', "execution.cash: expected a number"),
    ([], '[execution\n', "not valid TOML"),
    ([], None, "cannot read it"),
])
def test_bad_execution_settings_are_one_line_and_exit_2(recording, trader, tmp_path, args, config, message):
    if config is not None or not args:
        path = tmp_path / "run.toml"
        if config is not None:
            path.write_text(config)
        args = [*args, "--config", str(path)]
    r = qsf("backtest", trader, "--recording", recording, "--out", tmp_path / "out", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qsf: error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
