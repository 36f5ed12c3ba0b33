"""A local server that speaks Binance Spot's public market-data protocol, for tests.

One scripted *exchange* holds, per symbol, a deterministic trade history (consecutive ids,
a seeded random walk of prices, times from a fixed epoch). Its "now" is a position in that
history that moves forward at ``rate`` trades per second (or, with ``rate=None``, as fast
as connections read it). Every WebSocket connection streams its subscribed symbols from the
position current when it opened, so a reconnect sees a jump in ids and two connections open
at once see the same trades. The REST API serves the same history up to "now", including
the trades the WebSocket was told to skip.

    with BinanceServer(symbols=["BTCUSDT", "ETHUSDT"], seed=1) as srv:
        url = srv.ws_url + "/stream?streams=btcusdt@trade/ethusdt@trade"
        ...
        assert srv.sent_ids("BTCUSDT") == [...]

The WebSocket side is ``websockets``' asyncio server in a daemon thread with its own loop;
the REST side is a ``ThreadingHTTPServer`` in another thread. Fault injection methods are
thread-safe and may be called from the test's thread.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from .quiet_http import QuietHandler

Kind = Literal["trade", "aggTrade"]
KINDS: tuple[Kind, ...] = ("trade", "aggTrade")
EPOCH_US = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp()) * 1_000_000
START_PRICES = {"BTCUSDT": 90_000, "ETHUSDT": 3_000, "BNBUSDT": 600, "SOLUSDT": 150}
_E8 = 10**8


def _fmt8(units: int) -> str:
    """An amount in 1e-8 units as Binance writes it: ``"4.00000100"``."""
    return f"{units // _E8}.{units % _E8:08d}"


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


# -- the exchange ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AggTrade:
    """Trades of one taker order at one price and time: ids ``first_id..last_id``."""

    symbol: str
    id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    time_us: int
    buyer_maker: bool
    end_index: int  # timeline index of its last trade

    def rest(self, micro: bool = False) -> dict:
        return {"a": self.id, "p": self.price, "q": self.qty, "f": self.first_id,
                "l": self.last_id, "T": self.time_us if micro else self.time_us // 1000,
                "m": self.buyer_maker, "M": True}


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade of the exchange's history; ``index`` is its place in the all-symbol timeline."""

    symbol: str
    id: int
    price: str
    qty: str
    quote_qty: str
    time_us: int
    buyer_maker: bool
    index: int
    agg: AggTrade

    @property
    def time_ms(self) -> int:
        return self.time_us // 1000

    def rest(self, micro: bool = False) -> dict:
        return {"id": self.id, "price": self.price, "qty": self.qty, "quoteQty": self.quote_qty,
                "time": self.time_us if micro else self.time_ms, "isBuyerMaker": self.buyer_maker,
                "isBestMatch": True}


class Exchange:
    """The deterministic trade history of all symbols and the position of "now" in it.

    ``timeline`` interleaves the symbols' trades in time order; it is generated lazily, up to
    ``max_trades``. ``position`` trades have happened: it starts at ``backlog`` and moves at
    ``rate`` trades per second once the clock is started, or (``rate=None``) as connections
    serve trades.
    """

    def __init__(self, symbols: Iterable[str], *, seed: int, rate: float | None, backlog: int,
                 max_trades: int, start_time_us: int, first_id: int, first_agg_id: int) -> None:
        self.symbols = [s.upper() for s in symbols]
        if not self.symbols:
            raise ValueError("at least one symbol is needed")
        self.rate = rate
        self.max_trades = max_trades
        self.first_id = first_id
        self.first_agg_id = first_agg_id
        self.timeline: list[Trade] = []
        self._trades: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        self._aggs: dict[str, list[AggTrade]] = {s: [] for s in self.symbols}
        self._rng = random.Random(seed)
        self._ticks = {s: START_PRICES.get(s, 100) * 100 for s in self.symbols}  # price in cents
        self._next_id = dict.fromkeys(self.symbols, first_id)
        self._next_agg = dict.fromkeys(self.symbols, first_agg_id)
        self._time_us = start_time_us
        self._position = min(backlog, max_trades)
        self._clock0: float | None = None
        self._clock_base = self._position
        self._lock = threading.Lock()

    def start_clock(self) -> None:
        with self._lock:
            self._clock0, self._clock_base = time.monotonic(), self._position

    def position(self) -> int:
        """How many trades of the timeline have happened (the index of the next one)."""
        with self._lock:
            return self._now()

    def advance(self, cursor: int, chunk: int) -> int:
        """The end (exclusive) of the next batch a connection at ``cursor`` may send."""
        with self._lock:
            if self.rate is None:
                self._position = max(self._position, min(self.max_trades, cursor + chunk))
            return max(cursor, min(self._now(), cursor + chunk))

    def trades(self, symbol: str) -> list[Trade]:
        """The trades of ``symbol`` that have happened, in id order."""
        with self._lock:
            pos, trades = self._now(), self._trades[symbol]
            return trades[:bisect_left(trades, pos, key=lambda t: t.index)]

    def agg_trades(self, symbol: str) -> list[AggTrade]:
        """The aggregate trades of ``symbol`` whose last trade has happened, in id order."""
        with self._lock:
            pos, aggs = self._now(), self._aggs[symbol]
            return aggs[:bisect_left(aggs, pos, key=lambda a: a.end_index)]

    def _now(self) -> int:
        if self.rate is not None and self._clock0 is not None:
            due = self._clock_base + int((time.monotonic() - self._clock0) * self.rate)
            self._position = max(self._position, min(self.max_trades, due))
        while len(self.timeline) < self._position:
            self._new_aggregate()
        return self._position

    def _new_aggregate(self) -> None:
        rng = self._rng
        symbol = rng.choice(self.symbols)
        self._time_us += rng.randrange(0, 1000)  # several trades share a millisecond
        ticks = max(1, self._ticks[symbol] + rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2)))
        self._ticks[symbol] = ticks
        price_units = ticks * 10**6
        maker = rng.random() < 0.5
        qtys = [rng.randint(1_000, 100_000_000) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        first = self._next_id[symbol]
        self._next_id[symbol] += len(qtys)
        last = len(self.timeline) + len(qtys) - 1
        agg = AggTrade(symbol, self._next_agg[symbol], _fmt8(price_units), _fmt8(sum(qtys)), first,
                       first + len(qtys) - 1, self._time_us, maker, last)
        self._next_agg[symbol] += 1
        self._aggs[symbol].append(agg)
        for k, qty in enumerate(qtys):
            trade = Trade(symbol, first + k, agg.price, _fmt8(qty), _fmt8(price_units * qty // _E8),
                          self._time_us, maker, len(self.timeline), agg)
            self.timeline.append(trade)
            self._trades[symbol].append(trade)


# -- records -----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class ConnectionRecord:
    """What happened on one WebSocket connection (times are ``time.monotonic()``)."""

    number: int  # 0-based, in order of opening
    path: str
    query: dict[str, str]
    combined: bool
    streams: list[str]
    micro: bool  # timeUnit=MICROSECOND
    opened: float
    closed: float | None = None
    start_index: int | None = None  # exchange position the stream started at
    messages_sent: int = 0
    messages_received: int = 0  # text and binary frames from the client
    pings_sent: int = 0
    pings_received: int = 0
    pongs_received: int = 0
    rate_violations: int = 0
    dropped_for_pong: bool = False
    shutdown_notified: bool = False
    close_code: int | None = None
    close_reason: str | None = None  # why it closed: "client", "pong timeout", "lifetime", ...
    _incoming: deque[float] = field(default_factory=deque, repr=False)

    @property
    def open(self) -> bool:
        return self.closed is None


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One REST request and the status it was answered with."""

    path: str
    query: dict[str, str]
    status: int
    at: float


@dataclass(frozen=True, slots=True)
class _Rule:
    action: Literal["drop", "duplicate"]
    symbol: str
    kind: Kind
    ids: frozenset[int]
    conn: int | None
    later: int = 0


@dataclass(slots=True, eq=False)
class _Session:
    ws: ServerConnection
    rec: ConnectionRecord
    handles: list[asyncio.TimerHandle] = field(default_factory=list)
    pending: list[tuple[int, str, tuple[str, str, int]]] = field(default_factory=list)  # duplicates


class _Connection(ServerConnection):
    """A server connection that reports every incoming frame to its BinanceServer."""

    owner: BinanceServer
    record: ConnectionRecord | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.owner._paused == "reset":
            self.owner.rejected.append((None, ""))
            transport.abort()

    def process_event(self, event: Any) -> None:
        if self.record is not None and isinstance(event, Frame):
            self.owner._on_frame(self, self.record, event)
        super().process_event(event)


# -- the server --------------------------------------------------------------------------


class BinanceServer:
    """Binance Spot market-data WebSocket + REST on 127.0.0.1 (free ports), in background threads.

    ``rate`` is exchange trades per second over all symbols (None: as fast as connections
    read); ``max_incoming_per_second`` is the client message limit (None: no limit);
    ``max_lifetime`` closes each connection (code 1000) that many seconds after it opened.
    """

    def __init__(self, symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT"), *, seed: int = 1,
                 rate: float | None = 2000.0, backlog: int = 1000, max_trades: int = 200_000,
                 start_time_us: int | None = EPOCH_US, first_id: int = 1_000_000,
                 first_agg_id: int = 500_000, ping_interval: float | None = 20.0,
                 pong_timeout: float = 60.0, max_lifetime: float | None = None,
                 max_incoming_per_second: float | None = 5, legacy_order_ids: bool = False,
                 close_timeout: float = 1.0) -> None:
        start = start_time_us if start_time_us is not None else time.time_ns() // 1000
        self.exchange = Exchange(symbols, seed=seed, rate=rate, backlog=backlog,
                                 max_trades=max_trades, start_time_us=start, first_id=first_id,
                                 first_agg_id=first_agg_id)
        self.symbols = self.exchange.symbols
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_lifetime = max_lifetime
        self.max_incoming_per_second = max_incoming_per_second
        self.legacy_order_ids = legacy_order_ids
        self.close_timeout = close_timeout
        # refused handshakes: (HTTP status, path), or (None, "") for a TCP reset
        self.rejected: list[tuple[int | None, str]] = []
        self._records: list[ConnectionRecord] = []
        self._sessions: dict[int, _Session] = {}
        self._sent: list[tuple[str, str, int, int]] = []  # (symbol, kind, id, connection)
        self._rest: list[RestRequest] = []
        self._rest_failures: deque[int] = deque()
        self._rules: list[_Rule] = []
        self._paused: Literal["503", "reset"] | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._ws_port = 0
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._run, name="binance-ws", daemon=True)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._rest_handler())
        self._httpd.daemon_threads = True
        self._rest_thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                             name="binance-rest", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._ws_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(5) or self._error is not None:
            raise RuntimeError(f"the Binance test server did not start: {self._error}")
        self._rest_thread.start()
        self.exchange.start_clock()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)
        if self._rest_thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        conn_class = type("Connection", (_Connection,), {"owner": self})
        server: Server = await serve(self._handle, "127.0.0.1", 0,
                                     process_request=self._process_request,
                                     create_connection=conn_class, compression=None,
                                     ping_interval=None, ping_timeout=None,
                                     close_timeout=self.close_timeout)
        self._ws_port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        for session in list(self._sessions.values()):
            if session.ws.state is State.OPEN:
                session.rec.close_reason = session.rec.close_reason or "server stopped"
        server.close()
        await server.wait_closed()

    # -- introspection -------------------------------------------------------------------
    @property
    def connections(self) -> list[ConnectionRecord]:
        return list(self._records)

    @property
    def rest_requests(self) -> list[RestRequest]:
        with self._lock:
            return list(self._rest)

    def sent_ids(self, symbol: str, kind: Kind = "trade", *, conn: int | None = None) -> list[int]:
        """Ids the WebSocket sent for ``symbol`` (trade or aggregate ids), in order, over all
        connections or only connection number ``conn``; duplicates appear twice."""
        sym = symbol.upper()
        return [i for s, k, i, c in list(self._sent)
                if s == sym and k == kind and conn in (None, c)]

    def all_trades(self, symbol: str) -> list[Trade]:
        """The exchange's full history of ``symbol`` up to now (what REST serves)."""
        return self.exchange.trades(self._symbol(symbol))

    def all_agg_trades(self, symbol: str) -> list[AggTrade]:
        return self.exchange.agg_trades(self._symbol(symbol))

    def wait_until(self, condition: Callable[[], object], timeout: float = 5.0) -> bool:
        """Poll ``condition`` until it is true; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- fault injection (thread-safe) ---------------------------------------------------
    def drop_ids(self, symbol: str, ids: Iterable[int], *, kind: Kind = "trade",
                 conn: int | None = None) -> None:
        """Never send these ids on the WebSocket (on connection number ``conn`` only, or on all);
        REST still serves them."""
        with self._lock:
            self._rules.append(_Rule("drop", self._symbol(symbol), kind, frozenset(ids), conn))

    def duplicate_ids(self, symbol: str, ids: Iterable[int], *, kind: Kind = "trade",
                      conn: int | None = None, later: int = 0) -> None:
        """Send these ids twice: again after ``later`` further messages of the connection."""
        with self._lock:
            self._rules.append(_Rule("duplicate", self._symbol(symbol), kind, frozenset(ids), conn,
                                     later))

    def send_malformed(self, frames: Iterable[str | bytes], *, conn: int | None = None) -> int:
        """Send these raw frames (str: text, bytes: binary) to the live connections (or to
        connection number ``conn``); returns how many connections got them."""
        frames = list(frames)

        async def go() -> int:
            sessions = [s for s in self._sessions.values() if conn in (None, s.rec.number)]
            for session in sessions:
                for frame in frames:
                    await self._send(session, frame)
            return len(sessions)

        return self._call(go())

    def server_shutdown(self, delay: float = 0.2) -> int:
        """Send ``serverShutdown`` to every live connection, then close them (code 1001)
        ``delay`` seconds later; returns how many were told."""

        async def go() -> int:
            sessions = list(self._sessions.values())
            for session in sessions:
                rec = session.rec
                now = time.time_ns() // (1000 if rec.micro else 1_000_000)
                event = {"e": "serverShutdown", "E": now}
                frame = {"stream": "!serverShutdown", "data": event} if rec.combined else event
                await self._send(session, _dumps(frame))
                rec.shutdown_notified = True
                session.handles.append(asyncio.get_running_loop().call_later(
                    delay, self._close_soon, session, 1001, "server shutdown", "server shutdown"))
            return len(sessions)

        return self._call(go())

    def close_all(self, code: int = 1001, reason: str = "") -> int:
        """Close every live connection with a close frame; returns when they are closed."""

        async def go() -> int:
            sessions = list(self._sessions.values())
            for session in sessions:
                session.rec.close_reason = session.rec.close_reason or "close_all"
            await asyncio.gather(*(s.ws.close(code, reason) for s in sessions),
                                 return_exceptions=True)
            return len(sessions)

        return self._call(go())

    def kill_all(self) -> int:
        """Drop every live TCP connection without a close frame."""

        async def go() -> int:
            sessions = list(self._sessions.values())
            for session in sessions:
                session.rec.close_reason = session.rec.close_reason or "killed"
                session.ws.transport.abort()
            return len(sessions)

        return self._call(go())

    def pause(self, seconds: float | None = None, *, reset: bool = False) -> None:
        """Refuse new connections (HTTP 503, or a TCP reset with ``reset=True``) until
        :meth:`resume`, or for ``seconds``. Live connections go on."""
        self._paused = "reset" if reset else "503"
        if seconds is not None:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._loop.call_later, seconds, self.resume)

    def resume(self) -> None:
        self._paused = None

    def rest_fail_next(self, statuses: Iterable[int]) -> None:
        """Answer the next REST requests with these statuses (429, 500, 503, ...), in order."""
        with self._lock:
            self._rest_failures.extend(statuses)

    def _call(self, coro: Coroutine[Any, Any, int]) -> int:
        assert self._loop is not None, "the server is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _symbol(self, symbol: str) -> str:
        if symbol.upper() not in self.symbols:
            raise ValueError(f"unknown symbol {symbol!r}; the exchange has {self.symbols}")
        return symbol.upper()

    # -- WebSocket -----------------------------------------------------------------------
    def _stream_name(self, name: str) -> bool:
        symbol, _, kind = name.partition("@")
        return kind in KINDS and symbol.islower() and symbol.upper() in self.symbols

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query))
        if self._paused:
            self.rejected.append((503, request.path))
            return connection.respond(503, "Service Unavailable\n")
        if url.path == "/stream":
            combined, streams = True, [s for s in query.get("streams", "").split("/") if s]
        elif url.path == "/ws" or url.path.startswith("/ws/"):
            combined, streams = False, [s for s in url.path[4:].split("/") if s]
        else:
            self.rejected.append((404, request.path))
            return connection.respond(404, "Not Found\n")
        unit = query.get("timeUnit", "MILLISECOND").upper()
        bad = [s for s in streams if not self._stream_name(s)]
        if bad or unit not in ("MILLISECOND", "MICROSECOND"):
            self.rejected.append((400, request.path))
            why = f"Invalid stream name(s): {bad}" if bad else f"Invalid timeUnit: {unit}"
            return connection.respond(400, why + "\n")
        assert isinstance(connection, _Connection)
        connection.record = ConnectionRecord(-1, url.path, query, combined,
                                             list(dict.fromkeys(streams)), unit == "MICROSECOND",
                                             time.monotonic())
        return None

    def _on_frame(self, ws: _Connection, rec: ConnectionRecord, frame: Frame) -> None:
        """Counts an incoming frame and enforces the message-rate limit (in the loop thread)."""
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            rec.messages_received += 1
        elif frame.opcode is Opcode.PING:
            rec.pings_received += 1
        elif frame.opcode is Opcode.PONG:
            rec.pongs_received += 1
        else:
            return
        limit = self.max_incoming_per_second
        if limit is None:
            return
        now = time.monotonic()
        rec._incoming.append(now)
        while rec._incoming and rec._incoming[0] <= now - 1.0:
            rec._incoming.popleft()
        if len(rec._incoming) > limit:
            rec.rate_violations += 1
            session = self._sessions.get(rec.number)
            if session is not None and rec.rate_violations == 1:
                self._close_soon(session, 1008, "Too many requests", "rate limit")

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _Connection) and ws.record is not None
        rec = ws.record
        rec.opened = time.monotonic()
        with self._lock:
            rec.number = len(self._records)
            self._records.append(rec)
        session = _Session(ws, rec)
        self._sessions[rec.number] = session
        loop = asyncio.get_running_loop()
        if self.max_lifetime is not None:
            why = "Connection lifetime exceeded"
            session.handles.append(loop.call_later(self.max_lifetime, self._close_soon, session,
                                                   1000, why, "lifetime"))
        tasks = [loop.create_task(self._stream(session))]
        if self.ping_interval is not None:
            tasks.append(loop.create_task(self._pinger(session)))
        try:
            async for message in ws:
                await self._on_message(session, message)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            for handle in session.handles:
                handle.cancel()
            del self._sessions[rec.number]
            await ws.wait_closed()
            rec.close_code = ws.close_code
            if rec.close_reason is None:
                got_close = ws.protocol.close_rcvd is not None
                rec.close_reason = "client" if got_close else "connection lost"
            rec.closed = time.monotonic()

    def _close_soon(self, session: _Session, code: int, reason: str, why: str) -> None:
        if session.rec.closed is not None or session.ws.state is not State.OPEN:
            return
        session.rec.close_reason = session.rec.close_reason or why
        task = asyncio.get_running_loop().create_task(session.ws.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pinger(self, session: _Session) -> None:
        assert self.ping_interval is not None
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.ping_interval)
                waiter = await session.ws.ping()
                session.rec.pings_sent += 1
                session.handles.append(loop.call_later(self.pong_timeout, self._check_pong,
                                                       session, waiter))
        except ConnectionClosed:
            pass

    def _check_pong(self, session: _Session, waiter: asyncio.Future) -> None:
        if not waiter.done() and session.rec.closed is None:
            session.rec.dropped_for_pong = True
            self._close_soon(session, 1008, "Pong timeout", "pong timeout")

    async def _on_message(self, session: _Session, message: str | bytes) -> None:
        """Answers SUBSCRIBE, UNSUBSCRIBE and LIST_SUBSCRIPTIONS like Binance."""
        try:
            request = json.loads(message)
        except ValueError:
            await self._send(session, _dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
            return
        if not isinstance(request, dict):
            await self._send(session, _dumps({"error": {"code": 2, "msg": "Invalid request"}}))
            return
        rid, method, params = request.get("id"), request.get("method"), request.get("params", [])
        streams = session.rec.streams
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and isinstance(params, list):
            bad = [p for p in params if not (isinstance(p, str) and self._stream_name(p))]
            if bad:
                reply: dict = {"error": {"code": 2,
                                         "msg": f"Invalid request: unknown stream {bad[0]}"}}
            else:
                for name in params:
                    if method == "SUBSCRIBE" and name not in streams:
                        streams.append(name)
                    elif method == "UNSUBSCRIBE" and name in streams:
                        streams.remove(name)
                reply = {"result": None}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": list(streams)}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"}}
        await self._send(session, _dumps({**reply, "id": rid}))

    async def _send(self, session: _Session, frame: str | bytes,
                    meta: tuple[str, str, int] | None = None) -> None:
        await session.ws.send(frame)
        session.rec.messages_sent += 1
        if meta is not None:
            self._sent.append((*meta, session.rec.number))

    async def _stream(self, session: _Session) -> None:
        """Sends the trades of the subscribed streams from the exchange's current position."""
        rec, exchange = session.rec, self.exchange
        cursor = rec.start_index = exchange.position()
        try:
            while True:
                end = exchange.advance(cursor, 256)
                for i in range(cursor, end):
                    trade = exchange.timeline[i]
                    for kind in KINDS:
                        if kind == "aggTrade" and trade.id != trade.agg.last_id:
                            continue
                        name = f"{trade.symbol.lower()}@{kind}"
                        if name in rec.streams:
                            await self._send_trade(session, trade, kind, name)
                idle = end == cursor or (exchange.rate is not None and end == exchange.position())
                cursor = end
                await asyncio.sleep(0.005 if idle else 0)
        except ConnectionClosed:
            pass

    async def _send_trade(self, session: _Session, trade: Trade, kind: Kind, name: str) -> None:
        rec = session.rec
        ident = trade.id if kind == "trade" else trade.agg.id
        action, later = None, 0
        with self._lock:
            for rule in self._rules:
                if (rule.symbol == trade.symbol and rule.kind == kind and ident in rule.ids
                        and rule.conn in (None, rec.number)):
                    action, later = rule.action, rule.later
        if action == "drop":
            return
        frame = self._frame(trade, kind, name, rec)
        meta = (trade.symbol, kind, ident)
        await self._send(session, frame, meta)
        if action == "duplicate":
            session.pending.append((rec.messages_sent + later, frame, meta))
        while session.pending and min(p[0] for p in session.pending) <= rec.messages_sent:
            due = min(session.pending, key=lambda p: p[0])
            session.pending.remove(due)
            await self._send(session, due[1], due[2])

    def _frame(self, trade: Trade, kind: Kind, name: str, rec: ConnectionRecord) -> str:
        micro = rec.micro
        event_time = time.time_ns() // (1000 if micro else 1_000_000)
        trade_time = trade.time_us if micro else trade.time_ms
        if kind == "trade":
            data: dict = {"e": "trade", "E": event_time, "s": trade.symbol, "t": trade.id,
                          "p": trade.price, "q": trade.qty}
            if self.legacy_order_ids:
                data["b"], data["a"] = 50_000_000 + 2 * trade.id, 50_000_001 + 2 * trade.id
            data.update(T=trade_time, m=trade.buyer_maker, M=True)
        else:
            agg = trade.agg
            data = {"e": "aggTrade", "E": event_time, "s": agg.symbol, "a": agg.id, "p": agg.price,
                    "q": agg.qty, "f": agg.first_id, "l": agg.last_id, "T": trade_time,
                    "m": agg.buyer_maker, "M": True}
        return _dumps({"stream": name, "data": data} if rec.combined else data)

    # -- REST ----------------------------------------------------------------------------
    def _rest_answer(self, path: str, query: dict[str, str], micro: bool) -> tuple[int, object]:
        with self._lock:
            failure = self._rest_failures.popleft() if self._rest_failures else None
        if failure is not None:
            code = -1003 if failure == 429 else -1000
            return failure, {"code": code, "msg": f"Injected failure {failure}."}
        if path == "/api/v3/ping":
            return 200, {}
        if path == "/api/v3/time":
            return 200, {"serverTime": time.time_ns() // 1_000_000}
        if path not in ("/api/v3/trades", "/api/v3/historicalTrades", "/api/v3/aggTrades"):
            return 404, {"code": -1, "msg": "Not found."}
        if not query.get("symbol"):
            return 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, "
                                               "was empty/null, or malformed."}
        symbol = query["symbol"]
        if symbol not in self.symbols:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        for param in ("limit", "fromId"):
            if param in query and not query[param].isdigit():
                return 400, {"code": -1100, "msg": f"Illegal characters found in parameter "
                                                   f"'{param}'; legal range is '^[0-9]{{1,20}}$'."}
        limit = max(1, min(1000, int(query.get("limit", 500))))
        from_id = int(query["fromId"]) if "fromId" in query and path != "/api/v3/trades" else None
        if path == "/api/v3/aggTrades":
            rows: list = self.exchange.agg_trades(symbol)
            first = self.exchange.first_agg_id
        else:
            rows = self.exchange.trades(symbol)
            first = self.exchange.first_id
        if from_id is None:
            chosen = rows[-limit:]
        else:
            start = max(0, from_id - first)
            chosen = rows[start:start + limit]
        return 200, [row.rest(micro) for row in chosen]

    def _rest_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                micro = self.headers.get("X-MBX-TIME-UNIT", "").upper() == "MICROSECOND"
                status, payload = server._rest_answer(url.path, query, micro)
                with server._lock:
                    server._rest.append(RestRequest(url.path, query, status, time.monotonic()))
                data = _dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
