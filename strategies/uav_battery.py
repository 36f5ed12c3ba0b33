"""Online battery model of :class:`~qsframework.strategies.uav_anomaly.UavAnomaly`: the pack's
internal resistance and resting voltage estimated from voltage and current, and the time at
which the loaded voltage will fall below ``batt_low_volt`` (ArduPilot's failsafe condition).

Resistance: least squares of voltage steps on current steps between consecutive samples
(``-dV = R dI``: the resting voltage barely moves in a sample's time), with exponential
forgetting. Resting voltage ``V + I R``, its trend an exponentially weighted linear
regression over ``batt_predict`` of event time; the loaded voltage ahead is that trend minus
the recent mean current times ``R``. Pure arithmetic on event time: deterministic.

Capacity (:class:`DrawEstimate`): with ``batt_capacity`` (BATT_CAPACITY, mAh) known, the
consumed capacity is what the vehicle reports as remaining (ArduPilot's ``remaining`` is
``100 (1 - consumed / BATT_CAPACITY)``); at the mean current over ``batt_predict`` the
reserve is reached in ``(remaining - reserve) / 100 x capacity x 3.6 / amps`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import exp

NS = 1_000_000_000
FORGET = 0.99
"""Per-sample forgetting of the resistance estimate (about the last 100 current steps)."""
MIN_EXCITATION = 4.0
"""A^2 of (forgotten) current steps before the resistance estimate counts."""
MAX_GAP_NS = 5 * NS
"""Samples further apart than this are not a current step (the link was down)."""
R_RANGE = (0.0, 1.0)
"""Plausible pack resistance, ohm (an estimate outside is clamped)."""


@dataclass(slots=True)
class BatteryEstimate:
    """The running sums of one battery's estimates (see the module docstring)."""

    last_ts: int | None = None
    last_v: float = 0.0
    last_i: float = 0.0
    r_num: float = 0.0  # sum of -dV dI, forgotten
    r_den: float = 0.0  # sum of dI^2, forgotten
    t0: int | None = None  # time origin of the trend regression
    s0: float = 0.0  # weights
    s1: float = 0.0  # weighted t
    s2: float = 0.0  # weighted t^2
    sy: float = 0.0  # weighted resting voltage
    sty: float = 0.0
    si: float = 0.0  # weighted current
    next_report: int | None = None  # when to emit the resistance signal again

    @property
    def resistance(self) -> float | None:
        """Ohms, once the current has moved enough to tell (None before)."""
        if self.r_den < MIN_EXCITATION:
            return None
        return min(R_RANGE[1], max(R_RANGE[0], self.r_num / self.r_den))

    def update(self, now: int, volt: float, current: float, horizon: int) -> None:
        """One sample: voltage (V) and current (A, >= 0) at ``now`` (ns)."""
        last = self.last_ts
        if last is not None and 0 < now - last <= MAX_GAP_NS:
            di = current - self.last_i
            self.r_num = FORGET * self.r_num - (volt - self.last_v) * di
            self.r_den = FORGET * self.r_den + di * di
        self.last_ts, self.last_v, self.last_i = now, volt, current
        r = self.resistance
        if r is None:
            return
        if self.t0 is None or last is None:
            self.t0 = now
        else:  # forget with the time passed: weights fall by e every horizon
            k = exp(-(now - last) / horizon)
            self.s0, self.s1, self.s2 = k * self.s0, k * self.s1, k * self.s2
            self.sy, self.sty, self.si = k * self.sy, k * self.sty, k * self.si
        t = (now - self.t0) / NS
        rest = volt + current * r
        self.s0 += 1.0
        self.s1 += t
        self.s2 += t * t
        self.sy += rest
        self.sty += t * rest
        self.si += current

    def seconds_to(self, now: int, low_volt: float, horizon: int) -> tuple[float, float, float] | None:
        """(seconds until the loaded voltage is below ``low_volt``, the loaded voltage now,
        its trend in V/s), or None while the trend spans less than ``horizon``
        or does not fall. Zero when it is already below."""
        r, t0 = self.resistance, self.t0
        if r is None or t0 is None or self.s0 < 2.0:
            return None
        mean_t, mean_y = self.s1 / self.s0, self.sy / self.s0
        var_t = self.s2 / self.s0 - mean_t * mean_t
        span = horizon / NS
        if var_t < span * span / 12.0:  # as samples spread evenly over `span` seconds
            return None
        slope = (self.sty / self.s0 - mean_t * mean_y) / var_t
        loaded = mean_y + slope * ((now - t0) / NS - mean_t) - (self.si / self.s0) * r
        if loaded < low_volt:
            return 0.0, loaded, slope
        if slope >= 0.0:
            return None
        return (loaded - low_volt) / -slope, loaded, slope


@dataclass(slots=True)
class DrawEstimate:
    """The pack's mean current over about ``batt_predict`` of event time (time-weighted,
    exponentially forgotten), for the capacity predictor: how long until the consumed
    capacity reaches the reserve at this draw."""

    last_ts: int | None = None
    amp_s: float = 0.0  # sum of current x seconds, forgotten
    secs: float = 0.0  # sum of seconds, forgotten

    def update(self, now: int, current: float, horizon: int) -> None:
        """One sample: current (A, >= 0) at ``now`` (ns), drawn since the previous one."""
        last = self.last_ts
        if last is not None and 0 < now - last <= MAX_GAP_NS:
            dt = (now - last) / NS
            k = exp(-(now - last) / horizon)
            self.amp_s = k * self.amp_s + current * dt
            self.secs = k * self.secs + dt
        self.last_ts = now

    def seconds_to(self, remaining_pct: float, reserve_pct: float, capacity_mah: float,
                   horizon: int) -> tuple[float, float] | None:
        """(seconds until ``remaining_pct`` of ``capacity_mah`` falls to ``reserve_pct`` at
        the mean draw, that draw in A), or None while the draw spans less than half of
        ``horizon`` (weights summing to half of it) or nothing is drawn. Zero at or below
        the reserve."""
        if self.secs < horizon / NS / 2 or self.amp_s <= 0.0:
            return None
        amps = self.amp_s / self.secs
        left_mah = (remaining_pct - reserve_pct) / 100.0 * capacity_mah
        return max(0.0, left_mah * 3.6 / amps), amps
