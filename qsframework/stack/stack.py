"""``qsf stack``: start, stop and inspect the embedded broker and PostgreSQL together."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .kafka import KafkaBrokerService, kafka_usable
from .services import BrokerService, PostgresService, ServiceError, free_port

ENV_KAFKA = "QSF_KAFKA_BOOTSTRAP"
ENV_PG = "QSF_PG_DSN"


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """Where the broker and the database are."""

    kafka_bootstrap: str
    pg_dsn: str

    def env_lines(self) -> list[str]:
        return [f"{ENV_KAFKA}={self.kafka_bootstrap}", f"{ENV_PG}={self.pg_dsn}"]


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, for anything shown or logged."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def endpoints_from_env() -> Endpoints | None:
    """External services (e.g. Redpanda and TimescaleDB from compose) when both are set."""
    kafka, pg = os.environ.get(ENV_KAFKA), os.environ.get(ENV_PG)
    if kafka and pg:
        return Endpoints(kafka_bootstrap=kafka, pg_dsn=pg)
    return None


def default_dir() -> Path:
    return Path(os.environ.get("QSF_STACK_DIR") or Path(tempfile.gettempdir()) / f"qsf-stack-{os.getuid()}")


BROKERS = ("kafka", "tansu", "auto")


class Stack:
    """The embedded stack in one directory: ports and broker kind in ``stack.json``, logs and
    data beside it.

    ``broker`` is ``kafka``, ``tansu`` or ``auto`` (the kind the stack already has, else Apache
    Kafka where Java 17+ can run it, else Tansu); None keeps the stack's kind, Tansu for a new one.
    """

    SERVICES = ("broker", "postgres")

    def __init__(self, root: str | Path | None = None, *, broker: str | None = None) -> None:
        if broker is not None and broker not in BROKERS:
            raise ServiceError(f"unknown broker {broker!r} (use kafka, tansu or auto)")
        self.root = Path(root) if root is not None else default_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file = self.root / "stack.json"
        state = self._load()
        recorded = state.get("broker")
        if broker is None:
            kind = recorded or "tansu"
        elif broker == "auto":
            kind = recorded or ("kafka" if kafka_usable() else "tansu")
        else:
            kind = broker
        ports = ["broker_port", "postgres_port"] + (["controller_port"] if kind == "kafka" else [])
        changed = broker is not None and recorded != kind  # a kind only chosen is recorded
        for name in ports:
            if not state.get(name):
                state[name] = free_port()
                changed = True
        if recorded and recorded != kind and self._broker(recorded, state).running():
            raise ServiceError(f"the stack in {self.root} runs {recorded} as its broker; "
                               f"stop it first: qsf stack stop broker --dir {self.root}")
        if broker is not None:
            state["broker"] = kind
        if changed:
            self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        self.broker = self._broker(kind, state)
        self.postgres = PostgresService(root=self.root, port=int(state["postgres_port"]))

    def _broker(self, kind: str, state: dict) -> BrokerService | KafkaBrokerService:
        if kind == "kafka":
            return KafkaBrokerService(root=self.root, port=int(state["broker_port"]),
                                      controller_port=int(state.get("controller_port") or free_port()))
        return BrokerService(root=self.root, port=int(state["broker_port"]))

    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def service(self, name: str) -> BrokerService | KafkaBrokerService | PostgresService:
        if name not in self.SERVICES:
            raise ServiceError(f"unknown service {name!r} (use broker or postgres)")
        return self.broker if name == "broker" else self.postgres

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(kafka_bootstrap=self.broker.bootstrap, pg_dsn=self.postgres.dsn)

    def up(self) -> Endpoints:
        """Start whatever is not running; idempotent."""
        self.broker.start()
        self.postgres.start()
        return self.endpoints

    def down(self, *, purge: bool = False) -> None:
        """Stop both services; ``purge`` also deletes their data and logs."""
        errors = []
        for svc in (self.broker, self.postgres):
            try:
                svc.stop()
            except ServiceError as exc:
                errors.append(str(exc))
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise ServiceError("; ".join(errors))

    def status(self) -> dict[str, dict]:
        return {
            "broker": {"running": self.broker.running(), "pid": self.broker.pid(),
                       "kind": self.broker.kind, "version": self.broker.version,
                       "bootstrap": self.broker.bootstrap, "log": str(self.broker.log_file)},
            "postgres": {"running": self.postgres.running(), "pid": self.postgres.pid(),
                         "dsn": redact(self.postgres.dsn), "log": str(self.postgres.log_file),
                         "password_file": str(self.postgres.password_file),
                         "preload": list(self.postgres.preloads())},
        }
