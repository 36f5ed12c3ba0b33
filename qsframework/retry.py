"""The one retry policy: exponential backoff with jitter, for every reconnect and retry loop
(PostgreSQL, the Telegram Bot API and its dedup store, the Binance WebSocket, Kafka commits).

Attempt ``n`` (counted from 1) waits ``initial_s * 2**(n-1)``, at most ``max_s``, times a
random factor from ``jitter`` so that many clients that failed together do not come back
together. A loop owns what it retries and when it gives up; this decides only how long it waits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 5.0
    jitter: tuple[float, float] = (0.8, 1.2)

    def __post_init__(self) -> None:
        low, high = self.jitter
        if self.initial_s <= 0 or self.max_s < self.initial_s or not 0 <= low <= high:
            raise ValueError("backoff: need 0 < initial_s <= max_s and 0 <= jitter low <= high")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        base = min(self.max_s, self.initial_s * 2 ** max(attempt - 1, 0))
        return base * random.uniform(*self.jitter)
