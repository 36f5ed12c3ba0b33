"""The review: every check over one flight, ``review.json`` written (see the README for its schema)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import checks_nav, checks_power, checks_sensors, checks_vehicle
from .flight import Flight, Progress, load_flight
from .report import Check, document, write_review

CHECKS: tuple[Callable[[Flight], Check], ...] = (
    checks_power.battery, checks_power.battery_sag, checks_power.vcc, checks_power.brownout,
    checks_vehicle.vibration, checks_vehicle.clipping, checks_nav.gps, checks_nav.gps_glitch, checks_nav.ekf,
    checks_nav.link, checks_nav.fence, checks_vehicle.crash, checks_vehicle.motor_balance, checks_vehicle.thrust,
    checks_sensors.compass, checks_sensors.imu_mismatch, checks_vehicle.parameters,
)
"""The checks, in the order the report lists them."""


def review(path: str | Path, *, out: str | Path, keep: str | Path | None = None,
           overrides: Mapping[str, str] | None = None, detectors: bool = True,
           progress: Progress | None = None) -> dict[str, Any]:
    """Review the flight in ``path`` (tlog, DataFlash or recording) and write ``out/review.json``;
    returns its content. ``keep`` keeps the imported recording there; without ``detectors``
    UavAnomaly does not run (its alerts are left out)."""
    flight = load_flight(path, keep=keep, overrides=overrides, detectors=detectors, progress=progress)
    doc = document(flight, [check(flight) for check in CHECKS])
    write_review(Path(out), doc)
    return doc
