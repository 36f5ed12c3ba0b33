"""Telegram's send limits as next-allowed times: one message per interval per chat, and a
global rate for the bot; a 429's ``retry_after`` pushes a chat's next slot back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    """Next-allowed send times per chat and for the bot overall (share one across sinks of a bot)."""

    def __init__(self, *, per_chat_interval_s: float = 1.0, global_rate_per_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_chat_interval_s = per_chat_interval_s
        self.global_interval_s = 1.0 / global_rate_per_s
        self.clock = clock
        self._chat_next: dict[str, float] = {}
        self._global_next = 0.0

    async def acquire(self, chat_id: str) -> None:
        """Wait until a message to ``chat_id`` may go, and take that slot."""
        while True:
            now = self.clock()
            wait = max(self._chat_next.get(chat_id, 0.0), self._global_next) - now
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._chat_next[chat_id] = now + self.per_chat_interval_s
            self._global_next = now + self.global_interval_s
            return

    def defer(self, chat_id: str, seconds: float) -> None:
        """No message to ``chat_id`` for ``seconds`` from now (a 429's ``retry_after``)."""
        until = self.clock() + seconds
        self._chat_next[chat_id] = max(self._chat_next.get(chat_id, 0.0), until)
