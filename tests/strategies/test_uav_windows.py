"""UavAnomaly on emulated telemetry through the window route, bit for bit against the per-run
route: the emulator's ``multi`` scenario (GPS glitch, vibration, link loss, GPS loss) flown by
one vehicle while a second flies the clean scenario on the same link, written as a tlog,
imported per vehicle, and backtested."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qsframework.adapters.mavlink.tlog import import_tlog
from qsframework.backtest import run_backtest
from qsframework.loader import load_strategy
from qsframework.recording import Recording, RecordingWriter
from qsframework.sim.vehicle import Scenario
from qsframework.sim.vehicle.telemetry import VehicleEmulator

from ..conftest import ROOT
from ..core.multikind import reference, windowed

UAV = load_strategy(str(ROOT / "strategies" / "uav_anomaly.py") + ":UavAnomaly")
START_US = 1_767_571_200_000_000


def two_vehicle_tlog(path: Path) -> None:
    """Vehicle 1 flies ``multi``, vehicle 2 ``clean``, their packets interleaved in time."""
    emus = [VehicleEmulator(Scenario.load(name), system_id=i + 1, seed=i, start_unix_us=START_US)
            for i, name in enumerate(("multi", "clean"))]
    pack = struct.Struct(">Q").pack
    with path.open("wb") as f:
        for frames in zip(*(e.frames(duration=200) for e in emus)):
            for (t, packets), emu in zip(frames, emus):
                ts_us = START_US + round(t * 1e6)
                f.write(b"".join(b for p in packets for b in (pack(ts_us), p)))
                emu.stamp(t, ts_us * 1000)


@pytest.fixture(scope="module")
def flight(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    tmp = tmp_path_factory.mktemp("uav-windows")
    tlog = tmp / "two.tlog"
    two_vehicle_tlog(tlog)
    with RecordingWriter(tmp / "rec") as writer:
        for sid in (1, 2):
            import_tlog(tlog, out=tmp / f"v{sid}", system_id=sid)
            for part in sorted((tmp / f"v{sid}").glob("kind=*/date=*/*.parquet")):
                writer.write(part.parent.parent.name.split("=", 1)[1], pq.read_table(part))
    return Recording(tmp / "rec")


def kind_tables(rec: Recording) -> dict[str, pa.Table]:
    """Each kind UavAnomaly reads, in total order (the per-kind reader)."""
    return {k: pa.Table.from_batches(list(rec.stream(k))) for k in UAV.kinds if k in rec.kinds}


@pytest.fixture(scope="module")
def want(flight: Recording) -> dict:
    """The per-run route's outputs."""
    return reference(UAV, kind_tables(flight))


def test_the_flight_exercises_the_detectors_and_interleaves(flight, want):
    tables = kind_tables(flight)
    assert len(tables) >= 7
    assert all(set(t.column("key").to_pylist()) == {"1", "2"} for k, t in tables.items() if k != "statustext")
    names = set(want["alerts"].column("name").to_pylist())
    assert {"gps_glitch", "vibration_high", "link_loss", "link_restored", "gps_loss"} <= names
    assert set(want["alerts"].column("key").to_pylist()) == {"1"}  # the clean vehicle stays quiet


@pytest.mark.parametrize("size", [1, 7, 65_536])
def test_windows_equal_the_runs_one_by_one(flight, want, size):
    got = windowed(UAV, kind_tables(flight), batch_size=size)
    for name in ("signals", "alerts", "events_in", "duplicates"):
        assert got[name] == want[name] if isinstance(want[name], int) else got[name].equals(want[name]), name


@pytest.mark.parametrize("size", [7, 65_536])
def test_the_backtest_equals_the_runs_one_by_one(flight, want, size):
    res = run_backtest(UAV, flight, batch_size=size)
    assert res.events_in == want["events_in"] == flight.rows(UAV.kinds)
    assert res.tables["signals"].equals(want["signals"])
    assert res.tables["alerts"].equals(want["alerts"])
