"""Hostile Binance frames and failing background tasks, against the local Binance server.

A frame whose numbers do not fit the int64 columns, or whose trade time is out of the
event-time bounds, is rejected with its reason (it never moves the trade-id bookkeeping,
so the good trade carrying the same id is still kept); the run goes on. A background task
that fails (the flusher, whose sink raised) ends the run with one error instead of dying
unseen while the connection keeps reading.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer

from qsframework.adapters.binance.client import BinanceConfig, BinanceSource, SourceFailed
from qsframework.io import Rejected, pump
from qsframework.testing import ListSink

from ..fakes.binance_server import BinanceServer
from ..adapters.binance.test_binance_client import ingest_with_junk

SYMBOLS = ("BTCUSDT", "ETHUSDT")
MS_2100 = 4_102_444_800_000
MS_1990 = 631_152_000_000
MAX_FUTURE = "ts_event more than 60 s ahead of ts_recv (max-future)"
FLOOR = "ts_event before the floor 2000-01-01T00:00:00Z"


def frame(sym: str, tid: object, t: object) -> str:
    """A trade frame written by the stdlib (it writes integers of any size, as a server may)."""
    data = {"e": "trade", "E": 1, "s": sym, "t": tid, "p": "100.5", "q": "0.25", "T": t, "m": True, "M": True}
    return json.dumps({"stream": f"{sym.lower()}@trade", "data": data}, separators=(",", ":"))


def hostile(next_id: int, t_ms: int) -> list[tuple[str, str]]:
    """(frame, expected reason); the bad times carry the id the server sends next."""
    sym = "BTCUSDT"
    return [
        (frame(sym, 2**63, t_ms), "trade id does not fit in 64 bits: 9223372036854775808"),
        (frame(sym, 2**64 - 1, t_ms), "trade id does not fit in 64 bits: 18446744073709551615"),
        (frame(sym, next_id, 10**17), MAX_FUTURE),
        (frame(sym, next_id, 10**19), MAX_FUTURE),
        (frame(sym, next_id, MS_2100), MAX_FUTURE),
        (frame(sym, next_id, MS_1990), FLOOR),
    ]


def config(srv: BinanceServer) -> BinanceConfig:
    return BinanceConfig(symbols=SYMBOLS, url=srv.ws_url, flush_interval=0.05,
                         backoff_initial=0.1, backoff_max=0.5)


def test_hostile_frames_are_rejected_with_reasons_and_every_good_trade_is_kept():
    got = ListSink()
    rejects: list[Rejected] = []
    with BinanceServer(SYMBOLS, rate=2000) as srv:

        async def main() -> BinanceSource:
            source = BinanceSource(config(srv))

            async def keep(bad: Rejected) -> None:
                rejects.append(bad)

            source.on_reject = keep
            run = asyncio.create_task(pump(source, [got]))
            await asyncio.to_thread(srv.wait_until, lambda: source.parser.stats.trades > 0, 120)
            sent = srv.sent_ids("BTCUSDT")
            bad = hostile(sent[-1] + 1, srv.all_trades("BTCUSDT")[-1].time_ms)
            await asyncio.to_thread(srv.send_malformed, [f for f, _ in bad])
            expected.extend(reason for _, reason in bad)
            # go on until trades sent after the hostile frames have arrived too
            after = len(srv.sent_ids("BTCUSDT")) + 50
            await asyncio.to_thread(srv.wait_until, lambda: source.parser.stats.trades > after, 120)
            source.stop()
            await asyncio.wait_for(run, 120)  # the run itself ends normally
            return source

        expected: list[str] = []
        source = asyncio.run(main())
        sent = {s: srv.sent_ids(s) for s in SYMBOLS}
    assert sorted(r.reason for r in rejects) == sorted(expected)
    assert source.parser.stats.rejected == len(expected)
    trades = got.table("trade")
    keys, ids = trades.column("key").to_pylist(), trades.column("seq").to_pylist()
    for sym in SYMBOLS:  # every good trade, once, in order
        assert [i for k, i in zip(keys, ids) if k == sym] == sent[sym]
    assert got.table("gap").num_rows == 0


def test_a_failing_sink_ends_the_run_with_its_error_and_stops_the_source():
    class FullDisk(ListSink):
        async def write(self, kind, table):
            if len(self.batches) == 2:
                raise RuntimeError("the disk is full")
            return await super().write(kind, table)

    sink = FullDisk()
    with BinanceServer(SYMBOLS, rate=2000) as srv:
        source = BinanceSource(config(srv))
        with pytest.raises(RuntimeError, match="^the disk is full$"):
            # no duration: only the failure can end this run (the bound is a safety net)
            asyncio.run(asyncio.wait_for(pump(source, [sink]), 120))
        assert len(sink.batches) == 2 and sink.closed
        srv.wait_until(lambda: all(c.closed is not None for c in srv.connections), 120)  # the source hung up


def test_a_failing_background_task_ends_the_run_with_its_error():
    async def main(source: BinanceSource) -> None:
        async def fail() -> None:
            raise RuntimeError("the parser broke")

        source.spawn(fail(), "flusher")
        await pump(source, [ListSink()])

    with BinanceServer(SYMBOLS, rate=2000) as srv:
        source = BinanceSource(config(srv))
        with pytest.raises(SourceFailed, match="^the Binance flusher failed: RuntimeError: the parser broke$"):
            asyncio.run(asyncio.wait_for(main(source), 120))


async def _dead_letters(bootstrap: str, topic: str, want: int) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"dlq-{time.time_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        deadline = time.monotonic() + 120  # a safety net: the records are already there
        while len(got) < want and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                got.extend((m.value, dict(m.headers)) for m in msgs)
    finally:
        await consumer.stop()
    return got


def test_ingest_binance_dead_letters_hostile_frames_with_their_reasons(stack_endpoints):
    prefix = f"hostile{time.time_ns() % 10**9}"
    bad: list[tuple[str, str]] = []

    huge = "{" + "x" * (3 << 20)  # 3 MiB: over the 1 MiB a Kafka record may carry

    def junk() -> list[str]:
        bad.extend(hostile(srv.sent_ids("BTCUSDT")[-1] + 1, srv.all_trades("BTCUSDT")[-1].time_ms))
        bad.append((huge, "malformed JSON"))
        return [f for f, _ in bad]

    with BinanceServer(SYMBOLS, rate=1000) as srv:
        proc, out, err = ingest_with_junk(srv, junk, bootstrap=stack_endpoints.kafka_bootstrap, prefix=prefix)
    assert proc.returncode == 0, err
    assert f"{len(bad)} bad frames dropped" in out
    dlq = asyncio.run(_dead_letters(stack_endpoints.kafka_bootstrap, f"{prefix}.dlq", len(bad)))
    small = [(v, h["reason"].decode()) for v, h in dlq if "truncated" not in h]
    assert sorted(small) == sorted((f.encode(), r) for f, r in bad if f is not huge)
    [(value, headers)] = [(v, h) for v, h in dlq if "truncated" in h]  # the huge one, cut to fit
    assert headers["reason"] == b"malformed JSON" and headers["truncated"] == f"value={len(huge)}".encode()
    assert 0 < len(value) < (1 << 20) and huge.encode().startswith(value)
