"""``qsf sweep`` as a user runs it: every point equals a single ``qsf backtest`` bit for bit
(options from a config file and the command line, rejected rows included), a rerun skips
finished points, ``--keep``, Ctrl-C, and bad input as one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ..conftest import qsf_cmd
from .conftest import METRICS, PAIRS, qsf

@pytest.fixture(scope="module")
def first_ts(recording) -> int:
    return duckdb.connect().execute(f"SELECT min(ts_event) FROM read_parquet('{recording}/kind=*/*/*.parquet')").fetchone()[0]


@pytest.fixture(scope="module")
def swept(recording, first_ts, tmp_path_factory) -> Path:
    """A sweep whose window grid, objective and fees come from --config, the thresholds, the
    latency and the objective (winning over the file's) from the command line; rows before
    the floor are rejected."""
    base = tmp_path_factory.mktemp("swept")
    config = base / "study.toml"
    config.write_text(f"""
[sweep]
spec = "{PAIRS}"
recording = "{recording}"
out = "{base / 'sw'}"
objective = "pnl"
workers = 2
floor = {first_ts + 45 * 10**9}

[sweep.grid]
window = ["30s", "1m"]
threshold = "0.5:0.6:0.1"  # replaced by -g below

[execution]
taker_fee_bps = 4.0
""")
    r = qsf("sweep", "--config", config, "-g", "threshold=0.001:0.002:0.001", "--latency", "5ms",
            "--objective", "sharpe")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\npoint ") + r.stdout.startswith("point ") == 4
    return base / "sw"


def table(out: Path) -> list[dict]:
    return pq.read_table(out / "sweep.parquet").to_pylist()


def test_every_point_equals_a_single_backtest_bit_for_bit(swept, recording, first_ts, tmp_path):
    t = pq.read_table(swept / "sweep.parquet")
    meta = t.schema.metadata
    assert (meta[b"qsf.objective"], meta[b"qsf.direction"]) == (b"sharpe", b"max")  # the command line's
    assert json.loads(meta[b"qsf.params"]) == ["window", "threshold"]
    assert t.column_names == ["point", "window", "threshold", *METRICS, "events", "events_per_s", "wall_s"]
    rows = t.to_pylist()
    assert {(r["window"], r["threshold"]) for r in rows} == {
        ("30s", 0.001), ("30s", 0.002), ("1m", 0.001), ("1m", 0.002)}
    traded = 0
    for row in rows:
        point = swept / "points" / row["point"]
        assert json.loads((point / "params.json").read_text()) == {"window": row["window"],
                                                                  "threshold": row["threshold"]}
        single = tmp_path / row["point"]
        r = qsf("backtest", PAIRS, "--recording", recording, "--out", single, "-p", f"window={row['window']}",
                "-p", f"threshold={row['threshold']}", "--floor", str(first_ts + 45 * 10**9),
                "--latency", "5ms", "--taker-fee-bps", "4")
        assert r.returncode == 0, r.stderr
        files = sorted(p.name for p in single.glob("*.parquet"))
        assert files == sorted(p.name for p in point.glob("*.parquet"))
        for name in files:
            assert pq.read_table(point / name).equals(pq.read_table(single / name)), name
        assert pq.read_table(point / "rejected.parquet").num_rows > 0  # the floor's
        want, got = (json.loads((d / "report.json").read_text()) for d in (single, point))
        for key in ("metrics", "rejected", "outputs", "events_in", "execution", "params", "span"):
            assert got.get(key) == want.get(key), key
        assert row["events"] == want["events_in"]
        assert {m: row[m] for m in METRICS} == (want.get("metrics") or dict.fromkeys(METRICS))
        traded += "metrics" in want
    assert traded >= 2
    assert not (swept / ".cache").exists()  # the decoded recording goes once the sweep is complete


def test_a_rerun_recomputes_only_the_missing_point(swept):
    rows = table(swept)
    gone = rows[1]["point"]
    shutil.rmtree(swept / "points" / gone)
    before = {r["point"]: os.stat(swept / "points" / r["point"] / "report.json") for r in rows if r["point"] != gone}
    r = qsf("sweep", "--config", swept.parent / "study.toml", "-g", "threshold=0.001:0.002:0.001",
            "--latency", "5ms", "--objective", "sharpe")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(finished earlier)") == 3
    assert (swept / "points" / gone / "report.json").exists()
    for pid, st in before.items():
        now = os.stat(swept / "points" / pid / "report.json")
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    again = table(swept)
    assert [r["point"] for r in again] == [r["point"] for r in rows]
    for old, new in zip(rows, again):
        assert {k: old[k] for k in METRICS} == {k: new[k] for k in METRICS}


def test_keep_leaves_the_best_directories_and_every_row(recording, tmp_path):
    out = tmp_path / "sw"
    args = ["sweep", PAIRS, "--recording", recording, "--out", out, "-g", "window=30s,1m",
            "-g", "threshold=0.001,0.002", "--workers", "2", "--objective", "pnl"]
    r = qsf(*args, "--keep", "2")
    assert r.returncode == 0, r.stderr
    rows = table(out)
    assert len(rows) == 4
    ranked = sorted((r for r in rows if r["pnl"] is not None), key=lambda r: -r["pnl"])
    assert sorted(p.name for p in (out / "points").iterdir()) == sorted(r["point"] for r in ranked[:2])
    r = qsf(*args)  # the removed points are finished all the same: nothing is recomputed
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(finished earlier)") == 4
    assert table(out) == rows


GATED = '''
import os
from dataclasses import dataclass

from qsframework import Strategy


@dataclass(frozen=True, kw_only=True)
class Params:
    n: int = 1


class Gated(Strategy):
    """Point n=1 runs through; the others, at their first trade, wait while the gate (a FIFO)
    exists, for a writer to open it (none does: Ctrl-C comes while one waits)."""

    Params = Params

    def on_trade(self, t):
        if self.p.n > 1 and not getattr(self, "passed", False):
            self.passed = True
            if os.path.exists(GATE):
                with open(GATE):
                    pass
'''


def test_ctrl_c_leaves_only_finished_points(recording, tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    (tmp_path / "gated.py").write_text(GATED + f"\nGATE = {str(gate)!r}\n")
    out = tmp_path / "sw"
    args = ["sweep", f"{tmp_path / 'gated.py'}:Gated", "--recording", str(recording), "--out", str(out),
            "--workers", "1", "-g", "n=1:4:1"]
    proc = subprocess.Popen([*qsf_cmd(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # the first point finished; the second waits at the gate
        assert line.startswith("point 1/4 "), line + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.startswith("qsf: interrupted: 1 point finished, in ") and err.count("\n") == 1, err
    (finished,) = [p.name for p in (out / "points").iterdir()]  # the point under way is gone
    assert {"params.json", "report.json", "signals.parquet"} <= {p.name for p in (out / "points" / finished).iterdir()}
    assert [(r["point"], r["n"]) for r in table(out)] == [(finished, 1)]
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp") or p.name.endswith(".tmp")]
    # the decoded recording stays for the rerun: every trade once, as Arrow IPC
    (decoded,) = (out / ".cache").glob("*/decoded.json")
    trades = pa.ipc.open_file(pa.memory_map(str(decoded.parent / "trade.arrow"))).read_all().num_rows
    assert trades == duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{recording}/kind=*/*/*.parquet')").fetchone()[0]
    gate.unlink()
    r = qsf(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(finished earlier)") == 1
    assert sorted(r["n"] for r in table(out)) == [1, 2, 3, 4] and len(list((out / "points").iterdir())) == 4
    assert not (out / ".cache").exists()


@pytest.mark.parametrize("args, message", [
    (["-g", "windw=30s"], "qsf: error: unknown parameter 'windw' for strategy BtcEthPairs (known: "),
    (["-g", "window=30s", "--objective", "alpha"],
     "qsf: error: unknown objective 'alpha' (metrics: pnl, return, fees, fills, turnover, max_drawdown, sharpe,"),
    (["-g", "threshold=0.01:0.001:0.001"], "qsf: error: -g threshold=0.01:0.001:0.001: hi is below lo"),
    (["-g", "sample=7s"], "qsf: error: grid point sample=7s: bad parameters for strategy BtcEthPairs"),
])
def test_bad_input_is_one_line_and_exit_2(recording, tmp_path, args, message):
    r = qsf("sweep", PAIRS, "--recording", recording, "--out", tmp_path / "sw", *args)
    assert r.returncode == 2
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr


BOOM = '''
from dataclasses import dataclass

from qsframework import Strategy


@dataclass(frozen=True, kw_only=True)
class Params:
    n: int = 1


class Boom(Strategy):
    """Raises on its first trade when n is 3."""

    Params = Params

    def on_trade(self, t):
        if self.p.n == 3:
            raise RuntimeError("three is bad")
'''


def test_a_point_whose_strategy_raises_stops_the_sweep_with_one_line(recording, tmp_path):
    (tmp_path / "boom.py").write_text(BOOM)
    out = tmp_path / "sw"
    r = qsf("sweep", f"{tmp_path / 'boom.py'}:Boom", "--recording", recording, "--out", out, "-g", "n=1:4:1",
            "--workers", "1")
    assert r.returncode == 2
    assert r.stderr.startswith("qsf: error: point ") and "(n=3): strategy Boom" in r.stderr, r.stderr
    assert "RuntimeError: three is bad" in r.stderr and r.stderr.count("\n") == 1
    finished = sorted(p.name for p in (out / "points").iterdir())
    assert sorted(row["point"] for row in table(out)) == finished
    assert {1, 2} <= {row["n"] for row in table(out)} and 3 not in {row["n"] for row in table(out)}
