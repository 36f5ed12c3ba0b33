"""Paper trading: ``qsf process`` runs the backtest's execution simulator on the live trades.

The sample's first hour is replayed onto the embedded broker with ``qsf ingest replay``; ``qsf
process`` trades it with non-default execution settings into ``--out``, PostgreSQL and Kafka,
for the pairs strategy (market orders) and a scheduled trader (limit orders, cancels and
partial fills), and ``qsf backtest`` of the same hour with the same settings is the reference: orders, fills,
equity and metrics equal bit for bit, the database holds each fill once. Then the same after a
SIGKILL mid-run and a restart from ``--state``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition

from qsframework.demo import sample_recording

from ..conftest import qsf_cmd, run_qsf
from ..fault.processes import rows_in, run_process, start_process, wait_for
from .feeds import fresh_database

PAIRS = ("qsframework.strategies.btc_eth_pairs:BtcEthPairs",)  # market orders
#: limit orders 2 bps through the last price, cancelled after a minute, partial fills (--max-participation)
LIMITS = (f"{Path(__file__).parents[1] / 'execution' / 'traders.py'}:Scheduled", "-p", "limit_bps=2", "-p", "every=4m",
          "-p", "hold=2m", "-p", "cancel_after=1m", "-p", "qty=0.3", "--max-participation", "0.5")
STRATEGIES = pytest.mark.parametrize("strategy", [PAIRS, LIMITS], ids=["pairs-market", "scheduled-limit"])
HOUR = ["--end", "2026-01-05T01:00:00Z"]  # the sample's first hour: three round trips
HALF = "2026-01-05T00:50:00Z"  # after the first round trip (00:41 .. 00:42), before the others
EXECUTION = ["--latency", "20ms", "--slippage-bps", "2", "--taker-fee-bps", "7.5", "--maker-fee-bps", "2",
             "--cash", "50000", "--mark-every", "5s"]
KINDS = ("orders", "fills", "equity")


def _qsf(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    r = run_qsf(*args, env=env)
    assert r.returncode == 0, r.stderr
    return r


def _backtest(tmp_path: Path, strategy: tuple[str, ...]) -> tuple[dict[str, pa.Table], dict]:
    """The reference: ``qsf backtest`` of the same hour with the same execution settings."""
    out = tmp_path / "backtest"
    _qsf("backtest", *strategy, "--recording", str(sample_recording()), "--out", str(out), *HOUR, *EXECUTION, env={})
    tables = {n: pq.read_table(out / f"{n}.parquet") for n in KINDS}
    return tables, json.loads((out / "report.json").read_text())


def _database(dsn: str) -> dict[str, list[tuple]]:
    """The paper-trading tables, each in its rows' emission order (seq)."""

    async def read() -> dict[str, list[tuple]]:
        con = await asyncpg.connect(dsn)
        try:
            return {
                "orders": [tuple(r) for r in await con.fetch(
                    "SELECT ts_event, key, seq, order_id, qty, price, tag, status, filled FROM orders ORDER BY seq")],
                "fills": [tuple(r) for r in await con.fetch(
                    "SELECT ts_event, key, seq, order_id, qty, price, fee, liquidity FROM fills ORDER BY seq")],
                "equity": [(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] is not None else None) for r in await con.fetch(
                    "SELECT ts_event, seq, cash, equity, positions FROM equity ORDER BY seq")],
            }
        finally:
            await con.close()

    return asyncio.run(read())


def _expected_rows(tables: dict[str, pa.Table]) -> dict[str, list[tuple]]:
    """The backtest's rows as the database queries above return them."""
    def rows(table: pa.Table, columns: tuple[str, ...]) -> list[tuple]:
        return list(zip(*(table.column(c).to_pylist() for c in columns)))

    equity = [(ts, seq, cash, eq, None if pos is None else dict(pos)) for ts, seq, cash, eq, pos in
              rows(tables["equity"], ("ts_event", "seq", "cash", "equity", "positions"))]
    return {
        "orders": rows(tables["orders"], ("ts_event", "key", "seq", "order_id", "qty", "price", "tag", "status", "filled")),
        "fills": rows(tables["fills"], ("ts_event", "key", "seq", "order_id", "qty", "price", "fee", "liquidity")),
        "equity": equity,
    }


def _assert_parity(out: Path, dsn: str, summary: str, tables: dict[str, pa.Table], report: dict) -> None:
    """--out, report.json, the summary line and PostgreSQL all hold the backtest's trading."""
    assert tables["fills"].num_rows >= 6 and len(set(tables["fills"].column("order_id").to_pylist())) >= 6
    for name in KINDS:
        assert pq.read_table(out / f"{name}.parquet").equals(tables[name]), name
    live = json.loads((out / "report.json").read_text())
    assert live["metrics"] == report["metrics"]
    assert live["execution"] == report["execution"]
    m = report["metrics"]
    assert f"{m['fills']:,} fills (PnL {m['pnl']:,.2f}, return {m['return']:.2%}, max drawdown " \
           f"{m['max_drawdown']:.2%}, Sharpe {m['sharpe']:.2f})" in summary
    assert _database(dsn) == _expected_rows(tables)  # each row once: no duplicates


def _records(bootstrap: str, topic: str, n: int) -> list[bytes]:
    """The values of partition 0 of ``topic`` from its beginning, read until there are ``n`` (the
    broker's end offset is not a record count on every broker, so the records are counted)."""

    async def read() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got: list[bytes] = []
            deadline = time.monotonic() + 120  # a safety net only
            while len(got) < n and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    got.extend(m.value for m in msgs)
            return got
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _replay(prefix: str, env: dict[str, str], *bounds: str) -> None:
    _qsf("ingest", "replay", "--recording", str(sample_recording()), *bounds, "--topic-prefix", prefix, env=env)


@STRATEGIES
def test_paper_trading_live_equals_the_backtest_bit_for_bit(stack_endpoints, tmp_path, strategy):
    """qsf process with the settings in --config (the backtest has them as options), into --out,
    PostgreSQL and Kafka: every one holds exactly the backtest's rows."""
    tables, report = _backtest(tmp_path, strategy)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    env = {"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap, "QSF_PG_DSN": dsn}
    _replay(prefix, env, *HOUR)
    out, config = tmp_path / "live", tmp_path / "run.toml"  # the same settings as a run-config file
    config.write_text('[execution]\nlatency = "20ms"\nslippage_bps = 2\ntaker_fee_bps = 7.5\nmaker_fee_bps = 2\n'
                      'cash = 50000\nmark_every = "5s"\n')
    r = run_process(strategy[0], *strategy[1:], "--config", str(config), "--topic-prefix", prefix, "--group", f"g-{prefix}", "--out", str(out),
                    "--sink", "timescale", "--sink", "kafka", "--exit-when-idle", "3", env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    _assert_parity(out, dsn, r.stdout, tables, report)
    for name in KINDS:  # each row on its topic, as the backtest has it, in order
        expected = [orjson.loads(orjson.dumps(row)) for row in tables[name].to_pylist()]
        got = _records(stack_endpoints.kafka_bootstrap, f"{prefix}.{name}", len(expected))
        assert [orjson.loads(v) for v in got] == expected, name


@STRATEGIES
def test_paper_trading_after_a_sigkill_and_a_restart_from_state_equals_the_backtest(stack_endpoints, tmp_path, strategy):
    """The first 50 minutes are on the topic; the process is killed once a snapshot covers its
    first fills (the limit orders' run: with orders resting and partly filled), the rest of the hour is published, and a restart from --state trades on (the
    rows after the snapshot come again): the same orders, fills, equity and metrics as the
    backtest, each row once in the database."""
    tables, report = _backtest(tmp_path, strategy)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    env = {"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap, "QSF_PG_DSN": dsn}
    _replay(prefix, env, "--end", HALF)
    out, state = tmp_path / "live", tmp_path / "state"
    argv = [*strategy[1:], *EXECUTION, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--out", str(out), "--sink", "timescale",
            "--state", str(state), "--commit-interval", "0s"]
    proc = start_process(strategy[0], *argv, env=env)
    wait_for(lambda: rows_in(out / "fills.parquet") > 0, "a committed fill", proc=proc)  # its snapshot saved first
    proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    _replay(prefix, env, "--start", HALF, *HOUR)
    r = run_process(strategy[0], *argv, "--exit-when-idle", "3", env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    _assert_parity(out, dsn, r.stdout, tables, report)


def test_a_strategy_that_never_orders_writes_exactly_what_it_did_whatever_the_settings(stack_endpoints, tmp_path):
    """The spread strategy emits signals but never orders: with execution options, --out holds
    only signals and alerts (no orders/fills/equity directories, no report.json), the database
    no paper-trading rows, and the summary says nothing of fills."""
    from ..conftest import SPREAD_SPEC

    prefix = f"t{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    env = {"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap, "QSF_PG_DSN": dsn}
    _replay(prefix, env, "--end", "2026-01-05T00:10:00Z")
    out = tmp_path / "live"
    r = run_process(SPREAD_SPEC, *EXECUTION, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--out", str(out),
                    "--sink", "timescale", "--exit-when-idle", "3", env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alerts.parquet", "signals.parquet"]
    assert pq.read_table(out / "signals.parquet").num_rows > 0
    assert "fills" not in r.stdout and "PnL" not in r.stdout
    assert _database(dsn) == {"orders": [], "fills": [], "equity": []}


@pytest.mark.parametrize(("args", "message"), [
    (["--cash", "-5"], "qsf: error: cash must be a finite number >= 0, not -5.0"),
    (["--latency", "soon"], "qsf: error: --latency: "),
    (["--max-participation", "1.5"], "qsf: error: max participation must be in (0, 1], not 1.5"),
    (["--config", "missing.toml"], "qsf: error: --config missing.toml: cannot read it"),
])
def test_bad_execution_settings_are_one_line_and_exit_2(tmp_path, args, message):
    r = subprocess.run([*qsf_cmd(), "process", *PAIRS, *args, "--bootstrap", "127.0.0.1:1"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
