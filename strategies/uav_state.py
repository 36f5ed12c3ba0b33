"""The per-vehicle state of :class:`~qsframework.strategies.uav_anomaly.UavAnomaly`'s detectors:
one :class:`~qsframework.alerting.Condition` per anomaly (its episodes under the alert
policy), the timers and the last values the detectors compare against."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from qsframework.alerting import Condition
from qsframework.strategies.uav_battery import BatteryEstimate, DrawEstimate

Severity = Literal["warning", "critical", "info"]


@dataclass(frozen=True, slots=True)
class Onset:
    """One report to emit: a signal with ``value`` and ``attrs``, and an alert with ``text``;
    ``tag`` tells apart the dedup keys of anomalies of one vehicle (e.g. its battery). An
    onset, an escalation, a ``<name>_cleared`` info or a flapping summary (attrs
    ``episodes``). A report with ``alert`` False is a signal only (battery health)."""

    name: str
    severity: Severity
    text: str
    value: float | None
    attrs: dict[str, Any] = field(default_factory=dict)
    tag: str = ""
    alert: bool = True


@dataclass(slots=True)
class Hold:
    """Since when a condition has been continuously true (None while it is false)."""

    since: int | None = None

    def held(self, now: int, cond: bool) -> int:
        """Nanoseconds the condition has held at ``now``; -1 when it is false."""
        if not cond:
            self.since = None
            return -1
        if self.since is None:
            self.since = now
        return now - self.since


Episode = Condition
"""The former name of a detector's episode state."""


@dataclass(slots=True)
class Battery:
    low: Hold = field(default_factory=Hold)
    crt: Hold = field(default_factory=Hold)
    alert: Condition = field(default_factory=Condition)
    sag: Condition = field(default_factory=Condition)
    history: deque[tuple[int, float]] = field(default_factory=deque)  # (ts, volts), sag window
    model: BatteryEstimate = field(default_factory=BatteryEstimate)
    draw: DrawEstimate = field(default_factory=DrawEstimate)
    predicted: Condition = field(default_factory=Condition)


@dataclass(slots=True)
class Vehicle:
    key: str
    armed: bool = False
    home: tuple[float, float, float | None] | None = None  # lat, lon, alt AMSL
    geo: list[tuple[str, str]] = field(default_factory=list)  # (cause, text) of a breach now
    status_breach: int | None = None  # FENCE_STATUS breach_type while breached
    distance: float | None = None  # from home, m
    fence: Condition = field(default_factory=Condition)
    predicted: Condition = field(default_factory=Condition)
    batteries: dict[int, Battery] = field(default_factory=dict)
    gps_loss: Condition = field(default_factory=Condition)
    gps_degraded: Condition = field(default_factory=Condition)
    gps_glitch: Condition = field(default_factory=Condition)
    last_fix: tuple[int, float, float] | None = None  # ts, lat, lon
    vibe: Condition = field(default_factory=Condition)
    clip_run: int = 0  # consecutive samples with clipping increments
    clip_sum: int = 0  # their increments
    clipping: Condition = field(default_factory=Condition)
    ekf_hold: Hold = field(default_factory=Hold)
    ekf: Condition = field(default_factory=Condition)
    last_heartbeat: int | None = None
    lost_at: int | None = None

    def battery(self, bid: int) -> Battery:
        bat = self.batteries.get(bid)
        if bat is None:
            bat = self.batteries[bid] = Battery()
        return bat

    def arm(self, armed: bool) -> None:
        """A heartbeat's armed state; home is set again at the next arming."""
        if armed != self.armed:
            self.armed = armed
            if not armed:
                self.home, self.geo, self.distance = None, [], None

    def conditions(self) -> list[tuple[str, str, Condition]]:
        """(anomaly name, dedup tag, state) of every condition of this vehicle."""
        out = [("fence_breach", "", self.fence), ("fence_predicted", "", self.predicted),
               ("gps_loss", "", self.gps_loss), ("gps_degraded", "", self.gps_degraded),
               ("gps_glitch", "", self.gps_glitch), ("vibration_high", "", self.vibe),
               ("vibration_clipping", "", self.clipping), ("ekf_variance", "", self.ekf)]
        for bid, bat in self.batteries.items():
            out += [("battery_low", f":{bid}", bat.alert), ("battery_sag", f":{bid}", bat.sag),
                    ("battery_predicted_low", f":{bid}", bat.predicted)]
        return out
