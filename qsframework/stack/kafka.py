"""Apache Kafka as the embedded broker: jars resolved once with Maven, one KRaft node per stack.

The jars come from Maven Central into ``$QSF_CACHE/kafka-<version>/`` (default
``~/.cache/qsframework``), resolved in a temporary directory and renamed into place, so a
half-resolved cache is never used. The node keeps its log and its cluster id in the stack
directory: its data survives a stop, a start and a SIGKILL.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .services import BrokerProcess, ServiceError, _wait, port_open

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.24.3"
JAVA_MIN = 17
HEAP = "-Xmx512m"
#: the JIT's first tier only: the embedded broker lives for a test run or a dev session on a
#: small machine it shares with the processor, PostgreSQL and the feed; its optimising tier
#: (C2) spent a third of a core compiling through the first minute (broker CPU at 5k events/s
#: in and out: 58% of a core with it, 35% without), for throughput the broker never needs here
JIT = "-XX:TieredStopAtLevel=1"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>qsframework</groupId><artifactId>kafka-runtime</artifactId><version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

# warnings and the start/stop lines only: the broker's log stays small over a long session
_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="info"/>
    <Logger name="kafka.server.BrokerServer" level="info"/>
    <Root level="warn"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


def _stderr(line: str) -> None:
    print(f"qsf: {line}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where resolved jars live: ``$QSF_CACHE`` or ``~/.cache/qsframework``."""
    return Path(os.environ.get("QSF_CACHE") or Path.home() / ".cache" / "qsframework")


def java_major() -> int | None:
    """The major version of the ``java`` on PATH, or None when there is none."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        r = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', r.stderr + r.stdout)
    if m is None:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def jars_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / f"kafka-{version}" / "libs"


def kafka_usable() -> bool:
    """Kafka can run here: Java 17+ on PATH, and its jars cached or Maven there to fetch them."""
    major = java_major()
    return major is not None and major >= JAVA_MIN and (jars_dir().is_dir() or shutil.which("mvn") is not None)


def resolve_jars(*, version: str = KAFKA_VERSION, progress: Callable[[str], None] = _stderr) -> Path:
    """The directory of Kafka's runtime jars, resolved with Maven the first time."""
    final = jars_dir(version).parent
    if (final / "libs").is_dir():
        return final / "libs"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(f"Apache Kafka's jars are not cached in {final} and Maven (mvn) is not on PATH; "
                           "install Maven, or use --broker tansu")
    final.parent.mkdir(parents=True, exist_ok=True)
    progress(f"resolving Apache Kafka {version} with Maven into {final} (once, ~45 jars / 43 MB)")
    work = Path(tempfile.mkdtemp(prefix=f".kafka-{version}-", dir=final.parent))
    try:
        (work / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        r = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={work / 'libs'}"],
            cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if r.returncode or not any((work / "libs").glob("kafka_2.13-*.jar")):
            detail = next((ln.replace("[ERROR]", "").split(" -> [Help")[0].strip()
                           for ln in (r.stdout + r.stderr).splitlines() if "[ERROR]" in ln), "")
            raise ServiceError(f"Maven could not resolve Apache Kafka {version} ({detail or f'exit code {r.returncode}'}); "
                               "check the network or the Maven settings (~/.m2/settings.xml), or use --broker tansu")
        (work / "pom.xml").rename(work / "libs" / "qsf-kafka-runtime.pom")
        try:
            os.rename(work, final)
        except OSError:
            if not (final / "libs").is_dir():  # not a concurrent resolution that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final / "libs"


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never starting
    with "-" (Kafka's own rule: it would read as an option on a command line)."""
    while True:
        cid = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


async def _has_broker(bootstrap: str) -> bool:
    from ..kafka import broker_unreachable

    return await broker_unreachable(bootstrap) is None


def metadata_ready(bootstrap: str) -> bool:
    """A Kafka client gets metadata naming at least one broker (asked on an event loop of its
    own, in a thread of its own when the caller is inside one: ``start`` from async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_has_broker(bootstrap))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _has_broker(bootstrap)).result()


@dataclass(frozen=True, kw_only=True)
class KafkaBrokerService(BrokerProcess):
    """Apache Kafka in KRaft mode, one node as broker and controller, data in the stack dir."""

    controller_port: int
    version: str = KAFKA_VERSION

    kind = "kafka"
    title = "Apache Kafka"
    stop_timeout = 30.0  # a controlled shutdown

    @property
    def data_dir(self) -> Path:
        return self.root / "kafka-data"

    @property
    def properties_file(self) -> Path:
        return self.root / "kafka-server.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.root / "kafka-cluster-id"

    def _properties(self) -> str:
        # topics as Tansu makes them: auto-created, one partition, one replica; internal
        # topics with one replica (single node); a consumer group's first join is not delayed
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "auto.create.topics.enable": "true",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "-1",
            # Tansu takes records over 1 MB: the processor sees such poison and dead-letters it
            "message.max.bytes": str(16 << 20),
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("Apache Kafka needs Java 17+ on PATH; install it, or use --broker tansu")
        return [java, HEAP, "-XX:+UseG1GC", JIT, "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.root / 'kafka-log4j2.xml'}",
                "-cp", f"{libs}/*", main, *args]

    def _format(self, libs: Path) -> None:
        """Format the log directory once, with the cluster id kept beside it."""
        if (self.data_dir / "meta.properties").exists():
            return
        if not self.cluster_id_file.exists():
            self.cluster_id_file.write_text(new_cluster_id() + "\n")
        cluster_id = self.cluster_id_file.read_text().strip()
        r = subprocess.run(
            self._java(libs, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                       f"--cluster-id={cluster_id}", "-c", str(self.properties_file)),
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if r.returncode:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit code {r.returncode}"]
            raise ServiceError(f"formatting Kafka's log directory {self.data_dir} failed: {last[0]}")

    def start(self, timeout: float = 120.0) -> None:
        if self.running():
            return
        major = java_major()
        if major is None or major < JAVA_MIN:
            found = "no java on PATH" if major is None else f"java {major} on PATH"
            raise ServiceError(f"Apache Kafka needs Java {JAVA_MIN}+ ({found}); install it, or use --broker tansu")
        ports = (self.port, self.controller_port)
        if self.pid() is not None:
            # ours died without `stop` (SIGKILL, crash): its ports close with its last thread,
            # which can be a moment after the process counts as gone
            try:
                _wait(lambda: not any(port_open(self.host, port) for port in ports), 30, "ports closing")
            except ServiceError:
                pass  # still taken: said below
        for port in ports:
            if port_open(self.host, port):
                raise ServiceError(f"port {port} is already in use by another program")
        libs = resolve_jars(version=self.version)
        self.properties_file.write_text(self._properties())
        (self.root / "kafka-log4j2.xml").write_text(_LOG4J2)
        self._format(libs)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._java(libs, "kafka.Kafka", str(self.properties_file)),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            _wait(lambda: proc.poll() is not None or (port_open(self.host, self.port) and metadata_ready(self.bootstrap)),
                  timeout, "Apache Kafka's start")
        except ServiceError:
            self.stop()
            raise ServiceError(f"Apache Kafka was not ready within {timeout:g} s; see {self.log_file}") from None
        if proc.poll() is not None:
            raise ServiceError(f"Apache Kafka exited at start (code {proc.returncode}); see {self.log_file}")

