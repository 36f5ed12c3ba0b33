"""Tansu, the broker users without Java get by default, kept covered while the suite runs on
Apache Kafka: replay -> qsf process -> outputs equal the backtest, on a Tansu stack of its own."""

from __future__ import annotations

import pytest

from qsframework.stack import Stack

from .test_process import replay_and_process

pytestmark = pytest.mark.tansu


def test_replay_then_process_on_tansu_equals_the_backtest(tmp_path, spread_cls):
    broker = Stack(tmp_path / "stack", broker="tansu").broker
    broker.start()
    try:
        assert broker.kind == "tansu"
        replay_and_process(broker.bootstrap, tmp_path, 41, 3000, spread_cls)
    finally:
        broker.stop()
