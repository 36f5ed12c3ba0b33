"""PostgreSQL/TimescaleDB sink (asyncpg): binary COPY straight into the table; a batch that
overlaps stored rows (a re-delivery) is instead copied into a staging table and merged with
``INSERT ... ON CONFLICT DO NOTHING`` on natural keys, so re-delivered batches add nothing.

If the database goes away the sink retries with backoff until it is back; the caller does
not commit offsets meanwhile, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from importlib import resources
from pathlib import Path

import asyncpg
import pyarrow as pa

log = logging.getLogger("qsf.sink.postgres")

TABLES = {"trade": "trades", "signal": "signals", "alert": "alerts"}
SQL_DIR = Path(__file__).resolve().parents[2] / "infra" / "sql"
# the database went away or is restarting: wait and retry (anything else is a real error)
# (InternalClientError: the connection died mid-COPY and its protocol state is broken; the
# retry below throws that connection away and opens a new one)
_RETRYABLE = (OSError, ConnectionError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
              asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
              asyncpg.exceptions.InternalClientError)


def schema_sql(name: str) -> str:
    """The SQL files of infra/sql (also packaged as qsframework/sql when installed)."""
    path = SQL_DIR / name
    if path.exists():
        return path.read_text()
    return resources.files("qsframework").joinpath("sql", name).read_text()


class PostgresSink:
    """Writes event tables to PostgreSQL idempotently."""

    def __init__(self, dsn: str, *, max_backoff_s: float = 5.0) -> None:
        self.dsn = dsn
        self.max_backoff_s = max_backoff_s
        self.con: asyncpg.Connection | None = None
        self.timescale = False
        self.rows_written = 0
        self.retries = 0
        self.merged = 0  # batches that overlapped rows already stored

    async def start(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        delay = 0.1
        while True:
            try:
                self.con = await asyncpg.connect(self.dsn, timeout=5)
                break
            except _RETRYABLE as exc:
                self.retries += 1
                log.warning("database unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(self.max_backoff_s, delay * 2) * (0.8 + 0.4 * random.random())
        await self.con.execute(schema_sql("001_schema.sql"))
        available = await self.con.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
        if available:
            await self.con.execute(schema_sql("002_timescaledb.sql"))
            self.timescale = True
        log.info("postgres sink ready (%s)", "TimescaleDB hypertables" if self.timescale else "plain tables")

    async def write(self, kind: str, table: pa.Table) -> None:
        """Make ``table`` durable in the kind's table; retries until the database takes it."""
        target = TABLES.get(kind)
        if target is None or table.num_rows == 0:
            return
        names = [n for n in table.schema.names if not n.startswith("_")]
        records = list(zip(*(table.column(n).to_pylist() for n in names)))
        delay = 0.1
        while True:
            try:
                if self.con is None or self.con.is_closed():
                    await self._connect()
                assert self.con is not None
                try:  # fast path: new rows go straight in by COPY
                    async with self.con.transaction():
                        await self.con.copy_records_to_table(target, records=records, columns=names)
                except asyncpg.UniqueViolationError:  # a re-delivery: merge, keeping what is there
                    async with self.con.transaction():
                        await self.con.execute(
                            f"CREATE TEMP TABLE IF NOT EXISTS stage_{target} (LIKE {target}) ON COMMIT DELETE ROWS"
                        )
                        await self.con.copy_records_to_table(f"stage_{target}", records=records, columns=names)
                        await self.con.execute(
                            f"INSERT INTO {target} SELECT * FROM stage_{target} ON CONFLICT DO NOTHING"
                        )
                    self.merged += 1
                self.rows_written += len(records)
                return
            except _RETRYABLE as exc:
                self.retries += 1
                log.warning("write to %s failed (%s); retrying in %.1f s", target, type(exc).__name__, delay)
                if self.con is not None:
                    self.con.terminate()
                    self.con = None
                await asyncio.sleep(delay)
                delay = min(self.max_backoff_s, delay * 2) * (0.8 + 0.4 * random.random())

    async def close(self) -> None:
        if self.con is not None:
            await self.con.close()
