"""The Binance frame parser: exact normalization, reasons for bad frames, ids kept in sequence."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.adapters.binance.protocol import TradeParser, stream_names

T_MS = 1_767_571_200_123
R = T_MS * 1_000_000  # received when it happened: ts_recv is R + a few ns


def trade(tid: int, *, sym: str = "BTCUSDT", t: int = T_MS, p: object = "95000.10", q: object = "0.00200",
          m: object = True, wrap: bool = True, **extra: object) -> bytes:
    data = {"e": "trade", "E": t + 2, "s": sym, "t": tid, "p": p, "q": q, "T": t, "m": m, "M": True, **extra}
    # stdlib json: it writes integers of any size (a hostile server may send them)
    return json.dumps({"stream": f"{sym.lower()}@trade", "data": data} if wrap else data,
                      separators=(",", ":")).encode()


def agg(aid: int, *, sym: str = "ETHUSDT", t: int = T_MS) -> bytes:
    data = {"e": "aggTrade", "E": t, "s": sym, "a": aid, "p": "3300.5", "q": "1.25", "f": 10, "l": 12,
            "T": t, "m": False, "M": True}
    return orjson.dumps({"stream": f"{sym.lower()}@aggTrade", "data": data})


def parser(stream: str = "trade") -> TradeParser:
    return TradeParser(("btcusdt", "ETHUSDT"), stream=stream)


def test_trade_frames_become_exact_trade_rows():
    p = parser()
    p.feed(trade(7, b=1, a=2), R + 111)  # old frames still carry order ids b/a
    p.feed(trade(8, t=1_767_571_200_123_456, p="95000.2", q="1", m=False), R + 222)  # timeUnit=MICROSECOND
    p.feed(trade(9, sym="ETHUSDT", wrap=False), R + 333)  # raw stream: no wrapper
    rows = p.take_trades().to_pylist()
    assert rows == [
        {"ts_event": T_MS * 1_000_000, "ts_recv": R + 111, "source": "binance", "key": "BTCUSDT", "seq": 7,
         "price": 95000.10, "qty": 0.002, "is_buyer_maker": True},
        {"ts_event": 1_767_571_200_123_456_000, "ts_recv": R + 222, "source": "binance", "key": "BTCUSDT",
         "seq": 8, "price": 95000.2, "qty": 1.0, "is_buyer_maker": False},
        {"ts_event": T_MS * 1_000_000, "ts_recv": R + 333, "source": "binance", "key": "ETHUSDT", "seq": 9,
         "price": 95000.10, "qty": 0.002, "is_buyer_maker": True},
    ]
    assert p.stats.rejected == 0 and p.take_gaps().num_rows == 0


def test_agg_trades_use_the_aggregate_id():
    p = parser("aggTrade")
    p.feed(agg(500), R + 1)
    p.feed(agg(501), R + 2)
    assert p.take_trades().column("seq").to_pylist() == [500, 501]
    assert p.stream_path == "/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"


@pytest.mark.parametrize(("frame", "reason"), [
    (b"{not json", "malformed JSON"),
    (b"[1,2]", "not a JSON object"),
    (orjson.dumps({"stream": "xrpusdt@trade", "data": {}}), "unknown stream 'xrpusdt@trade'"),
    (orjson.dumps({"stream": "btcusdt@trade", "data": {"e": "kline", "s": "BTCUSDT"}}), "unexpected event type 'kline'"),
    (orjson.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT", "t": 1, "T": T_MS, "q": "1", "m": True}}), "missing field 'p'"),
    (trade(1, p="abc"), "price is not a positive number: 'abc'"),
    (trade(1, p="-5"), "price is not a positive number: '-5'"),
    (trade(1, q="0"), "quantity is not a positive number: '0'"),
    (trade(1, p="NaN"), "price is not a positive number: 'NaN'"),
    (trade(1, p=True), "price is not a positive number: 'True'"),
    (trade(1, m="yes"), "buyer-maker flag is not a boolean: 'yes'"),
    (trade(1, t=-3), "trade time is not a positive integer: -3"),
    (trade("12"), "trade id is not a non-negative integer: '12'"),
    (trade(2**63), "trade id does not fit in 64 bits: 9223372036854775808"),
    (trade(2**70), "trade id is not a non-negative integer: 1.1805916207174113e+21"),
    # hostile times carry the next id (2): the good trade 2 that follows must still be kept
    (trade(2, t=10**17), "ts_event more than 60 s ahead of ts_recv (max-future)"),
    (trade(2, t=4_102_444_800_000), "ts_event more than 60 s ahead of ts_recv (max-future)"),  # 2100
    (trade(2, t=631_152_000_000), "ts_event before the floor 2000-01-01T00:00:00Z"),  # 1990
    (orjson.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "ETHUSDT", "t": 1, "T": T_MS, "p": "1", "q": "1", "m": True}}),
     "symbol 'ETHUSDT' does not match stream 'btcusdt@trade'"),
])
def test_bad_frames_are_rejected_with_a_reason_and_good_ones_kept(frame, reason):
    p = parser()
    p.feed(trade(1), R + 1)
    p.feed(frame, R + 2)
    p.feed(trade(2), R + 3)
    assert p.take_trades().column("seq").to_pylist() == [1, 2]
    rejects = p.take_rejects()
    assert [(r.reason, r.frame, r.ts_recv) for r in rejects] == [(reason, frame, R + 2)]
    assert p.stats.rejected == 1


def test_control_messages_and_server_shutdown_are_not_trades():
    p = parser()
    p.feed(b'{"result":null,"id":1}', R + 1)
    p.feed(b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1767571200000}}', R + 2)
    assert p.shutdown and p.stats.shutdowns == 1 and p.stats.control == 1
    p.feed(b'{"e":"serverShutdown","E":1767571200000}', R + 3)
    assert p.stats.shutdowns == 2 and p.stats.rejected == 0 and p.take_trades().num_rows == 0


def test_duplicates_dropped_gaps_reported_late_ids_accepted():
    p = parser()
    for tid in (10, 11, 11, 12, 15, 13, 16, 10):
        p.feed(trade(tid, t=T_MS + tid), R + tid)
    assert p.take_trades().column("seq").to_pylist() == [10, 11, 12, 15, 13, 16]
    gaps = p.take_gaps().to_pylist()
    assert [(g["key"], g["first_id"], g["last_id"], g["filled"], g["ts_event"]) for g in gaps] == [
        ("BTCUSDT", 13, 14, 0, (T_MS + 15) * 1_000_000)]
    assert (p.stats.duplicates, p.stats.gaps, p.stats.missing, p.stats.late) == (2, 1, 2, 1)


def test_ids_are_sequenced_per_symbol():
    p = parser()
    p.feed(trade(100), R + 1)
    p.feed(trade(5, sym="ETHUSDT"), R + 2)
    p.feed(trade(101), R + 3)
    p.feed(trade(6, sym="ETHUSDT"), R + 4)
    assert p.take_gaps().num_rows == 0 and p.stats.duplicates == 0


def test_stream_names_and_bad_symbols():
    assert stream_names(["btcusdt", "ETHUSDT"], "trade") == {"btcusdt@trade": "BTCUSDT", "ethusdt@trade": "ETHUSDT"}
    with pytest.raises(ValueError, match="not a Binance symbol"):
        stream_names(["btc/usdt"], "trade")
    with pytest.raises(ValueError, match="stream must be one of"):
        stream_names(["btcusdt"], "depth")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=80), st.data())
def test_every_id_is_delivered_once_whatever_the_arrival_order(ids, data):
    """Any arrival order with repeats: each distinct id comes out exactly once, gaps cover
    exactly the ids skipped over, and the frames in between that are junk never cost a trade."""
    p = parser()
    junk = data.draw(st.lists(st.sampled_from([b"{", b"[]", trade(1, p="0")]), max_size=len(ids)))
    for i, tid in enumerate(ids):
        p.feed(trade(tid), R + i)
        if i < len(junk):
            p.feed(junk[i], R + i)
    out = p.take_trades().column("seq").to_pylist()
    # the first id starts the sequence; after that an id is new if it is above the max so far
    # or inside a hole the parser still remembers
    expected, seen, top = [], set(), None
    for tid in ids:
        if tid in seen:
            continue
        if top is None or tid > top or tid in set(range(ids[0], top)) - seen:
            expected.append(tid)
            seen.add(tid)
            top = tid if top is None else max(top, tid)
    assert out == expected
    assert len(out) == len(set(out))
    assert p.stats.rejected == len(junk)


def test_the_max_future_bound_is_the_parsers_and_the_sources():
    from qsframework.adapters.binance.client import BinanceConfig, BinanceSource
    from qsframework.validity import TimeBounds

    half_hour_ahead = trade(2, t=T_MS + 30 * 60 * 1000)
    strict, lenient = parser(), TradeParser(("btcusdt",), bounds=TimeBounds(max_future_ns=3600 * 10**9))
    for p in (strict, lenient):
        p.feed(trade(1), R)
        p.feed(half_hour_ahead, R)
    assert strict.take_trades().column("seq").to_pylist() == [1]
    assert [r.reason for r in strict.take_rejects()] == ["ts_event more than 60 s ahead of ts_recv (max-future)"]
    assert lenient.take_trades().column("seq").to_pylist() == [1, 2] and not lenient.take_rejects()
    cfg = BinanceConfig(symbols=("BTCUSDT",), url="ws://127.0.0.1:1", bounds=TimeBounds(max_future_ns=5))
    assert BinanceSource(cfg).parser.bounds.max_future_ns == 5
