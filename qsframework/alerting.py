"""Alert policy: when a condition measured on a stream becomes an alert an operator can live with.

A :class:`Condition` (the state of one condition of one key) is fed the level its measurement
shows at each sample (0 clear, 1 warning, 2 critical) and whether it still *holds* within
the hysteresis margin (:func:`band` computes both from a value and its thresholds). Under an
:class:`AlertPolicy` it enters an episode once bad for ``persistence``, raises one alert per
episode and one per escalation, ends the episode after ``clear_time`` of not holding (one
``cleared`` transition), and summarises a condition that keeps flapping: past ``flap_count``
episodes within ``flap_window`` further episodes are counted, not alerted, and reported as one
``summary`` per window. Only event time is used, so the outcome is deterministic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

NS = 1_000_000_000

Kind = Literal["raised", "escalated", "cleared", "summary"]
LEVELS = ("info", "warning", "critical")
"""Severity names by level."""


@dataclass(frozen=True, kw_only=True)
class AlertPolicy:
    """How one condition alerts. Durations in ns of event time. ``flap_count`` 0 never
    summarises (every episode alerts: battery and link events)."""

    persistence: int = 0
    clear_time: int = 3 * NS
    flap_count: int = 0
    flap_window: int = 300 * NS

    def __post_init__(self) -> None:
        if min(self.persistence, self.clear_time, self.flap_count) < 0 or self.flap_window <= 0:
            raise ValueError("persistence, clear_time and flap_count must be >= 0, flap_window > 0")


@dataclass(frozen=True, slots=True)
class Transition:
    """What a sample changed: an episode ``raised`` or ``escalated`` to ``level`` (``held``:
    ns the condition had been bad), the episode ``cleared`` (``held``: ns it lasted), or a
    ``summary`` of ``episodes`` episodes not alerted since ``since`` (``level``: the highest)."""

    kind: Kind
    level: int
    held: int = 0
    episodes: int = 0
    since: int = 0

    @property
    def severity(self) -> str:
        return "info" if self.kind == "cleared" else LEVELS[self.level]


def band(value: float, warn: float, crit: float, margin: float, level: int, *,
         above: bool = True) -> tuple[int, bool]:
    """(level shown, still holding) for ``value`` against thresholds ``warn``/``crit`` (crit
    0 = none) crossed upward (``above``) or downward; once raised (``level`` > 0) the
    condition holds until the value is back beyond warn by ``margin`` (a fraction of warn)."""
    if above:
        shown = 2 if 0 < crit < value else 1 if value > warn else 0
        return shown, shown > 0 or (level > 0 and value > warn * (1.0 - margin))
    shown = 2 if value < crit else 1 if value < warn else 0
    return shown, shown > 0 or (level > 0 and value < warn * (1.0 + margin))


@dataclass(slots=True)
class Condition:
    """One condition of one key under a policy. ``level`` is the level alerted in the open
    episode (0 none); a suppressed (flapping) episode keeps ``quiet`` set."""

    level: int = 0
    bad_since: int | None = None  # bad, not yet raised
    ok_since: int | None = None  # raised, not holding
    started: int = 0  # the open episode's start
    quiet: bool = False  # the open episode is counted, not alerted
    onsets: deque[int] = field(default_factory=deque)  # episode starts within flap_window
    summary_since: int | None = None  # first quiet episode not yet summarised
    summary_count: int = 0
    summary_level: int = 0

    @property
    def active(self) -> bool:
        return self.level > 0 or self.quiet

    def update(self, policy: AlertPolicy, now: int, level: int, holding: bool | None = None) -> Transition | None:
        """Feed one sample: ``level`` the condition shows now, ``holding`` whether it still
        holds within the hysteresis margin (default: ``level`` > 0). Returns what to report."""
        holding = level > 0 if holding is None else holding
        if self.active:
            out = self._open(policy, now, level, holding)
        else:
            out = self._closed(policy, now, level)
        return self._due(policy, now) if out is None else out

    def flush(self, now: int) -> Transition | None:
        """The pending summary at the end of the stream (None if there is none)."""
        if not self.summary_count:
            return None
        out = Transition("summary", self.summary_level, episodes=self.summary_count,
                         since=now if self.summary_since is None else self.summary_since)
        self.summary_since, self.summary_count, self.summary_level = None, 0, 0
        return out

    def _due(self, policy: AlertPolicy, now: int) -> Transition | None:
        since = self.summary_since
        if since is None or now - since < policy.flap_window:
            return None
        return self.flush(now)

    def _closed(self, policy: AlertPolicy, now: int, level: int) -> Transition | None:
        if level <= 0:
            self.bad_since = None
            return None
        if self.bad_since is None:
            self.bad_since = now
        held = now - self.bad_since
        if held < policy.persistence:
            return None
        start, self.bad_since, self.ok_since, self.started = self.bad_since, None, None, now
        onsets = self.onsets
        while onsets and now - onsets[0] >= policy.flap_window:
            onsets.popleft()
        flapping = 0 < policy.flap_count <= len(onsets)
        onsets.append(start)
        if flapping:
            self.quiet = True
            if self.summary_since is None:
                self.summary_since = now
            self.summary_count += 1
            self.summary_level = max(self.summary_level, level)
            return None
        self.level = level
        return Transition("raised", level, held=held)

    def _open(self, policy: AlertPolicy, now: int, level: int, holding: bool) -> Transition | None:
        if holding:
            self.ok_since = None
            if self.quiet:
                self.summary_level = max(self.summary_level, level)
                return None
            if level > self.level:
                self.level = level
                return Transition("escalated", level, held=now - self.started)
            return None
        if self.ok_since is None:
            self.ok_since = now
        if now - self.ok_since < policy.clear_time:
            return None
        lasted, was_quiet = self.ok_since - self.started, self.quiet
        level_was = self.level
        self.level, self.ok_since, self.quiet, self.bad_since = 0, None, False, None
        if was_quiet:
            return None
        return Transition("cleared", level_was, held=lasted)
