"""Where the Telegram sink remembers the dedup keys of the alerts it sent: in memory (tests,
one-off runs) or in a PostgreSQL table, so a restart never sends an alert twice."""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from ...retry import Backoff

log = logging.getLogger("qsf.sink.telegram")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class DedupStore(ABC):
    """Dedup keys of the alerts already sent."""

    async def start(self) -> None:
        return None

    @abstractmethod
    async def seen(self, keys: Sequence[str]) -> set[str]:
        """The subset of ``keys`` already marked as sent."""

    @abstractmethod
    async def mark(self, keys: Sequence[str]) -> None:
        """Remember ``keys`` as sent (marking a key twice is harmless)."""

    async def close(self) -> None:
        return None


class MemoryDedupStore(DedupStore):
    """Dedup keys in a set: lost when the process exits (tests, one-off runs)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    async def seen(self, keys: Sequence[str]) -> set[str]:
        return self.keys.intersection(keys)

    async def mark(self, keys: Sequence[str]) -> None:
        self.keys.update(keys)


class PostgresDedupStore(DedupStore):
    """Dedup keys in a PostgreSQL table (created if missing); retries while the database is down."""

    def __init__(self, dsn: str, *, table: str = "telegram_sent",
                 backoff: Backoff = Backoff(initial_s=0.1, max_s=5.0)) -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"not a plain SQL table name: {table!r}")
        self.dsn = dsn
        self.table = table
        self.backoff = backoff
        self.con: Any = None  # asyncpg.Connection
        self.retries = 0

    async def start(self) -> None:
        await self._run(lambda con: con.execute("SELECT 1"))

    async def _connect(self) -> Any:
        import asyncpg

        con = await asyncpg.connect(self.dsn, timeout=5)
        await con.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "dedup_key text PRIMARY KEY, sent_at timestamptz NOT NULL DEFAULT now())"
        )
        return con

    async def _run(self, op: Callable[[Any], Any]) -> Any:
        import asyncpg

        retryable = (OSError, ConnectionError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                     asyncpg.InterfaceError, asyncpg.CannotConnectNowError)
        attempt = 0
        while True:
            try:
                if self.con is None or self.con.is_closed():
                    self.con = await self._connect()
                return await op(self.con)
            except retryable as exc:
                self.retries += 1
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.warning("dedup store unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                if self.con is not None:
                    self.con.terminate()
                    self.con = None
                await asyncio.sleep(delay)

    async def seen(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        sql = f"SELECT dedup_key FROM {self.table} WHERE dedup_key = ANY($1::text[])"
        rows = await self._run(lambda con: con.fetch(sql, list(keys)))
        return {r["dedup_key"] for r in rows}

    async def mark(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        sql = f"INSERT INTO {self.table} (dedup_key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
        await self._run(lambda con: con.execute(sql, list(keys)))

    async def close(self) -> None:
        if self.con is not None:
            await self.con.close()
            self.con = None
