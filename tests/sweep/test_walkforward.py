"""Walk-forward: fold boundaries (durations and event counts) against an independent cut of the
recording's timestamps (Polars); ``qsf sweep --walk-forward`` on the sample: per fold the chosen
parameters are the argmax of an independent train sweep (plain in-process backtests) and the
test metrics those of a single ``qsf backtest --start/--end`` with them; the stitched metrics
are the folds' combined."""

from __future__ import annotations

import itertools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.backtest import run_backtest
from qsframework.durations import parse_time
from qsframework.errors import UserError
from qsframework.loader import load_strategy
from qsframework.recording import Recording
from qsframework.sweep.folds import Windows, parse_windows, plan_folds
from qsframework.sweep.optimisers import RandomSearch

from ..conftest import ROOT
from .conftest import METRICS, PAIRS, qsf

SAMPLE = ROOT / "recordings" / "sample"
MIN = 60 * 10**9
END = "2026-01-05T00:50:00Z"
THRESHOLDS = ("0.0007", "0.001")
WINDOWS = ("30s", "1m")
CASH = 100_000.0


@pytest.fixture(scope="module")
def ts() -> list[int]:
    """The sample's event times in order, read here with Polars."""
    return pl.read_parquet(SAMPLE / "kind=trade" / "*" / "*.parquet")["ts_event"].sort().to_list()


@pytest.fixture(scope="module")
def sample_rec() -> Recording:
    return Recording(SAMPLE)


@settings(max_examples=20, deadline=None)
@given(train=st.integers(1, 120), test=st.integers(1, 60), step=st.none() | st.integers(1, 60),
       cut=st.booleans())
def test_time_folds_cover_the_range(ts, sample_rec, train, test, step, cut):
    lo, hi = ts[0], (parse_time(END) if cut else ts[-1] + 1)
    w = Windows(train=train * MIN, test=test * MIN, step=(step or test) * MIN, unit="time")
    expected = []
    k = 0
    while lo + k * w.step + w.train < hi:
        s = lo + k * w.step
        expected.append((k, s, s + w.train, s + w.train, min(s + w.train + w.test, hi)))
        k += 1
    if not expected:
        with pytest.raises(UserError, match="no fold"):
            plan_folds(w, sample_rec, end=hi if cut else None)
        return
    folds = plan_folds(w, sample_rec, end=hi if cut else None)
    assert [(f.fold, f.train_start, f.train_end, f.test_start, f.test_end) for f in folds] == expected
    if step is None:  # test windows tile everything after the first train window
        assert folds[0].test_start == lo + w.train and folds[-1].test_end == hi
        assert all(a.test_end == b.test_start for a, b in itertools.pairwise(folds))


@settings(max_examples=4, deadline=None)
@given(train=st.integers(1, 300_000), test=st.integers(1, 200_000),
       step=st.none() | st.integers(20_000, 200_000))
def test_count_folds_cut_at_the_ith_event(ts, sample_rec, train, test, step):
    w = Windows(train=train, test=test, step=step or test, unit="events")
    n, hi = len(ts), ts[-1] + 1
    expected = []
    for k, s in enumerate(range(0, n - train, w.step)):
        end = ts[s + train + test] if s + train + test < n else hi
        expected.append((k, ts[s], ts[s + train], ts[s + train], end))
    expected = [e for e in expected if e[1] < e[2] < e[4]]
    if not expected:
        with pytest.raises(UserError):
            plan_folds(w, sample_rec)
        return
    got = plan_folds(w, sample_rec)
    assert [(f.fold, f.train_start, f.train_end, f.test_start, f.test_end) for f in got] == expected


@pytest.mark.parametrize("text, message", [
    ("train=20m", "both train= and test="),
    ("train=20m,test=100", "not a mix"),
    ("train=20m,test=5x", "not a duration"),
    ("train=0,test=10", "must be positive"),
    ("train=20m,test=5m,hop=1m", "expected train=SIZE"),
])
def test_bad_windows_are_one_clear_error(text, message):
    with pytest.raises(UserError, match=message):
        parse_windows(text)


def test_windows_parse():
    assert parse_windows("train=7d,test=1d") == Windows(train=7 * 1440 * MIN, test=1440 * MIN,
                                                        step=1440 * MIN, unit="time")
    assert parse_windows("train=200000,test=50000,step=25000") == Windows(
        train=200_000, test=50_000, step=25_000, unit="events")


def walk(out: Path, windows: str, *grid: str) -> CompletedProcess:
    return qsf("sweep", PAIRS, "--recording", SAMPLE, "--out", out, "--end", END, "--workers", "2",
               "--walk-forward", windows, *grid)


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wf")
    run = walk(out, "train=20m,test=10m", "-g", f"threshold={','.join(THRESHOLDS)}",
               "-g", f"window={','.join(WINDOWS)}")
    assert run.returncode == 0, run.stderr
    return out


def test_walk_forward_chooses_the_train_argmax_and_tests_it_alone(walked, ts, tmp_path):
    table = pq.read_table(walked / "walkforward.parquet")
    rows = table.to_pylist()
    lo, hi = ts[0], parse_time(END)
    starts = [lo + k * 10 * MIN for k in range(3)]
    times = pl.from_arrow(table).select(pl.col("train_start", "train_end", "test_start", "test_end")
                                        .cast(pl.Int64))
    as_ns = [times[c].to_list() for c in times.columns]
    assert list(zip(*as_ns)) == [(s, s + 20 * MIN, s + 20 * MIN, min(s + 30 * MIN, hi)) for s in starts]
    assert [r["fold"] for r in rows] == [0, 1, 2]

    cls, rec = load_strategy(PAIRS), Recording(SAMPLE)
    for r, s in zip(rows, starts):
        sharpes = {}
        for th, w in itertools.product(THRESHOLDS, WINDOWS):  # the grid's order
            report = run_backtest(cls, rec, overrides={"threshold": th, "window": w},
                                  start=s, end=s + 20 * MIN).report
            sharpes[(th, w)] = (report.get("metrics") or {}).get("sharpe")
        defined = [(v, -i, k) for i, (k, v) in enumerate(sharpes.items()) if v is not None]
        best = max(defined)
        assert (str(r["threshold"]), r["window"]) == best[2]
        assert r["train_sharpe"] == best[0]
        assert r["train_points"] == 4

    def single(r: dict) -> dict:
        out = tmp_path / f"bt{r['fold']}"
        s = as_ns[2][r["fold"]]
        e = as_ns[3][r["fold"]]
        run = qsf("backtest", PAIRS, "--recording", SAMPLE, "--out", out, "--start", s, "--end", e,
                  "-p", f"threshold={r['threshold']}", "-p", f"window={r['window']}")
        assert run.returncode == 0, run.stderr
        return json.loads((out / "report.json").read_text())

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(single, rows))
    metrics = [rep.get("metrics") or {} for rep in reports]
    for r, m, rep in zip(rows, metrics, reports):
        for name in METRICS:
            assert r[name] == m.get(name), (r["fold"], name)
        assert r["events"] == rep["events_in"]

    # stitched: PnL, fees and fills add up over the folds; the curve ends at cash + their PnL
    ordered = [m for m in metrics if m]
    assert len(ordered) == 3  # every test window ordered: the stitching is exercised
    summary = json.loads((walked / "walkforward.json").read_text())
    stitched = summary["metrics"]
    assert summary["folds"] == 3 and summary["folds_with_orders"] == len(ordered)
    assert json.loads(table.schema.metadata[b"qsf.stitched"]) == stitched
    if ordered:
        assert math.isclose(stitched["pnl"], math.fsum(m["pnl"] for m in ordered), rel_tol=1e-12, abs_tol=1e-9)
        assert stitched["fills"] == sum(m["fills"] for m in ordered)
        assert math.isclose(stitched["fees"], math.fsum(m["fees"] for m in ordered), rel_tol=1e-12)
        curve = pl.read_parquet(walked / "oos_equity.parquet")
        assert curve["ts_event"].is_sorted()
        assert math.isclose(curve["equity"][-1], CASH + stitched["pnl"], rel_tol=1e-12)


def test_api_rerun_skips_every_finished_point_and_returns_the_table(walked):
    """``qsframework.sweep(..., walk_forward=...)`` again on the same --out: nothing runs again
    (every point directory is the one the CLI wrote) and the table is the file's."""
    import qsframework

    before = pl.read_parquet(walked / "walkforward.parquet")
    points = sorted(walked.glob("folds/*/*/points/*/report.json"))
    stamps = [p.stat().st_mtime_ns for p in points]
    df = qsframework.sweep(PAIRS, recording=SAMPLE, out=walked, end=END, workers=2,
                           grid={"threshold": list(THRESHOLDS), "window": list(WINDOWS)},
                           walk_forward="train=20m,test=10m")
    assert df.equals(before)
    assert len(points) == 15 and [p.stat().st_mtime_ns for p in points] == stamps


def test_walk_forward_by_event_counts_from_a_config_with_a_random_search(ts, tmp_path):
    """Windows, search and grid from --config's [sweep] table; each fold's train sweep is a
    fresh seeded random search (one trial: the draw RandomSearch makes for seed 0)."""
    config = tmp_path / "wf.toml"
    config.write_text(f"""
[sweep]
spec = "{PAIRS}"
recording = "{SAMPLE}"
out = "{tmp_path / 'out'}"
end = "{END}"
workers = 2
walk_forward = "train=60000,test=40000"
search = "random"
trials = 1

[sweep.grid]
threshold = ["0.0007", "0.001", "0.002"]
""")
    run = qsf("sweep", "--config", config)
    assert run.returncode == 0, run.stderr
    table = pl.read_parquet(tmp_path / "out" / "walkforward.parquet")
    hi = parse_time(END)
    inside = [t for t in ts if t < hi]
    expected = [(inside[s], inside[s + 60000], inside[s + 60000],
                 inside[s + 100000] if s + 100000 < len(inside) else hi)
                for s in range(0, len(inside) - 60000, 40000)]
    got = table.select(pl.col("train_start", "train_end", "test_start", "test_end").cast(pl.Int64)).rows()
    assert got == expected
    drawn = RandomSearch({"threshold": (0.0007, 0.001, 0.002)}, 1, 0).ask(1)[0]["threshold"]
    assert table["threshold"].to_list() == [drawn] * len(expected)
    assert table["train_points"].to_list() == [1] * len(expected)


@pytest.mark.parametrize("windows, message", [
    ("train=20m", "both train= and test="),
    ("train=3h,test=10m", "no fold"),
])
def test_cli_walk_forward_bad_input(tmp_path, windows, message):
    run = walk(tmp_path, windows, "-g", "threshold=0.001")
    assert run.returncode == 2
    assert run.stderr.startswith("qsf: error:") and message in run.stderr
    assert "Traceback" not in run.stderr
