"""Scale-out: several ``qsf process`` members of one consumer group on multi-partition topics.

``scale = "key"`` (UavAnomaly, 8 vehicles on a 6-partition telemetry topic): a first member
starts alone and takes every partition, two more join while it works (a rebalance hands its
engines over), one member is SIGKILLed once it has committed output and the second half of
the flight is published after it: the survivors take its partitions over from their state
snapshots. The union of the members' PostgreSQL rows, Parquet parts and Kafka output topics
is exactly the backtest's (which one engine over every vehicle gives), with no duplicates.

``scale = "single"`` (the spread): of two members only one is active, the other logs that it
stands by; the active one is SIGKILLed and the standby takes over: the outputs again equal
the backtest's.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qsframework.backtest import run_backtest
from qsframework.events import get_kind
from qsframework.kafka import ensure_topics, kind_headers, start_producer, topic_of
from qsframework.loader import load_strategy
from qsframework.recording import Recording, RecordingWriter
from qsframework.wire import decode, encode

from ..conftest import SPREAD_SPEC, live_broker, make_trades, qsf_cmd
from ..live.test_outage import OVERRIDES
from ..live.feeds import fresh_database
from .fleet import fleet_recording
from .processes import topic_values, wait_for

UAV_SPEC = "strategies/uav_anomaly.py:UavAnomaly"
OUTPUTS = ("signals", "alerts")
SORT = [("key", "ascending"), ("seq", "ascending")]


class Member:
    """One ``qsf process`` in the background, its stdout and stderr in files read while it
    runs. Every member writes the same ``--out`` (``tmp/out``): a partition's parts go on where
    its previous owner's stopped, and a SIGKILLed owner's staged parts whose checkpoint was
    committed are published by the next (README "Scale-out")."""

    def __init__(self, tmp: Path, name: str, spec: str, *args: str, env: dict[str, str]) -> None:
        self.name, self.out = name, tmp / "out"
        self.stdout, self.stderr = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen([*qsf_cmd(), "process", spec, *args, "--out", str(self.out), "-v"],
                                         stdout=out, stderr=err, text=True, env={**os.environ, **env})

    def lines(self) -> list[str]:
        return self.stdout.read_text().splitlines()

    def assigned(self) -> list[int] | None:
        """The partitions of its latest assignment (None before the first)."""
        found = [line.split(":", 1)[1] for line in self.lines() if line.startswith("partitions assigned:")]
        return None if not found else [int(p) for p in re.findall(r"\d+", found[-1])]

    def committed_rows(self, partitions: list[int] | None = None) -> int:
        """Output rows in the published Parquet parts (hidden staged parts are not counted), of
        ``partitions`` only if given."""
        dirs = [self.out] if partitions is None else [self.out / f"p{n}" for n in partitions]
        return sum(pq.read_metadata(p).num_rows for d in dirs for p in d.glob("**/*.parquet/part-*.parquet"))

    def finish(self, *, stop: bool = True) -> str:
        """Stop it (SIGTERM; else it ends by itself) and wait: exit code 0 required, its stdout returned."""
        if stop:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)
        assert self.proc.returncode == 0, f"{self.name}: {self.stderr.read_text()[-3000:]}"
        return self.stdout.read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _parts(members: list[Member], kind: str) -> pa.Table:
    """Every member's published parts of ``kind``, concatenated."""
    files = sorted({p for m in members for p in m.out.glob(f"**/{kind}.parquet/part-*.parquet")})
    schema = get_kind(kind[:-1]).schema
    return pa.concat_tables([pq.read_table(f) for f in files] or [schema.empty_table()])


def _in_postgres(dsn: str, expected: dict[str, pa.Table]) -> bool:
    """Whether PostgreSQL holds as many signals and alerts as ``expected`` (what is in them is
    compared once the members stopped)."""

    async def count() -> bool:
        con = await asyncpg.connect(dsn)
        try:
            for kind in OUTPUTS:
                if await con.fetchval("SELECT to_regclass($1)", kind) is None:
                    return False
                if await con.fetchval(f"SELECT count(*) FROM {kind}") != expected[kind].num_rows:
                    return False
            return True
        finally:
            await con.close()

    return asyncio.run(count())


def _without_recv(table: pa.Table) -> list[tuple]:
    """Rows (sorted by key and seq) without ts_recv, stamped when received from Kafka."""
    table = table.sort_by(SORT)
    cols = [c for c in table.schema.names if c != "ts_recv"]
    return list(zip(*(table.column(c).to_pylist() for c in cols)))


async def _pg_rows(dsn: str, kind: str) -> list[tuple]:
    con = await asyncpg.connect(dsn)
    try:
        cols = [c for c in get_kind(kind[:-1]).schema.names if c != "ts_recv"]
        return [tuple(r) for r in await con.fetch(f"SELECT {', '.join(cols)} FROM {kind} ORDER BY key, seq")]
    finally:
        await con.close()


def _assert_union_equals(expected: dict[str, pa.Table], members: list[Member], *, dsn: str,
                         bootstrap: str | None = None, prefix: str = "") -> None:
    """The members' Parquet parts, PostgreSQL tables (and Kafka output topics) hold exactly
    the backtest's rows, each once."""
    for kind in OUTPUTS:
        want = _without_recv(expected[kind])
        assert want, f"the backtest has no {kind}: the comparison would prove nothing"
        assert _without_recv(_parts(members, kind)) == want, f"Parquet {kind}"
        assert asyncio.run(_pg_rows(dsn, kind)) == want, f"PostgreSQL {kind}"
        if bootstrap is not None:
            table, rejected = decode(get_kind(kind[:-1]), topic_values(bootstrap, topic_of(kind[:-1], prefix)),
                                     bounds=None)
            assert not rejected
            assert _without_recv(table) == want, f"Kafka {kind}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> tuple[Recording, dict[str, pa.Table]]:
    """Eight vehicles' flights and the backtest's outputs (one engine over every vehicle)."""
    rec = fleet_recording(tmp_path_factory.mktemp("fleet"), vehicles=8)
    result = run_backtest(load_strategy(UAV_SPEC), rec)
    return rec, {kind: result.tables[kind] for kind in OUTPUTS}


def _thirds(rec: Recording) -> list[tuple[int | None, int | None]]:
    """Three consecutive time ranges covering the recording."""
    first, last = rec.span()
    cuts = [first + (last - first) * i // 3 for i in (1, 2)]
    return [(None, cuts[0]), (cuts[0], cuts[1]), (cuts[1], None)]


def _publish(rec: Recording, bootstrap: str, prefix: str, span: tuple[int | None, int | None]) -> None:
    """The recording's events in ``span`` on their topics (keyed by their key: the producer's
    partitioner places them), in the total order, acknowledged."""
    lo, hi = span
    messages = []
    for kind in rec.kinds:
        table = pa.concat_tables(pq.read_table(f.path) for f in rec.files(kind))
        ts = table.column("ts_event").to_numpy()
        keep = (ts >= (lo if lo is not None else ts.min())) & (ts < (hi if hi is not None else ts.max() + 1))
        table = table.filter(pa.array(keep))
        order = zip(table.column("ts_event").to_pylist(), table.column("source").to_pylist(),
                    table.column("seq").to_pylist())
        messages += [(*o, kind, k, v) for o, (k, v) in zip(order, encode(table))]
    messages.sort(key=lambda m: m[:3])

    async def send() -> None:
        producer = await start_producer(bootstrap)
        try:
            for *_, kind, key, value in messages:
                await producer.send(topic_of(kind, prefix), key=key, value=value, headers=kind_headers(kind))
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def test_key_scaled_members_join_and_die_outputs_equal_backtest(stack_endpoints, fleet, tmp_path):
    rec, expected = fleet
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"s{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    asyncio.run(ensure_topics(bootstrap, [topic_of("position", prefix)], partitions=6))
    thirds = _thirds(rec)
    _publish(rec, bootstrap, prefix, thirds[0])
    args = ("--topic-prefix", prefix, "--group", f"g-{prefix}", "--sink", "timescale", "--sink", "kafka")
    a = Member(tmp_path, "a", UAV_SPEC, *args, env=env)
    wait_for(lambda: a.assigned() == list(range(6)) and a.committed_rows() > 0,
             "member a's first committed outputs, with every partition", proc=a.proc)
    # two members join: a's engines are handed over (snapshots), the partitions split
    b, c = (Member(tmp_path, name, UAV_SPEC, *args, env=env) for name in ("b", "c"))
    members = [a, b, c]
    wait_for(lambda: all(len(m.assigned() or ()) == 2 for m in members), "two partitions per member", proc=b.proc)
    mine = b.assigned()
    before = b.committed_rows(mine)
    _publish(rec, bootstrap, prefix, thirds[1])
    wait_for(lambda: b.committed_rows(mine) > before, "member b's first committed outputs", proc=b.proc)
    b.kill()  # its partitions go to a and c once the group notices (session timeout)
    _publish(rec, bootstrap, prefix, thirds[2])
    wait_for(lambda: _in_postgres(dsn, expected), "every output in PostgreSQL", proc=a.proc)
    # they took b's partitions (read before they stop: once a stops, c takes a's too)
    took = sorted(p for m in (a, c) for p in m.assigned() or ())
    for m in (a, c):  # a SIGTERM hands the partitions over (committed), without on_stop
        assert "scale = key" in m.finish()
    assert took == list(range(6))
    # the Kafka output topics are exact where the broker has transactions (Tansu: at-least-once)
    transactions = live_broker() == "kafka"
    _assert_union_equals(expected, members, dsn=dsn, bootstrap=bootstrap if transactions else None, prefix=prefix)


def test_single_scaled_member_stands_by_then_takes_over(stack_endpoints, spread_cls, tmp_path):
    bootstrap = stack_endpoints.kafka_bootstrap
    prefix = f"s{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    env = {"QSF_KAFKA_BOOTSTRAP": bootstrap, "QSF_PG_DSN": dsn}
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", make_trades(5, 4000))
    rec = Recording(tmp_path / "rec")
    asyncio.run(ensure_topics(bootstrap, [topic_of("trade", prefix)], partitions=3))
    thirds = _thirds(rec)
    _publish(rec, bootstrap, prefix, thirds[0])
    args = (*(f"-p{k}={v}" for k, v in OVERRIDES.items()), "--topic-prefix", prefix, "--group", f"g-{prefix}",
            "--sink", "timescale")
    a = Member(tmp_path, "a", SPREAD_SPEC, *args, env=env)
    wait_for(a.committed_rows, "member a's first committed outputs", proc=a.proc)
    # b joins later: the longest running member stays active, b stands by (and, once it has
    # taken over, ends when the input is idle: every row, the last ones too, processed)
    b = Member(tmp_path, "b", SPREAD_SPEC, *args, "--exit-when-idle", "3", env=env)
    wait_for(lambda: any(line.startswith("standby: another member") for line in b.lines()), "b standing by",
             proc=b.proc)
    _publish(rec, bootstrap, prefix, thirds[1])
    before = a.committed_rows()
    wait_for(lambda: a.committed_rows() > before, "a's outputs of the second third", proc=a.proc)
    assert not any(line.startswith("active:") for line in b.lines())  # b has no partition: it cannot produce
    a.kill()
    _publish(rec, bootstrap, prefix, thirds[2])
    assert "active: taking over 3 partitions" in b.finish(stop=False)
    clean = run_backtest(spread_cls, rec, overrides=OVERRIDES)
    _assert_union_equals({kind: clean.tables[kind] for kind in OUTPUTS}, [a, b], dsn=dsn)
