"""Apache Kafka as the embedded broker: `qsf stack up --broker kafka|tansu|auto`, real JVMs,
real sockets; data kept across a stop/start and a SIGKILL of the broker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from qsframework.stack.kafka import new_cluster_id
from qsframework.stack.services import pid_alive

from ..conftest import qsf_cmd

TOPIC = "qsf.test.durable"


def _env(tmp_path: Path, *, without: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The environment for `qsf stack`: no external services, and PATH with ``without``'s
    programs hidden (each PATH dir holding one is replaced by a copy of links to the rest)."""
    env = {k: v for k, v in os.environ.items() if k not in ("QSF_KAFKA_BOOTSTRAP", "QSF_PG_DSN")}
    dirs = []
    for i, d in enumerate(env.get("PATH", "").split(os.pathsep)):
        if d and any(Path(d, name).exists() for name in without):
            shadow = tmp_path / f"path{i}"
            shadow.mkdir(parents=True)
            for entry in Path(d).iterdir():
                if entry.name not in without:
                    (shadow / entry.name).symlink_to(entry)
            d = str(shadow)
        dirs.append(d)
    env["PATH"] = os.pathsep.join(dirs)
    return {**env, **extra}


def _qsf(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*qsf_cmd(), "stack", *args], capture_output=True, text=True, env=env, timeout=600)


def _exports(stdout: str) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())


def _broker_kind(env: dict[str, str], root: Path) -> tuple[str, str]:
    st = _qsf(env, "status", "--dir", str(root), "--json")
    broker = json.loads(st.stdout)["broker"]
    return broker["kind"], broker["version"]


async def _produce(bootstrap: str, values: list[bytes]) -> list[int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                max_request_size=8 << 20)
    await producer.start()
    try:
        futures = [await producer.send(TOPIC, key=b"k", value=v) for v in values]
        return [(await f).offset for f in futures]
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, group: str) -> list[tuple[int, bytes]]:
    """Everything in the topic's partition 0 from the start, read by a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 120  # a safety net: the loop ends when the end offset is read
        while (not got or got[-1][0] < end - 1) and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(tp, timeout_ms=1000)).values():
                got.extend((m.offset, m.value) for m in msgs)
        await consumer.commit()
        return got
    finally:
        await consumer.stop()


def test_kafka_stack_round_trip_survives_stop_start_and_sigkill(tmp_path):
    env = _env(tmp_path)
    root = tmp_path / "s"
    root.mkdir()
    cluster_id = "-" + new_cluster_id()[1:]  # kept in the stack dir, used as it is, even with a leading "-"
    (root / "kafka-cluster-id").write_text(cluster_id + "\n")
    try:
        up = _qsf(env, "up", "--broker", "kafka", "--dir", str(root))
        assert up.returncode == 0, up.stderr
        lines = _exports(up.stdout)
        assert set(lines) == {"QSF_KAFKA_BOOTSTRAP", "QSF_PG_DSN"}
        bootstrap = lines["QSF_KAFKA_BOOTSTRAP"]
        status = _qsf(env, "status", "--dir", str(root))
        assert status.returncode == 0 and "kafka 4.4.0" in status.stdout.splitlines()[0]
        assert _broker_kind(env, root) == ("kafka", "4.4.0")
        assert _qsf(env, "up", "--dir", str(root)).stdout == up.stdout  # auto keeps the stack's broker

        first = [f"before-{i}".encode() for i in range(300)]
        assert asyncio.run(_produce(bootstrap, first)) == list(range(300))  # auto-created topic
        expected = list(enumerate(first))
        assert asyncio.run(_consume_all(bootstrap, "g1")) == expected

        assert _qsf(env, "stop", "broker", "--dir", str(root)).returncode == 0
        assert _qsf(env, "status", "--dir", str(root)).returncode == 1
        assert _qsf(env, "start", "broker", "--dir", str(root)).returncode == 0
        assert asyncio.run(_consume_all(bootstrap, "g2")) == expected

        second = [f"after-stop-{i}".encode() for i in range(199)] + [b"x" * 1_500_000]  # over 1 MB as on Tansu
        assert asyncio.run(_produce(bootstrap, second)) == list(range(300, 500))
        expected += list(enumerate(second, start=300))
        pid = int((root / "broker.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid)
        assert _qsf(env, "start", "broker", "--dir", str(root)).returncode == 0
        assert asyncio.run(_consume_all(bootstrap, "g3")) == expected
        assert _exports(_qsf(env, "up", "--dir", str(root)).stdout) == lines  # same addresses after all
        assert f"cluster.id={cluster_id}\n" in (root / "kafka-data" / "meta.properties").read_text()
    finally:
        assert _qsf(env, "down", "--purge", "--dir", str(root)).returncode == 0
    assert not root.exists()


def test_auto_picks_kafka_with_java_and_tansu_without(tmp_path):
    with_java, without_java = _env(tmp_path / "a"), _env(tmp_path / "b", without=("java",))
    assert shutil.which("java", path=with_java["PATH"]) and not shutil.which("java", path=without_java["PATH"])
    for env, root, kind in ((with_java, tmp_path / "k", "kafka"), (without_java, tmp_path / "t", "tansu")):
        try:
            up = _qsf(env, "up", "--dir", str(root))
            assert up.returncode == 0, up.stderr
            assert _broker_kind(env, root)[0] == kind
            assert f"  {kind} " in _qsf(env, "status", "--dir", str(root)).stdout.splitlines()[0]
        finally:
            assert _qsf(env, "down", "--purge", "--dir", str(root)).returncode == 0


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert r.stdout == "" and [ln for ln in lines if not ln.startswith("qsf: resolving ")] == lines[-1:], r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr
    return r.stderr


def test_kafka_without_java_is_one_clear_line(tmp_path):
    env = _env(tmp_path, without=("java",))
    root = tmp_path / "s"
    try:
        _one_line_error(_qsf(env, "up", "--broker", "kafka", "--dir", str(root)),
                        "qsf: error:", "Java 17+", "--broker tansu")
    finally:
        _qsf(env, "down", "--purge", "--dir", str(root))


def test_maven_missing_or_failing_leaves_no_cache(tmp_path):
    """Without Maven, and with a Maven that cannot reach a repository (offline, empty local
    repository), one line says what to do and nothing is left in the cache."""
    cache = tmp_path / "cache"
    no_mvn = _env(tmp_path / "p", without=("mvn",), QSF_CACHE=str(cache))
    _one_line_error(_qsf(no_mvn, "up", "--broker", "kafka", "--dir", str(tmp_path / "s1")),
                    "Maven (mvn) is not on PATH", "install Maven")
    _qsf(no_mvn, "down", "--purge", "--dir", str(tmp_path / "s1"))

    home = tmp_path / "home"
    (home / ".m2").mkdir(parents=True)
    (home / ".m2" / "settings.xml").write_text(
        "<settings><offline>true</offline>"
        f"<localRepository>{tmp_path / 'empty-repo'}</localRepository></settings>\n")
    offline = _env(tmp_path / "q", QSF_CACHE=str(cache), MAVEN_OPTS=f"-Duser.home={home}")
    _one_line_error(_qsf(offline, "up", "--broker", "kafka", "--dir", str(tmp_path / "s2")),
                    "Maven could not resolve Apache Kafka 4.4.0", "settings.xml")
    _qsf(offline, "down", "--purge", "--dir", str(tmp_path / "s2"))
    assert sorted(p.name for p in cache.iterdir()) == []  # no half-resolved cache, no temp dir left


def test_kafka_port_taken_is_one_clear_line(tmp_path):
    import socket

    from qsframework.stack import Stack

    env = _env(tmp_path)
    root = tmp_path / "s"
    port = Stack(root, broker="kafka").broker.port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        try:
            _one_line_error(_qsf(env, "up", "--dir", str(root)), f"port {port} is already in use")
        finally:
            _qsf(env, "down", "--purge", "--dir", str(root))


def test_switching_a_running_tansu_to_kafka_is_refused_with_a_hint(tmp_path):
    from qsframework.stack import Stack

    env = _env(tmp_path)
    root = tmp_path / "s"
    tansu = Stack(root, broker="tansu").broker
    tansu.start()
    try:
        _one_line_error(_qsf(env, "up", "--broker", "kafka", "--dir", str(root)),
                        "runs tansu as its broker", f"qsf stack stop broker --dir {root}")
        assert tansu.running() and _broker_kind(env, root)[0] == "tansu"
    finally:
        _qsf(env, "down", "--purge", "--dir", str(root))


def test_new_cluster_ids_are_kafka_uuids_that_never_start_with_a_dash():
    import base64

    ids = [new_cluster_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(len(c) == 22 and not c.startswith("-") for c in ids)
    assert all(len(base64.urlsafe_b64decode(c + "==")) == 16 for c in ids)
