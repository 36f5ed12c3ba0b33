"""Telemetry live: a flight log replayed onto the broker's shared telemetry topic, UavAnomaly
run by `qsf process` on it, gives exactly the backtest's alerts (and so does its --record);
messages that do not say their kind go to the DLQ."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import pyarrow.parquet as pq

from qsframework.sim.vehicle import Scenario, write_tlog
from qsframework.adapters.mavlink.tlog import import_tlog
from qsframework.backtest import run_backtest
from qsframework.loader import load_strategy
from qsframework.recording import Recording
from qsframework.replay import replay

from ..conftest import qsf_cmd
from .test_wire_replay import _consume_all

SPEC = "strategies/uav_anomaly.py:UavAnomaly"


def test_uav_anomaly_live_equals_backtest(stack_endpoints, tmp_path):
    write_tlog(Scenario.load("multi"), tmp_path / "multi.tlog", duration=160, start_unix_us=1_767_571_200_000_000)
    import_tlog(tmp_path / "multi.tlog", out=tmp_path / "rec")
    rec = Recording(tmp_path / "rec")
    prefix = f"u{uuid.uuid4().hex[:8]}"
    asyncio.run(replay(rec, stack_endpoints.kafka_bootstrap, prefix=prefix))
    asyncio.run(_publish_headerless(stack_endpoints.kafka_bootstrap, f"{prefix}.telemetry"))
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    r = subprocess.run([*qsf_cmd(), "process", SPEC, "--topic-prefix", prefix, "--group", f"g-{prefix}",
                        "--out", str(tmp_path / "live"), "--record", str(tmp_path / "rec-live"),
                        "--exit-when-idle", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    cls = load_strategy(SPEC)
    backtest = run_backtest(cls, rec)
    names = set(backtest.tables["alerts"].column("name").to_pylist())
    assert {"gps_glitch", "vibration_high", "link_loss", "gps_loss"} <= names
    # UavAnomaly scales per key: one engine per partition, its files under p<N> (one partition here)
    for out in ("signals", "alerts"):
        assert pq.read_table(tmp_path / "live" / "p0" / f"{out}.parquet").equals(backtest.tables[out]), out
    again = run_backtest(cls, Recording(tmp_path / "rec-live" / "p0"))
    assert again.tables["alerts"].equals(backtest.tables["alerts"])
    dlq = asyncio.run(_consume_all(stack_endpoints.kafka_bootstrap, f"{prefix}.dlq", f"{prefix}-d", 2))
    assert sorted(dlq) == [b'{"kind": "mystery"}', b'{"no": "header"}']


async def _publish_headerless(bootstrap: str, topic: str) -> None:
    """On a shared topic a message must say its kind: these two cannot be placed."""
    from qsframework.kafka import start_producer

    producer = await start_producer(bootstrap)
    try:
        await producer.send(topic, key=b"1", value=b'{"no": "header"}')
        await producer.send(topic, key=b"1", value=b'{"kind": "mystery"}', headers=[("kind", b"mystery")])
        await producer.flush()
    finally:
        await producer.stop()
