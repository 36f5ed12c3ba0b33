"""The Binance WebSocket source against a local server speaking Binance's protocol.

Each test runs the real client over real sockets, injects one kind of trouble at the
server (close, serverShutdown, 24 h limit, lost ids, duplicates, junk frames, refused
handshakes, silence on pings) and checks that every trade the exchange made is delivered
exactly once, or reported as a gap. A run ends when what the test waits for has happened
(a condition, never a number of seconds: the machine may be slow), and a run that ends
still delivers every trade already on the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time

import pyarrow as pa
import pytest

from qsframework.adapters.binance.client import BinanceConfig, BinanceSource
from qsframework.io import Rejected, pump
from qsframework.recording import Recording
from qsframework.testing import ListSink

from ...fakes.binance_server import BinanceServer
from ...conftest import qsf_cmd

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def config(srv: BinanceServer, **kw) -> BinanceConfig:
    kw.setdefault("flush_interval", 0.05)
    kw.setdefault("backoff_initial", 0.1)
    kw.setdefault("backoff_max", 0.5)
    return BinanceConfig(symbols=SYMBOLS, url=srv.ws_url, rest_url=srv.rest_url, **kw)


def run_source(cfg: BinanceConfig, duration: float | None, script=None):
    """Run the source into a ListSink while ``script(source)`` runs (it may stop it), for at
    most ``duration`` s (None: until the script stops it); return what it emitted."""
    sink = ListSink()
    rejects: list[Rejected] = []

    async def main():
        source = BinanceSource(cfg)

        async def keep(bad: Rejected) -> None:
            rejects.append(bad)

        source.on_reject = keep
        task = asyncio.create_task(pump(source, [sink], duration_s=duration))
        if script is not None:
            await script(source)
        await task
        return source

    source = asyncio.run(main())
    return source, sink.table("trade"), sink.table("gap"), rejects


def ids_of(trades: pa.Table, symbol: str) -> list[int]:
    keys = trades.column("key").to_pylist()
    return [i for k, i in zip(keys, trades.column("seq").to_pylist()) if k == symbol]


async def until(condition, what: str = "the condition") -> None:
    """Wait for ``condition()`` (the bound is only a safety net for a broken run)."""
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        await asyncio.sleep(0.01)


def trades_seen(source, n: int = 1):
    """A condition: the source has parsed ``n`` trades (taken or pending)."""
    return lambda: source.parser.stats.trades + source.parser.pending() >= n


def after_trades(fn, *args, n: int = 200, **kw):
    """A script step: once ``n`` trades arrived, call a (blocking) server method off the loop."""
    async def step(source):
        await until(trades_seen(source, n), f"{n} trades")
        await asyncio.to_thread(fn, *args, **kw)
    return step


def then_stop(first, condition_of):
    """A script: ``first(source)``, then stop the source once ``condition_of(source)()`` holds."""
    async def script(source):
        if first is not None:
            await first(source)
        await until(condition_of(source))
        source.stop()
    return script


def both(a, b):
    return lambda: a() and b()


def reconnected_and_flowing(srv: BinanceServer, source):
    """A condition: a later connection opened and has delivered trades since."""
    n = source.parser.stats.trades + source.parser.pending()
    return lambda: len(srv.connections) >= 2 and source.stats.connections >= 2 and trades_seen(source, n + 200)()


def no_control_flood(srv: BinanceServer) -> None:
    for conn in srv.connections:
        assert conn.rate_violations == 0, conn


def test_trades_arrive_exactly_as_the_exchange_made_them():
    with BinanceServer(SYMBOLS, rate=2000, backlog=1000, max_trades=4000) as srv:
        # the exchange stops at 4,000 trades; the run ends once the client has what was sent
        def all_arrived(s):
            return lambda: (srv.exchange.position() >= 4000
                            and trades_seen(s, sum(len(srv.sent_ids(x)) for x in SYMBOLS))())

        source, trades, gaps, rejects = run_source(config(srv), None, then_stop(None, all_arrived))
        assert trades.num_rows > 2000
        for sym in SYMBOLS:
            got = ids_of(trades, sym)
            assert got == srv.sent_ids(sym)  # nothing lost, nothing doubled, in order
            assert got == list(range(got[0], got[0] + len(got)))
            truth = {t.id: t for t in srv.all_trades(sym)}
            rows = [r for r in trades.to_pylist() if r["key"] == sym]
            for r in rows[:50]:
                t = truth[r["seq"]].rest()
                assert r["price"] == float(t["price"]) and r["qty"] == float(t["qty"])
                assert r["ts_event"] == t["time"] * 1_000_000 and r["is_buyer_maker"] == t["isBuyerMaker"]
        assert gaps.num_rows == 0 and rejects == []
        assert source.stats.connections == 1 and source.stats.reconnects == 0
        no_control_flood(srv)


def test_microsecond_time_unit():
    with BinanceServer(SYMBOLS, rate=1000) as srv:
        _, trades, _, _ = run_source(config(srv, microseconds=True), None,
                                     then_stop(None, lambda s: lambda: "BTCUSDT" in s.parser.last_ids))
        assert srv.connections[0].micro
        truth = {t.id: t for t in srv.all_trades("BTCUSDT")}
        row = next(r for r in trades.to_pylist() if r["key"] == "BTCUSDT")
        assert row["ts_event"] == truth[row["seq"]].rest(micro=True)["time"] * 1_000


def test_server_close_reconnects_and_backfill_fills_the_gap():
    with BinanceServer(SYMBOLS, rate=2000) as srv:

        async def close(source):
            await until(trades_seen(source, 200))
            await asyncio.to_thread(srv.pause, 0.4)  # the reconnect is refused for a while
            await asyncio.to_thread(srv.close_all)

        async def script(source):
            await close(source)
            await until(reconnected_and_flowing(srv, source))
            await until(lambda: source.stats.backfilled > 0, "the backfill")
            source.stop()

        source, trades, gaps, _ = run_source(config(srv, backfill=True), None, script)
        assert source.stats.reconnects >= 1 and len(srv.connections) >= 2
        for sym in SYMBOLS:
            got = ids_of(trades, sym)
            assert sorted(got) == list(range(min(got), max(got) + 1)), "a hole was left"
            assert len(got) == len(set(got)), "a trade was doubled"
        g = gaps.to_pylist()
        assert g and all(x["filled"] == x["last_id"] - x["first_id"] + 1 for x in g)
        assert source.stats.backfilled == sum(x["filled"] for x in g)
        assert any(r.path.endswith("/historicalTrades") for r in srv.rest_requests)


def test_without_backfill_a_lost_stretch_is_one_gap_event():
    with BinanceServer(SYMBOLS, rate=2000) as srv:
        source, trades, gaps, _ = run_source(config(srv), None, then_stop(
            after_trades(srv.kill_all), lambda s: reconnected_and_flowing(srv, s)))
        assert source.stats.reconnects >= 1
        for sym in SYMBOLS:
            got = ids_of(trades, sym)
            sent = srv.sent_ids(sym)
            # once each, in order; ids in flight when the TCP link was cut never arrive
            assert got == sorted(set(got)) and set(got) <= set(sent)
            missing = sorted(set(range(got[0], got[-1] + 1)) - set(got))
            reported = [i for g in gaps.to_pylist() if g["key"] == sym
                        for i in range(g["first_id"], g["last_id"] + 1)]
            assert reported == missing


def test_server_shutdown_hands_over_to_a_new_connection_without_loss():
    with BinanceServer(SYMBOLS, rate=2000) as srv:
        # the server closes 60 s after its notice (as Binance gives minutes): the client
        # hands over long before; the run ends once the new connection delivers
        source, trades, gaps, _ = run_source(config(srv), None, then_stop(
            after_trades(srv.server_shutdown, 60.0),
            lambda s: both(lambda: s.stats.rotations == 1, reconnected_and_flowing(srv, s))))
        assert source.stats.rotations == 1 and source.stats.reconnects == 0
        assert srv.connections[0].shutdown_notified
        assert gaps.num_rows == 0
        for sym in SYMBOLS:
            got = ids_of(trades, sym)
            assert got == list(range(got[0], got[0] + len(got)))
        assert source.parser.stats.duplicates > 0  # the two connections did overlap


def test_rotation_before_the_connection_lifetime_ends():
    # as with Binance's 24 h limit, the client rotates long before the server's limit
    with BinanceServer(SYMBOLS, rate=2000, max_lifetime=60.0) as srv:
        source, trades, gaps, _ = run_source(config(srv, rotate_after=0.8), None,
                                             then_stop(None, lambda s: lambda: s.stats.rotations >= 2))
        assert source.stats.rotations >= 2 and source.stats.reconnects == 0
        assert not any(c.close_reason == "lifetime" for c in srv.connections)
        assert gaps.num_rows == 0
        for sym in SYMBOLS:
            got = ids_of(trades, sym)
            assert got == list(range(got[0], got[0] + len(got)))


def test_duplicates_lost_ids_and_junk_frames():
    # rate=None: "now" moves only as the client reads, so the stream starts exactly at the
    # backlog's end, before the ids below, however late the client connects
    with BinanceServer(SYMBOLS, rate=None) as srv:
        first = srv.exchange.position()  # where the stream starts
        srv.duplicate_ids("BTCUSDT", range(1_000_000 + first // 2, 1_000_000 + first // 2 + 3000, 7), later=3)
        srv.drop_ids("ETHUSDT", range(1_000_000 + first // 2 + 200, 1_000_000 + first // 2 + 205))
        junk = ['{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"-1","q":"1","T":5,"m":true}}',
                "{oops", '{"stream":"xrpusdt@trade","data":{}}', b"\x00\x01binary"]
        eth_after = 1_000_000 + first // 2 + 205

        def passed_the_dropped_ids(s):
            return lambda: s.parser.last_ids.get("ETHUSDT", 0) > eth_after and s.parser.stats.rejected >= 4

        source, trades, gaps, rejects = run_source(config(srv), None, then_stop(
            after_trades(srv.send_malformed, junk, n=1), passed_the_dropped_ids))
        assert source.parser.stats.duplicates > 0
        for sym in SYMBOLS:
            got = ids_of(trades, sym)
            assert len(got) == len(set(got)) and got == sorted(got)
        assert sorted(r.reason for r in rejects) == sorted(
            ["price is not a positive number: '-1'", "malformed JSON", "unknown stream 'xrpusdt@trade'", "binary frame"])
        dropped = [(g["first_id"], g["last_id"]) for g in gaps.to_pylist() if g["key"] == "ETHUSDT"]
        eth = ids_of(trades, "ETHUSDT")
        assert eth[0] < 1_000_000 + first // 2 + 200 <= eth[-1]
        assert (1_000_000 + first // 2 + 200, 1_000_000 + first // 2 + 204) in dropped


def test_pings_are_answered():
    # Binance drops a client whose pong is a minute late; the run lasts until five pongs came
    with BinanceServer(SYMBOLS, rate=500, ping_interval=0.2, pong_timeout=60.0) as srv:
        source, trades, _, _ = run_source(config(srv, ping_interval=None), None, then_stop(
            None, lambda s: lambda: bool(srv.connections) and srv.connections[0].pongs_received >= 5))
        conn = srv.connections[0]
        assert conn.pings_sent >= conn.pongs_received >= 5
        assert not conn.dropped_for_pong and source.stats.reconnects == 0
        no_control_flood(srv)


def test_refused_handshakes_back_off():
    with BinanceServer(SYMBOLS, rate=500) as srv:
        srv.pause(1.5)
        source, trades, _, _ = run_source(config(srv, backoff_initial=0.1, backoff_max=1.0), None,
                                          then_stop(None, lambda s: trades_seen(s, 1)))
        refused = len(srv.rejected)
        assert 2 <= refused <= 8, refused  # retried, with growing waits, not hammering
        assert trades.num_rows > 0 and source.stats.connections == 1


def test_unknown_symbol_is_a_clear_error():
    with BinanceServer(SYMBOLS, rate=500) as srv:
        with pytest.raises(ValueError, match="refused the subscription"):
            run_source(BinanceConfig(symbols=("NOPEUSDT",), url=srv.ws_url), 2.0)


def test_record_binance_cli_then_backtest(tmp_path):
    out = tmp_path / "rec"
    with BinanceServer(SYMBOLS, rate=1500) as srv:
        proc = subprocess.Popen([*qsf_cmd(), "record", "binance", "--symbols", "btcusdt,ethusdt", "--url",
                                 srv.ws_url, "--out", str(out), "--roll", "1s"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # SIGTERM once a few thousand trades went out (more than one roll's worth)
        assert srv.wait_until(lambda: sum(len(srv.sent_ids(s)) for s in SYMBOLS) > 3000, 120)
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        sent = {s: srv.sent_ids(s) for s in SYMBOLS}
    assert "trades in" in stdout and "0 gaps" in stdout
    rec = Recording(out)
    table = pa.Table.from_batches(list(rec.stream("trade")))
    for sym in SYMBOLS:
        assert sorted(ids_of(table, sym)) == sorted(set(sent[sym]))
    assert json.loads((out / "recording.json").read_text())["origin"]["source"] == "binance"
    bt = subprocess.run([*qsf_cmd(), "backtest", "strategies/btc_eth_spread.py:BtcEthSpread", "--recording", str(out),
                                "--out", str(tmp_path / "bt"), "-p", "window=1s", "-p", "sample=100ms"],
                        capture_output=True, text=True, timeout=120)
    assert bt.returncode == 0, bt.stderr
    report = json.loads((tmp_path / "bt" / "report.json").read_text())
    assert report["events_in"] == table.num_rows


def test_record_binance_bad_input_is_one_line(tmp_path):
    for args, msg in ((["--symbols", "btc/usdt"], "not a Binance symbol"),
                      (["--symbols", "btcusdt", "--url", "http://x"], "must start with ws://"),
                      (["--symbols", "btcusdt", "--roll", "soon"], "--roll"),
                      (["--symbols", "btcusdt", "--max-future", "soon"], "not a duration: 'soon'")):
        r = subprocess.run([*qsf_cmd(), "record", "binance", *args, "--out", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def ingest_with_junk(srv: BinanceServer, junk, *, bootstrap: str, prefix: str):
    """Run ``qsf ingest binance`` against ``srv``: once trades flow, the frames ``junk()``
    makes are sent, and once more trades followed, SIGTERM ends the run.
    Returns (process, stdout, stderr)."""
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": bootstrap}

    def inject() -> None:
        srv.wait_until(lambda: len(srv.sent_ids("BTCUSDT")) > 20, 120)
        srv.send_malformed(junk())
        after = len(srv.sent_ids("BTCUSDT")) + 50
        srv.wait_until(lambda: len(srv.sent_ids("BTCUSDT")) > after, 120)
        proc.terminate()

    proc = subprocess.Popen([*qsf_cmd(), "ingest", "binance", "--symbols", "btcusdt,ethusdt",
                             "--url", srv.ws_url, "--topic-prefix", prefix],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    injector = threading.Thread(target=inject)
    injector.start()
    out, err = proc.communicate(timeout=300)
    injector.join()
    return proc, out, err


def test_ingest_binance_publishes_trades_and_dead_letters_junk(stack_endpoints):
    """qsf ingest binance -> PREFIX.trades (every trade once), PREFIX.dlq (junk with its reason)."""
    from qsframework.events import TRADE
    from qsframework.wire import decode

    from ...live.test_wire_replay import _consume_all

    prefix = f"bn{time.time_ns() % 10**9}"
    with BinanceServer(SYMBOLS, rate=1000) as srv:
        proc, _, err = ingest_with_junk(srv, lambda: ["{oops"], bootstrap=stack_endpoints.kafka_bootstrap,
                                        prefix=prefix)
        assert proc.returncode == 0, err
        sent = {s: sorted(set(srv.sent_ids(s))) for s in SYMBOLS}
    want = sum(len(v) for v in sent.values())
    values = asyncio.run(_consume_all(stack_endpoints.kafka_bootstrap, f"{prefix}.trades", f"{prefix}-g", want))
    table, rejected = decode(TRADE, values)
    assert not rejected and table.num_rows == want
    for sym in SYMBOLS:
        assert ids_of(table, sym) == sent[sym]
    dlq = asyncio.run(_consume_all(stack_endpoints.kafka_bootstrap, f"{prefix}.dlq", f"{prefix}-d", 1))
    assert dlq == [b"{oops"]


def test_agg_trade_stream_backfills_from_the_agg_trades_endpoint():
    with BinanceServer(SYMBOLS, rate=2000) as srv:
        def backfilled(s):
            return both(reconnected_and_flowing(srv, s), lambda: s.stats.backfilled > 0)

        source, trades, gaps, _ = run_source(config(srv, stream="aggTrade", backfill=True), None,
                                             then_stop(after_trades(srv.kill_all), backfilled))
        assert source.stats.reconnects >= 1 and gaps.num_rows >= 1
        for sym in SYMBOLS:
            got = ids_of(trades, sym)
            assert sorted(got) == list(range(min(got), max(got) + 1)) and len(got) == len(set(got))
            truth = {a.id for a in srv.all_agg_trades(sym)}
            assert set(got) <= set(truth)
        assert any(r.path.endswith("/aggTrades") for r in srv.rest_requests)
