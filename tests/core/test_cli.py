"""The qsf command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qsframework.loader import load_strategy
from qsframework.recording import Recording
from qsframework.backtest import run_backtest

from ..conftest import ROOT, SPREAD_SPEC, run_qsf as qsf


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "rec"
    r = qsf("recordings", "generate", "--symbols", "BTCUSDT,ETHUSDT", "--minutes", "20", "--seed", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "synthetic trades" in r.stdout
    return out


def tree_digest(root: Path) -> str:
    """The recording's files and bytes (not a package's __init__.py or caches beside them)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.name == "recording.json" or p.suffix == ".parquet"):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generate_same_seed_same_bytes(recording, tmp_path):
    again = tmp_path / "again"
    assert qsf("recordings", "generate", "--minutes", "20", "--seed", "3", "--out", str(again)).returncode == 0
    assert tree_digest(again) == tree_digest(recording)
    other = tmp_path / "other"
    assert qsf("recordings", "generate", "--minutes", "20", "--seed", "4", "--out", str(other)).returncode == 0
    assert tree_digest(other) != tree_digest(recording)


def test_info(recording):
    r = qsf("recordings", "info", str(recording))
    assert r.returncode == 0, r.stderr
    assert "kind=trade" in r.stdout and "BTCUSDT" in r.stdout and "ETHUSDT" in r.stdout
    info = json.loads(qsf("recordings", "info", str(recording), "--json").stdout)
    assert info["kinds"]["trade"]["rows"] == Recording(recording).rows()


def test_backtest_writes_outputs_and_report(recording, tmp_path):
    out = tmp_path / "out"
    r = qsf("backtest", SPREAD_SPEC, "--recording", str(recording), "--out", str(out), "-p", "window=30s", "-p", "threshold=0.003")
    assert r.returncode == 0, r.stderr
    assert "signals" in r.stdout and "events/s" in r.stdout
    report = json.loads((out / "report.json").read_text())
    signals = pq.read_table(out / "signals.parquet")
    alerts = pq.read_table(out / "alerts.parquet")
    assert report["events_in"] == Recording(recording).rows()
    assert report["outputs"] == {"signals": signals.num_rows, "alerts": alerts.num_rows}
    assert report["params"]["window"] == "30s" and report["params"]["threshold"] == "0.003"
    assert report["events_per_s"] > 0 and report["span"]["seconds"] > 0
    assert signals.schema.names == ["ts_event", "ts_recv", "source", "key", "seq", "strategy", "name", "value", "attrs"]
    assert alerts.schema.names[-5:] == ["strategy", "name", "severity", "text", "dedup_key"]
    # the CLI gives what the library gives, and the time window filters input
    cls = load_strategy(SPREAD_SPEC)
    lib = run_backtest(cls, Recording(recording), overrides={"window": "30s", "threshold": "0.003"})
    assert lib.tables["signals"].equals(signals)
    sub = tmp_path / "sub"
    first = report["span"]["first_ns"]
    r = qsf("backtest", SPREAD_SPEC, "--recording", str(recording), "--out", str(sub),
            "--start", str(first + 60 * 10**9), "--end", str(first + 300 * 10**9), "--batch-size", "7", "--path", "event")
    assert r.returncode == 0, r.stderr
    sub_report = json.loads((sub / "report.json").read_text())
    assert 0 < sub_report["events_in"] < report["events_in"]
    assert sub_report["span"]["first_ns"] >= first + 60 * 10**9


def test_backtest_by_import_path_and_bundled_name(recording, tmp_path):
    for spec in ("qsframework.strategies.btc_eth_spread:BtcEthSpread", "btc_eth_spread:BtcEthSpread"):
        r = qsf("backtest", spec, "--recording", str(recording), "--out", str(tmp_path / spec[:5]), cwd=tmp_path)
        assert r.returncode == 0, r.stderr


def test_user_strategy_file_anywhere(recording, tmp_path):
    path = tmp_path / "elsewhere" / "mine.py"
    path.parent.mkdir()
    path.write_text(
        "from qsframework import Strategy\n"
        "class CountBig(Strategy):\n"
        "    def on_trade(self, t):\n"
        "        if t.qty * t.price > 5000:\n"
        "            self.ctx.signal(t.key, 'big', t.qty * t.price)\n"
    )
    out = tmp_path / "o"
    r = qsf("backtest", f"{path}:CountBig", "--recording", str(recording), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out / "signals.parquet").num_rows > 0


BAD = [
    (["backtest", SPREAD_SPEC, "--recording", "/nonexistent/rec", "--out", "{tmp}/o"], "does not exist"),
    (["backtest", "strategies/nope.py:X", "--recording", "{rec}", "--out", "{tmp}/o"], "does not exist"),
    (["backtest", SPREAD_SPEC.replace(":BtcEthSpread", ":Nope"), "--recording", "{rec}", "--out", "{tmp}/o"], "no class"),
    (["backtest", "no_colon_here", "--recording", "{rec}", "--out", "{tmp}/o"], "must be"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", "{tmp}/o", "-p", "windw=3s"], "unknown parameter"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", "{tmp}/o", "-p", "window=fast"], "not a valid duration"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", "{tmp}/o", "-p", "threshold=-1"], "threshold"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", "{tmp}/o", "--start", "noon"], "--start"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", "{tmp}/o", "--batch-size", "0"], "batch-size"),
    (["backtest", SPREAD_SPEC, "--out", "{tmp}/o"], "--recording"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", str(ROOT / "README.md")], "not a directory"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", "/proc/qsf-out"], "cannot create"),
    (["backtest", SPREAD_SPEC, "--recording", "{rec}", "--out", "{tmp}/o", "-p", "a=ETHUSDT"], "different"),
    (["recordings", "info", "{tmp}"], "not a recording"),
    (["recordings", "generate", "--minutes", "-1", "--out", "{tmp}/g"], "minutes"),
    (["recordings", "generate", "--minutes", "1", "--out", "{rec}"], "not empty"),
    (["nonsense"], "No such command"),
]


@pytest.mark.parametrize(("args", "needle"), BAD, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2(recording, tmp_path, args, needle):
    argv = [a.format(tmp=tmp_path, rec=recording) for a in args]
    r = qsf(*argv, cwd=ROOT)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and needle in lines[0]


def test_corrupt_recording_is_one_line_exit_2(recording, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(recording, bad)
    part = next(bad.rglob("part-*.parquet"))
    part.write_bytes(b"PAR1 this is not parquet")
    r = qsf("backtest", SPREAD_SPEC, "--recording", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "corrupt" in r.stderr


def test_help_and_version():
    r = qsf("--help")
    assert r.returncode == 0 and "backtest" in r.stdout and "recordings" in r.stdout
    r = qsf("backtest", "--help")
    assert r.returncode == 0 and "--batch-size" in r.stdout and "NAME=VALUE" in r.stdout
    assert qsf("--version").stdout.startswith("qsf")


SAMPLE = ROOT / "recordings" / "sample"


def test_readme_strategy_runs_on_the_sample(tmp_path):
    """The README's 20-line strategy, copied out as a user would, runs on the sample."""
    import re

    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class VwapBand" in b)
    path = tmp_path / "vwap.py"
    path.write_text(block)
    out = tmp_path / "out"
    r = qsf("backtest", f"{path}:VwapBand", "--recording", str(SAMPLE), "--out", str(out), "-p", "window=2m")
    assert r.returncode == 0, r.stderr
    alerts = pq.read_table(out / "alerts.parquet")
    assert alerts.num_rows > 0 and set(alerts.column("key").to_pylist()) == {"BTCUSDT"}


def test_sample_recording_is_synthetic_reproducible_and_small(tmp_path):
    info = json.loads(qsf("recordings", "info", str(SAMPLE), "--json").stdout)
    origin = info["origin"]
    assert origin["synthetic"] is True
    assert sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file()) <= 10 * 2**20
    again = tmp_path / "again"
    r = qsf("recordings", "generate", "--symbols", ",".join(origin["symbols"]), "--minutes", str(origin["minutes"]),
            "--seed", str(origin["seed"]), "--out", str(again))
    assert r.returncode == 0, r.stderr
    assert tree_digest(again) == tree_digest(SAMPLE)


def test_readme_first_command_on_the_sample(tmp_path):
    out = tmp_path / "sample"
    r = qsf("backtest", "strategies/btc_eth_spread.py:BtcEthSpread", "--recording", "recordings/sample",
            "--out", str(out), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["events_in"] == info_rows(SAMPLE) and report["outputs"]["alerts"] > 0


def info_rows(path: Path) -> int:
    return Recording(path).rows()
