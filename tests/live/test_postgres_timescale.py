"""TimescaleDB where it can be used. The PostgreSQL sink makes hypertables only where the
extension can be created: installed on the server and preloaded (``CREATE EXTENSION`` without
the library preloaded is a FATAL that drops the connection); the decision over every state, and
the state as a real server reports it to a superuser and to a user who may not read
``shared_preload_libraries``. The embedded stack preloads it where a user built it into the
embedded PostgreSQL (both branches of that decision; this machine's has none)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from qsframework.sinks.postgres import TIMESCALE_STATE_SQL, PostgresSink, timescale_usable
from qsframework.stack.services import _pg_bin, preloads

from .feeds import fresh_database

PRELOADED = ["timescaledb", "pg_stat_statements, timescaledb", '"$libdir/timescaledb"', " timescaledb ,auto_explain"]
NOT_PRELOADED = ["", "pg_stat_statements", "timescaledb_toolkit", "timescaledb2"]


@pytest.mark.parametrize("installed", [False, True])
@pytest.mark.parametrize("preload", [None, *PRELOADED, *NOT_PRELOADED])
def test_not_on_the_server_plain_tables_without_a_word(preload, installed):
    assert timescale_usable(available=False, installed=installed, preload=preload) == (False, None)


@pytest.mark.parametrize("installed", [False, True])
@pytest.mark.parametrize("preload", PRELOADED)
def test_preloaded_hypertables(preload, installed):
    assert timescale_usable(available=True, installed=installed, preload=preload) == (True, None)


@pytest.mark.parametrize("installed", [False, True])
@pytest.mark.parametrize("preload", NOT_PRELOADED)
def test_installed_but_not_preloaded_plain_tables_and_why(preload, installed):
    use, why = timescale_usable(available=True, installed=installed, preload=preload)
    assert not use and why is not None and "not preloaded" in why and "shared_preload_libraries" in why


def test_the_preload_unreadable_hypertables_only_where_an_administrator_created_the_extension():
    assert timescale_usable(available=True, installed=True, preload=None) == (True, None)
    use, why = timescale_usable(available=True, installed=False, preload=None)
    assert not use and why is not None and "cannot see whether it is preloaded" in why


def test_a_server_without_timescaledb_gives_plain_tables_quietly(stack_endpoints, caplog):
    dsn = fresh_database(stack_endpoints.pg_dsn, "ts")

    async def go() -> tuple[dict, bool]:
        con = await asyncpg.connect(dsn)
        try:
            state = dict(await con.fetchrow(TIMESCALE_STATE_SQL))
        finally:
            await con.close()
        sink = PostgresSink(dsn)
        with caplog.at_level(logging.INFO, logger="qsf.sink.postgres"):
            await sink.start()
        await sink.close()
        return state, sink.timescale

    state, timescale = asyncio.run(go())
    # the embedded PostgreSQL has no TimescaleDB; the superuser reads the (empty) preload list
    assert state == {"available": False, "installed": False, "preload": ""}
    assert timescale is False
    assert [r.getMessage() for r in caplog.records] == ["postgres sink ready (plain tables)"]


def test_a_user_who_may_not_read_the_setting_gets_no_value_not_an_error(stack_endpoints):
    dsn = stack_endpoints.pg_dsn
    role = f"plain_{uuid.uuid4().hex[:8]}"

    async def go() -> dict:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
            parts = urlsplit(dsn)
            plain = urlunsplit(parts._replace(netloc=f"{role}:pw@{parts.hostname}:{parts.port}"))
            con = await asyncpg.connect(plain)
            try:
                return dict(await con.fetchrow(TIMESCALE_STATE_SQL))
            finally:
                await con.close()
        finally:
            await admin.execute(f"DROP ROLE {role}")
            await admin.close()

    state = asyncio.run(go())
    assert state == {"available": False, "installed": False, "preload": None}


@pytest.mark.parametrize("control", [False, True])
@pytest.mark.parametrize("library", [None, "timescaledb.so", "timescaledb-2.29.0.so", "other.so"])
def test_the_stack_preloads_timescaledb_where_it_was_built_into_the_embedded_postgresql(tmp_path, control, library):
    install = tmp_path / "pginstall"
    (install / "share" / "extension").mkdir(parents=True)
    (install / "lib").mkdir()
    if control:
        (install / "share" / "extension" / "timescaledb.control").write_text("default_version = '2.29.0'\n")
    if library:
        (install / "lib" / library).write_bytes(b"")
    built = control and library is not None and library.startswith("timescaledb")
    assert preloads(install) == (("timescaledb",) if built else ())


def test_the_embedded_postgresql_here_preloads_nothing(stack_endpoints):
    """This machine's embedded PostgreSQL has no TimescaleDB: started without a preload list."""
    async def show() -> str:
        con = await asyncpg.connect(stack_endpoints.pg_dsn)
        try:
            return await con.fetchval("SHOW shared_preload_libraries")
        finally:
            await con.close()

    assert preloads(_pg_bin().parent) == ()
    assert asyncio.run(show()) == ""
