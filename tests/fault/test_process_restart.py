"""qsf process across restarts: re-runs append to --out, a reset broker log is an error
(or the explicit --on-reset policy), and SIGKILLs at random points (and inside the --record
commit window) lose and double nothing."""

from __future__ import annotations

import asyncio
import os
import random
import re
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.parquet as pq

from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter
from qsframework.stack import Stack

from ..conftest import SPREAD_SPEC, live_broker, make_trades
from ..live.test_outage import OVERRIDES, _assert_equal_to_clean_run, _tables
from ..live.feeds import fresh_database
from .processes import publish, records_in, restart_empty, rows_in, run_process, start_process, state_offsets, wait_for
from .test_process_record import assert_recorded_exactly, inside_record_window
from .test_process_record import split_at as _split

PARAMS = [f"-p{k}={v}" for k, v in OVERRIDES.items()]


def _backtest(spread_cls, trades: pa.Table, root):
    with RecordingWriter(root) as w:
        w.write("trade", trades)
    return run_backtest(spread_cls, Recording(root), overrides=OVERRIDES)


def test_a_rerun_with_the_same_group_appends_to_out_and_destroys_nothing(stack_endpoints, tmp_path, spread_cls):
    trades = make_trades(31, 4000)
    first, second = _split(trades, 2000)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    out = tmp_path / "live"
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--out", str(out),
            "--state", str(tmp_path / "state"), "--exit-when-idle", "2"]
    publish(stack_endpoints.kafka_bootstrap, prefix, "trade", first)
    r = run_process(SPREAD_SPEC, *argv, env=env)
    assert r.returncode == 0, r.stderr
    after_first = _backtest(spread_cls, first, tmp_path / "rec1")
    assert after_first.signals > 0
    assert pq.read_table(out / "signals.parquet").equals(after_first.tables["signals"])

    r = run_process(SPREAD_SPEC, *argv, env=env)  # nothing new: the outputs stay as they are
    assert r.returncode == 0, r.stderr
    assert "processed 0 events" in r.stdout
    assert pq.read_table(out / "signals.parquet").equals(after_first.tables["signals"])
    assert pq.read_table(out / "alerts.parquet").equals(after_first.tables["alerts"])

    publish(stack_endpoints.kafka_bootstrap, prefix, "trade", second)
    r = run_process(SPREAD_SPEC, *argv, env=env)  # new input: appended after the first run's
    assert r.returncode == 0, r.stderr
    whole = _backtest(spread_cls, trades, tmp_path / "rec")
    assert pq.read_table(out / "signals.parquet").equals(whole.tables["signals"])
    assert pq.read_table(out / "alerts.parquet").equals(whole.tables["alerts"])


def test_a_file_where_out_puts_a_part_directory_is_refused(stack_endpoints, tmp_path):
    out = tmp_path / "bt"
    out.mkdir()
    (out / "signals.parquet").write_bytes(b"PAR1")  # e.g. qsf backtest's single file
    r = run_process(SPREAD_SPEC, *PARAMS, "--topic-prefix", "tnever", "--out", str(out), "--exit-when-idle", "1",
                    env={"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "is a file" in r.stderr and "Traceback" not in r.stderr
    assert (out / "signals.parquet").read_bytes() == b"PAR1"


def test_a_reset_broker_log_stops_the_run_unless_on_reset_earliest(tmp_path, spread_cls):
    broker = Stack(tmp_path / "stack", broker=live_broker()).broker  # our own: it is about to lose its log
    broker.start()
    try:
        trades = make_trades(32, 3000)
        old, new = _split(trades, 2000)
        prefix = f"t{uuid.uuid4().hex[:8]}"
        env = {"QSF_KAFKA_BOOTSTRAP": broker.bootstrap}
        argv = [*PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--state", str(tmp_path / "state"),
                "--out", str(tmp_path / "live"), "--exit-when-idle", "2"]
        publish(broker.bootstrap, prefix, "trade", old)
        r = run_process(SPREAD_SPEC, *argv, env=env)
        assert r.returncode == 0, r.stderr
        assert state_offsets(tmp_path / "state") == {(f"{prefix}.trades", 0): old.num_rows}

        restart_empty(broker)  # every topic and committed offset is gone
        publish(broker.bootstrap, prefix, "trade", new)
        r = run_process(SPREAD_SPEC, *argv, env=env)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert (f"{prefix}.trades[0]: the state snapshot's offset {old.num_rows} is past the end of the log "
                f"(offsets 0..{new.num_rows})") in r.stderr
        assert "--on-reset earliest" in r.stderr
        assert rows_in(tmp_path / "live" / "signals.parquet") == _backtest(spread_cls, old, tmp_path / "r1").signals

        r = run_process(SPREAD_SPEC, *argv, "--on-reset", "earliest", env=env)
        assert r.returncode == 0, r.stderr
        assert f"processed {new.num_rows:,} events" in r.stdout and "0 late" in r.stdout
        whole = _backtest(spread_cls, trades, tmp_path / "rec")
        assert pq.read_table(tmp_path / "live" / "signals.parquet").equals(whole.tables["signals"])
    finally:
        broker.stop()


def test_a_broker_that_restarts_empty_under_a_running_processor_is_an_error_not_a_skip(tmp_path):
    broker = Stack(tmp_path / "stack", broker=live_broker()).broker
    broker.start()
    try:
        trades = make_trades(34, 3000)
        old, new = _split(trades, 2000)
        prefix = f"t{uuid.uuid4().hex[:8]}"
        topic = f"{prefix}.trades"
        publish(broker.bootstrap, prefix, "trade", old)
        proc = start_process(SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}",
                             "--state", str(tmp_path / "state"), env={"QSF_KAFKA_BOOTSTRAP": broker.bootstrap})
        try:
            wait_for(lambda: state_offsets(tmp_path / "state").get((topic, 0), 0) >= old.num_rows - 100,
                     "a commit", proc=proc)
            restart_empty(broker)  # the topic, the group and its offsets are gone
            publish(broker.bootstrap, prefix, "trade", new)
            stdout, stderr = proc.communicate(timeout=180)
        finally:
            proc.kill()
        assert proc.returncode == 2, stderr
        assert stderr.count("\n") == 1 and "Traceback" not in stderr
        # the log's range as the processor found it: before the new rows landed, or after
        assert re.search(rf"{topic}\[0\]: the consumed offset {old.num_rows} is past the end of the log "
                         rf"\(offsets 0\.\.({new.num_rows}|0)\)", stderr), stderr
    finally:
        broker.stop()


def test_sigkills_at_random_points_lose_and_double_nothing(stack_endpoints, tmp_path, spread_cls):
    """Killed with SIGKILL six times, each time right after a snapshot or while a new piece of
    input is being processed, twice of them frozen first where --record files are staged for
    a checkpoint whose snapshot is not saved yet: PostgreSQL, --out and --record end exactly
    as a backtest (the record holds each input trade once), the DLQ empty.

    The topic holds the trades a little out of order (up to 0.5 s, within --lateness 1s), so
    a snapshot's offset (the oldest row still waiting) has rows after it that were already
    processed: read again after the restart, they must be recognised, not dead-lettered.
    A checkpoint takes a moment between staging and its snapshot: a gate sink (gate_sink.py)
    holds the two frozen rounds there, so the kill lands in the window by construction."""
    rng = random.Random(20261201)
    trades = make_trades(33, 9000, gaps_ms=(0, 1, 5, 10, 20))
    jitter = np.random.default_rng(5).integers(0, 500_000_000, trades.num_rows)
    arrival = pa.compute.sort_indices(pa.array(trades.column("ts_event").to_numpy() + jitter))
    shuffled = trades.take(arrival)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.trades"
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    hold = tmp_path / "hold"  # while this FIFO exists, checkpoints wait after staging (gate_sink.py)
    env = {"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap, "QSF_PG_DSN": dsn, "QSF_TEST_HOLD": str(hold)}
    state, out, record = tmp_path / "state", tmp_path / "live", tmp_path / "record"
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--sink", "timescale",
            "--sink", f"{Path(__file__).with_name('gate_sink.py')}:HoldAtFlush",
            "--out", str(out), "--record", str(record), "--state", str(state), "--commit-interval", "0s",
            "--lateness", "1s"]
    published = 0

    def publish_upto(n: int) -> None:
        nonlocal published
        publish(stack_endpoints.kafka_bootstrap, prefix, "trade", shuffled.slice(published, n - published))
        published = n

    def frozen_in_record_window(proc) -> bool:
        """True once ``proc`` is frozen inside the window; when it has processed what it can
        (the last second waits behind the watermark) without being caught there, more input."""
        if inside_record_window(proc, record, state):
            return True
        if state_offsets(state).get((topic, 0), 0) >= published - 500 and published < trades.num_rows - 1000:
            publish_upto(published + 100)
        return False

    for i in range(6):
        before = state_offsets(state).get((topic, 0), 0)
        if published - before < 800:
            publish_upto(min(trades.num_rows, published + 1000))
        proc = start_process(SPREAD_SPEC, *argv, env=env)
        # the rows of the last second (--lateness) wait for later ones: aim below them
        target = rng.randint(before + 1, published - 500)
        wait_for(lambda: state_offsets(state).get((topic, 0), 0) >= target, f"a snapshot at offset {target}", proc=proc)
        if i in (1, 4):  # where a crash doubled the record: its files written, the snapshot not yet
            os.mkfifo(hold)
            wait_for(partial(frozen_in_record_window, proc), "a staged --record file ahead of the snapshot",
                     proc=proc)
        elif rng.random() < 0.5:  # now, or while it processes the next piece
            publish_upto(min(trades.num_rows, published + rng.randint(200, 1200)))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        hold.unlink(missing_ok=True)
    publish_upto(trades.num_rows)
    r = run_process(SPREAD_SPEC, *argv, "--exit-when-idle", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert "0 late" in r.stdout
    assert records_in(stack_endpoints.kafka_bootstrap, f"{prefix}.dlq") == 0

    got_trades, got_signals, got_alerts = asyncio.run(_tables(dsn))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    _assert_equal_to_clean_run(spread_cls, tmp_path / "rec", trades, got_trades, got_signals, got_alerts)
    clean = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES)
    assert pq.read_table(out / "signals.parquet").equals(clean.tables["signals"])
    assert pq.read_table(out / "alerts.parquet").equals(clean.tables["alerts"])
    assert_recorded_exactly(record, trades)
    replayed = run_backtest(spread_cls, Recording(record), overrides=OVERRIDES)  # parity: the record gives them again
    assert replayed.tables["signals"].equals(clean.tables["signals"])
