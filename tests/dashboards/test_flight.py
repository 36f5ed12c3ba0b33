"""The UAV flight view on a real ``qsf sitl scenario run`` directory (GPS loss at 60 s): run
headless, its detection delays equal an independent computation from truth.json and
alerts.parquet; served by ``qsf dashboard flight``, Chromium draws its charts from localhost."""

from __future__ import annotations

import json
import math
import runpy
import subprocess
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from ..conftest import qsf_cmd
from .browser import browser_page, dashboard, screenshot, wait_for_charts

EARLY_S = 10.0  # how early before the onset an alert may count (qsf sitl scenario run's default)


@pytest.fixture(scope="module")
def flight_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flight") / "gps_loss"
    r = subprocess.run([*qsf_cmd(), "sitl", "scenario", "run", "gps_loss", "--out", str(out), "--speedup", "50"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    return out


def independent_delays(run: Path) -> dict[str, float]:
    """Per injected fault: the first warning/critical alert named as the fault or as one it is
    expected to cause, from EARLY_S before its onset, minus the onset (mission seconds: since
    the recording's first event)."""
    truth = json.loads((run / "truth.json").read_text())
    t0 = duckdb.sql(f"SELECT min(ts_event) FROM read_parquet('{run}/recording/kind=*/*/*.parquet')").fetchall()[0][0]
    alerts = duckdb.sql(f"SELECT name, (ts_event - {t0}) / 1e9 AS s FROM read_parquet('{run}/alerts.parquet') "
                        "WHERE severity IN ('warning', 'critical') ORDER BY ts_event").fetchall()
    out = {}
    for fault in truth["faults"]:
        names = {fault["name"], *fault.get("expect", ())}
        hits = [s for name, s in alerts if name in names and s >= fault["onset_s"] - EARLY_S]
        out[fault["name"]] = round(hits[0] - fault["onset_s"], 3)
    return out


def test_notebook_headless_delays_track_and_fence(flight_dir, monkeypatch):
    monkeypatch.setenv("QSF_DASHBOARD_DIR", str(flight_dir))
    notebook = resources.files("qsframework.dashboards").joinpath("notebooks/flight.py")
    outputs, defs = runpy.run_path(str(notebook))["app"].run()
    expected = independent_delays(flight_dir)
    assert expected and dict(zip(defs["faults"]["fault"], defs["faults"]["delay_s"])) == expected
    headline = outputs[2].text
    for fault, delay in expected.items():
        assert f"fault <strong>{fault}</strong> at 60.0 s: detected as" in headline and f"{delay:.3f} s" in headline
    # the track is the recording's positions (with a fix); the fence circle lies at its radius from home
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{flight_dir}/recording/kind=position/*/*.parquet') "
                   "WHERE lat <> 0 OR lon <> 0").fetchall()[0][0]
    assert defs["track"].height == n
    (lat0, lon0), fence = defs["home"], defs["fence"]
    assert (lat0, lon0) == (-35.363262, 149.165237)
    for lat, lon in fence.select("lat", "lon").iter_rows():
        dn = math.radians(lat - lat0) * 6_371_008.8
        de = math.radians(lon - lon0) * 6_371_008.8 * math.cos(math.radians(lat0))
        assert abs(math.hypot(dn, de) - 300.0) < 1.0  # the scenario's default fence radius
    kinds = {p: set(df["series"]) for p, df in defs["panels"].items()}
    assert kinds["ekf"] >= {"velocity_variance", "pos_horiz_variance"} and kinds["gps"] == {"satellites", "hdop"}


def test_flight_view_in_the_browser(flight_dir, tmp_path):
    with dashboard("flight", str(flight_dir)) as dash:
        with browser_page(dash.url) as (page, requests):
            wait_for_charts(page, 2)  # the track and the timeline
            page.get_by_text("detected as").first.wait_for()
            page.get_by_role("heading", name="injected faults and detection delays").wait_for()
            shot = screenshot(page, tmp_path / "dashboard-flight.png", charts=2)
        assert dash.stop() == 0
    assert requests.all and not requests.outside, requests.outside
    assert shot.stat().st_size > 10_000
