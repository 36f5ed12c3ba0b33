"""Tansu, the broker users without Java get by default, kept covered while the suite runs on
Apache Kafka: replay -> qsf process -> outputs equal the backtest, on a Tansu stack of its own."""

from __future__ import annotations

import asyncio
import uuid

import pyarrow.parquet as pq
import pytest

from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter
from qsframework.replay import replay
from qsframework.stack import Stack

from ..conftest import make_trades
from .test_process import OVERRIDES, process

pytestmark = pytest.mark.tansu


def test_replay_then_process_on_tansu_equals_the_backtest(tmp_path, spread_cls):
    broker = Stack(tmp_path / "stack", broker="tansu").broker
    broker.start()
    try:
        assert broker.kind == "tansu"
        trades = make_trades(41, 3000, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
        with RecordingWriter(tmp_path / "rec") as w:
            w.write("trade", trades)
        prefix = f"t{uuid.uuid4().hex[:8]}"
        asyncio.run(replay(Recording(tmp_path / "rec"), broker.bootstrap, prefix=prefix))
        r = process(prefix, tmp_path, "--exit-when-idle", "2", env_bootstrap=broker.bootstrap)
        assert r.returncode == 0, r.stderr
        assert f"processed {trades.num_rows:,} events" in r.stdout
    finally:
        broker.stop()
    backtest = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    assert backtest.signals > 0 and backtest.alerts > 0
    for name in ("signals", "alerts"):
        assert pq.read_table(tmp_path / "live" / f"{name}.parquet").equals(backtest.tables[name])
