"""The embedded stack: a real Kafka-API broker and a real PostgreSQL over real sockets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ..conftest import qsf_cmd


def test_broker_round_trip_with_a_consumer_group(stack_endpoints):
    topic = f"qsf.test.{os.getpid()}.{time.monotonic_ns()}"

    async def main() -> tuple[list[tuple[bytes, bytes]], int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack_endpoints.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
            # the controller took it; the broker's metadata shows it a moment later (Kafka)
            bound = time.monotonic() + 60  # a safety net only: the wait ends when it shows
            while topic not in await admin.list_topics():
                assert time.monotonic() < bound, f"{topic} never listed"
                await asyncio.sleep(0.05)
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=stack_endpoints.kafka_bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        sent = [(f"K{i % 3}".encode(), f'{{"i":{i}}}'.encode()) for i in range(200)]
        try:
            for key, value in sent:
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=stack_endpoints.kafka_bootstrap, group_id=f"g-{topic}",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await consumer.start()
        got: list[tuple[bytes, bytes]] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < len(sent) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for msgs in batches.values():
                    got.extend((m.key, m.value) for m in msgs)
            await consumer.commit()
            committed = 0
            for tp in consumer.assignment():
                committed += (await consumer.committed(tp)) or 0
        finally:
            await consumer.stop()
        return got, committed

    got, committed = asyncio.run(main())
    assert sorted(got) == sorted((f"K{i % 3}".encode(), f'{{"i":{i}}}'.encode()) for i in range(200))
    assert committed == 200
    # per key, order is kept (one key, one partition)
    for k in (b"K0", b"K1", b"K2"):
        seq = [int(v[5:-1]) for key, v in got if key == k]
        assert seq == sorted(seq)


def test_postgres_round_trip(stack_endpoints):
    async def main() -> list:
        con = await asyncpg.connect(stack_endpoints.pg_dsn)
        try:
            await con.execute("CREATE TEMP TABLE t (ts bigint PRIMARY KEY, price double precision)")
            await con.copy_records_to_table("t", records=[(i, i * 0.5) for i in range(1000)])
            await con.execute("INSERT INTO t VALUES (1, 9.0) ON CONFLICT DO NOTHING")
            return await con.fetch("SELECT count(*), sum(price) FROM t")
        finally:
            await con.close()

    rows = asyncio.run(main())
    assert rows[0][0] == 1000 and rows[0][1] == sum(i * 0.5 for i in range(1000))


def test_stack_cli_lifecycle(tmp_path):
    env = {**os.environ, "QSF_STACK_DIR": str(tmp_path / "s")}
    env.pop("QSF_KAFKA_BOOTSTRAP", None)
    env.pop("QSF_PG_DSN", None)

    def qsf(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*qsf_cmd(), "stack", *args], capture_output=True, text=True, env=env, timeout=120)

    try:
        up = qsf("up")
        assert up.returncode == 0, up.stderr
        lines = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
        assert set(lines) == {"QSF_KAFKA_BOOTSTRAP", "QSF_PG_DSN"}
        assert qsf("status").returncode == 0
        assert qsf("up").stdout == up.stdout  # idempotent: same addresses
        assert qsf("stop", "postgres").returncode == 0
        down = qsf("status")
        assert down.returncode == 1 and "stopped" in down.stdout
        assert qsf("start", "postgres").returncode == 0

        async def check() -> int:
            con = await asyncpg.connect(lines["QSF_PG_DSN"])
            try:
                return await con.fetchval("SELECT 41 + 1")
            finally:
                await con.close()

        assert asyncio.run(check()) == 42
        bad = qsf("stop", "redis")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    finally:
        assert qsf("down", "--purge").returncode == 0
    assert not (tmp_path / "s").exists()


def test_postgres_takes_only_the_generated_password_on_loopback(tmp_path):
    """scram-sha-256 with a password generated for the stack (mode 0600), no trust, loopback
    only; the DSN of `qsf stack up` carries the password, status and logs never show it."""
    import stat

    import pytest

    from qsframework.stack import Stack

    env = {k: v for k, v in os.environ.items() if k not in ("QSF_KAFKA_BOOTSTRAP", "QSF_PG_DSN")}
    root = tmp_path / "s"
    stack = Stack(root)
    try:
        up = subprocess.run([*qsf_cmd(), "stack", "up", "--dir", str(root)],
                            capture_output=True, text=True, env=env, timeout=300)
        assert up.returncode == 0, up.stderr
        pwfile = root / "postgres.password"
        assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
        password = pwfile.read_text().strip()
        assert len(password) >= 24
        dsn = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())["QSF_PG_DSN"]
        assert dsn == f"postgresql://postgres:{password}@127.0.0.1:{stack.postgres.port}/qsf"

        async def connect(url: str) -> str:
            con = await asyncpg.connect(url)
            try:
                return await con.fetchval("SHOW listen_addresses")
            finally:
                await con.close()

        assert asyncio.run(connect(dsn)) == "127.0.0.1"
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(connect(dsn.replace(password, "guess")))
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError,
                            asyncpg.ClientConfigurationError)):
            asyncio.run(connect(dsn.replace(f":{password}", "")))
        rules = [line.split() for line in (root / "pgdata" / "pg_hba.conf").read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
        status = subprocess.run([*qsf_cmd(), "stack", "status", "--dir", str(root), "--json"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert status.returncode == 0 and "postgres:***@127.0.0.1" in status.stdout
        for text in (status.stdout, status.stderr, up.stderr, (root / "postgres.log").read_text(),
                     (root / "stack.json").read_text()):
            assert password not in text
    finally:
        stack.down(purge=True)


def test_a_stack_made_with_trust_auth_is_refused_with_a_hint(tmp_path):
    """A database directory of an older qsf (initdb --auth=trust) is not started as it is."""
    import pytest

    from qsframework.stack import ServiceError, Stack

    stack = Stack(tmp_path / "s")
    stack.postgres.pgdata.mkdir(parents=True)
    (stack.postgres.pgdata / "PG_VERSION").write_text("18\n")
    (stack.postgres.pgdata / "pg_hba.conf").write_text("# TYPE DATABASE USER ADDRESS METHOD\n"
                                                      "local all all trust\n"
                                                      "host all all 127.0.0.1/32 trust\n")
    with pytest.raises(ServiceError, match=r"made without a password \(trust\); delete it with: "
                                           r"qsf stack down --purge --dir "):
        stack.postgres.start()
