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
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from qsframework.errors import describe
from qsframework.events import TRADE
from qsframework.io import Emit, LiveSource, Rejected
from qsframework.retry import Backoff
from qsframework.validity import DEFAULT_BOUNDS, TimeBounds

from .protocol import SOURCE, Reject, TradeParser, gap_table

log = logging.getLogger("qsf.binance")

DEFAULT_URL = "wss://stream.binance.com:9443"
DEFAULT_REST = "https://api.binance.com"
REST_LIMIT = 1000  # rows per REST page (the API's maximum)


@dataclass(frozen=True, kw_only=True)
class BinanceConfig:
    """Where and what to subscribe, and how to keep the connection."""

    symbols: tuple[str, ...]
    stream: str = "trade"  # or "aggTrade"
    url: str = DEFAULT_URL
    rest_url: str = DEFAULT_REST
    backfill: bool = False
    microseconds: bool = False  # ask for timeUnit=MICROSECOND
    rotate_after: float = 23.5 * 3600  # seconds; Binance ends connections at 24 h
    overlap_timeout: float = 15.0  # longest wait for old and new connection to meet
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    open_timeout: float = 10.0
    ping_interval: float | None = 30.0  # our own pings, to notice a dead link
    flush_interval: float = 0.25  # seconds between hand-overs of batches
    bounds: TimeBounds = DEFAULT_BOUNDS  # a trade's time vs its receipt (see qsframework.validity)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("give at least one symbol")
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"--url must start with ws:// or wss://, not {self.url!r}")
        if self.backfill and not self.rest_url.startswith(("http://", "https://")):
            raise ValueError(f"REST base URL must start with http:// or https://, not {self.rest_url!r}")
        if self.rotate_after <= 0 or self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("rotate_after and backoff times must be positive")
        if self.bounds.max_future_ns < 0:
            raise ValueError("--max-future must not be negative")

    @property
    def backoff(self) -> Backoff:
        """Between connection attempts that fail in a row."""
        return Backoff(initial_s=self.backoff_initial, max_s=self.backoff_max, jitter=(0.5, 1.1))


@dataclass(slots=True)
class SourceStats:
    connections: int = 0
    reconnects: int = 0  # connections lost and reopened
    rotations: int = 0  # planned hand-overs (24 h limit, serverShutdown)
    backfilled: int = 0
    backfill_errors: int = 0
    started: float = field(default_factory=time.monotonic)



class SourceFailed(RuntimeError):
    """A background task of the source (the flusher, a connection reader) failed: the run
    stops with this error instead of going on without it."""


class _Conn:
    """One WebSocket connection, its reader task, and a buffer while it is on standby."""

    def __init__(self, ws, standby: bool) -> None:
        self.ws = ws
        self.standby = standby
        self.buffer: list[tuple[bytes | str, int]] = []
        self.first_ids: dict[str, int] = {}
        self.opened = time.monotonic()
        self.task: asyncio.Task | None = None
        self.frames = 0
        self.closed = False


class BinanceSource(LiveSource):
    """Trades (kind ``trade``) and gaps (kind ``gap``), in arrival order, every
    ``flush_interval``, until stopped; bad frames go to ``on_reject`` with their reason."""

    def __init__(self, config: BinanceConfig, *, parser: TradeParser | None = None) -> None:
        self.cfg = config
        self.parser = parser or TradeParser(config.symbols, stream=config.stream, bounds=config.bounds)
        self.stats = SourceStats()
        self._active: _Conn | None = None
        self._standby: _Conn | None = None
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
                    await self._close(conn)
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
    async def _open(self, standby: bool) -> _Conn:
        from websockets.asyncio.client import connect

        ws = await connect(
            self.endpoint,
            open_timeout=self.cfg.open_timeout,
            ping_interval=self.cfg.ping_interval,
            ping_timeout=self.cfg.ping_interval,
            max_size=1 << 22,
            max_queue=4096,
        )
        conn = _Conn(ws, standby)
        conn.task = self.spawn(self._read(conn), "connection reader")
        self.stats.connections += 1
        log.info("connected to %s%s", self.cfg.url, " (standby)" if standby else "")
        return conn

    async def _close(self, conn: _Conn) -> None:
        """Close ``conn``; its reader first takes every frame that arrived before the
        server's close (a run that ends keeps the trades already on the wire)."""
        try:
            await asyncio.wait_for(conn.ws.close(), 5)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing a dead link
            pass
        if conn.task is not None:
            # the reader ends by itself once the queue is drained; the bound is a safety net
            await asyncio.wait([conn.task], timeout=30)
            conn.task.cancel()
            try:
                await conn.task
            except (Exception, asyncio.CancelledError):  # noqa: BLE001
                pass

    async def _read(self, conn: _Conn) -> None:
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
                    _note_first_id(conn, frame)
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

    def _overlapped(self, standby: _Conn) -> bool:
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
                    if self.stats.connections == 0 and _status(exc) == 400:
                        raise ValueError(f"{self.cfg.url} refused the subscription (HTTP 400): "
                                         "check the symbols and the stream") from None
                    attempt += 1
                    delay = self._backoff(attempt)
                    log.warning("cannot connect to %s (%s); retrying in %.1f s",
                                self.cfg.url, _short(exc), delay)
                    if await self._sleep(delay, deadline):
                        return
                    continue
            active, standby = self._active, self._standby
            if standby is not None:
                if standby.closed:  # the new connection died before taking over: retry later
                    self._standby = None
                    await self._close(standby)
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
                await self._close(active)
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
                    log.warning("cannot open the new connection (%s); keeping the old one", _short(exc))
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

    async def _hand_over(self, old: _Conn, new: _Conn) -> None:
        """Close ``old``; ``new`` becomes the active connection, its buffer parsed first."""
        self._active, self._standby = new, None
        await self._close(old)
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
                                g["key"], g["first_id"], g["last_id"], _short(exc))
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


async def fetch_trades(http, symbol: str, first: int, last: int, *, stream: str) -> pa.Table:
    """Trades ``first..last`` of ``symbol`` from the REST API, as a ``trade`` table."""
    path = "/api/v3/historicalTrades" if stream == "trade" else "/api/v3/aggTrades"
    ts_event, ids, prices, qtys, makers = [], [], [], [], []
    next_id = first
    while next_id <= last:
        limit = min(REST_LIMIT, last - next_id + 1)
        resp = await http.get(path, params={"symbol": symbol, "fromId": next_id, "limit": limit})
        resp.raise_for_status()
        page = orjson.loads(resp.content)
        if not isinstance(page, list) or not page:
            break
        for row in page:
            if stream == "trade":
                tid, t, p, q, m = row["id"], row["time"], row["price"], row["qty"], row["isBuyerMaker"]
            else:
                tid, t, p, q, m = row["a"], row["T"], row["p"], row["q"], row["m"]
            if tid < next_id or tid > last:
                continue
            ts_event.append(t * 1_000_000 if t < 10**14 else t * 1_000)
            ids.append(tid)
            prices.append(float(p))
            qtys.append(float(q))
            makers.append(bool(m))
        new_next = max(ids) + 1 if ids else next_id
        if new_next <= next_id:
            break
        next_id = new_next
    n = len(ids)
    now = time.time_ns()
    return pa.Table.from_arrays(
        [pa.array(ts_event, pa.int64()), pa.array([now] * n, pa.int64()),
         pa.array([SOURCE] * n, pa.string()), pa.array([symbol] * n, pa.string()),
         pa.array(ids, pa.int64()), pa.array(prices, pa.float64()),
         pa.array(qtys, pa.float64()), pa.array(makers, pa.bool_())],
        schema=TRADE.schema,
    )


def _note_first_id(conn: _Conn, frame: str) -> None:
    try:
        obj = orjson.loads(frame)
        data = obj.get("data", obj)
        sym = data["s"]
        tid = data["t"] if data.get("e") == "trade" else data["a"]
    except Exception:  # noqa: BLE001 - not a trade: the parser will judge it
        return
    if isinstance(tid, int) and isinstance(sym, str):
        conn.first_ids.setdefault(sym, tid)


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket handshake, if that is what ``exc`` is."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
