"""The scenario format of the vehicle emulator: a flight (home, mission, fence, battery) and
its faults on a timeline, read from TOML; and :class:`Incident`, a fault as it happened.

Faults are ArduPilot SITL parameters (:data:`FAULT_PARAMS`) plus ``LINK_LOSS``, the emulator's
own telemetry blackout. The bundled scenarios are package data (``scenarios/*.toml``, read
through ``importlib.resources``; :func:`list_scenarios`); a user's own is any TOML file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from qsframework.errors import UserError

SCENARIOS: Traversable = resources.files("qsframework.sim.vehicle") / "scenarios"
"""The bundled scenario files."""

STREAM_RATES: dict[str, float] = {
    "HEARTBEAT": 1.0,
    "GLOBAL_POSITION_INT": 10.0,
    "ATTITUDE": 10.0,
    "GPS_RAW_INT": 5.0,
    "SYS_STATUS": 2.0,
    "BATTERY_STATUS": 1.0,
    "VIBRATION": 2.0,
    "EKF_STATUS_REPORT": 2.0,
    "FENCE_STATUS": 1.0,
    "SYSTEM_TIME": 1.0,
}
"""Messages per mission second (STATUSTEXT on events); a scenario's ``[rates]`` overrides these."""

LINK_LOSS = "LINK_LOSS"
"""Emulator-level fault (not an ArduPilot parameter): value 1 = no packet leaves the vehicle."""
_MOTOR_EXPECT = ("attitude_error", "vibration_high", "ekf_variance", "altitude_loss")
_GPS, _BATT = frozenset({"GPS_RAW_INT"}), frozenset({"SYS_STATUS", "BATTERY_STATUS"})
# param -> (anomaly name, other anomalies a detector may also report, messages carrying it)
FAULT_PARAMS: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {
    "SIM_BATT_VOLTAGE": ("battery_low", ("battery_sag",), _BATT),
    "SIM_GPS1_ENABLE": ("gps_loss", ("ekf_variance",), _GPS),
    "SIM_GPS1_GLTCH_X": ("gps_glitch", ("ekf_variance",), _GPS),
    "SIM_GPS1_GLTCH_Y": ("gps_glitch", ("ekf_variance",), _GPS),
    "SIM_ACC1_RND": ("vibration_high", (), frozenset({"VIBRATION"})),
    "SIM_ENGINE_FAIL": ("motor_failure", _MOTOR_EXPECT, frozenset({"ATTITUDE"})),
    "SIM_ENGINE_MUL": ("motor_failure", _MOTOR_EXPECT, frozenset({"ATTITUDE"})),
    LINK_LOSS: ("link_loss", (), frozenset()),  # the first *dropped* message marks the onset
}
"""Fault parameters the emulator understands. Units as in ArduPilot: SIM_BATT_VOLTAGE is the
full-pack voltage (V; the pack's open-circuit curve is scaled by value / full), SIM_GPS1_ENABLE
0/1, SIM_GPS1_GLTCH_X/Y degrees of latitude/longitude added to the GPS fix, SIM_ACC1_RND the
motor vibration amplitude (m/s^2, added to the VIBRATION levels), SIM_ENGINE_FAIL a motor
bitmask whose thrust is multiplied by SIM_ENGINE_MUL (default 0 = dead, as in ArduPilot)."""


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A SITL parameter set to ``value`` at mission time ``at_s`` (for ``duration_s``, or for
    good), ramped linearly from its default over ``ramp_s``; ``also`` sets companion parameters
    at the same time (e.g. SIM_ENGINE_MUL with SIM_ENGINE_FAIL). ``name`` is the anomaly a
    detector should report; ``expect`` others it may report as well."""

    param: str
    value: float
    at_s: float
    duration_s: float | None = None
    name: str = ""
    ramp_s: float = 0.0
    also: tuple[tuple[str, float], ...] = ()
    expect: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for p in (self.param, *(k for k, _ in self.also)):
            if p not in FAULT_PARAMS:
                raise UserError(f"unknown fault parameter {p!r}; known: {', '.join(FAULT_PARAMS)}")
        bad_duration = self.duration_s is not None and self.duration_s <= 0
        if self.at_s < 0 or self.ramp_s < 0 or bad_duration:
            raise UserError(f"fault {self.param}: at_s and ramp_s must be >= 0, duration_s > 0")
        default_name, default_expect, _ = FAULT_PARAMS[self.param]
        for attr in ("value", "at_s", "ramp_s"):
            object.__setattr__(self, attr, float(getattr(self, attr)))
        if self.duration_s is not None:
            object.__setattr__(self, "duration_s", float(self.duration_s))
        if not self.name:
            object.__setattr__(self, "name", default_name)
        if self.expect is None:
            object.__setattr__(self, "expect", default_expect)

    @property
    def end_s(self) -> float | None:
        return None if self.duration_s is None else self.at_s + self.duration_s


@dataclass(frozen=True, kw_only=True)
class Mission:
    """Waypoints are (north_m, east_m) or (north_m, east_m, alt_m) from home; alt is relative."""

    altitude_m: float = 30.0
    waypoints: tuple[tuple[float, ...], ...] = ((100.0, 0.0), (100.0, 100.0), (0.0, 100.0))
    cruise_speed: float = 8.0
    laps: int = 1
    rtl_alt_m: float = 15.0


@dataclass(frozen=True, kw_only=True)
class Fence:
    """Circle of ``radius_m`` around home, ceiling ``alt_max_m``, optional inclusion polygon of
    (north_m, east_m) vertices. A breach switches to RTL (FENCE_ACTION 1)."""

    radius_m: float = 300.0
    alt_max_m: float = 100.0
    polygon: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Battery:
    """LiPo pack: ``cells`` in series, capacity, hover current and its resistances: the
    ohmic ``resistance_ohm`` (a fresh 3S pack about 25 mOhm, an aged one 3x that; it rises
    toward empty) and a polarisation branch (``polarization_ohm`` reached with time constant
    ``polarization_s``: the sag that deepens under a sustained load and recovers after it)."""

    cells: int = 3
    capacity_mah: float = 5200.0
    resistance_ohm: float = 0.025
    polarization_ohm: float = 0.012
    polarization_s: float = 20.0
    hover_current_a: float = 12.0
    low_volt: float = 10.5  # BATT_LOW_VOLT (failsafe after 10 s below: BATT_LOW_TIMER)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One flight: home (lat deg, lon deg, alt m AMSL), mission, fence, battery, faults."""

    name: str
    description: str = ""
    duration_s: float = 180.0
    home: tuple[float, float, float] = (-35.363262, 149.165237, 584.0)  # ArduPilot SITL's CMAC
    ground_s: float = 5.0
    mission: Mission = field(default_factory=Mission)
    fence: Fence = field(default_factory=Fence)
    battery: Battery = field(default_factory=Battery)
    faults: tuple[Fault, ...] = ()
    rates: tuple[tuple[str, float], ...] = ()

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A bundled scenario by name (see :func:`list_scenarios`) or a TOML file by path."""
        given = Path(name_or_path)
        path: Path | Traversable = given
        name = given.stem
        if not (given.suffix == ".toml" or given.is_file()):
            path, name = SCENARIOS / f"{name_or_path}.toml", str(name_or_path)
            if not path.is_file():
                known = ", ".join(list_scenarios())
                raise UserError(f"unknown scenario {str(name_or_path)!r}; bundled: {known}")
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise UserError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"scenario {path} is not valid TOML: {exc}") from None
        return cls.from_mapping(data, name=name)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, name: str) -> Scenario:
        """Build from a parsed TOML document; unknown keys are an error (typos fail loudly)."""
        try:
            d = dict(data)
            home = d.pop("home", None)
            faults = tuple(_fault(f) for f in d.pop("faults", ()))
            mission = d.pop("mission", {})
            fence = d.pop("fence", {})
            battery = d.pop("battery", {})
            rates = d.pop("rates", {})
            for msg in rates:
                if msg not in STREAM_RATES:
                    known = ", ".join(STREAM_RATES)
                    raise UserError(f"scenario {name}: no stream {msg!r}; streams: {known}")
            if "waypoints" in mission:
                wps = tuple(tuple(float(x) for x in wp) for wp in mission["waypoints"])
                mission = {**mission, "waypoints": wps}
            if fence.get("polygon") is not None:
                polygon = tuple((float(n), float(e)) for n, e in fence["polygon"])
                fence = {**fence, "polygon": polygon}
            if home is not None:
                d["home"] = (float(home["lat"]), float(home["lon"]), float(home["alt"]))
            scenario = cls(
                name=d.pop("name", name), mission=Mission(**mission), fence=Fence(**fence),
                battery=Battery(**battery), faults=faults,
                rates=tuple((k, float(v)) for k, v in rates.items()), **d,
            )
        except UserError:
            raise
        except (TypeError, KeyError, ValueError) as exc:
            raise UserError(f"scenario {name}: {exc}") from None
        m = scenario.mission
        if not m.waypoints or any(len(wp) not in (2, 3) for wp in m.waypoints):
            raise UserError(f"scenario {name}: a waypoint is [north_m, east_m] or [n, e, alt_m]")
        if min(scenario.duration_s, m.cruise_speed, m.laps, scenario.battery.cells) <= 0:
            raise UserError(f"scenario {name}: duration_s, cruise_speed, laps, cells must be > 0")
        return scenario


def _fault(d: Mapping[str, Any]) -> Fault:
    d = dict(d)
    also = tuple((k, float(v)) for k, v in d.pop("also", {}).items())
    expect = tuple(d.pop("expect")) if "expect" in d else None
    return Fault(also=also, expect=expect, **d)


def list_scenarios() -> list[str]:
    """Names of the bundled scenarios."""
    return sorted(p.name.removesuffix(".toml") for p in SCENARIOS.iterdir()
                  if p.name.endswith(".toml"))


@dataclass
class Incident:
    """An anomaly as it happened. Mission times in s; wall times unix ns, stamped by the sender
    when the first message showing it went out (for link loss: when the first was dropped)."""

    name: str
    param: str
    value: float
    also: dict[str, float]
    expect: tuple[str, ...]
    planned_at_s: float | None
    onset_s: float
    end_s: float | None
    messages: frozenset[str]
    onset_msg: str | None = None
    onset_msg_s: float | None = None
    onset_wall_ns: int | None = None
    end_wall_ns: int | None = None
    failsafe_s: float | None = None  # when the autopilot's failsafe acted (a battery run down)

    def as_json(self, last_t: float) -> dict[str, Any]:
        ended = self.end_s is not None and self.end_s <= last_t
        return {
            "name": self.name, "param": self.param, "value": self.value, "also": self.also,
            "expect": list(self.expect), "planned_at_s": self.planned_at_s,
            "onset_s": round(self.onset_s, 3), "onset_msg": self.onset_msg,
            "onset_msg_s": self.onset_msg_s, "onset_wall_ns": self.onset_wall_ns,
            "end_s": round(self.end_s, 3) if ended and self.end_s is not None else None,
            "end_wall_ns": self.end_wall_ns if ended else None,
        } | ({} if self.failsafe_s is None else {"failsafe_s": round(self.failsafe_s, 3)})
