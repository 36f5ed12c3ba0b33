"""pipeline_health: ``qsf process --sink timescale`` writes one row per interval while it runs,
and the rows account for every event it processed and every message it dead-lettered."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections import Counter

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.kafka import ensure_topics
from qsframework.live.dead_letters import reason_class
from qsframework.wire import encode

from ..conftest import SPREAD_SPEC, make_trades, qsf_cmd
from ..fault.processes import wait_for
from .feeds import fetch, fetch_made, publish

BAD = [b"{oops", b"[]", b"42"]  # one malformed JSON, two valid JSON that are not objects


def test_health_rows_appear_while_processing_and_add_up(stack_endpoints, tmp_path):
    bootstrap, dsn = stack_endpoints.kafka_bootstrap, stack_endpoints.pg_dsn
    # recent event times, so the receive-to-durable latency is a live one (within the hour)
    trades = make_trades(31, 1200, start=time.time_ns() - 40 * 60 * 10**9)
    pairs = encode(trades)
    # the rows at the latest event time wait behind the watermark (the run is stopped, not
    # idle-ended): the engine processes those before it
    ts = trades.column("ts_event").to_numpy()
    expected = int((ts < ts.max()).sum())
    prefix = f"h{uuid.uuid4().hex[:8]}"
    group = f"g-{prefix}"
    asyncio.run(ensure_topics(bootstrap, [f"{prefix}.trades", f"{prefix}.dlq"]))
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    proc = subprocess.Popen(
        [*qsf_cmd(), "process", SPREAD_SPEC, "--topic-prefix", prefix, "--group", group, "--no-state",
         "--sink", "timescale", "--health-interval", "300ms"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None and "group " + group in proc.stdout.readline()
        rows_of = "SELECT * FROM pipeline_health WHERE group_id = $1 ORDER BY ts"
        half = len(pairs) // 2
        publish(bootstrap, f"{prefix}.trades", pairs[:half] + [(b"X", v) for v in BAD] + pairs[half:])

        def processed() -> int:
            return sum(r["events"] for r in fetch_made(dsn, rows_of, group))

        # rows while it runs: the intervals' events reach every event published
        wait_for(lambda: processed() == expected, "health rows counting every event", proc=proc)
        running = fetch(dsn, rows_of, group)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"processed {expected:,} events (3 rejected" in out
    rows = fetch(dsn, rows_of, group)
    assert len(rows) >= len(running) >= 1  # (and a last row at the stop, when closing has the time)
    # the events add up to the independent count, the dead letters to the bad messages
    assert sum(r["events"] for r in rows) == expected
    assert sum(r["dlq"] for r in rows) == len(BAD)
    by_reason: Counter[str] = Counter()
    for r in rows:
        by_reason.update(orjson.loads(r["dlq_by_reason"]))
    assert by_reason == {"malformed JSON": 1, "not a JSON object": 2}
    for r in rows:
        assert r["strategy"] == "BtcEthSpread" and r["processor"].endswith(f":{proc.pid}")
        assert abs(r["events_per_s"] * r["interval_s"] - r["events"]) < 1e-6 * max(1, r["events"])
        assert r["consumer_lag"] >= 0
        if r["latency_ms_p50"] is not None:
            assert 0 <= r["latency_ms_p50"] <= r["latency_ms_p99"] < 3.6e6
    assert any(r["latency_ms_p99"] is not None for r in rows)  # the samples of the events made durable
    assert rows[-1]["consumer_lag"] == 0 and any(r["last_commit"] is not None for r in rows)
    assert [r["ts"] for r in rows] == sorted({r["ts"] for r in rows})


def test_reason_classes_drop_the_particulars():
    assert reason_class("late: event time before the watermark 1767571200000000000") == "late"
    assert reason_class("malformed JSON: unexpected character: line 1 column 2 (char 1)") == "malformed JSON"
    assert reason_class("field 'price' has a bad value 'abc'") == "field 'price' has a bad value"
    assert reason_class("not a JSON object") == "not a JSON object"


def test_health_rows_wait_while_the_database_is_away():
    """A database that cannot be reached never fails the run: the rows wait for the next try."""
    import socket

    from qsframework.latency import LatencyWindow
    from qsframework.live.config import ProcessConfig, ProcessStats
    from qsframework.live.health import HealthSink
    from qsframework.live.kafka_source import KafkaSource

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ProcessConfig(bootstrap="127.0.0.1:9", group="g")
    stats = ProcessStats(processed=0)
    sink = HealthSink(f"postgresql://qsf@127.0.0.1:{port}/qsf", group="g", strategy="S", interval_s=3600,
                      stats=stats, latency=LatencyWindow(), source=KafkaSource(config, {}))

    async def run() -> None:
        await sink.start()
        stats.processed = 42
        await sink.close()  # the last row: not written, kept, and no error

    asyncio.run(run())
    assert sink.rows_written == 0 and [r.events for r in sink.waiting] == [42]


@given(chunks=st.lists(st.lists(st.floats(0, 1e6), max_size=12), max_size=8), mark_at=st.integers(0, 8))
@settings(max_examples=60)
def test_latency_samples_since_a_mark_are_those_added_after_it(chunks, mark_at):
    """An interval's latency samples: those added after its mark, as far as the ring holds them."""
    from qsframework.latency import LatencyWindow

    window = LatencyWindow(size=16)
    mark, after = 0, []
    for i, chunk in enumerate(chunks):
        if i == mark_at:
            mark = window.total
        window.add(np.array(chunk, np.float64))
        if i >= mark_at:
            after += chunk
    if mark_at >= len(chunks):  # the mark after everything: nothing since
        mark = window.total
    assert window.since(mark).tolist() == after[len(after) - min(len(after), 16):]
