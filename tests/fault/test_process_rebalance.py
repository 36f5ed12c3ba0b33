"""qsf process while its consumer group rebalances under its commits.

A second member of the same group joins and leaves again and again while trades are being
published and ``qsf process`` commits after every poll (``--commit-interval 0s``): the
partition moves to the other member and back, or stays while the group rebalances, and
once the processor is frozen (SIGSTOP, or held inside a handler) until the broker evicts it,
so its next commit comes from a member the group no longer knows and is refused. The
processor must survive every rebalance and end with exactly the outputs of a backtest of
the same trades, the DLQ empty.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from qsframework.backtest import run_backtest
from qsframework.live.assignors import OneActive
from qsframework.loader import load_strategy
from qsframework.recording import Recording, RecordingWriter

from ..conftest import SPREAD_SPEC, make_trades
from ..live.test_outage import OVERRIDES
from .processes import publish, records_in, run_process, start_process, state_offsets, wait_for

PARAMS = [f"-p{k}={v}" for k, v in OVERRIDES.items()]
GATED_SPEC = str(Path(__file__).with_name("gate_strategy.py")) + ":GatedTrades"


class Member:
    """Another member of the processor's group, in a thread of its own (it heartbeats while
    the test waits). Member ids start with the client id and the assignor gives the only
    partition to the first member id in sorted order, so ``client_id`` decides who gets it:
    ``"aaa"`` sorts before the processor's ``aiokafka-...`` and takes it, ``"zzz"`` does not.
    It never fetches nor commits."""

    def __init__(self, bootstrap: str, group: str, topic: str, *, client_id: str) -> None:
        self.assigned = threading.Event()  # the first assignment after joining arrived
        self.partitions: set[TopicPartition] = set()
        self._leave = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(bootstrap, group, topic, client_id), daemon=True)
        self._thread.start()

    def _run(self, bootstrap: str, group: str, topic: str, client_id: str) -> None:
        member = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked) -> None:
                pass

            async def on_partitions_assigned(self, assigned) -> None:
                member.partitions = set(assigned)
                member.assigned.set()

        async def run() -> None:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=client_id,
                                        enable_auto_commit=False, partition_assignment_strategy=(OneActive,))
            consumer.subscribe([topic], listener=Listener())
            await consumer.start()
            try:
                # getmany drives the join; records are never taken (nothing is committed)
                while not member.assigned.is_set() and not member._leave.is_set():
                    await consumer.getmany(timeout_ms=100, max_records=1)
                while not member._leave.is_set():
                    await asyncio.sleep(0.05)
            finally:
                await consumer.stop()  # LeaveGroup: the group rebalances again

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by leave()
            self._error = exc
            self.assigned.set()

    def leave(self) -> None:
        self._leave.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the second member did not leave"
        if self._error is not None:
            raise AssertionError(f"the second member failed: {self._error!r}")


@contextmanager
def _running(spec: str, argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``qsf process -v`` in the background, its log in ``log``; killed if the test fails."""
    proc = start_process(spec, *argv, "-v", env=env, stderr=log)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _stop_cleanly(proc: subprocess.Popen, log: Path) -> None:
    """SIGTERM: the processor commits what it has and exits 0, with nothing to complain of."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=240) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and "qsf: error" not in text, text


def _backtest(strategy_cls, trades, root: Path, overrides=OVERRIDES):
    with RecordingWriter(root) as w:
        w.write("trade", trades)
    return run_backtest(strategy_cls, Recording(root), overrides=overrides)


def _snapshot_waiter(state: Path, topic: str, ts: np.ndarray):
    """``wait(proc, published)``: until the snapshot's offset reaches the rows the watermark
    lets go, all published rows but those at the latest event time (they wait for a later one)."""

    def wait(proc, published: int) -> None:
        upto = int(np.searchsorted(ts[:published], ts[published - 1]))
        wait_for(lambda: state_offsets(state).get((topic, 0), 0) >= upto,
                 f"a snapshot at offset {upto} of {published}", proc=proc)

    return wait


def test_the_group_rebalancing_under_commits_loses_and_doubles_nothing(stack_endpoints, tmp_path, spread_cls):
    bootstrap = stack_endpoints.kafka_bootstrap
    trades = make_trades(41, 8000, gaps_ms=(0, 1, 5, 10, 40))
    ts = trades.column("ts_event").to_numpy()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topic, group = f"{prefix}.trades", f"g-{prefix}"
    tp0 = TopicPartition(topic, 0)
    state, out, log = tmp_path / "state", tmp_path / "live", tmp_path / "process.log"
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap}
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", group, "--out", str(out), "--state", str(state),
            "--commit-interval", "0s"]
    chunks = iter(np.array_split(np.arange(trades.num_rows), 10))
    published = 0

    def publish_next() -> None:
        nonlocal published
        rows = next(chunks)
        publish(bootstrap, prefix, "trade", trades.slice(int(rows[0]), len(rows)))
        published = int(rows[-1]) + 1

    snapshot_at = _snapshot_waiter(state, topic, ts)

    def committed_all(proc) -> None:
        snapshot_at(proc, published)

    publish_next()
    with _running(SPREAD_SPEC, argv, env, log) as proc:
        committed_all(proc)
        for round_no, client_id in enumerate(("aaa", "zzz", "aaa", "zzz", "aaa")):
            member = Member(bootstrap, group, topic, client_id=f"{client_id}-{round_no}")
            publish_next()  # while the group rebalances: the processor commits every poll
            assert member.assigned.wait(timeout=240), "the second member got no assignment"
            assert member.partitions == ({tp0} if client_id == "aaa" else set()), member.partitions
            if client_id == "zzz":
                committed_all(proc)  # the processor kept its partition through the rebalance
            else:
                publish_next()  # the partition is the other member's: nothing can be consumed
            member.leave()
            committed_all(proc)  # back with the processor (or kept): it goes on where it was

        # frozen until the broker evicts it, the partition taken over meanwhile: once thawed
        # it learns so from a heartbeat or a refused commit (whichever goes first: the next
        # test makes the refused commit certain), rejoins and goes on where it was
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            member = Member(bootstrap, group, topic, client_id="zzz-frozen")  # sorts last, yet gets it
            assert member.assigned.wait(timeout=240), "the second member got no assignment"
            assert member.partitions == {tp0}  # the processor is out of the group
            publish_next()
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # it rejoins, takes the partition back (it sorts first) and resumes where it was; the
        # other member leaves only after that rebalance (one leaving during it would be a
        # different case: Tansu then keeps electing the departed member as the group's leader)
        wait_for(lambda: member.partitions == set(), "the processor back in the group", proc=proc)
        member.leave()
        committed_all(proc)
        _stop_cleanly(proc, log)
    assert published == trades.num_rows

    # the rows held behind the watermark at the stop: a restart from --state finishes them
    r = run_process(SPREAD_SPEC, *argv, "--exit-when-idle", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert "0 late" in r.stdout, r.stdout
    assert records_in(bootstrap, f"{prefix}.dlq") == 0

    clean = _backtest(spread_cls, trades, tmp_path / "rec")
    assert clean.signals > 0
    assert pq.read_table(out / "signals.parquet").equals(clean.tables["signals"])
    assert pq.read_table(out / "alerts.parquet").equals(clean.tables["alerts"])


def test_a_commit_refused_after_the_processor_was_evicted_is_retried(stack_endpoints, tmp_path):
    """Held inside a handler until the broker evicts it and another member takes the
    partition, the processor then commits the batch it was processing as a member the group
    no longer knows: the broker refuses (UNKNOWN_MEMBER_ID, aiokafka's CommitFailedError) and
    the commit is retried until the processor has rejoined and has its partition back
    (its member id sorts first). The refusal is certain: rejoining takes a JoinGroup round,
    the commit goes out as soon as the batch is done."""
    bootstrap = stack_endpoints.kafka_bootstrap
    trades = make_trades(42, 3000, gaps_ms=(0, 1, 5, 10, 40))
    ts = trades.column("ts_event").to_numpy()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topic, group = f"{prefix}.trades", f"g-{prefix}"
    state, out, log, gate = tmp_path / "state", tmp_path / "live", tmp_path / "process.log", tmp_path / "gate"
    gate.mkdir()
    gate_at = trades.column("seq")[1500].as_py()
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap}
    argv = ["-p", f"gate_at={gate_at}", "-p", f"gate={gate}", "--topic-prefix", prefix, "--group", group,
            "--out", str(out), "--state", str(state), "--commit-interval", "0s"]
    snapshot_at = _snapshot_waiter(state, topic, ts)

    publish(bootstrap, prefix, "trade", trades.slice(0, 1000))
    with _running(GATED_SPEC, argv, env, log) as proc:
        snapshot_at(proc, 1000)
        publish(bootstrap, prefix, "trade", trades.slice(1000, 1000))
        wait_for(lambda: (gate / "reached").exists(), "the processor held at the gate", proc=proc)
        member = Member(bootstrap, group, topic, client_id="zzz")  # sorts last, yet gets it:
        assert member.assigned.wait(timeout=240), "the second member got no assignment"
        assert member.partitions == {TopicPartition(topic, 0)}  # the processor was evicted
        (gate / "go").touch()
        wait_for(lambda: "offset commit failed (CommitFailedError" in log.read_text(), "a refused commit", proc=proc)
        refused = next(line for line in log.read_text().splitlines() if "offset commit failed" in line)
        assert refused.endswith("; retrying in 0.2 s") and len(refused) < 400, refused  # a readable line
        assert "CommitFailedError: CommitFailedError" not in refused, refused
        wait_for(lambda: member.partitions == set(), "the processor back in the group", proc=proc)
        member.leave()
        snapshot_at(proc, 2000)
        publish(bootstrap, prefix, "trade", trades.slice(2000))
        snapshot_at(proc, trades.num_rows)
        _stop_cleanly(proc, log)

    r = run_process(GATED_SPEC, *argv, "--exit-when-idle", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert records_in(bootstrap, f"{prefix}.dlq") == 0
    clean = _backtest(load_strategy(GATED_SPEC), trades, tmp_path / "rec", overrides={})
    assert clean.signals == trades.num_rows
    assert pq.read_table(out / "signals.parquet").equals(clean.tables["signals"])
