"""``qsf demo``: ends when every replayed event is processed (whatever the load), and stops
cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pyarrow as pa

from qsframework.recording import Recording, RecordingWriter

from ..conftest import T0, make_trades, qsf_cmd
from .feeds import fresh_database

SAMPLE = Path(__file__).resolve().parents[2] / "recordings" / "sample"


def _embedded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("QSF_KAFKA_BOOTSTRAP", "QSF_PG_DSN")}


def test_demo_runs_the_whole_pipeline_and_stops_cleanly(tmp_path):
    """Without --broker the demo's stack is ``qsf stack up``'s default (auto): Apache Kafka
    where Java 17+ runs, else Tansu; its second line names the broker."""
    from qsframework.stack import Stack
    from qsframework.stack.kafka import KAFKA_VERSION, kafka_usable

    r = subprocess.run([*qsf_cmd(), "demo", "--dir", str(tmp_path / "stack")],
                       capture_output=True, text=True, env=_embedded_env(), timeout=1800)
    assert r.returncode == 0, r.stderr
    expected = f"broker Apache Kafka {KAFKA_VERSION} at 127.0.0.1:" if kafka_usable() else "broker Tansu "
    assert r.stdout.splitlines()[1].startswith(expected), r.stdout[:500]
    assert json.loads((tmp_path / "stack" / "stack.json").read_text())["broker"] == ("kafka" if kafka_usable() else "tansu")
    rows = Recording(SAMPLE).rows()
    assert f"demo done: {rows:,} events processed" in r.stdout
    assert "alerts" in r.stdout and "processed" in r.stdout.splitlines()[2]
    # the last line: how to see these tables on the live dashboard (the stack keeps its data)
    assert r.stdout.splitlines()[-1] == (f'live dashboard of these tables: eval "$(qsf stack up --dir {tmp_path / "stack"})" '
                                         "&& qsf dashboard live")
    password = (tmp_path / "stack" / "postgres.password").read_text().strip()
    assert password not in r.stdout + r.stderr and "postgres:***@" in r.stdout
    assert "Unclosed" not in r.stderr and "Traceback" not in r.stderr
    status = Stack(tmp_path / "stack").status()
    assert not status["broker"]["running"] and not status["postgres"]["running"]


def test_demo_broker_option_chooses_the_embedded_broker(tmp_path):
    """``qsf demo --broker tansu`` runs on Tansu (named in its output) even where Java runs;
    --duration ends it early (exit code 1, one line saying so); a wrong broker is a usage error."""
    from qsframework.stack import Stack

    r = subprocess.run([*qsf_cmd(), "demo", "--broker", "tansu", "--duration", "2", "--dir", str(tmp_path / "stack")],
                       capture_output=True, text=True, env=_embedded_env(), timeout=600)
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines()[1].startswith("broker Tansu "), r.stdout[:500]
    assert "Apache Kafka" not in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("qsf: demo stopped by --duration before the end")
    assert json.loads((tmp_path / "stack" / "stack.json").read_text())["broker"] == "tansu"
    status = Stack(tmp_path / "stack").status()
    assert not status["broker"]["running"] and not status["postgres"]["running"]

    r = subprocess.run([*qsf_cmd(), "demo", "--broker", "redpanda", "--dir", str(tmp_path / "other")],
                       capture_output=True, text=True, env=_embedded_env(), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'redpanda' is not one of 'kafka', 'tansu', 'auto'" in r.stderr
    assert not (tmp_path / "other").exists()


def test_demo_waits_through_a_quiet_stretch_of_the_replay(stack_endpoints, tmp_path, monkeypatch):
    """Two bursts of trades 10 s of event time apart, replayed at 2x: 5 s with nothing on the
    topic. The demo ends only once both bursts are processed and committed."""
    from qsframework.demo import run_demo

    first = make_trades(21, 300, gaps_ms=(1, 2))
    second = make_trades(22, 300, gaps_ms=(1, 2), start=first.column("ts_event")[-1].as_py() + 10_000_000_000)
    second = second.set_column(4, second.schema.field("seq"), pa.array(range(5000, 5300), pa.int64()))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", pa.concat_tables([first, second]))
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    monkeypatch.setenv("QSF_KAFKA_BOOTSTRAP", stack_endpoints.kafka_bootstrap)
    monkeypatch.setenv("QSF_PG_DSN", dsn)
    lines: list[str] = []
    result = asyncio.run(run_demo(duration_s=None, speed=2.0, recording=tmp_path / "rec", report=lines.append))
    assert result.processed == result.published == 600
    assert result.complete and result.stopped_by is None

    async def trades_in_db() -> int:
        import asyncpg

        con = await asyncpg.connect(dsn)
        try:
            return int(await con.fetchval("SELECT count(*) FROM trades"))
        finally:
            await con.close()

    assert asyncio.run(trades_in_db()) == 600
    assert first.column("ts_event")[0].as_py() >= T0


def test_demo_stops_cleanly_on_ctrl_c(stack_endpoints):
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap,
           "QSF_PG_DSN": fresh_database(stack_endpoints.pg_dsn, "t"), "PYTHONWARNINGS": "default"}
    # real time: the sample would take hours, so Ctrl-C lands mid-run
    proc = subprocess.Popen([*qsf_cmd(), "demo", "--speed", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for the first progress line: the pipeline is running
        if "processed" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (out, err)
    assert "Unclosed" not in err and "Traceback" not in err and "Task was destroyed" not in err, err
    assert err.strip().splitlines()[-1].startswith("qsf: demo stopped by a signal before the end")
