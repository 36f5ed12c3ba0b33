"""Sinks: where the live engine's batches go before offsets are committed (the base class and
the commit rule are in :mod:`qsframework.io`)."""

from __future__ import annotations

from ..io import Refused, Sink

__all__ = ["Refused", "Sink"]
