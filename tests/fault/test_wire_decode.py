"""The Kafka wire decoder on hostile input: it never raises, every message is either an event
or a reject with its reason, and only messages that are valid events on their own pass."""

from __future__ import annotations

import math

import orjson
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsframework.events import TRADE, define_kind
from qsframework.validity import DEFAULT_FLOOR_NS
from qsframework.wire import _decode_block, decode

T = 1_767_571_200_000_000_000


def _trade(seq: int, /, **changes) -> dict:
    return {"ts_event": T + seq, "ts_recv": T + seq, "source": "binance", "key": "BTCUSDT", "seq": seq,
            "price": 100.0 + seq, "qty": 0.5, "is_buyer_maker": False, **changes}


def test_two_halves_of_bad_messages_never_make_events():
    """Each message is parsed on its own: two bad halves that would join into valid JSON
    (and one message holding two objects) are rejected, not decoded."""
    first = orjson.dumps(_trade(1))[:-1] + b',"x":[1'
    second = b'2]}'
    both = orjson.dumps(_trade(3)) + b"," + orjson.dumps(_trade(4))
    table, rejected = decode(TRADE, [first, second, both, orjson.dumps(_trade(5))])
    assert table.column("seq").to_pylist() == [5]
    assert [r.index for r in rejected] == [0, 1, 2]
    assert all(r.reason.startswith("malformed JSON") for r in rejected)


def test_a_kind_of_ones_own_with_narrow_types_rejects_what_does_not_fit():
    kind = define_kind("wire_probe", [pa.field("level", pa.int8(), nullable=False), pa.field("gain", pa.float32())])
    base = {"ts_event": T, "ts_recv": T, "source": "s", "key": "k", "seq": 1}
    values = [orjson.dumps({**base, "level": 5, "gain": 1.5}), orjson.dumps({**base, "level": 500}),
              orjson.dumps({**base, "level": "x"}), orjson.dumps({**base, "level": 3, "gain": None})]
    table, rejected = decode(kind, values)
    assert table.column("level").to_pylist() == [5, 3]
    assert [(r.index, r.reason) for r in rejected] == [(1, "field 'level' has a bad value 500"),
                                                       (2, "field 'level' has a bad value 'x'")]


good = st.builds(lambda seq, price, qty, key: (orjson.dumps(_trade(seq, price=price, qty=qty, key=key)), True),
                 st.integers(0, 10**6), st.floats(1e-300, 1e300) | st.integers(1, 2**62), st.floats(1e-12, 1e12),
                 st.text(min_size=1, max_size=12).filter(lambda k: "\x00" not in k))


# bytes no JSON encoder would write: each is judged as orjson parses it on its own
SPLICES = [
    lambda v: v.replace(b'"seq":', b'"seq":\n', 1),  # a newline inside: still one valid message
    lambda v: b" " + v,  # leading blank: valid
    lambda v: v + b"\n",  # trailing newline: valid
    lambda v: v.replace(b'"price":', b'"price":NaN,"x":', 1),
    lambda v: v.replace(b'"qty":0.5', b'"qty":Infinity', 1),
    lambda v: v.replace(b'"seq":', b'"seq":1,"seq":', 1),  # a repeated field: the last counts
    lambda v: v.replace(b'"seq":', b'"seq":1.0,"y":', 1),
    lambda v: v.replace(b'"seq":', b'"seq":1e3,"y":', 1),
    lambda v: v.replace(b'"BTCUSDT"', b'"BTC\xffUSDT"', 1),  # not UTF-8
    lambda v: v.replace(b'"BTCUSDT"', b'"BTC\\ud800"', 1),  # a lone surrogate
    lambda v: v + v,  # two events in one message
    lambda v: v + b"\n" + v,
    lambda v: b"",
    lambda v: b"\n",
]
spliced = st.builds(lambda seq, change: change(orjson.dumps(_trade(seq))), st.integers(0, 100), st.sampled_from(SPLICES))
mutated = st.one_of(  # mostly bad: _is_valid decides
    st.none(),
    st.binary(max_size=60),
    st.builds(lambda seq, field, v: orjson.dumps(_trade(seq, **{field: v})),
              st.integers(0, 100), st.sampled_from(["price", "qty", "ts_event", "ts_recv", "seq", "key", "source"]),
              st.sampled_from([0, -1.0, None, "1", 2**63, 0.5, [], {}, True, 1e308, DEFAULT_FLOOR_NS - 1,
                               T + 10**12, "a\x00b", "K" * 300])),
    st.builds(lambda seq, field: orjson.dumps({k: v for k, v in _trade(seq).items() if k != field}),
              st.integers(0, 100), st.sampled_from(sorted(_trade(0)))),
    spliced,
).map(lambda v: (v, False))


NOW = T + 10**9


def _is_valid(value: bytes | None) -> bool:
    """The wire and validity rules for trades, read one message at a time, received at NOW."""
    try:
        obj = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return False
    if not isinstance(obj, dict):
        return False
    ints = ("ts_event", "ts_recv", "seq")
    if any(type(obj.get(f)) is not int or not -(2**63) <= obj[f] < 2**63 for f in ints):
        return False
    if any(type(obj.get(f)) not in (int, float) or not math.isfinite(obj[f]) or obj[f] <= 0 for f in ("price", "qty")):
        return False
    if any(type(obj.get(f)) is not str or "\x00" in obj[f] for f in ("source", "key")):
        return False
    return (type(obj.get("is_buyer_maker")) is bool and len(obj["key"].encode()) <= 256
            and DEFAULT_FLOOR_NS <= obj["ts_event"] <= obj["ts_recv"] + 60 * 10**9
            and obj["ts_recv"] <= NOW + 60 * 10**9)


@pytest.mark.parametrize("splice", range(len(SPLICES)))
def test_one_odd_message_among_good_ones_is_judged_on_its_own(splice):
    """Each odd message between good ones: the block read must not take what a
    message-by-message read refuses, nor lose what it takes."""
    values = [orjson.dumps(_trade(1)), SPLICES[splice](orjson.dumps(_trade(2))), orjson.dumps(_trade(3))]
    _every_message_is_an_event_or_a_reject_with_a_reason(values)


@given(st.lists(st.one_of(good, mutated), max_size=40))
def test_every_message_is_an_event_or_a_reject_with_a_reason(messages):
    _every_message_is_an_event_or_a_reject_with_a_reason([v for v, _ in messages])
    expected = [i for i, (v, _) in enumerate(messages) if _is_valid(v)]
    assert {i for i, (_, ok) in enumerate(messages) if ok} <= set(expected)  # every good one passes


def _every_message_is_an_event_or_a_reject_with_a_reason(values: list[bytes | None]) -> None:
    table, rejected = decode(TRADE, values, now_ns=NOW)
    expected = [i for i, v in enumerate(values) if _is_valid(v)]
    assert [r.index for r in rejected] == [i for i in range(len(values)) if i not in set(expected)]
    assert all(r.reason for r in rejected)
    # every value as the message says, exactly (the floats too)
    as_float = {"price", "qty"}
    assert table.to_pylist() == [{f: float(v) if f in as_float else v for f, v in orjson.loads(values[i]).items()
                                  if f in TRADE.schema.names} for i in expected]


@given(st.lists(good, min_size=1, max_size=40))
def test_a_batch_of_good_messages_is_read_in_one_block_exactly(messages):
    """The usual case, a batch with no bad message, goes through Arrow's JSON reader whole
    (not message by message), and gives every value as the message says."""
    values = [v for v, _ in messages]
    block = _decode_block(TRADE, values)
    assert block is not None
    table, rejected = decode(TRADE, values, now_ns=NOW)
    assert not rejected and table.equals(block)
    assert table.column("price").to_pylist() == [float(orjson.loads(v)["price"]) for v in values]
