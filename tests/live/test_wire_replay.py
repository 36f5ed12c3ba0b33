"""Wire format (JSON per event, DLQ reasons) and replaying a recording onto the broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import orjson
from aiokafka import AIOKafkaConsumer
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.events import TRADE
from qsframework.order import sort_table
from qsframework.recording import RecordingWriter
from qsframework.wire import decode, encode

from ..conftest import make_trades, qsf_cmd


@settings(max_examples=30)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 300))
def test_encode_decode_round_trip(seed, n):
    table = make_trades(seed, n) if n else TRADE.empty()
    pairs = encode(table)
    assert [k for k, _ in pairs] == [k.encode() for k in table.column("key").to_pylist()]
    back, rejected = decode(TRADE, [v for _, v in pairs])
    assert not rejected
    assert back.equals(table)


BAD = [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"ts_event": 1}', "missing field"),
    (orjson.dumps({**dict.fromkeys(TRADE.names, 1), "source": "b", "key": "K", "is_buyer_maker": True,
                   "price": "1.5"}), "'price'"),
    (orjson.dumps({**dict.fromkeys(TRADE.names, 1), "source": "b", "key": "K", "is_buyer_maker": True,
                   "ts_event": 1.5}), "'ts_event'"),
    (orjson.dumps({**dict.fromkeys(TRADE.names, 1), "source": "b", "key": 7, "is_buyer_maker": True}), "'key'"),
]


def test_bad_messages_are_rejected_with_reasons_and_good_ones_kept():
    good = encode(make_trades(1, 5))
    values = [good[0][1], *(b for b, _ in BAD), *(v for _, v in good[1:])]
    table, rejected = decode(TRADE, values)
    assert table.num_rows == 5
    assert table.equals(make_trades(1, 5))
    assert [r.value for r in rejected] == [b for b, _ in BAD]
    for r, (_, needle) in zip(rejected, BAD):
        assert needle in r.reason


def test_replay_publishes_every_event_to_its_topic(stack_endpoints, tmp_path):
    """qsf ingest replay -> qsf.trades: the consumed events are exactly the recording's."""
    trades = make_trades(5, 3000, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    # the broker may hold trades from other tests: count what this replay adds
    before = asyncio.run(_consume_all(stack_endpoints.kafka_bootstrap, "qsf.trades", f"g0-{time.time_ns()}", 0))
    r = subprocess.run([*qsf_cmd(), "ingest", "replay", "--recording", str(tmp_path / "rec")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "published 3,000 events" in r.stdout
    values = asyncio.run(_consume_all(stack_endpoints.kafka_bootstrap, "qsf.trades", f"g-{time.time_ns()}",
                                      len(before) + 3000))
    new = [v for v in values if v not in set(before)]
    table, rejected = decode(TRADE, new)
    assert not rejected
    assert sort_table(table).equals(trades)


def test_replay_paced_by_event_time(stack_endpoints, tmp_path):
    trades = make_trades(6, 50, gaps_ms=(40,))  # 50 events over ~2 s of event time
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    t = time.monotonic()
    r = subprocess.run([*qsf_cmd(), "ingest", "replay", "--recording", str(tmp_path / "rec"), "--speed", "2"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    span = (trades.column("ts_event")[-1].as_py() - trades.column("ts_event")[0].as_py()) / 1e9
    assert time.monotonic() - t >= span / 2  # paced: it cannot finish before the scaled span


def test_replay_without_broker_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "QSF_KAFKA_BOOTSTRAP"}
    r = subprocess.run([*qsf_cmd(), "ingest", "replay", "--recording", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "QSF_KAFKA_BOOTSTRAP" in r.stderr and len(r.stderr.strip().splitlines()) == 1


async def _consume_all(bootstrap: str, topic: str, group: str, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + (30 if want else 3)
        while time.monotonic() < deadline and (not want or len(got) < want):
            batches = await consumer.getmany(timeout_ms=300)
            for msgs in batches.values():
                got.extend(m.value for m in msgs)
    finally:
        await consumer.stop()
    return got


@settings(max_examples=60)
@given(st.lists(st.fixed_dictionaries({
    "ts_event": st.one_of(st.integers(0, 2**62), st.floats(0, 1e18), st.booleans(), st.none()),
    "ts_recv": st.integers(0, 2**62), "source": st.sampled_from(["b", "x"]), "key": st.sampled_from(["K", "L"]),
    "seq": st.one_of(st.integers(-5, 2**40), st.just(True), st.text(max_size=2)),
    "price": st.one_of(st.floats(allow_nan=True, allow_infinity=False, width=64), st.integers(-3, 3), st.text(max_size=2)),
    "qty": st.floats(0, 10), "is_buyer_maker": st.one_of(st.booleans(), st.integers(0, 1)),
}), min_size=1, max_size=8))
def test_batch_decoding_judges_every_message_like_one_by_one(rows):
    """The one-parse fast path never accepts what the message-by-message path rejects."""
    from qsframework.wire import _decode_each

    values = [orjson.dumps(r) for r in rows]
    together, rejected_together = decode(TRADE, values, bounds=None)  # schema checks only, like _decode_each
    careful, rejected_careful = _decode_each(TRADE, values)
    assert together.equals(careful)
    assert [(r.value, r.index) for r in rejected_together] == [(r.value, r.index) for r in rejected_careful]
