"""PostgreSQL/TimescaleDB sink (asyncpg): binary COPY straight into the table (encoded from
Arrow by pgpq, no Python object per value); a batch that
overlaps stored rows (a re-delivery) is instead copied into a staging table and merged with
``INSERT ... ON CONFLICT DO NOTHING`` on natural keys, so re-delivered batches add nothing.

Errors are handled by class. The database going away (connection errors) is retried with
backoff until it is back; the caller does not commit offsets meanwhile, so nothing is lost.
A row the database refuses for its data (SQLSTATE classes 22 data exception, 23 integrity
violation, 54 limit exceeded: a NUL byte in text, a key too long for its index) is returned
while the rest is written: COPY names the row it failed on (a few extra COPYs per bad row);
where it does not (a merge), the batch is halved instead (O(log n) extra COPYs per bad row).
Anything else (a wrong password, permissions, a table of another shape) is a real error:
raised as a one-line :class:`UserError`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from importlib import resources

import asyncpg
import asyncpg.exceptions._base as asyncpg_client
import orjson
import pyarrow as pa
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq.encoders import StringEncoderBuilder
from pgpq.schema import Jsonb

from ..errors import UserError
from ..io import Refused, Sink
from ..retry import Backoff

log = logging.getLogger("qsf.sink.postgres")

TABLES = {"trade": "trades", "signal": "signals", "alert": "alerts", "order": "orders", "fill": "fills",
          "equity": "equity"}
# the database went away or is restarting: wait and retry (anything else is a real error)
# (InternalClientError: the connection died mid-COPY and its protocol state is broken; the
# retry below throws that connection away and opens a new one)
_RETRYABLE = (OSError, ConnectionError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
              asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError,
              asyncpg.exceptions.InternalClientError)
# the rows' fault, not the database's: the server refuses a value (class 22 data exception,
# 23 integrity violation, 54 program limit exceeded, e.g. an index row too large), or the
# client cannot encode it (a subclass of InterfaceError, so it is tested first)
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                asyncpg.ProgramLimitExceededError, asyncpg_client.DataError)


_COPY_LINE = re.compile(r"^COPY \S+, line (\d+)")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _failed_row(exc: Exception, n: int) -> int | None:
    """The index of the row a failed COPY of ``n`` rows names in its context, if any."""
    m = _COPY_LINE.match(getattr(exc, "context", None) or "")
    return int(m.group(1)) - 1 if m and 0 < int(m.group(1)) <= n else None


_JSONB = b"jsonb"


def _stored(table: pa.Table, name: str) -> tuple[pa.Field, pa.ChunkedArray | pa.Array]:
    """A column as its table stores it: a map (equity's positions) as a JSON object for a
    jsonb column (so marked in the field's metadata)."""
    column = table.column(name)
    if pa.types.is_map(column.type):
        text = [None if v is None else orjson.dumps(dict(v)).decode() for v in column.to_pylist()]
        return pa.field(name, pa.string(), metadata={b"pg": _JSONB}), pa.array(text, pa.string())
    return table.schema.field(name), column


def _rows_of(table: pa.Table) -> pa.Table | None:
    """The columns of ``table`` its PostgreSQL table stores (not ``_part``/``_offset``), as
    stored; None without rows."""
    if table.num_rows == 0:
        return None
    names = [n for n in table.schema.names if not n.startswith("_")]
    fields, columns = zip(*(_stored(table, n) for n in names))
    return pa.table(list(columns), schema=pa.schema(fields))


def copy_data(table: pa.Table) -> bytes:
    """``table`` in PostgreSQL's binary COPY format (no Python object per value)."""
    if any((f.metadata or {}).get(b"pg") == _JSONB for f in table.schema):
        encoder = ArrowToPostgresBinaryEncoder.new_with_encoders(table.schema, {
            f.name: StringEncoderBuilder.new_with_output(f, Jsonb()) if (f.metadata or {}).get(b"pg") == _JSONB
            else ArrowToPostgresBinaryEncoder.infer_encoder(f)
            for f in table.schema})
    else:  # the encoders it infers itself (many times quicker to set up than given ones)
        encoder = ArrowToPostgresBinaryEncoder(table.schema)
    parts = [encoder.write_header()]
    parts += [encoder.write_batch(batch) for batch in table.to_batches()]
    parts.append(encoder.finish())
    return b"".join(parts)


def schema_sql(name: str) -> str:
    """One of the SQL files of infra/sql (the package qsframework.sql)."""
    return resources.files("qsframework.sql").joinpath(name).read_text()


# TimescaleDB's library must be preloaded (shared_preload_libraries, read from pg_settings: a
# user without the right to see it gets no row, not an error) before CREATE EXTENSION can load it
TIMESCALE_STATE_SQL = """SELECT
  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
  EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS installed,
  (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries') AS preload"""


def timescale_usable(*, available: bool, installed: bool, preload: str | None) -> tuple[bool, str | None]:
    """Whether the sink makes hypertables, from the server's state (:data:`TIMESCALE_STATE_SQL`);
    when TimescaleDB is installed on the server but cannot be used, why. Creating the extension
    without the library preloaded fails with FATAL and drops the connection, so it is tried only
    when the library is preloaded, or (the setting unreadable) already created in the database."""
    if not available:
        return False, None
    if preload is None:
        if installed:
            return True, None
        return False, ("TimescaleDB is installed on the server but this user cannot see whether it is "
                       "preloaded (pg_read_all_settings); an administrator can run CREATE EXTENSION timescaledb")
    libraries = {lib.strip().strip('"').rsplit("/", 1)[-1] for lib in preload.split(",")}
    if "timescaledb" in libraries:
        return True, None
    return False, ("TimescaleDB is installed on the server but not preloaded (add timescaledb to "
                   "shared_preload_libraries and restart PostgreSQL)")


class PostgresSink(Sink):
    """Writes event tables to PostgreSQL idempotently (a COPY that returned is durable:
    :meth:`flush` has nothing to do)."""

    inputs = True
    outputs = True

    def __init__(self, dsn: str, *, backoff: Backoff = Backoff(initial_s=0.1, max_s=5.0)) -> None:
        self.dsn = dsn
        self.backoff = backoff
        self.con: asyncpg.Connection | None = None
        self.timescale = False
        self.rows_written = 0
        self.retries = 0
        self.merged = 0  # batches that overlapped rows already stored
        self.copies = 0  # COPY transactions tried
        self.splits = 0  # batches halved to find the rows the database refused

    async def start(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        attempt = 0
        while True:
            try:
                self.con = await asyncpg.connect(self.dsn, timeout=5)
                break
            except _RETRYABLE as exc:  # first: some are PostgresErrors (57P03: starting up)
                self.retries += 1
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.warning("database unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
            except asyncpg.PostgresError as exc:  # e.g. a wrong password, no such database
                raise UserError(f"PostgreSQL: {_one_line(exc)}") from None
        try:  # one creator at a time: concurrent CREATE TABLE IF NOT EXISTS collide (scaled-out processors)
            async with self.con.transaction():
                await self.con.execute("SELECT pg_advisory_xact_lock(hashtext('qsf schema'))")
                await self.con.execute(schema_sql("001_schema.sql"))
                state = await self.con.fetchrow(TIMESCALE_STATE_SQL)
                use, why_not = timescale_usable(**dict(state))
                if use:
                    await self.con.execute(schema_sql("002_timescaledb.sql"))
                    self.timescale = True
                elif why_not:
                    log.warning("%s: plain tables", why_not)
        except asyncpg.PostgresError as exc:
            raise UserError(f"PostgreSQL: cannot create the tables: {_one_line(exc)}") from None
        log.info("postgres sink ready (%s)", "TimescaleDB hypertables" if self.timescale else "plain tables")

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        """Make ``table`` durable in the kind's table, retrying until the database takes it;
        rows it refuses for their data are left out and returned with the error."""
        target = TABLES.get(kind)
        rows = _rows_of(table)
        if target is None or rows is None:
            return []
        refused: list[Refused] = []
        await self._write_span(target, rows, 0, refused)
        self.rows_written += rows.num_rows - len(refused)
        if refused:
            log.warning("%s: %d of %d rows refused for their data (first: %s)", target, len(refused), rows.num_rows,
                        refused[0].reason)
        return refused

    async def write_all(self, tables: list[tuple[str, pa.Table]]) -> list[list[Refused]]:
        """All the tables in one transaction (one commit to wait for, not one per kind); when
        that fails for any reason, each as :meth:`write` does (merges, refused rows, retries)."""
        copies = [(target, rows) for kind, table in tables
                  if (target := TABLES.get(kind)) is not None and (rows := _rows_of(table)) is not None]
        if len(copies) > 1 and self.con is not None and not self.con.is_closed():
            data = [(target, rows.schema.names, copy_data(rows)) for target, rows in copies]
            self.copies += 1
            try:
                async with self.con.transaction():
                    for target, names, block in data:
                        await self._copy_in(target, names, block)
            except (asyncpg.PostgresError, *_RETRYABLE):
                pass  # one at a time below, which knows what to do with each failure
            else:
                self.rows_written += sum(rows.num_rows for _, rows in copies)
                return [[] for _ in tables]
        return await super().write_all(tables)

    async def _write_span(self, target: str, rows: pa.Table, first: int, refused: list[Refused]) -> None:
        """Write ``rows`` (rows ``first``... of the batch); on a data error, the rows
        before the one COPY names, that row alone, and each half of the rest (or each half,
        when no row is named), down to the single rows at fault. Halving the rest keeps the
        depth O(log n) and the rows sent O(n log n) even when every row is bad."""
        try:
            await self._copy(target, rows)
        except _DATA_ERRORS as exc:
            n = rows.num_rows
            if n == 1:
                refused.append(Refused(first, f"postgres refused the row: {type(exc).__name__}: {_one_line(exc)}"))
                return
            self.splits += 1
            at = _failed_row(exc, n)
            cuts = [0, n // 2, n] if at is None else [0, at, at + 1, at + 1 + (n - at - 1) // 2, n]
            for lo, hi in zip(cuts, cuts[1:]):
                if hi > lo:
                    await self._write_span(target, rows.slice(lo, hi - lo), first + lo, refused)

    async def _copy(self, target: str, rows: pa.Table) -> None:
        """One transaction: COPY, or a merge when the rows overlap stored ones; retried
        while the database is unavailable, raised for anything else."""
        names, data = rows.schema.names, copy_data(rows)
        attempt = 0
        while True:
            try:
                if self.con is None or self.con.is_closed():
                    await self._connect()
                assert self.con is not None
                self.copies += 1
                try:  # fast path: new rows go straight in by COPY (one statement: its own transaction)
                    await self._copy_in(target, names, data)
                except asyncpg.UniqueViolationError:  # a re-delivery: merge, keeping what is there
                    async with self.con.transaction():
                        await self.con.execute(
                            f"CREATE TEMP TABLE IF NOT EXISTS stage_{target} (LIKE {target}) ON COMMIT DELETE ROWS"
                        )
                        await self._copy_in(f"stage_{target}", names, data)
                        await self.con.execute(
                            f"INSERT INTO {target} SELECT * FROM stage_{target} ON CONFLICT DO NOTHING"
                        )
                    self.merged += 1
                return
            except _DATA_ERRORS:
                raise
            except _RETRYABLE as exc:  # before PostgresError: connection loss and 57P01 (admin shutdown) are ones
                self.retries += 1
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.warning("write to %s failed (%s); retrying in %.1f s", target, type(exc).__name__, delay)
                if self.con is not None:
                    self.con.terminate()
                    self.con = None
                await asyncio.sleep(delay)
            except asyncpg.PostgresError as exc:  # neither the rows' fault nor a passing outage
                raise UserError(f"PostgreSQL cannot store {target}: {_one_line(exc)}") from None

    async def _copy_in(self, table: str, names: list[str], data: bytes) -> None:
        """One COPY of binary ``data`` (:func:`copy_data`) into ``table``."""
        assert self.con is not None
        await self.con.copy_to_table(table, source=io.BytesIO(data), columns=names, format="binary")

    async def close(self) -> None:
        if self.con is not None:
            await self.con.close()
