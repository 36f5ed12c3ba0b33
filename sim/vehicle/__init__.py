"""The vehicle emulator: a MAVLink v2 quadrotor that flies like ArduCopter SITL, with
SITL-style fault injection (needs the ``mavlink`` extra).

- :mod:`.scenario`: the scenario format (flight, faults on a timeline; bundled TOML files)
- :mod:`.model`: the vehicle model (state, flight plan, failsafes, fence)
- :mod:`.physics`: its physics steps (kinematics, attitude, battery, sensors)
- :mod:`.telemetry`: the model speaking MAVLink at ArduCopter's stream rates
- :mod:`.transports`: UDP in (scaled) real time, packets, ``.tlog``, the truth file
- :mod:`.runs`: scored anomaly runs (the emulator into the MAVLink source and ``UavAnomaly``)
"""

from importlib import import_module
from typing import Any

#: where each public name lives; imported on first use (PEP 562), so that registering the
#: ``qsf sitl`` commands (this package's ``commands`` module) needs no pymavlink
_WHERE = {
    "model": ("BOOT_OFFSET_S", "VehicleModel"),
    "scenario": ("FAULT_PARAMS", "LINK_LOSS", "STREAM_RATES", "Battery", "Fault", "Fence",
                 "Incident", "Mission", "Scenario", "list_scenarios"),
    "telemetry": ("MODES", "TICK_S", "VehicleEmulator"),
    "transports": ("EmulationStats", "emulate", "parse_target", "render", "write_tlog",
                   "write_truth"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
