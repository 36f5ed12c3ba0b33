"""The vehicle emulator: a MAVLink v2 quadrotor that flies like ArduCopter SITL, with
SITL-style fault injection (needs the ``mavlink`` extra).

- :mod:`.scenario`: the scenario format (flight, faults on a timeline; bundled TOML files)
- :mod:`.model`: the vehicle model (flight plan, physics, battery, sensors, failsafes)
- :mod:`.telemetry`: the model speaking MAVLink at ArduCopter's stream rates
- :mod:`.transports`: UDP in (scaled) real time, packets, ``.tlog``, the truth file
- :mod:`.runs`: scored anomaly runs (the emulator into the MAVLink source and ``UavAnomaly``)
"""

from .model import BOOT_OFFSET_S, VehicleModel
from .scenario import (
    FAULT_PARAMS,
    LINK_LOSS,
    STREAM_RATES,
    Battery,
    Fault,
    Fence,
    Incident,
    Mission,
    Scenario,
    list_scenarios,
)
from .telemetry import MODES, TICK_S, VehicleEmulator
from .transports import EmulationStats, emulate, parse_target, render, write_tlog, write_truth

__all__ = [
    "BOOT_OFFSET_S", "FAULT_PARAMS", "LINK_LOSS", "MODES", "STREAM_RATES", "TICK_S", "Battery",
    "EmulationStats", "Fault", "Fence", "Incident", "Mission", "Scenario", "VehicleEmulator",
    "VehicleModel", "emulate", "list_scenarios", "parse_target", "render", "write_tlog",
    "write_truth",
]
