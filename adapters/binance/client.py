"""The Binance WebSocket source: one combined-stream connection kept alive for as long as asked.

Connection discipline (Binance Spot WebSocket Streams rules):

- The server pings every 20 s and drops a client that does not pong within a minute: the
  ``websockets`` client answers every ping with a copy of its payload, as required.
- The client sends no other control frames than an occasional ping of its own (to notice
  a dead link), far under the limit of 5 incoming messages per second.
- Connections end: on errors, on ``serverShutdown``, at the 24 h limit. A lost connection
  is reopened with exponential backoff and jitter. Before the 24 h limit (``rotate_after``)
  and on ``serverShutdown``, a second connection is opened *while the first still runs*;
  the new one is buffered until the old one has delivered every trade the new one starts
  with, then the old one is closed and the buffer handed on, so nothing is missed.
- Trade ids per symbol are kept strictly increasing across connections (duplicates
  dropped); a jump is a ``gap`` event, optionally backfilled from the REST API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

import pyarrow as pa

from qsframework.errors import describe
from qsframework.events import TRADE
from qsframework.io import Emit, LiveSource, Rejected

from .config import DEFAULT_REST, DEFAULT_URL, BinanceConfig, SourceFailed, SourceStats
from .connection import Connection, connect, handshake_status, short
from .protocol import Reject, TradeParser, gap_table
from .rest import fetch_trades

__all__ = ["DEFAULT_REST", "DEFAULT_URL", "BinanceConfig", "BinanceSource", "SourceFailed", "SourceStats"]

log = logging.getLogger("qsf.binance")


class BinanceSource(LiveSource):
    """Trades (kind ``trade``) and gaps (kind ``gap``), in arrival order, every
    ``flush_interval``, until stopped; bad frames go to ``on_reject`` with their reason."""

    def __init__(self, config: BinanceConfig, *, parser: TradeParser | None = None) -> None:
        self.cfg = config
        self.parser = parser or TradeParser(config.symbols, stream=config.stream, bounds=config.bounds)
        self.stats = SourceStats()
        self._active: Connection | None = None
        self._standby: Connection | None = None
        self._wake = asyncio.Event()  # a reader has news for the connection keeper
        self._rotate_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure: SourceFailed | None = None
        self._symbols = frozenset(s.upper() for s in config.symbols)

    @property
    def endpoint(self) -> str:
        path = self.parser.stream_path
        if self.cfg.microseconds:
            path += "&timeUnit=MICROSECOND"
        return self.cfg.url.rstrip("/") + path

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def produce(self, emit: Emit) -> None:
        """Connect, keep connected, and hand batches to ``emit`` until ``stop()``."""
        flusher = self.spawn(self._flush_loop(emit), "flusher")
        try:
            await self._keep_connected(None)
        finally:
            for conn in (self._standby, self._active):
                if conn is not None:
                    await conn.close()
            self._stop.set()
            await asyncio.wait([flusher])  # its failure, if any, is in self._failure
            if self._failure is None:
                await self._flush(emit)  # whatever arrived last
        if self._failure is not None:
            raise self._failure

    def spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task:
        """A background task whose failure stops the run (and is raised by ``produce``)."""
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: self._task_done(t, name))
        return task

    def _task_done(self, task: asyncio.Task, name: str) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if self._failure is None:
            self._failure = SourceFailed(f"the Binance {name} failed: {describe(exc)}")
            self._failure.__cause__ = exc
            log.info("%s", self._failure)  # raised by produce(): the caller reports it
        self.stop()

    # -- connections -----------------------------------------------------------------
    async def _open(self, standby: bool) -> Connection:
        conn = Connection(await connect(self.endpoint, self.cfg), standby)
        conn.task = self.spawn(self._read(conn), "connection reader")
        self.stats.connections += 1
        log.info("connected to %s%s", self.cfg.url, " (standby)" if standby else "")
        return conn

    async def _read(self, conn: Connection) -> None:
        """Feed frames to the parser (or the standby buffer) as they arrive."""
        from websockets.exceptions import ConnectionClosed

        parser = self.parser
        try:
            async for frame in conn.ws:
                now = time.time_ns()
                conn.frames += 1
                if isinstance(frame, bytes):
                    parser.rejects.append(Reject(frame, "binary frame", now))
                    parser.stats.rejected += 1
                elif conn.standby:
                    conn.buffer.append((frame, now))
                    conn.note_first_id(frame)
                    if self._overlapped(conn):
                        self._wake.set()
                else:
                    parser.feed(frame, now)
                    if parser.shutdown:
                        parser.shutdown = False
                        log.warning("serverShutdown received: opening a new connection")
                        self._rotate_now.set()
                        self._wake.set()
                    elif self._standby is not None and self._overlapped(self._standby):
                        self._wake.set()
        except ConnectionClosed as exc:
            log.info("connection closed: %s", exc)
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("connection lost: %s", exc)
        finally:
            conn.closed = True
            self._wake.set()

    def _overlapped(self, standby: Connection) -> bool:
        """The new connection has started every symbol, and the old one has delivered every
        id before each one's start. (A hand-over once only some symbols had started would
        lose the others' trades the old connection had not delivered yet; a symbol that
        stays quiet is handed over by ``overlap_timeout``.)"""
        if not self._symbols <= standby.first_ids.keys():
            return False
        last = self.parser.last_ids
        return all(last.get(sym, -1) >= first - 1 for sym, first in standby.first_ids.items())

    async def _keep_connected(self, deadline: float | None) -> None:
        attempt = 0  # failed connection attempts in a row
        while not self._ended(deadline):
            if self._active is None:
                try:
                    self._active = await self._open(standby=False)
                except Exception as exc:  # noqa: BLE001 - handshake refused, DNS, timeouts...
                    if self.stats.connections == 0 and handshake_status(exc) == 400:
                        raise ValueError(f"{self.cfg.url} refused the subscription (HTTP 400): "
                                         "check the symbols and the stream") from None
                    attempt += 1
                    delay = self._backoff(attempt)
                    log.warning("cannot connect to %s (%s); retrying in %.1f s",
                                self.cfg.url, short(exc), delay)
                    if await self._sleep(delay, deadline):
                        return
                    continue
            active, standby = self._active, self._standby
            if standby is not None:
                if standby.closed:  # the new connection died before taking over: retry later
                    self._standby = None
                    await standby.close()
                    if await self._sleep(self._backoff(1), deadline):
                        return
                elif (active.closed or self._overlapped(standby)
                      or time.monotonic() - standby.opened >= self.cfg.overlap_timeout):
                    await self._hand_over(active, standby)
                    attempt = 0
                else:
                    await self._wait(0.05, deadline)
                continue
            if active.closed:  # lost without a hand-over: reopen, backing off if it died young
                await active.close()
                self._active = None
                self.stats.reconnects += 1
                attempt = attempt + 1 if time.monotonic() - active.opened < 10 else 1
                delay = self._backoff(attempt) if attempt > 1 else 0.0
                log.warning("connection lost; reconnecting%s", f" in {delay:.1f} s" if delay else "")
                if delay and await self._sleep(delay, deadline):
                    return
                continue
            due = active.opened + self.cfg.rotate_after
            if self._rotate_now.is_set() or time.monotonic() >= due:
                self._rotate_now.clear()
                try:
                    self._standby = await self._open(standby=True)
                except Exception as exc:  # noqa: BLE001
                    log.warning("cannot open the new connection (%s); keeping the old one", short(exc))
                    if await self._sleep(self._backoff(2), deadline):
                        return
                continue
            await self._wait(due - time.monotonic(), deadline)

    def _ended(self, deadline: float | None) -> bool:
        return self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    async def _wait(self, seconds: float, deadline: float | None) -> None:
        """Until a reader has news (closed, overlap, serverShutdown), stop, or ``seconds``."""
        if deadline is not None:
            seconds = min(seconds, deadline - time.monotonic())
        if seconds > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), seconds)
            except asyncio.TimeoutError:
                pass
        self._wake.clear()

    async def _hand_over(self, old: Connection, new: Connection) -> None:
        """Close ``old``; ``new`` becomes the active connection, its buffer parsed first."""
        self._active, self._standby = new, None
        await old.close()
        self._rotate_now.clear()
        buffered, new.buffer = new.buffer, []
        new.standby = False
        for frame, ts in buffered:
            self.parser.feed(frame, ts)
        self.stats.rotations += 1
        log.info("handed over to the new connection (%d buffered frames)", len(buffered))

    def _backoff(self, attempt: int) -> float:
        return self.cfg.backoff.delay(attempt)

    async def _sleep(self, seconds: float, deadline: float | None) -> bool:
        """Sleep (cut short by stop or the deadline); True if the run should end."""
        if deadline is not None:
            seconds = min(seconds, max(deadline - time.monotonic(), 0))
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return deadline is not None and time.monotonic() >= deadline

    # -- flushing ----------------------------------------------------------------------
    async def _flush_loop(self, emit: Emit) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.cfg.flush_interval)
            except asyncio.TimeoutError:
                pass
            await self._flush(emit)

    async def _flush(self, emit: Emit) -> None:
        parser = self.parser
        if not parser.pending() and not parser.rejects:
            return
        trades = parser.take_trades()
        gaps = parser.take_gaps()
        rejects = parser.take_rejects()
        if self.cfg.backfill and gaps.num_rows:
            filled, gaps = await self._backfill(gaps)
            if filled.num_rows:
                trades = pa.concat_tables([trades, filled])
        origin = (("topic", b"binance"), ("source", self.cfg.url.encode()))
        for r in rejects:
            await self.reject(Rejected(r.frame, r.reason, origin=origin))
        if trades.num_rows:
            await emit("trade", trades)
        if gaps.num_rows:
            await emit("gap", gaps)

    async def _backfill(self, gaps: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Fetch each gap's trades from the REST API; gaps come back with ``filled`` set."""
        import httpx

        tables, rows = [], []
        async with httpx.AsyncClient(base_url=self.cfg.rest_url, timeout=10) as http:
            for g in gaps.to_pylist():
                try:
                    got = await fetch_trades(http, g["key"], g["first_id"], g["last_id"],
                                             stream=self.cfg.stream)
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    self.stats.backfill_errors += 1
                    log.warning("backfill of %s ids %d..%d failed: %s",
                                g["key"], g["first_id"], g["last_id"], short(exc))
                    got = None
                n = 0
                if got is not None and got.num_rows:
                    tables.append(got)
                    n = got.num_rows
                    self.parser.fill(g["key"], g["first_id"], g["last_id"])
                    self.stats.backfilled += n
                rows.append((g["ts_event"], g["ts_recv"], g["key"], g["first_id"], g["last_id"], n))
        filled = pa.concat_tables(tables) if tables else TRADE.schema.empty_table()
        return filled, gap_table(rows)

