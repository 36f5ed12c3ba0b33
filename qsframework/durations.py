"""Durations (``30s``, ``5m``, ``250ms``) and instants, all as int64 UTC nanoseconds."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|min|m|h|d)?\s*$")


class Duration(int):
    """A span of time in nanoseconds; parses ``"60s"``, ``"5m"``, ``"1.5h"``, ``"250ms"``."""

    def __new__(cls, value: int | str) -> Duration:
        return super().__new__(cls, parse_duration(value) if isinstance(value, str) else value)

    def __str__(self) -> str:
        for unit in ("d", "h", "m", "s", "ms", "us"):
            if self and self % _UNITS[unit] == 0:
                return f"{self // _UNITS[unit]}{unit}"
        return f"{int(self)}ns"

    __repr__ = __str__


def parse_duration(text: str) -> int:
    """Nanoseconds in ``text``; a bare number means seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 1h)")
    number, unit = m.group(1), m.group(2) or "s"
    ns = float(number) * _UNITS[unit] if "." in number else int(number) * _UNITS[unit]
    if ns != int(ns):
        raise ValueError(f"duration {text!r} is not a whole number of nanoseconds")
    return int(ns)


def parse_time(text: str) -> int:
    """UTC nanoseconds from an ISO 8601 date/time (naive means UTC) or an integer of ns."""
    s = text.strip()
    if re.fullmatch(r"-?\d{12,}", s):
        return int(s)
    frac_ns = 0
    m = re.fullmatch(r"(.*T\d{2}:\d{2}:\d{2})\.(\d{1,9})(Z|[+-]\d{2}:?\d{2})?", s)
    if m:  # datetime keeps microseconds only: take the fraction to the nanosecond here
        s, frac_ns = m.group(1) + (m.group(3) or ""), int(m.group(2).ljust(9, "0"))
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            dt = datetime.combine(date.fromisoformat(s), datetime.min.time())
        else:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601 like 2026-01-05T00:10:00Z, or nanoseconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000 + frac_ns


def format_time(ns: int) -> str:
    """ISO 8601 UTC text of a nanosecond timestamp (to the nanosecond when needed)."""
    sec, frac = divmod(int(ns), 1_000_000_000)
    base = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return base + "Z"
    return f"{base}.{frac:09d}".rstrip("0") + "Z"
