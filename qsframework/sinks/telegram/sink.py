"""The Telegram sink itself: each alert sent once (dedup keys in a :class:`DedupStore`), a
burst coalesced into a "+N more" message; the sending is :class:`~.botapi.BotApi`'s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Self

import httpx
import pyarrow as pa

from ...io import Refused, Sink
from .botapi import BotApi, TelegramStats
from .config import TelegramConfig
from .dedup import DedupStore, MemoryDedupStore
from .format import format_alert, format_summary
from .ratelimit import RateLimiter

log = logging.getLogger("qsf.sink.telegram")


class TelegramSink(Sink):
    """Sends alerts to one Telegram chat, each alert at most once (other kinds are not its
    business: it takes them and sends nothing)."""

    def __init__(self, config: TelegramConfig, *, store: DedupStore | None = None,
                 limiter: RateLimiter | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = config
        self.store = store if store is not None else MemoryDedupStore()
        self.limiter = limiter or RateLimiter(per_chat_interval_s=config.per_chat_interval_s,
                                              global_rate_per_s=config.global_rate_per_s)
        self.stats = TelegramStats()
        self.api = BotApi(config, limiter=self.limiter, stats=self.stats, transport=transport)
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"TelegramSink({self.cfg!r})"

    async def start(self) -> None:
        if not self.api.is_open:
            self.api.open()
            await self.store.start()

    async def close(self) -> None:
        await self.api.close()
        await self.store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        """Send the alerts of ``table``; returns once each is sent and marked, a duplicate,
        or covered by a sent and marked "+N more" message. Raises :class:`TelegramError`."""
        if kind == "alert" and table.num_rows:
            await self.write_rows(table.to_pylist())
        return []

    async def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`write` for alert rows as mappings (``dedup_key`` required)."""
        await self.start()
        async with self._lock:
            fresh: dict[str, Mapping[str, Any]] = {}
            total = 0
            for row in rows:
                total += 1
                fresh.setdefault(str(row["dedup_key"]), row)
            seen = await self.store.seen(list(fresh))
            pending = [(k, r) for k, r in fresh.items() if k not in seen]
            self.stats.deduplicated += total - len(pending)
            limit = self.cfg.coalesce_after
            if limit is None or len(pending) <= limit + 1:  # "+1 more" would say less than the alert
                limit = len(pending)
            for key, row in pending[:limit]:
                await self.api.send(format_alert(row))
                await self.store.mark([key])
            rest = pending[limit:]
            if rest:
                await self.api.send(format_summary([r for _, r in rest]))
                await self.store.mark([k for k, _ in rest])
                self.stats.coalesced += len(rest)
                log.info("coalesced %d alerts into one message", len(rest))
