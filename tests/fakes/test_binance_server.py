"""The Binance test server itself: protocol shapes, the exchange's history and the faults."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.uri import parse_uri

from tests.fakes.binance_server import BinanceServer

TRADE_KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
AGG_KEYS = ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"]


def connect(url: str) -> ClientConnection:
    """A sync client that keeps reading while the test does not, so that closing stays prompt
    at 2000 messages a second (with a bounded queue it stops reading and misses the close)."""
    return ws_connect(url, max_queue=None, close_timeout=2)


def read(ws: ClientConnection, n: int, timeout: float = 3.0) -> list[dict]:
    return [json.loads(ws.recv(timeout)) for _ in range(n)]


def read_until_id(ws: ClientConnection, last: int, timeout: float = 4.0) -> list[int]:
    """Trade ids of a raw single-symbol trade stream until one reaches ``last``."""
    ids: list[int] = []
    deadline = time.monotonic() + timeout
    while not ids or ids[-1] < last:
        ids.append(json.loads(ws.recv(max(0.01, deadline - time.monotonic())))["t"])
    return ids


def drain(ws: ClientConnection, timeout: float = 3.0) -> tuple[list[str | bytes], ConnectionClosed]:
    """Messages received until the connection closed, and how it closed; fails if it is still
    open after ``timeout``."""
    messages: list[str | bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            messages.append(ws.recv(max(0.01, deadline - time.monotonic())))
    except ConnectionClosed as closed:
        return messages, closed
    raise AssertionError(f"still open after {timeout} s")


def upcoming(srv: BinanceServer, symbol: str, ahead: int) -> int:
    """An id ``ahead`` trades after the exchange's current last trade of ``symbol``."""
    return srv.all_trades(symbol)[-1].id + ahead


def test_combined_stream_wrapper_and_names() -> None:
    with (BinanceServer(["BTCUSDT", "ETHUSDT"], seed=1) as srv,
          connect(srv.ws_url + "/stream?streams=btcusdt@trade/ethusdt@trade") as ws):
        events = read(ws, 60)
    assert {e["stream"] for e in events} == {"btcusdt@trade", "ethusdt@trade"}
    for event in events:
        assert list(event) == ["stream", "data"]
        data = event["data"]
        assert list(data) == TRADE_KEYS
        assert data["e"] == "trade" and data["s"] == event["stream"].split("@")[0].upper()
        assert isinstance(data["p"], str) and float(data["p"]) > 0 and float(data["q"]) > 0
        assert 1_700_000_000_000 < data["T"] < 1_900_000_000_000  # milliseconds
    times = [e["data"]["T"] for e in events]
    assert times == sorted(times)  # interleaved in time order
    rec = srv.connections[0]
    assert rec.combined and rec.streams == ["btcusdt@trade", "ethusdt@trade"]
    assert rec.messages_sent >= 60 and rec.close_reason == "client"


def test_raw_streams_are_bare_and_agg_trades_cover_the_trades() -> None:
    with BinanceServer(["BTCUSDT"], seed=2, legacy_order_ids=True) as srv:
        with connect(srv.ws_url + "/ws/btcusdt@aggTrade") as ws:
            aggs = read(ws, 20)
        with connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
            trades = read(ws, 5)
        history = {t.id: t for t in srv.all_trades("BTCUSDT")}
    for agg in aggs:
        assert list(agg) == AGG_KEYS and agg["e"] == "aggTrade" and agg["s"] == "BTCUSDT"
        members = [history[i] for i in range(agg["f"], agg["l"] + 1)]
        assert {(t.price, t.time_ms, t.buyer_maker) for t in members} == {
            (agg["p"], agg["T"], agg["m"])}
        assert sum(float(t.qty) for t in members) == pytest.approx(float(agg["q"]))
    assert [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + 20))
    assert list(trades[0]) == ["e", "E", "s", "t", "p", "q", "b", "a", "T", "m", "M"]


def test_ids_consecutive_except_dropped_and_rest_has_them() -> None:
    with BinanceServer(["BTCUSDT", "ETHUSDT"], seed=3) as srv:
        first = upcoming(srv, "BTCUSDT", 300)
        dropped = {first, first + 1, first + 2, first + 7}
        srv.drop_ids("BTCUSDT", dropped)
        with connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
            ids = read_until_id(ws, first + 50)
        assert not dropped & set(ids)
        assert ids == [i for i in range(ids[0], ids[-1] + 1) if i not in dropped]
        assert srv.sent_ids("BTCUSDT")[:len(ids)] == ids
        rest = httpx.get(srv.rest_url + "/api/v3/historicalTrades",
                         params={"symbol": "BTCUSDT", "fromId": first, "limit": 10}).json()
        by_id = {t.id: t for t in srv.all_trades("BTCUSDT")}
    assert [r["id"] for r in rest] == list(range(first, first + 10))
    assert rest[0] == by_id[first].rest() and set(rest[0]) == {
        "id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}


def test_duplicates_are_sent_twice_not_adjacent() -> None:
    with BinanceServer(["BTCUSDT"], seed=4) as srv:
        first = upcoming(srv, "BTCUSDT", 300)
        srv.duplicate_ids("BTCUSDT", [first, first + 5], later=3)
        with connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
            ids = read_until_id(ws, first + 30)
    for dup in (first, first + 5):
        where = [k for k, i in enumerate(ids) if i == dup]
        assert len(where) == 2 and where[1] - where[0] == 4
    assert sorted(set(ids)) == list(range(ids[0], ids[-1] + 1))
    assert len(ids) == len(set(ids)) + 2


def test_microsecond_time_unit() -> None:
    with BinanceServer(["ETHUSDT"], seed=5) as srv:
        with connect(srv.ws_url + "/stream?streams=ethusdt@trade&timeUnit=MICROSECOND") as ws:
            micro = [e["data"] for e in read(ws, 10)]
        with connect(srv.ws_url + "/ws/ethusdt@trade?timeUnit=microsecond") as ws:
            micro_raw = read(ws, 3)
        with connect(srv.ws_url + "/ws/ethusdt@trade") as ws:
            milli = read(ws, 3)
        by_id = {t.id: t for t in srv.all_trades("ETHUSDT")}
    assert all(d["T"] == by_id[d["t"]].time_us and d["E"] > 10**15 for d in micro + micro_raw)
    assert all(d["T"] == by_id[d["t"]].time_ms and d["E"] < 10**13 for d in milli)


def test_server_shutdown_event_then_close() -> None:
    with BinanceServer(["BTCUSDT"], seed=6) as srv:
        with connect(srv.ws_url + "/stream?streams=btcusdt@trade") as ws:
            read(ws, 3)
            assert srv.server_shutdown(delay=0.2) == 1
            messages, closed = drain(ws)
        events = [json.loads(m) for m in messages]
        shutdown = [e for e in events if e["stream"] == "!serverShutdown"]
        assert len(shutdown) == 1 and shutdown[0]["data"]["e"] == "serverShutdown"
        assert events.index(shutdown[0]) < len(events) - 1  # trades go on until the close
        assert closed.rcvd is not None and closed.rcvd.code == 1001
        assert srv.wait_until(lambda: not srv.connections[0].open)
        assert srv.connections[0].close_reason == "server shutdown"


def raw_client_ignoring_pings(url: str, timeout: float) -> list[Frame]:
    """Opens a WebSocket that never answers pings; the frames it got until the server closed."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri)
    protocol.send_request(protocol.connect())
    frames: list[Frame] = []
    with socket.create_connection((uri.host, uri.port), timeout=timeout) as sock:
        sock.sendall(b"".join(protocol.data_to_send()))
        while not frames or frames[-1].opcode is not Opcode.CLOSE:
            data = sock.recv(65536)
            if not data:
                break
            protocol.receive_data(data)
            frames += [e for e in protocol.events_received() if isinstance(e, Frame)]
            protocol.data_to_send()  # the automatic pongs are never sent
    return frames


def test_client_that_never_pongs_is_dropped() -> None:
    with BinanceServer(["BTCUSDT"], seed=7, ping_interval=0.2, pong_timeout=0.5) as srv:
        start = time.monotonic()
        frames = raw_client_ignoring_pings(srv.ws_url + "/ws/btcusdt@trade", timeout=3)
        elapsed = time.monotonic() - start
        assert srv.wait_until(lambda: not srv.connections[0].open)
        rec = srv.connections[0]
    assert 0.6 < elapsed < 1.5
    assert sum(f.opcode is Opcode.PING for f in frames) >= 2
    assert frames[-1].opcode is Opcode.CLOSE
    assert rec.dropped_for_pong and rec.pongs_received == 0 and rec.close_reason == "pong timeout"


def test_answered_pings_are_counted_and_keep_the_connection() -> None:
    # pings every 0.25 s keep the pongs under the limit of 5 incoming messages a second
    with (BinanceServer(["BTCUSDT"], seed=7, ping_interval=0.25, pong_timeout=0.5) as srv,
          connect(srv.ws_url + "/ws/btcusdt@trade") as ws):
        deadline = time.monotonic() + 1.4
        while time.monotonic() < deadline:
            ws.recv(1)
        rec = srv.connections[0]
        assert rec.open and not rec.dropped_for_pong
        assert rec.pongs_received >= 4 and rec.pings_sent >= rec.pongs_received


def test_unknown_stream_bad_time_unit_and_pause_are_refused() -> None:
    with BinanceServer(["BTCUSDT"], seed=8) as srv:
        for path in ("/stream?streams=xrpusdt@trade", "/ws/btcusdt@depth", "/ws/BTCUSDT@trade",
                     "/ws/btcusdt@trade?timeUnit=second"):
            with pytest.raises(InvalidStatus) as refused:
                connect(srv.ws_url + path)
            assert refused.value.response.status_code == 400
        srv.pause()
        with pytest.raises(InvalidStatus) as refused:
            connect(srv.ws_url + "/ws/btcusdt@trade")
        assert refused.value.response.status_code == 503
        srv.resume()
        with connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
            assert json.loads(ws.recv(2))["e"] == "trade"
        assert [status for status, _ in srv.rejected] == [400, 400, 400, 400, 503]
        assert len(srv.connections) == 1


def test_too_many_messages_disconnect_and_subscribe_replies() -> None:
    with BinanceServer(["BTCUSDT", "ETHUSDT"], seed=9) as srv:
        with connect(srv.ws_url + "/ws") as ws:
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 1}))
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            replies = []
            while len(replies) < 2:
                message = json.loads(ws.recv(2))
                if "id" in message:
                    replies.append(message)
                else:
                    assert message["e"] == "aggTrade" and message["s"] == "ETHUSDT"
            assert replies == [{"result": None, "id": 1}, {"result": ["ethusdt@aggTrade"], "id": 2}]
            with contextlib.suppress(ConnectionClosed):  # the server may close before the 10th
                for k in range(10):
                    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3 + k}))
            _, closed = drain(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1008
        assert srv.wait_until(lambda: not srv.connections[0].open)
        rec = srv.connections[0]
    assert rec.rate_violations >= 1 and rec.close_reason == "rate limit"
    assert rec.messages_received >= 6


def test_reconnect_jumps_and_concurrent_connections_overlap() -> None:
    with BinanceServer(["BTCUSDT"], seed=10, rate=2000) as srv:
        url = srv.ws_url + "/ws/btcusdt@trade"
        with connect(url) as a, connect(url) as b:
            ids_a = [e["t"] for e in read(a, 1000)]  # 0.5 s of trades: room for a slow connect
            ids_b = [e["t"] for e in read(b, 200)]
        time.sleep(0.3)
        with connect(url) as c:
            ids_c = [e["t"] for e in read(c, 5)]
    assert ids_a[0] <= ids_b[0] < ids_a[800]  # b opened after a ...
    assert ids_b == ids_a[ids_a.index(ids_b[0]):][:200]  # ... and got the same trades
    assert ids_c[0] > max(ids_a + ids_b) + 100  # the trades of the gap were missed
    assert srv.sent_ids("BTCUSDT", conn=0)[:1000] == ids_a
    assert srv.sent_ids("BTCUSDT", conn=2)[:5] == ids_c
    starts = [r.start_index for r in srv.connections]
    assert starts == sorted(starts)


def test_lifetime_close_kill_and_malformed_injection() -> None:
    with BinanceServer(["BTCUSDT"], seed=11, max_lifetime=0.5) as srv:
        with connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
            start = time.monotonic()
            _, closed = drain(ws)
        assert 0.4 < time.monotonic() - start < 1.5
        assert closed.rcvd is not None and closed.rcvd.code == 1000
        assert srv.connections[0].close_reason == "lifetime"

        srv.max_lifetime = None
        with connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
            assert srv.wait_until(lambda: len(srv.connections) == 2
                                  and srv.connections[1].messages_sent > 0)
            bad = ["{not json", b"\x00\x01", '{"e":"trade","s":"BTCUSDT"}']
            assert srv.send_malformed(bad) == 1
            got = []
            while len(got) < 3:
                message = ws.recv(2)
                if isinstance(message, bytes) or not message.startswith('{"e":"trade","E":'):
                    got.append(message)
            assert got == bad
            assert srv.kill_all() == 1
            _, killed = drain(ws)
            assert isinstance(killed, ConnectionClosedError) and killed.rcvd is None  # no frame
        assert srv.wait_until(lambda: not srv.connections[1].open)
        assert srv.connections[1].close_reason == "killed"


def test_rest_endpoints_errors_and_counts() -> None:
    with BinanceServer(["BTCUSDT"], seed=12, backlog=3000) as srv:
        with httpx.Client(base_url=srv.rest_url) as http:
            bad = http.get("/api/v3/historicalTrades", params={"symbol": "DOGEUSDT"})
            recent = http.get("/api/v3/trades", params={"symbol": "BTCUSDT", "limit": 5}).json()
            first = srv.all_trades("BTCUSDT")[0].id
            full = http.get("/api/v3/historicalTrades",
                            params={"symbol": "BTCUSDT", "fromId": first, "limit": 5000}).json()
            default = http.get("/api/v3/historicalTrades",
                               params={"symbol": "BTCUSDT", "fromId": first})
            aggs = http.get("/api/v3/aggTrades",
                            params={"symbol": "BTCUSDT", "fromId": 500_010, "limit": 3}).json()
            micro = http.get("/api/v3/trades", params={"symbol": "BTCUSDT", "limit": 1},
                             headers={"X-MBX-TIME-UNIT": "MICROSECOND"}).json()
            srv.rest_fail_next([429])
            limited = http.get("/api/v3/trades", params={"symbol": "BTCUSDT"})
        history = srv.all_trades("BTCUSDT")
    assert bad.status_code == 400 and bad.json() == {"code": -1121, "msg": "Invalid symbol."}
    ids = [t["id"] for t in recent]
    assert ids == sorted(ids) and len(ids) == 5 and ids[-1] <= history[-1].id
    assert [t["id"] for t in full] == list(range(first, first + 1000))  # capped at 1000
    assert len(default.json()) == 500
    assert [a["a"] for a in aggs] == [500_010, 500_011, 500_012] and list(aggs[0]) == AGG_KEYS[3:]
    assert micro[0]["time"] > 10**15
    assert limited.status_code == 429
    assert len(srv.rest_requests) == 7 and srv.rest_requests[0].status == 400
