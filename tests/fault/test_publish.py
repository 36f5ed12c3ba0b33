"""Publishers report success only for what the broker acknowledged.

Each test runs its own embedded broker (the session's is shared) and stops it while a
publisher is sending: the command must exit non-zero with one line saying how many records
were not acknowledged, never "published N events". ``--ack-timeout`` bounds the wait.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer

from qsframework.recording import RecordingWriter
from qsframework.stack import Stack

from ..fakes.binance_server import BinanceServer
from ..conftest import make_trades, qsf_cmd
from ..fakes.tlog_gen import packets

# records the broker has not acknowledged within this long count as lost (120 s by default):
# the broker is stopped for good, so waiting longer would only make the tests slower
ACK = ["--ack-timeout", "3s"]

LOST = re.compile(r"^qsf: error: .*?([\d,]+) of ([\d,]+) records were not acknowledged by the broker "
                  r"\(first failure: .+\)$")


@pytest.fixture
def broker(tmp_path):
    """A broker of this test's own (stopping it disturbs no other test)."""
    stack = Stack(tmp_path / "stack")
    stack.broker.start()
    try:
        yield stack
    finally:
        stack.down(purge=True)


async def _first_record(bootstrap: str, topic: str) -> None:
    """Wait (the bound is a safety net) until ``topic`` holds a record: publishing is under way."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"probe-{time.time_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any((await consumer.getmany(timeout_ms=200)).values()):
                return
        raise AssertionError(f"nothing arrived on {topic}")
    finally:
        await consumer.stop()


def _stop_broker_once_publishing(stack: Stack, topic: str, proc: subprocess.Popen) -> tuple[str, str]:
    asyncio.run(_first_record(stack.broker.bootstrap, topic))
    stop = subprocess.run([*qsf_cmd(), "stack", "stop", "broker", "--dir", str(stack.root)],
                          capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    return proc.communicate(timeout=600)


def _assert_lost(proc: subprocess.Popen, err: str, out: str, *, most: int) -> None:
    assert proc.returncode == 2, (proc.returncode, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    m = LOST.match(lines[0])
    assert m, lines[0]
    lost, total = (int(g.replace(",", "")) for g in m.groups())
    assert 0 < lost <= total <= most
    assert "published" not in out


def test_replay_exits_non_zero_when_the_broker_goes_away(broker, tmp_path):
    # 3,000 events 10 ms apart, replayed in real time: 30 s of publishing, so the broker is
    # stopped mid-replay (as soon as the first record is on the topic)
    trades = make_trades(3, 3000, gaps_ms=(10,))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": broker.broker.bootstrap}
    proc = subprocess.Popen([*qsf_cmd(), "ingest", "replay", "--recording", str(tmp_path / "rec"),
                             "--speed", "1", "--topic-prefix", "lost", *ACK],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = _stop_broker_once_publishing(broker, "lost.trades", proc)
    _assert_lost(proc, err, out, most=3000)


def test_ingest_binance_exits_non_zero_when_the_broker_goes_away(broker):
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": broker.broker.bootstrap}
    with BinanceServer(("BTCUSDT", "ETHUSDT"), rate=500) as srv:
        # no --duration: only the lost records can end this run
        proc = subprocess.Popen([*qsf_cmd(), "ingest", "binance", "--symbols", "btcusdt,ethusdt",
                                 "--url", srv.ws_url, "--topic-prefix", "lostbn", *ACK],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err = _stop_broker_once_publishing(broker, "lostbn.trades", proc)
        sent = sum(len(srv.sent_ids(s)) for s in ("BTCUSDT", "ETHUSDT"))
    _assert_lost(proc, err, out, most=sent)
    assert err.startswith("qsf: error: ") and "records were not acknowledged by the broker" in err


def test_ingest_mavlink_exits_non_zero_when_the_broker_goes_away(broker):
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": broker.broker.bootstrap}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = threading.Event()

    def vehicle() -> None:  # streams telemetry until the ingest has ended
        pkts = [b for _, b in packets(10)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not done.is_set():
                for i, buf in enumerate(pkts):
                    s.sendto(buf, ("127.0.0.1", port))
                    if i % 20 == 19:
                        done.wait(0.005)  # a link's pace, not a flood

    sender = threading.Thread(target=vehicle, daemon=True)
    sender.start()
    try:
        # no --duration: only the lost records can end this run
        proc = subprocess.Popen([*qsf_cmd(), "ingest", "mavlink", "--url", f"udpin:127.0.0.1:{port}",
                                 "--topic-prefix", "lostmv", *ACK],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err = _stop_broker_once_publishing(broker, "lostmv.telemetry", proc)
    finally:
        done.set()
        sender.join()
    _assert_lost(proc, err, out, most=10**9)


@pytest.mark.parametrize("command", [
    ["ingest", "replay", "--recording", "REC"],
    ["ingest", "binance", "--symbols", "btcusdt", "--url", "ws://127.0.0.1:9", "--duration", "1"],
    ["ingest", "mavlink", "--url", "udpin:127.0.0.1:0", "--duration", "1"],
])
def test_a_publisher_without_a_broker_is_a_one_line_error(tmp_path, command):
    from qsframework.stack.services import free_port

    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", make_trades(1, 10))
    nobody = f"127.0.0.1:{free_port()}"  # a port nothing listens on
    args = [str(tmp_path / "rec") if a == "REC" else a for a in command]
    r = subprocess.run([*qsf_cmd(), *args, "--bootstrap", nobody], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"qsf: error: broker {nobody}: ")


@pytest.mark.parametrize("value, message", [("soon", "--ack-timeout: "), ("0s", "--ack-timeout must be at least 1ms")])
def test_a_bad_ack_timeout_is_a_one_line_error(tmp_path, value, message):
    r = subprocess.run([*qsf_cmd(), "ingest", "replay", "--recording", str(tmp_path), "--bootstrap", "127.0.0.1:9",
                        "--ack-timeout", value], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"qsf: error: {message}"), r.stderr


def test_the_ack_timeout_reaches_the_producer():
    from qsframework.kafka import ProducerConfig

    assert ProducerConfig().request_timeout_ms == 120_000  # Kafka's delivery timeout: no change without the option
    with pytest.raises(ValueError):
        ProducerConfig(request_timeout_ms=0)
