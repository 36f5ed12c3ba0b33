"""Sinks: where the live engine's batches go before offsets are committed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refused:
    """A row a sink refused for its data (not for being unavailable): its index in the
    written table and the sink's reason; the caller dead-letters it, the rest is written."""

    index: int
    reason: str
