"""Receive-to-durable latency of a live run: the most recent samples in a fixed-size ring,
so a run of any length keeps bounded memory and reports recent percentiles."""

from __future__ import annotations

import numpy as np


class LatencyWindow:
    """The last ``size`` latency samples (ms); percentiles over them."""

    def __init__(self, size: int = 65_536) -> None:
        self._ring = np.empty(size, np.float64)
        self._next = 0  # total samples ever added; the ring holds the last min(_next, size)

    def __len__(self) -> int:
        return min(self._next, len(self._ring))

    def add(self, samples: np.ndarray) -> None:
        size = len(self._ring)
        samples = samples[-size:]
        start = self._next % size
        head = min(len(samples), size - start)
        self._ring[start:start + head] = samples[:head]
        self._ring[:len(samples) - head] = samples[head:]
        self._next += len(samples)

    def clear(self, *, size: int | None = None) -> None:
        """Forget every sample; ``size``: hold that many from now on."""
        if size is not None and size != len(self._ring):
            self._ring = np.empty(size, np.float64)
        self._next = 0

    @property
    def total(self) -> int:
        """Samples ever added (a mark for :meth:`since`)."""
        return self._next

    def since(self, mark: int) -> np.ndarray:
        """The samples added after ``total`` was ``mark`` (those the ring still holds)."""
        n = min(self._next - mark, len(self))
        if n <= 0:
            return self._ring[:0]
        end = self._next % len(self._ring)
        return self._ring[end - n:end] if n <= end else np.concatenate((self._ring[end - n:], self._ring[:end]))

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile of the samples held, or None when there are none."""
        n = len(self)
        return float(np.percentile(self._ring[:n], q)) if n else None
