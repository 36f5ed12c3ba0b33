"""Loaders of the UAV flight view: a telemetry recording, or a ``qsf sitl scenario run``
directory (its ``recording/``, ``alerts.parquet``, ``truth.json``), read with DuckDB.

Times are mission seconds: seconds since the recording's first event (the emulator's first
message is mission time 0, so these are the seconds ``report.json`` uses). Home and the
fence come from the bundled scenario ``truth.json`` names, else home is the first position.
Detection delays are scored as ``qsf sitl scenario run`` scores them (:func:`score`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq

from ..errors import UserError
from ..geo import offset_latlon
from ..sim.vehicle.scenario import Scenario

MAX_POINTS = 4000  # per series: every n-th row past it, so the browser never gets millions
SERIES = {  # panel -> (kind, columns)
    "altitude": ("position", ("relative_alt",)),
    "battery": ("battery", ("voltage", "current")),
    "gps": ("gps", ("satellites", "hdop")),
    "vibration": ("vibration", ("vibe_x", "vibe_y", "vibe_z")),
    "ekf": ("ekf", ("velocity_variance", "pos_horiz_variance", "pos_vert_variance", "compass_variance")),
}


@dataclass(frozen=True, kw_only=True)
class Flight:
    """One flight's files: ``recording`` (the telemetry), and for a scenario run its alerts,
    truth and scenario; ``t0_ns`` is mission time 0."""

    recording: Path
    t0_ns: int
    alerts: Path | None = None
    truth: dict[str, Any] | None = None
    scenario: Scenario | None = None


def load_flight(path: str | Path) -> Flight:
    """A scenario run directory (``recording/`` inside) or a telemetry recording directory."""
    root = Path(path)
    recording = root / "recording" if (root / "recording" / "recording.json").is_file() else root
    if not (recording / "recording.json").is_file():
        raise UserError(f"flight {path}: neither a recording nor a qsf sitl scenario run directory")
    glob = _glob(recording, "position")
    t0 = duckdb.sql(f"SELECT min(ts_event) FROM read_parquet('{_glob(recording, '*')}')").fetchall()[0][0]
    if t0 is None or not list(recording.glob("kind=position/*/*.parquet")):
        raise UserError(f"flight {path}: no position telemetry in {glob}")
    truth_path = root / "truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
    scenario = None
    if truth is not None and truth.get("scenario"):
        try:
            scenario = Scenario.load(truth["scenario"])
        except UserError:  # a scenario of the user's own file: no home/fence from it
            scenario = None
    alerts = root / "alerts.parquet"
    return Flight(recording=recording, t0_ns=int(t0), alerts=alerts if alerts.exists() else None,
                  truth=truth, scenario=scenario)


def _glob(recording: Path, kind: str) -> str:
    return str(recording / f"kind={kind}" / "*" / "*.parquet").replace("'", "''")


def _has(flight: Flight, kind: str) -> bool:
    return any(flight.recording.glob(f"kind={kind}/*/*.parquet"))


def load_series(flight: Flight, kind: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """``columns`` of ``kind`` over mission time (every n-th row past :data:`MAX_POINTS`)."""
    if not _has(flight, kind):
        return pl.DataFrame(schema={"mission_s": pl.Float64, **dict.fromkeys(columns, pl.Float64)})
    cols = ", ".join(f"{c}::DOUBLE AS {c}" for c in columns)
    sql = (f"SELECT (ts_event - {flight.t0_ns}) / 1e9 AS mission_s, {cols} FROM "
           f"(SELECT *, row_number() OVER (ORDER BY ts_event, seq) - 1 AS i, count(*) OVER () AS n "
           f"FROM read_parquet('{_glob(flight.recording, kind)}')) "
           f"WHERE i % greatest(1, ceil(n / {MAX_POINTS})::BIGINT) = 0 ORDER BY mission_s")
    return duckdb.sql(sql).pl()


def load_panels(flight: Flight) -> dict[str, pl.DataFrame]:
    """Every panel of :data:`SERIES`, in long form (mission_s, series, value) for the charts."""
    out = {}
    for panel, (kind, columns) in SERIES.items():
        wide = load_series(flight, kind, columns)
        out[panel] = wide.unpivot(index="mission_s", on=list(columns), variable_name="series", value_name="value")
    return out


def load_track(flight: Flight) -> pl.DataFrame:
    """The track: mission_s, lat, lon, relative_alt (positions with a fix)."""
    track = load_series(flight, "position", ("lat", "lon", "relative_alt"))
    return track.filter((pl.col("lat") != 0) | (pl.col("lon") != 0))


def home_and_fence(flight: Flight) -> tuple[tuple[float, float], pl.DataFrame]:
    """Home (lat, lon), and the fence as outlines: (shape, order, lat, lon) rows for the
    circle (every 5 degrees) and, where the scenario has one, the inclusion polygon."""
    rows: list[dict[str, Any]] = []
    if flight.scenario is not None:
        lat0, lon0 = flight.scenario.home[0], flight.scenario.home[1]
        fence = flight.scenario.fence
        for i in range(73):
            a = math.radians(i * 5)
            lat, lon = offset_latlon(lat0, lon0, fence.radius_m * math.cos(a), fence.radius_m * math.sin(a))
            rows.append({"shape": f"fence radius {fence.radius_m:g} m", "order": i, "lat": lat, "lon": lon})
        for i, (n, e) in enumerate([*(fence.polygon or ()), *(fence.polygon or ())[:1]]):
            lat, lon = offset_latlon(lat0, lon0, n, e)
            rows.append({"shape": "fence polygon", "order": i, "lat": lat, "lon": lon})
    else:
        first = load_track(flight).head(1)
        lat0, lon0 = (first["lat"][0], first["lon"][0]) if first.height else (0.0, 0.0)
    schema = {"shape": pl.Utf8, "order": pl.Int64, "lat": pl.Float64, "lon": pl.Float64}
    return (lat0, lon0), pl.DataFrame(rows, schema=schema)


def load_flight_alerts(flight: Flight) -> pl.DataFrame:
    """The run's alerts on the mission timeline: mission_s, name, severity, text."""
    if flight.alerts is None:
        return pl.DataFrame(schema={"mission_s": pl.Float64, "name": pl.Utf8, "severity": pl.Utf8, "text": pl.Utf8})
    return duckdb.sql(f"SELECT (ts_event - {flight.t0_ns}) / 1e9 AS mission_s, name, severity, text "
                      f"FROM read_parquet('{str(flight.alerts).replace(chr(39), chr(39) * 2)}') "
                      f"ORDER BY ts_event, seq").pl()


def load_faults(flight: Flight) -> pl.DataFrame:
    """The injected faults (truth.json) and how they were detected: fault, onset_s, end_s,
    alert (the first that counts), alert_s, delay_s (alert_s - onset_s), in_time."""
    schema = {"fault": pl.Utf8, "onset_s": pl.Float64, "end_s": pl.Float64, "alert": pl.Utf8,
              "alert_s": pl.Float64, "delay_s": pl.Float64, "in_time": pl.Boolean}
    if flight.truth is None or flight.alerts is None:
        return pl.DataFrame(schema=schema)
    # a scored run (truth.json) is the emulator's, which needs the mavlink extra: imported
    # here, so the other dashboards need no pymavlink
    from ..sim.vehicle.model import BOOT_OFFSET_S
    from ..sim.vehicle.runs import score

    report = score(flight.truth, pq.read_table(flight.alerts).to_pylist(), epoch_ns=flight.t0_ns - int(BOOT_OFFSET_S * 1e9))
    rows = [{"fault": f["fault"], "onset_s": f["onset_s"], "end_s": f["end_s"], "alert": f["alert"],
             "alert_s": f["alert_s"], "delay_s": f["latency_s"], "in_time": f["in_time"]} for f in report["faults"]]
    return pl.DataFrame(rows, schema=schema)
