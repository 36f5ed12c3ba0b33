"""The sweep dashboard: ``load_sweep`` and the heatmap cells against a pure-Python recompute, the
notebook run headless, and the page in a real Chromium (heatmap drawn, metric dropdown redraws
it, the table sorts by a header)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from qsframework.dashboards import heatmap_cells, load_sweep

from .browser import CHART, browser_page, dashboard, screenshot, wait_for_charts
from .data import GRID, make_recording, make_sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dash-sweep")
    make_sweep(make_recording(root / "rec", minutes=20), root / "sweep")
    return root / "sweep"


def _best(rows: list[dict], x: str, y: str, metric: str) -> dict[tuple, float]:
    """The highest METRIC per (x, y), by hand."""
    cells: dict[tuple, float] = {}
    for r in rows:
        k = (r[x], r[y])
        cells[k] = max(cells.get(k, float("-inf")), r[metric])
    return cells


def test_load_sweep_reads_the_contract_format(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    assert sweep.params == tuple(GRID) and sweep.objective == "sharpe" and sweep.direction == "max"
    assert sweep.table.height == len(GRID["threshold"]) * len(GRID["window"])
    assert {"pnl", "sharpe", "max_drawdown"} <= set(sweep.metrics)
    assert not {"point", "events", "events_per_s", "wall_s", *GRID} & set(sweep.metrics)


def test_heatmap_cells_are_the_best_per_pair(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    rows = sweep.table.to_dicts()
    extra = pl.DataFrame(rows).with_columns(pl.col("sharpe") - 1.0)  # a worse twin of every point
    twin = type(sweep)(dir=sweep.dir, table=pl.concat([sweep.table, extra]), params=sweep.params,
                       metrics=sweep.metrics, objective=sweep.objective, direction="max")
    cells = heatmap_cells(twin, x="threshold", y="window", metric="sharpe")
    got = {(r["threshold"], r["window"]): r["sharpe"] for r in cells.to_dicts()}
    assert got == _best(rows, "threshold", "window", "sharpe")
    assert set(cells["points"]) == {2}
    low = heatmap_cells(type(sweep)(**{**twin.__dict__, "direction": "min"}), x="threshold", y="window", metric="sharpe")
    assert {(r["threshold"], r["window"]): r["sharpe"] for r in low.to_dicts()} == {
        k: v - 1.0 for k, v in _best(rows, "threshold", "window", "sharpe").items()}


def test_notebook_headless(sweep_dir: Path) -> None:
    from qsframework.dashboards.notebooks.sweep import app

    _, defs = app.run(defs={"inputs": {"dir": str(sweep_dir), "recording": None}})
    assert defs["metric"].value == "sharpe" and (defs["x_param"].value, defs["y_param"].value) == tuple(GRID)
    got = {(r["threshold"], r["window"]): r["sharpe"] for r in defs["cells"].to_dicts()}
    assert got == _best(pl.read_parquet(sweep_dir / "sweep.parquet").to_dicts(), "threshold", "window", "sharpe")


def test_browser_heatmap_and_sortable_table(sweep_dir: Path, tmp_path: Path) -> None:
    table = pl.read_parquet(sweep_dir / "sweep.parquet")
    # started where a folder named qsframework is not the package (a user in a checkout stands
    # beside its source folder): the notebook must still import the installed package
    decoy = tmp_path / "checkout"
    (decoy / "qsframework").mkdir(parents=True)
    (decoy / "qsframework" / "__init__.py").write_text('raise ImportError("the working directory\'s qsframework")\n')
    with dashboard("sweep", str(sweep_dir), cwd=decoy) as served:
        with browser_page(served.url) as (page, requests):
            wait_for_charts(page, 1)
            chart = page.locator(CHART).first
            picture = chart.screenshot()
            shot = screenshot(page, tmp_path / "dashboard-sweep.png", charts=1, full_page=True,
                              clip={"x": 0, "y": 0, "width": 1400, "height": 1050})
            assert shot.stat().st_size > 10_000
            page.locator("select").first.select_option("pnl")  # the metric dropdown
            page.locator(".qsf-heatmap").filter(has_text="best pnl per (threshold, window)").wait_for()
            wait_for_charts(page, 1)
            assert chart.screenshot() != picture  # the heatmap redrew with the other metric
            # the table: every point shown; the pnl header's sort button orders it ascending
            rows = page.locator("tbody tr")
            rows.nth(table.height - 1).wait_for()
            page.locator("thead th").filter(has_text="pnl").first.locator("button").first.click()
            ascending = sorted(table["pnl"].to_list())
            rows.last.filter(has_text=str(ascending[-1])).wait_for()
            rows.first.filter(has_text=str(ascending[0])).wait_for()
            shown = [float(r.split("\t")[3].replace(",", "")) for r in rows.all_inner_texts()]
            assert shown == ascending
        assert requests.all and not requests.outside, requests.outside
        assert served.stop() == 0
