"""Broker faults on a durable broker (Apache Kafka, its log in the stack dir): the broker is
SIGKILLed mid-stream and restarted, or stopped (``qsf stack stop broker``) for 20 s of
publishing attempts and started again. The publisher (``qsf ingest replay``) and ``qsf
process`` (PostgreSQL, ``--out`` Parquet parts and ``--sink kafka``) keep running and reconnect
on their own (``--exit-when-idle`` does not end the processor during the outage); at the
end the broker holds every trade once, and PostgreSQL, the Parquet
outputs and the Kafka output topics equal the backtest of the recording exactly.

Each test runs a stack of its own (its broker is about to fail). The faults are driven by
progress (rows durable in PostgreSQL, the processes' exits), never by sleeping for a
margin; the 20 s is the outage's length, during which both processes must stay up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from qsframework.backtest import run_backtest
from qsframework.events import get_kind
from qsframework.kafka import topic_of
from qsframework.recording import Recording, RecordingWriter
from qsframework.stack import Stack
from qsframework.stack.services import pid_alive
from qsframework.wire import decode

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd
from ..live.test_outage import OVERRIDES, _assert_equal_to_clean_run, _tables
from ..live.feeds import fresh_database
from .processes import committed, records_in, start_process, topic_values, wait_for

N = 6000
OUTAGE_S = 20.0  # how long the broker stays stopped (the fault itself, not a wait for something)


def _pg_trades(dsn: str) -> int:
    async def count() -> int:
        con = await asyncpg.connect(dsn)
        try:
            if await con.fetchval("SELECT to_regclass('trades')") is None:
                return 0
            return int(await con.fetchval("SELECT count(*) FROM trades"))
        finally:
            await con.close()

    return asyncio.run(count())


def _topic_rows(bootstrap: str, topic: str, kind: str) -> list[tuple]:
    """Every record of ``topic`` (read_committed), decoded, in log order."""
    table, rejected = decode(get_kind(kind), topic_values(bootstrap, topic), bounds=None)
    assert not rejected
    return _rows(table)


def _rows(table: pa.Table) -> list[tuple]:
    cols = [c for c in table.schema.names if c != "ts_recv"]  # ts_recv: stamped when received
    return list(zip(*(table.column(c).to_pylist() for c in cols)))


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text().splitlines()[-lines:])


def _alive(*procs: subprocess.Popen) -> None:
    for p in procs:
        assert p.poll() is None, f"{p.args[1:3]} exited ({p.returncode}) during the broker fault"


def _run_with_fault(tmp_path: Path, spread_cls, seed: int, fault: Callable[[Stack, list[subprocess.Popen]], None]) -> str:
    """Replay a recording and process it while ``fault`` hits the broker mid-stream; check
    every output against the backtest. Returns the processor's stderr."""
    trades = make_trades(seed, N, gaps_ms=(0, 1, 5, 10, 20))
    rec = tmp_path / "rec"
    with RecordingWriter(rec) as w:
        w.write("trade", trades)
    span_s = (trades.column("ts_event")[-1].as_py() - trades.column("ts_event")[0].as_py()) / 1e9
    stack = Stack(tmp_path / "stack", broker="kafka")
    ep = stack.up()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    group = f"g-{prefix}"
    dsn = fresh_database(ep.pg_dsn, "t")
    env = {"QSF_KAFKA_BOOTSTRAP": ep.kafka_bootstrap, "QSF_PG_DSN": dsn}
    out = tmp_path / "out"
    procs: list[subprocess.Popen] = []
    try:
        processor = start_process(
            SPREAD_SPEC, *(f"-p{k}={v}" for k, v in OVERRIDES.items()), "--topic-prefix", prefix,
            "--group", group, "--sink", "timescale", "--out", str(out), "--sink", "kafka", "-v", "--exit-when-idle", "5",
            env=env, stderr=tmp_path / "process.err")
        procs.append(processor)
        publisher = subprocess.Popen(
            [*qsf_cmd(), "ingest", "replay", "--recording", str(rec), "--speed", f"{span_s / 40:.3f}",
             "--topic-prefix", prefix],
            stdout=subprocess.PIPE, stderr=open(tmp_path / "replay.err", "w"), text=True,  # noqa: SIM115
            env={**os.environ, **env})
        procs.append(publisher)
        # mid-stream: the processor made a quarter of the trades durable, the replay goes on
        wait_for(lambda: _pg_trades(dsn) >= N // 4, "a quarter of the trades in PostgreSQL", proc=processor)
        assert publisher.poll() is None, "the replay ended before the fault: not mid-stream"
        try:
            fault(stack, procs)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nqsf process: {_tail(tmp_path / 'process.err')}\n"
                                 f"replay: {_tail(tmp_path / 'replay.err')}") from None
        out_text, _ = publisher.communicate(timeout=600)
        assert publisher.returncode == 0, (tmp_path / "replay.err").read_text()
        assert f"published {N:,} events" in out_text
        # --exit-when-idle: the input counts as ended only once the broker, back, confirms that
        # every trade was read (an outage is not an idle input)
        out_text, _ = processor.communicate(timeout=600)
        err = (tmp_path / "process.err").read_text()
        assert processor.returncode == 0, _tail(tmp_path / "process.err")
        assert f"processed {N:,} events" in out_text, out_text
        topic = topic_of("trade", prefix)
        assert committed(ep.kafka_bootstrap, group, topic) == N
        # the durable broker kept each acknowledged trade exactly once (idempotent producer)
        assert records_in(ep.kafka_bootstrap, topic) == N
        clean = run_backtest(spread_cls, Recording(rec), overrides=OVERRIDES)
        got_trades, got_signals, got_alerts = asyncio.run(_tables(dsn))
        _assert_equal_to_clean_run(spread_cls, rec, trades, got_trades, got_signals, got_alerts)
        for kind, name in (("signal", "signals"), ("alert", "alerts")):
            assert pq.read_table(out / f"{name}.parquet").equals(clean.tables[name])
            on_kafka = _topic_rows(ep.kafka_bootstrap, topic_of(kind, prefix), kind)
            assert on_kafka == _rows(clean.tables[name])  # in order, none doubled, none lost
        return err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        stack.down(purge=True)


def _stack_cli(stack: Stack, action: str) -> None:
    r = subprocess.run([*qsf_cmd(), "stack", action, "broker", "--dir", str(stack.root)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_broker_sigkilled_mid_stream_and_restarted(tmp_path, spread_cls):
    def sigkill(stack: Stack, procs: list[subprocess.Popen]) -> None:
        pid = stack.broker.pid()
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), "the broker gone")
        _alive(*procs)
        _stack_cli(stack, "start")  # its log directory is kept: the same topics, offsets and groups
        _alive(*procs)

    _run_with_fault(tmp_path, spread_cls, 41, sigkill)


def test_broker_stopped_for_20s_mid_stream(tmp_path, spread_cls):
    def stop_20s(stack: Stack, procs: list[subprocess.Popen]) -> None:
        _stack_cli(stack, "stop")
        assert not stack.broker.running()
        back_at = time.monotonic() + OUTAGE_S
        while time.monotonic() < back_at:  # the outage: both keep trying, neither gives up
            _alive(*procs)
            time.sleep(0.2)
        _stack_cli(stack, "start")
        _alive(*procs)

    _run_with_fault(tmp_path, spread_cls, 42, stop_20s)
