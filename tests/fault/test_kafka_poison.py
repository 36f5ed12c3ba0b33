"""Poison messages on Kafka and data errors in the PostgreSQL sink never kill ``qsf process``.

Every test runs the real ``qsf process`` on the real broker and PostgreSQL. Bad messages
must end up on the DLQ with their reason (and origin), and what PostgreSQL and ``--out``
hold must equal a backtest of the valid events (computed by the backtest of a recording of
exactly those events), nothing lost and nothing doubled.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from qsframework.backtest import run_backtest
from qsframework.events import TRADE
from qsframework.kafka import DLQ_MAX_KEY_BYTES, DLQ_MAX_VALUE_BYTES, dead_letter, ensure_topics
from qsframework.recording import Recording, RecordingWriter
from qsframework.validity import DEFAULT_FLOOR_NS
from qsframework.wire import encode

from ..conftest import SPREAD_SPEC, T0, make_trades, qsf_cmd
from ..live.feeds import fresh_database

PARAMS = {"window": "2s", "sample": "500ms", "threshold": "0.004"}
SUBSCRIBED = ("BTCUSDT", "ETHUSDT")  # the spread strategy's symbols; SOLUSDT is published too
YEAR_2100 = 4_102_444_800 * 10**9


# -- poison messages ------------------------------------------------------------------------
@dataclass(frozen=True)
class Poison:
    """A bad message, and what its DLQ record must say."""

    key: bytes | None
    value: bytes | None
    reason: str  # a part of the DLQ reason


def _with(row: dict, **changes) -> bytes:
    return orjson.dumps({**row, **changes})


POISONS: dict[str, Callable[[dict, random.Random], Poison]] = {
    "null value": lambda row, rng: Poison(row["key"].encode(), None, "null value"),
    "over 1 MB": lambda row, rng: Poison(row["key"].encode(), b'{"ts_event": ' + b"9" * (1_500_000 + rng.randrange(1000)),
                                         "malformed JSON"),
    "price <= 0": lambda row, rng: Poison(row["key"].encode(), _with(row, price=rng.choice([0.0, -1.5])),
                                          "price must be > 0"),
    "qty <= 0": lambda row, rng: Poison(row["key"].encode(), _with(row, qty=rng.choice([0.0, -0.25])),
                                        "qty must be > 0"),
    "dated 2100": lambda row, rng: Poison(row["key"].encode(), _with(row, ts_event=YEAR_2100 + rng.randrange(10**12)),
                                          "max-future"),
    "received in 2100": lambda row, rng: Poison(row["key"].encode(), _with(row, ts_event=YEAR_2100, ts_recv=YEAR_2100),
                                                "ahead of this machine's clock"),
    "dated 1970": lambda row, rng: Poison(row["key"].encode(), _with(row, ts_event=rng.randrange(DEFAULT_FLOOR_NS)),
                                          "before the floor"),
    "NUL in a string": lambda row, rng: Poison(row["key"].encode(), _with(row, source="bin\x00ance"),
                                               "source contains a NUL byte"),
    "400 KB key": lambda row, rng: Poison(b"K" * 400_000, _with(row, key="K" * 400_000), "key longer than"),
}


# -- helpers ----------------------------------------------------------------------------------
def _publish(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> list[int]:
    """Send the messages in order to partition 0 of ``topic``; their offsets."""

    async def go() -> list[int]:
        await ensure_topics(bootstrap, [topic])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20, acks="all")
        await producer.start()
        try:
            futures = [await producer.send(topic, key=k, value=v) for k, v in messages]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()

    return asyncio.run(go())


def _read_topic(bootstrap: str, topic: str) -> list:
    """Every record of partition 0 of ``topic``, from the beginning to its current end."""

    async def go() -> list:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    max_partition_fetch_bytes=16 << 20, fetch_max_bytes=64 << 20)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            got: list = []
            deadline = time.monotonic() + 120  # a safety net only
            while await consumer.position(tp) < end:  # offsets, not a count: transaction markers take some
                assert time.monotonic() < deadline, f"read {len(got)} records of {topic}, to offset {end}"
                for msgs in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    got.extend(msgs)
            return got
        finally:
            await consumer.stop()

    return asyncio.run(go())


def _process(bootstrap: str, dsn: str, prefix: str, out: Path, spec: str = SPREAD_SPEC,
             params: dict[str, str] = PARAMS) -> subprocess.CompletedProcess:
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    return subprocess.run(
        [*qsf_cmd(), "process", spec, *(f"-p{k}={v}" for k, v in params.items()), "--topic-prefix", prefix,
         "--group", f"g-{prefix}", "--sink", "timescale", "--out", str(out), "--exit-when-idle", "3"],
        capture_output=True, text=True, env=env, timeout=600,
    )


COLUMNS = {
    "trades": ("ts_event", "ts_recv", "source", "key", "seq", "price", "qty", "is_buyer_maker"),
    "signals": ("ts_event", "key", "seq", "name", "value", "attrs"),
    "alerts": ("ts_event", "key", "seq", "name", "text", "dedup_key"),
}


def _pg_rows(dsn: str) -> dict[str, list[tuple]]:
    """The rows of each table, as sorted tuples of COLUMNS."""

    async def go() -> dict[str, list[tuple]]:
        con = await asyncpg.connect(dsn)
        try:
            return {name: sorted(tuple(r) for r in await con.fetch(f"SELECT {', '.join(cols)} FROM {name}"))
                    for name, cols in COLUMNS.items()}
        finally:
            await con.close()

    return asyncio.run(go())


def _rows(name: str, rows: list[dict]) -> list[tuple]:
    """``rows`` as the sorted tuples of COLUMNS[name] (what _pg_rows gives)."""
    return sorted(tuple(r[c] for c in COLUMNS[name]) for r in rows)


def _expected(tmp_path: Path, valid: pa.Table, spec: str = SPREAD_SPEC, params: dict[str, str] = PARAMS):
    """A backtest of exactly the valid events, and the PostgreSQL rows it implies."""
    from qsframework.loader import load_strategy

    with RecordingWriter(tmp_path / "valid") as w:
        w.write("trade", valid)
    result = run_backtest(load_strategy(spec), Recording(tmp_path / "valid"), overrides=params)
    return result, {
        "trades": _rows("trades", [r for r in valid.to_pylist() if r["key"] in SUBSCRIBED]),
        "signals": _rows("signals", result.tables["signals"].to_pylist()),
        "alerts": _rows("alerts", result.tables["alerts"].to_pylist()),
    }


def _assert_dead_lettered(dlq: list, sent: dict[int, Poison], topic: str) -> None:
    """Each poison message (by its offset in ``topic``) is on the DLQ once, with its reason,
    its origin and, when cut to fit, a ``truncated`` header."""
    by_offset: dict[int, list] = {}
    for rec in dlq:
        headers = dict(rec.headers)
        if headers.get("topic") == topic.encode() and "offset" in headers:
            by_offset.setdefault(int(headers["offset"]), []).append(rec)
    for offset, poison in sent.items():
        assert len(by_offset.get(offset, [])) == 1, f"offset {offset} ({poison.reason}) not dead-lettered once"
        rec = by_offset[offset][0]
        headers = dict(rec.headers)
        assert poison.reason in headers["reason"].decode(), headers["reason"]
        assert headers["partition"] == b"0" and headers["kind"] == b"trade"
        value = poison.value or b""
        assert rec.value == value[:DLQ_MAX_VALUE_BYTES]
        assert rec.key == (None if poison.key is None else poison.key[:DLQ_MAX_KEY_BYTES])
        cut = [f"value={len(value)}"] if len(value) > DLQ_MAX_VALUE_BYTES else []
        cut += [f"key={len(poison.key)}"] if poison.key is not None and len(poison.key) > DLQ_MAX_KEY_BYTES else []
        assert headers.get("truncated") == (",".join(cut).encode() if cut else None)


# -- tests ------------------------------------------------------------------------------------
def test_dead_letter_record_fits_and_says_what_was_cut():
    letter = dead_letter(reason="r" * 5000, value=b"v" * 2_000_000, key=b"k" * 400_000, topic="qsf.trades",
                         partition=3, offset=17, kind="trade")
    headers = dict(letter.headers)
    assert len(letter.value) == DLQ_MAX_VALUE_BYTES and len(letter.key) == DLQ_MAX_KEY_BYTES
    assert headers["truncated"] == b"value=2000000,key=400000"
    assert headers["topic"] == b"qsf.trades" and headers["partition"] == b"3" and headers["offset"] == b"17"
    assert len(letter.value) + len(letter.key) + sum(len(k) + len(v) for k, v in letter.headers) < 1 << 20
    tombstone = dead_letter(reason="null value", value=None, key=None)
    assert tombstone.value == b"" and tombstone.key is None
    assert [k for k, _ in tombstone.headers] == ["reason"]


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--max-future", "soon", "qsf: error: --max-future: not a duration: 'soon'"),
    ("--floor", "yesterday", "qsf: error: --floor: not a time: 'yesterday'"),
])
def test_bad_bounds_are_one_line_and_exit_2(option, value, says):
    r = subprocess.run([*qsf_cmd(), "process", SPREAD_SPEC, option, value, "--bootstrap", "127.0.0.1:9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(says), r.stderr


def test_each_poison_kind_is_dead_lettered_and_the_rest_is_processed(stack_endpoints, tmp_path):
    """One message of each poison kind (the one dated 2100 first: it must not move the
    watermark), between valid trades of subscribed and other symbols."""
    bootstrap = stack_endpoints.kafka_bootstrap
    valid = make_trades(31, 2500, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    pairs = encode(valid)
    rows = valid.to_pylist()
    rng = random.Random(31)
    names = ["dated 2100", *[n for n in POISONS if n != "dated 2100"]]
    at = {5 + 250 * i: name for i, name in enumerate(names)}
    messages: list[tuple[bytes | None, bytes | None]] = []
    poison_at: dict[int, Poison] = {}
    for i, pair in enumerate(pairs):
        if i in at:
            poison = POISONS[at[i]](rows[i], rng)
            poison_at[len(messages)] = poison
            messages.append((poison.key, poison.value))
        messages.append(pair)
    prefix = f"p{uuid.uuid4().hex[:8]}"
    offsets = _publish(bootstrap, f"{prefix}.trades", messages)
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")

    r = _process(bootstrap, dsn, prefix, tmp_path / "live")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"({len(POISONS)} rejected, 0 late)" in r.stdout

    result, expected = _expected(tmp_path, valid)
    assert result.signals > 0 and result.alerts > 0
    assert _pg_rows(dsn) == expected  # and no SOLUSDT trade: the strategy does not read them
    assert pq.read_table(tmp_path / "live" / "signals.parquet").equals(result.tables["signals"])
    assert pq.read_table(tmp_path / "live" / "alerts.parquet").equals(result.tables["alerts"])
    dlq = _read_topic(bootstrap, f"{prefix}.dlq")
    assert len(dlq) == len(POISONS)
    _assert_dead_lettered(dlq, {offsets[i]: p for i, p in poison_at.items()}, f"{prefix}.trades")


def test_a_restart_does_not_meet_the_poison_again(stack_endpoints, tmp_path):
    """The poison's offset is committed: a second run of the group finds nothing to do."""
    bootstrap = stack_endpoints.kafka_bootstrap
    valid = make_trades(32, 300)
    rows = valid.to_pylist()
    poison = POISONS["null value"](rows[0], random.Random(0))
    prefix = f"p{uuid.uuid4().hex[:8]}"
    _publish(bootstrap, f"{prefix}.trades", [*encode(valid)[:150], (poison.key, poison.value), *encode(valid)[150:]])
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    first = _process(bootstrap, dsn, prefix, tmp_path / "one")
    assert first.returncode == 0, first.stderr
    assert "processed 300 events (1 rejected" in first.stdout
    again = _process(bootstrap, dsn, prefix, tmp_path / "two")
    assert again.returncode == 0, again.stderr
    assert "processed 0 events (0 rejected" in again.stdout
    assert len(_read_topic(bootstrap, f"{prefix}.dlq")) == 1


def test_an_input_row_the_database_refuses_is_dead_lettered_with_its_origin(stack_endpoints, tmp_path):
    """A trade valid by the rules but with a source too long for the table's key index: the
    strategy reads it, PostgreSQL refuses it, and the DLQ names its topic, partition and offset."""
    bootstrap = stack_endpoints.kafka_bootstrap
    valid = make_trades(38, 600)
    rows = valid.to_pylist()
    rows[300]["source"] = random.Random(38).randbytes(8000).hex()  # 16 KB
    table = pa.Table.from_pylist(rows, schema=TRADE.schema)
    prefix = f"p{uuid.uuid4().hex[:8]}"
    offsets = _publish(bootstrap, f"{prefix}.trades", encode(table))
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    r = _process(bootstrap, dsn, prefix, tmp_path / "live")
    assert r.returncode == 0, r.stderr
    assert "(0 rejected, 0 late)" in r.stdout
    result, expected = _expected(tmp_path, table)
    assert _pg_rows(dsn) == {**expected, "trades": _rows("trades", rows[:300] + rows[301:])}
    (dlq,) = _read_topic(bootstrap, f"{prefix}.dlq")
    headers = dict(dlq.headers)
    assert headers["reason"].decode().startswith("postgres refused the row: ProgramLimitExceededError: index row")
    assert (headers["topic"], headers["partition"], headers["offset"], headers["kind"]) == (
        f"{prefix}.trades".encode(), b"0", str(offsets[300]).encode(), b"trade")
    assert orjson.loads(dlq.value) == rows[300] and dlq.key == rows[300]["key"].encode()


TEXT_STRATEGY = '''
from qsframework.strategy import Strategy


class Texts(Strategy):
    """A signal per trade; every 50th trade or so also an alert whose strings PostgreSQL refuses."""

    def on_trade(self, t):
        self.ctx.signal(t.key, f"p{t.seq}" if t.seq % 97 else f"p\\x00{t.seq}", t.price)
        if t.seq % 50 == 7:
            self.ctx.alert(t.key, "nul", "a NUL \\x00 in the text", dedup_key=f"nul-{t.seq}")
        elif t.seq % 250 == 23:
            self.ctx.alert(t.key, "long", "a key too long for the index", dedup_key=self.long_key(t.seq))
        elif t.seq % 50 == 31:
            self.ctx.alert(t.key, "fine", "an alert PostgreSQL takes", dedup_key=f"fine-{t.seq}")

    @staticmethod
    def long_key(seq):
        import random

        return random.Random(seq).randbytes(200_000).hex()  # 400 KB, too long for a btree even compressed
'''


def test_rows_the_database_refuses_go_to_the_dlq_and_the_rest_is_written(stack_endpoints, tmp_path):
    """Output rows with a NUL byte or a 400 KB dedup key: dead-lettered with PostgreSQL's
    error; every other row of their batches is written."""
    bootstrap = stack_endpoints.kafka_bootstrap
    spec_file = tmp_path / "texts.py"
    spec_file.write_text(TEXT_STRATEGY)
    spec = f"{spec_file}:Texts"
    valid = make_trades(33, 3000)
    prefix = f"p{uuid.uuid4().hex[:8]}"
    _publish(bootstrap, f"{prefix}.trades", encode(valid))
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    r = _process(bootstrap, dsn, prefix, tmp_path / "live", spec=spec, params={})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr

    result, _ = _expected(tmp_path, valid, spec=spec, params={})

    def takes(row: dict) -> bool:  # what PostgreSQL accepts: no NUL, keys below the btree limit
        return not any("\x00" in v for v in row.values() if isinstance(v, str)) and len(row.get("dedup_key", "")) < 2000

    signals = result.tables["signals"].to_pylist()
    alerts = result.tables["alerts"].to_pylist()
    assert _pg_rows(dsn) == {
        "trades": _rows("trades", valid.to_pylist()),
        "signals": _rows("signals", [s for s in signals if takes(s)]),
        "alerts": _rows("alerts", [a for a in alerts if takes(a)]),
    }
    refused = [s for s in signals if not takes(s)] + [a for a in alerts if not takes(a)]
    assert {r["name"] for r in alerts if not takes(r)} == {"nul", "long"}
    assert any("\x00" in s["name"] for s in refused) and any(a["name"] == "fine" for a in alerts)

    dlq = _read_topic(bootstrap, f"{prefix}.dlq")
    assert len(dlq) == len(refused)
    assert Counter(orjson.loads(rec.value)["seq"] for rec in dlq) == Counter(row["seq"] for row in refused)
    for rec in dlq:
        headers = dict(rec.headers)
        reason = headers["reason"].decode()
        assert reason.startswith("postgres refused the row: ")
        assert ("0x00" in reason) or ("index row" in reason), reason
        assert "offset" not in headers  # an output row: no input offset
        assert headers["kind"] in (b"signal", b"alert")


TRACK_STRATEGY = '''
from qsframework.strategy import Strategy


class Track(Strategy):
    """A signal per position: its latitude."""

    kinds = ("position",)

    def on_position(self, p):
        self.ctx.signal(p.key, f"lat{p.seq}", p.lat)
'''


def test_poison_on_a_shared_topic(stack_endpoints, tmp_path):
    """qsf.telemetry carries several kinds, named by a header: a missing or null kind header,
    an unknown kind, a null value and a latitude out of range are dead-lettered; the rest is
    processed (and other kinds left to their strategies)."""
    bootstrap = stack_endpoints.kafka_bootstrap
    spec_file = tmp_path / "track.py"
    spec_file.write_text(TRACK_STRATEGY)
    pos = {"ts_recv": 0, "source": "uav", "key": "1", "lat": 47.0, "lon": 8.0, "alt": 500.0, "relative_alt": 20.0,
           "vx": 0.0, "vy": 0.0, "vz": 0.0, "heading": 90.0}
    valid = [{**pos, "ts_event": T0 + i * 10**8, "ts_recv": T0 + i * 10**8, "seq": i, "lat": 47.0 + i / 1000}
             for i in range(300)]
    position = [("kind", b"position")]
    messages = [(b"1", orjson.dumps(v), position) for v in valid]
    poisons = {  # position in the stream -> (message, reason)
        10: ((b"1", orjson.dumps(valid[10]), []), "no kind header"),
        20: ((b"1", orjson.dumps(valid[20]), [("kind", None)]), "unknown kind ''"),
        30: ((b"1", orjson.dumps(valid[30]), [("kind", b"warp")]), "unknown kind 'warp'"),
        40: ((b"1", None, position), "null value"),
        50: ((b"1", orjson.dumps({**valid[50], "lat": 200.0}), position), "lat must be within"),
    }
    for at in sorted(poisons, reverse=True):
        messages.insert(at, poisons[at][0])
    messages.insert(60, (b"1", orjson.dumps({**valid[60], "fix_type": 3}), [("kind", b"gps")]))  # not ours: left alone

    async def publish() -> None:
        await ensure_topics(bootstrap, [f"{prefix}.telemetry"])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for key, value, headers in messages:
                await producer.send(f"{prefix}.telemetry", key=key, value=value, headers=headers)
            await producer.flush()
        finally:
            await producer.stop()

    prefix = f"p{uuid.uuid4().hex[:8]}"
    asyncio.run(publish())
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": bootstrap}
    r = subprocess.run([*qsf_cmd(), "process", f"{spec_file}:Track", "--topic-prefix", prefix, "--group", f"g-{prefix}",
                        "--out", str(tmp_path / "live"), "--exit-when-idle", "3"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "(5 rejected, 0 late)" in r.stdout
    signals = pq.read_table(tmp_path / "live" / "signals.parquet")
    assert signals.column("value").to_pylist() == [v["lat"] for v in valid]
    dlq = [(m.key, m.value, dict(m.headers)) for m in _read_topic(bootstrap, f"{prefix}.dlq")]
    assert len(dlq) == len(poisons)
    for (key, value, _), why in poisons.values():
        (got,) = [d for d in dlq if why in d[2]["reason"].decode()]
        assert got[:2] == (key, value or b"") and got[2]["topic"] == f"{prefix}.telemetry".encode()


HUGE_STRATEGY = '''
from qsframework.strategy import Strategy


class Huge(Strategy):
    """An alert per 100 trades; one of them with a 2 MB text, more than a Kafka record takes."""

    def on_trade(self, t):
        if t.seq % 100 == 0:
            text = "x" * 2_000_000 if t.seq == 1500 else f"trade {t.seq}"
            self.ctx.alert(t.key, "every100", text, dedup_key=f"a-{t.seq}")
'''


def test_an_output_too_large_for_kafka_is_dead_lettered(stack_endpoints, tmp_path):
    """--sink kafka: the 2 MB alert goes to the DLQ (cut to fit), every other alert is published."""
    bootstrap = stack_endpoints.kafka_bootstrap
    spec_file = tmp_path / "huge.py"
    spec_file.write_text(HUGE_STRATEGY)
    valid = make_trades(37, 2000)
    prefix = f"p{uuid.uuid4().hex[:8]}"
    _publish(bootstrap, f"{prefix}.trades", encode(valid))
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": bootstrap}
    r = subprocess.run([*qsf_cmd(), "process", f"{spec_file}:Huge", "--topic-prefix", prefix, "--group", f"g-{prefix}",
                        "--sink", "kafka", "--exit-when-idle", "3"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    published = [orjson.loads(m.value)["dedup_key"] for m in _read_topic(bootstrap, f"{prefix}.alerts")]
    every100 = [s for s in valid.column("seq").to_pylist() if s % 100 == 0]
    assert 1500 in every100 and published == [f"a-{s}" for s in every100 if s != 1500]
    (dlq,) = _read_topic(bootstrap, f"{prefix}.dlq")
    headers = dict(dlq.headers)
    assert headers["reason"].decode().startswith(f"output too large for {prefix}.alerts")
    assert headers["kind"] == b"alert" and headers["truncated"].startswith(b"value=")
    assert dlq.value.startswith(b'{"ts_event":') and len(dlq.value) == DLQ_MAX_VALUE_BYTES


def test_the_sink_writes_a_batch_around_its_bad_rows(stack_endpoints):
    """PostgresSink.write on a batch of 1,000 with 2 rows PostgreSQL refuses: the other 998
    are written, each bad one costs O(log n) COPYs at most, and a re-delivery (a merge, where
    PostgreSQL does not name the row and the batch is halved) adds nothing."""
    from qsframework.sinks.postgres import PostgresSink

    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    rows = make_trades(34, 1000).to_pylist()
    rows[123]["source"] = "bin\x00ance"
    rows[777]["source"] = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(200))  # 12.8 KB
    table = pa.Table.from_pylist(rows, schema=TRADE.schema)

    async def go() -> tuple[list, list, list[int]]:
        sink = PostgresSink(dsn)
        await sink.start()
        try:
            refused = await sink.write("trade", table)
            copies = [sink.copies]
            again = await sink.write("trade", table)
            return refused, again, [copies[0], sink.copies - copies[0]]
        finally:
            await sink.close()

    refused, again, copies = asyncio.run(go())
    assert [r.index for r in refused] == [123, 777] == [r.index for r in again]
    assert "0x00" in refused[0].reason and "index row" in refused[1].reason
    assert "0x00" in again[0].reason and "index row" in again[1].reason
    assert all(c <= 1 + 2 * 2 * 10 for c in copies)  # halving 1,000 rows: 10 levels, 2 COPYs each, per bad row
    good = [r for i, r in enumerate(rows) if i not in (123, 777)]
    assert _pg_rows(dsn)["trades"] == _rows("trades", good)


TALLY_STRATEGY = '''
from qsframework.strategy import Strategy


class Tally(Strategy):
    """Per trade of BTCUSDT/ETHUSDT, the running count and volume of its symbol: an event
    processed twice (or lost) changes every later signal of its symbol."""

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.count, self.volume = {}, {}

    def keys(self):
        return frozenset({"BTCUSDT", "ETHUSDT"})

    def on_trade(self, t):
        self.count[t.key] = self.count.get(t.key, 0) + 1
        self.volume[t.key] = self.volume.get(t.key, 0.0) + t.qty
        self.ctx.signal(t.key, f"n{t.seq}", self.volume[t.key], {"count": self.count[t.key]})
        if self.count[t.key] % 500 == 0:
            self.ctx.alert(t.key, "many", f"{self.count[t.key]} trades", dedup_key=f"{t.key}-{self.count[t.key]}")
'''


def test_a_batch_of_only_bad_rows_is_refused_whole(stack_endpoints):
    """1,500 rows, every one refused: more than Python's recursion limit, yet each is found."""
    from qsframework.sinks.postgres import PostgresSink

    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    table = make_trades(36, 1500)
    table = table.set_column(2, "source", pa.array(["bin\x00ance"] * table.num_rows))

    async def go() -> list:
        sink = PostgresSink(dsn)
        await sink.start()
        try:
            return await sink.write("trade", table)
        finally:
            await sink.close()

    assert [r.index for r in asyncio.run(go())] == list(range(1500))
    assert _pg_rows(dsn)["trades"] == []


def test_a_table_of_another_shape_is_one_clear_error(stack_endpoints):
    """Not the rows' fault and not an outage (here an old table without a column): neither
    retried forever nor dead-lettered row by row, but one user error naming the table."""
    from qsframework.errors import UserError
    from qsframework.sinks.postgres import PostgresSink

    dsn = fresh_database(stack_endpoints.pg_dsn, "t")

    async def go() -> None:
        con = await asyncpg.connect(dsn)
        try:
            await con.execute("CREATE TABLE trades (ts_event bigint, ts_recv bigint, source text, key text, seq bigint)")
        finally:
            await con.close()
        sink = PostgresSink(dsn)
        await sink.start()
        try:
            await sink.write("trade", make_trades(35, 10))
        finally:
            await sink.close()

    with pytest.raises(UserError, match=r"^PostgreSQL cannot store trades: column \"price\" .*does not exist"):
        asyncio.run(go())


@pytest.mark.parametrize("duplicates", [False, True], ids=["poison", "poison+duplicates"])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_poison_and_duplicates_change_nothing(stack_endpoints, tmp_path, seed, duplicates):
    """Valid events with random poison messages of every kind (and, with ``duplicates``,
    exact duplicates) interleaved: PostgreSQL ends with exactly the outputs of a backtest of
    the valid events, and every bad message is on the DLQ with its reason."""
    bootstrap = stack_endpoints.kafka_bootstrap
    rng = random.Random(seed)
    valid = make_trades(100 + seed, 3000, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), start=T0 + seed * 10**12)
    rows = valid.to_pylist()
    messages: list[tuple[bytes | None, bytes | None]] = []
    poison_at: dict[int, Poison] = {}
    kinds = list(POISONS)
    for i, pair in enumerate(encode(valid)):
        while rng.random() < 0.015:
            poison = POISONS[rng.choice(kinds)](rows[i], rng)
            poison_at[len(messages)] = poison
            messages.append((poison.key, poison.value))
        messages.append(pair)
        if duplicates and rng.random() < 0.03:
            messages.append(pair)  # the same message again
    assert len(poison_at) >= 20
    spec_file = tmp_path / "tally.py"
    spec_file.write_text(TALLY_STRATEGY)
    prefix = f"p{uuid.uuid4().hex[:8]}"
    offsets = _publish(bootstrap, f"{prefix}.trades", messages)
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")

    r = _process(bootstrap, dsn, prefix, tmp_path / "live", spec=f"{spec_file}:Tally", params={})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr

    result, expected = _expected(tmp_path, valid, spec=f"{spec_file}:Tally", params={})
    assert result.alerts > 0
    assert _pg_rows(dsn) == expected
    dlq = _read_topic(bootstrap, f"{prefix}.dlq")
    _assert_dead_lettered(dlq, {offsets[i]: p for i, p in poison_at.items()}, f"{prefix}.trades")
    assert len(dlq) == len(poison_at)
