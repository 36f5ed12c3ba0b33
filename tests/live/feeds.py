"""Shared by the pipeline-health and live-dashboard tests: encoded messages published to a
topic, a database of a test's own, rows fetched from it (each call its own connection)."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from qsframework.kafka import start_producer


def publish(bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) pairs to ``topic``, all acknowledged before it returns."""

    async def go() -> None:
        producer = await start_producer(bootstrap)
        try:
            for key, value in pairs:
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def fresh_database(dsn: str, prefix: str) -> str:
    """The DSN of a new, empty database on the server of ``dsn`` (dashboards read whole tables)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        con = await asyncpg.connect(dsn)
        try:
            await con.execute(f"CREATE DATABASE {name}")
        finally:
            await con.close()

    asyncio.run(create())
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def fetch(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    """The rows of one query."""

    async def go() -> list[asyncpg.Record]:
        con = await asyncpg.connect(dsn)
        try:
            return await con.fetch(sql, *args)
        finally:
            await con.close()

    return asyncio.run(go())


def fetch_made(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    """The rows of one query; none while the sink has not created its tables yet."""
    try:
        return fetch(dsn, sql, *args)
    except asyncpg.UndefinedTableError:
        return []
