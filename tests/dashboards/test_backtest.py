"""The backtest dashboard: its notebook run headless (metrics = report.json, every series bounded
and its per-bucket extremes equal to a Polars recompute), the loaders' downsampling (property
test), ``qsf dashboard``'s bad input, and the page in a real Chromium."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.dashboards import POINTS, downsample
from qsframework.dashboards.loaders import _con
from qsframework.dashboards.scan import minmax_batches

from .browser import CHART, browser_page, dashboard, screenshot, wait_for_charts
from .data import make_backtest, make_recording


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("dash-bt")
    recording = make_recording(root / "rec")
    out = root / "out"
    return recording, out, make_backtest(recording, out)


@pytest.fixture(scope="module")
def notebook(run: tuple[Path, Path, dict]) -> dict:
    from qsframework.dashboards.notebooks.backtest import app

    recording, out, _ = run
    _, defs = app.run(defs={"inputs": {"dir": str(out), "recording": str(recording)}})
    return dict(defs)


def _extremes(points: pl.DataFrame, value: str, start: int, width: int) -> pl.DataFrame:
    """Per (key, bucket): the min and max of VALUE among the points shown."""
    return (points.with_columns(((pl.col("t") - start) // width).alias("bucket"))
            .group_by("key", "bucket").agg(pl.col(value).min().alias("low"), pl.col(value).max().alias("high"))
            .sort("key", "bucket"))


def _recompute(raw: pl.DataFrame, value: str, start: int, end: int, points: int) -> tuple[pl.DataFrame, int]:
    """The same extremes straight from every raw row, and the bucket width (ceil(span / (points/2)))."""
    width = max(1, -(-(end - start + 1) // (points // 2)))
    inside = raw.filter(pl.col("ts_event").is_between(start, end)).rename({"ts_event": "t"})
    return _extremes(inside, value, start, width), width


def test_metrics_table_equals_report(notebook: dict, run: tuple[Path, Path, dict]) -> None:
    report = run[2]
    assert report["metrics"]["fills"] > 0  # the run traded: equity and fills are not empty
    shown = dict(notebook["metrics"].iter_rows())
    assert list(shown) == list(report["metrics"])
    for name, value in report["metrics"].items():
        assert shown[name] == (None if value is None else pytest.approx(float(value), rel=0, abs=0))


def test_prices_are_bounded_and_keep_each_buckets_extremes(notebook: dict, run: tuple[Path, Path, dict]) -> None:
    recording, _, report = run
    prices = notebook["prices"]
    raw = pl.read_parquet(recording / "kind=trade" / "*" / "*.parquet").select("ts_event", "key", "price")
    assert raw.height > 4 * POINTS  # the recording is larger than one chart's budget
    for key, count in prices.group_by("key").len().iter_rows():
        assert count <= POINTS, key
    start, end = notebook["start"], notebook["end"]
    assert (start, end) == (report["span"]["first_ns"], report["span"]["last_ns"])
    expected, width = _recompute(raw, "price", start, end, POINTS)
    assert _extremes(prices, "price", start, width).equals(expected)


def test_equity_and_spread_extremes(notebook: dict, run: tuple[Path, Path, dict]) -> None:
    _, out, _ = run
    equity = pl.read_parquet(out / "equity.parquet").select("ts_event", "key", pl.col("equity").alias("value"))
    lo, hi = equity["ts_event"].min(), equity["ts_event"].max()
    expected, width = _recompute(equity, "value", lo, hi, POINTS)
    assert _extremes(notebook["equity"], "value", lo, width).equals(expected)
    # drawdown: 1 - equity / running peak, recomputed in Polars
    dd = pl.read_parquet(out / "equity.parquet").sort("ts_event").select(
        "ts_event", "key", (pl.col("equity") / pl.col("equity").cum_max() - 1).alias("drawdown"))
    expected, width = _recompute(dd, "drawdown", lo, hi, POINTS)
    got = _extremes(notebook["drawdown"], "drawdown", lo, width)
    assert got.select("key", "bucket").equals(expected.select("key", "bucket"))
    assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(got["low"], expected["low"]))
    signals = pl.read_parquet(out / "signals.parquet").filter(pl.col("name") == "spread").select("ts_event", "key", "value")
    expected, width = _recompute(signals, "value", signals["ts_event"].min(), signals["ts_event"].max(), POINTS)
    assert _extremes(notebook["spread"], "value", signals["ts_event"].min(), width).equals(expected)


def test_fills_and_alerts_tables(notebook: dict, run: tuple[Path, Path, dict]) -> None:
    _, out, report = run
    for name in ("fills", "alerts"):
        assert notebook["tables"][name].height == report["outputs"][name]
        assert notebook["tables"][name].equals(pl.read_parquet(out / f"{name}.parquet"))


@settings(max_examples=15)
@given(rows=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["a", "b"]),
                               st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=300),
       points=st.integers(2, 64), cuts=st.lists(st.integers(0, 300), max_size=4))
def test_downsample_keeps_every_buckets_min_and_max(rows: list[tuple[int, str, float]], points: int,
                                                    cuts: list[int]) -> None:
    raw = pl.DataFrame(rows, schema={"ts_event": pl.Int64, "key": pl.String, "x": pl.Float64}, orient="row")
    start, end = int(raw["ts_event"].min()), int(raw["ts_event"].max())
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "t.parquet")
        raw.write_parquet(path)
        got = downsample(_con(), "read_parquet($p)", "x", start=start, end=end, points=points, params={"p": path})
    assert got.group_by("key").len()["len"].max() <= points // 2  # buckets; two points each
    expected, width = _recompute(raw, "x", start, end, points)
    assert got.select("key", "bucket", "low", "high").equals(expected)
    # the streaming pass of the price panel: the same buckets, extremes and times, whatever the
    # batches (time-ordered as recordings are, split anywhere)
    ordered = raw.sort("ts_event", maintain_order=True).to_arrow()
    cut = sorted({0, ordered.num_rows, *(c % (ordered.num_rows + 1) for c in cuts)})
    batches = [b for lo, hi in itertools.pairwise(cut) for b in ordered.slice(lo, hi - lo).to_batches()]
    streamed = minmax_batches(batches, "x", start=start, end=end, width=width)
    assert streamed.equals(got)


def _qsf(*args: str) -> subprocess.CompletedProcess[str]:
    # check=False: the exit code is what the tests look at
    return subprocess.run([sys.executable, "-m", "qsframework.cli", "dashboard", *args],
                          check=False, capture_output=True, text=True, timeout=300)


def test_bad_input_is_one_line_exit_2(tmp_path: Path, run: tuple[Path, Path, dict]) -> None:
    import socket

    for args, says in ((["backtest", str(tmp_path / "nope")], "not a directory"),
                       (["backtest", str(tmp_path)], "no report.json"),
                       (["backtest", str(run[1]), "--recording", str(tmp_path)], "no recording.json"),
                       (["sweep", str(tmp_path)], "no sweep.parquet")):
        done = _qsf(*args)
        assert done.returncode == 2, done
        assert done.stderr.count("\n") == 1 and says in done.stderr and "Traceback" not in done.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = _qsf("backtest", str(run[1]), "--port", str(busy.getsockname()[1]))
        assert done.returncode == 2 and "in use" in done.stderr and done.stderr.count("\n") == 1


def test_browser_shows_the_report_and_follows_the_controls(run: tuple[Path, Path, dict], tmp_path: Path) -> None:
    recording, out, report = run
    with dashboard("backtest", str(out), "--recording", str(recording)) as served:
        assert served.url.startswith("http://127.0.0.1:")
        with browser_page(served.url) as (page, requests):
            wait_for_charts(page, 3)
            shown = {page.locator(f"td[data-metric='{m}']").get_attribute("data-metric"):
                     page.locator(f"td[data-metric='{m}']").inner_text() for m in report["metrics"]}
            assert {m: float(v) for m, v in shown.items()} == {m: float(v) for m, v in report["metrics"].items()}
            shot = screenshot(page, tmp_path / "dashboard-backtest.png", charts=3, full_page=True)
            assert shot.stat().st_size > 10_000
            before = page.locator(".qsf-range").inner_text()
            canvas = page.locator(CHART).first
            picture = canvas.screenshot()
            thumb = page.locator("[role=slider]").first
            thumb.focus()
            thumb.press("PageUp")  # ten steps: the range now starts 10 minutes later
            page.locator(".qsf-range").filter(has_text=re.compile(r"^\S+ 00:10:")).wait_for()
            after = page.locator(".qsf-range").inner_text()
            assert after != before
            wait_for_charts(page, 3)
            assert canvas.screenshot() != picture  # the prices chart redrew on the new range
            # the keys: without ETHUSDT the prices hold BTCUSDT's points only and one leg is drawn
            both, tall = page.locator(".qsf-range").inner_text(), canvas.bounding_box()["height"]
            assert both.endswith("points of BTCUSDT, ETHUSDT")
            page.locator("marimo-multiselect button").first.click()
            page.get_by_role("option", name="ETHUSDT").click()
            page.locator(".qsf-range").filter(has_text=re.compile(r"points of BTCUSDT$")).wait_for()
            wait_for_charts(page, 3)
            one = page.locator(".qsf-range").inner_text()
            assert _points(one) < _points(both) and canvas.bounding_box()["height"] < 0.6 * tall
            if not page.get_by_role("option", name="ETHUSDT").is_visible():  # the list closed
                page.locator("marimo-multiselect button").first.click()
            page.get_by_role("option", name="ETHUSDT").click()  # and back: the same points as before
            page.locator(".qsf-range").filter(has_text=re.compile(r"points of BTCUSDT, ETHUSDT$")).wait_for()
            assert page.locator(".qsf-range").inner_text() == both
        assert requests.all and not requests.outside, requests.outside
        assert served.stop() == 0
    assert "Traceback" not in "".join(served.output)


def _points(shown: str) -> int:
    """The number of points in the price panel's caption (``... : 4,275 points of KEYS``)."""
    return int(re.search(r": ([\d,]+) points of", shown).group(1).replace(",", ""))  # type: ignore[union-attr]


def test_recording_from_report_json_or_none(run: tuple[Path, Path, dict], tmp_path: Path) -> None:
    import shutil

    from qsframework.dashboards import load_backtest
    from qsframework.dashboards.notebooks.backtest import app

    recording, out, report = run
    assert load_backtest(out).recording == recording  # report.json names it
    moved = tmp_path / "out"
    shutil.copytree(out, moved)
    (moved / "report.json").write_text(json.dumps({**report, "recording": str(tmp_path / "gone")}))
    _, defs = app.run(defs={"inputs": {"dir": str(moved), "recording": None}})
    assert defs["bt"].recording is None and "prices" not in defs  # the price panel says why
    assert defs["tables"]["fills"].height == report["outputs"]["fills"]  # the rest still shows
    assert defs["equity"].height > 0
