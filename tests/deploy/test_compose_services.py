"""The compose file's qsf services run as written (issue 16, point 4): each one's command line,
environment and healthcheck from docker-compose.yml, variables substituted from an .env as
compose does, the compose network mapped onto this machine: redpanda:9092 to the embedded
broker, timescaledb:5432/qsf (user qsf) to a database and role of the test's own on the embedded
PostgreSQL, the state volume to a directory, the published port to a free one; Binance and
Telegram to the local servers speaking their protocols (QSF_BINANCE_URL, QSF_TELEGRAM_API) and
topics of the test's own (QSF_TOPIC_PREFIX). Each starts, does its work (Binance trades ->
ingest -> processor -> the database, every one once; the dashboard asks for its password, then
draws the database's series in Chromium; the healthchecks pass) and stops cleanly on SIGTERM, as ``docker compose stop`` stops it. So the compose file
cannot name an option or a setting the commands no longer take."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from qsframework.stack.services import free_port

from ..dashboards.browser import browser_page, wait_for_charts
from ..dashboards.test_live_host import _get
from ..fakes.binance_server import BinanceServer
from ..fakes.botapi import BotApiServer
from ..fault.processes import wait_for
from ..live.feeds import fetch, fetch_made
from .compose import COMPOSE, Mapping, MissingVariable, argv, env_example, environment, services, variables

# every character a DSN or a shell would trip on: the qsf services take it as PGPASSWORD
PG_PASSWORD = "p@ss:w/rd?#1 $HOME 'q' \"d\" %41"
DASHBOARD_PASSWORD = "correct-horse-battery"
TOKEN = "123456:compose-test-token"
QSF_SERVICES = {"ingest", "processor", "dashboard"}


def test_env_example_names_every_setting_and_the_passwords_are_required():
    assert variables(COMPOSE.read_text()) == set(env_example())
    with pytest.raises(MissingVariable, match="QSF_PG_PASSWORD: set QSF_PG_PASSWORD in .env"):
        services(env_example())  # as copied: the passwords are empty
    composed = services({**env_example(), "QSF_PG_PASSWORD": "a", "QSF_DASHBOARD_PASSWORD": "b"})
    assert {name for name, s in composed.items() if s.get("image") == "qsframework:local"} == QSF_SERVICES
    for name, service in composed.items():  # the broker, database and console: this host only
        for published in service.get("ports", []):
            assert name == "dashboard" or published.startswith("127.0.0.1:"), (name, published)
        assert "mem_limit" in service and "healthcheck" in service and "restart" in service, name


def _own_database(admin_dsn: str, role: str, password: str) -> tuple[str, str]:
    """A role (as compose's user qsf, with ``password``) and an empty database it owns: its DSN
    as the role without the password, and as the administrator (for the test's queries)."""

    async def create() -> None:
        con = await asyncpg.connect(admin_dsn)
        try:
            literal = "'" + password.replace("'", "''") + "'"
            await con.execute(f"CREATE ROLE {role} LOGIN PASSWORD {literal}")
            await con.execute(f"CREATE DATABASE {role} OWNER {role}")
        finally:
            await con.close()

    asyncio.run(create())
    parts = urlsplit(admin_dsn)._replace(path=f"/{role}")
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}")), urlunsplit(parts)


class Service:
    """One compose service's qsf command, run here: its output read in the background."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name, self.args, self.env = name, args, env
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out, True), daemon=True).start()
        self._err = threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False), daemon=True)
        self._err.start()

    def _read(self, stream, into: list[str], queued: bool) -> None:
        for line in stream:
            into.append(line)
            if queued:
                self.lines.put(line)
        if queued:
            self.lines.put(None)

    def line_with(self, text: str) -> str:
        """The first line of its output containing ``text`` (waits for it)."""
        while True:
            line = self.lines.get(timeout=240)  # a safety net: the line comes or the process ends
            if line is None:
                raise AssertionError(f"{self.name} exited ({self.proc.wait()}) before {text!r}: {''.join(self.err)}")
            if text in line:
                return line

    def stop(self) -> int:
        """SIGTERM, as docker compose stop sends to the container's PID 1; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=120)  # a safety net, not a margin
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"{self.name} did not stop on SIGTERM") from None
        self._err.join()
        return code


def _rows(dsn: str) -> dict[tuple[str, int], int]:
    """The trades table: (symbol, trade id) -> ts_event."""
    return {(r["key"], r["seq"]): r["ts_event"] for r in fetch(dsn, "SELECT key, seq, ts_event FROM trades")}


def _reported(dsn: str) -> bool:
    """The processor reported to pipeline_health after a commit (what its healthcheck reads)."""
    return bool(fetch_made(dsn, "SELECT 1 FROM pipeline_health WHERE last_commit IS NOT NULL LIMIT 1"))


def _trades(dsn: str) -> tuple[int, int, int]:
    """(rows, distinct trades, symbols) in the trades table; zeros before the sink made it."""
    sql = ("SELECT count(*) AS n, count(DISTINCT (source, key, seq)) AS d, count(DISTINCT key) AS k "
           "FROM trades")
    rows = fetch_made(dsn, sql)
    return (rows[0]["n"], rows[0]["d"], rows[0]["k"]) if rows else (0, 0, 0)


def test_the_qsf_services_run_as_composed(stack_endpoints, tmp_path):
    role = f"qsf_{uuid.uuid4().hex[:8]}"
    dsn, admin = _own_database(stack_endpoints.pg_dsn, role, PG_PASSWORD)
    port = free_port()  # outside the ephemeral range: no client connection takes it meanwhile
    dotenv = {**env_example(), "QSF_PG_PASSWORD": PG_PASSWORD, "QSF_DASHBOARD_PASSWORD": DASHBOARD_PASSWORD,
              "QSF_TELEGRAM_TOKEN": TOKEN, "QSF_TELEGRAM_CHAT_ID": "42"}
    composed = services(dotenv)
    db = urlsplit(dsn)
    here = Mapping(hosts={"redpanda:9092": stack_endpoints.kafka_bootstrap,
                          "qsf@timescaledb:5432/qsf": f"{role}@{db.hostname}:{db.port}{db.path}"},
                   paths={"/state": str(tmp_path / "state")}, ports={2718: port})
    (tmp_path / "state").mkdir()

    with BinanceServer(("BTCUSDT", "ETHUSDT"), rate=200, start_time_us=None) as binance, \
            BotApiServer(TOKEN) as bot:
        local = {"QSF_BINANCE_URL": binance.ws_url, "QSF_TELEGRAM_API": bot.url,
                 "QSF_TOPIC_PREFIX": f"cmp{uuid.uuid4().hex[:8]}"}

        def command(name: str, key: str = "command") -> tuple[list[str], dict[str, str]]:
            """A service's command (or healthcheck) and environment, mapped to this machine."""
            service = composed[name]
            env = {key_: here.text(value) for key_, value in environment(service).items()}
            args = [here.text(arg) for arg in argv(service, key)]
            for text in [*args, *env.values()]:
                assert "redpanda" not in text and "timescaledb" not in text, (name, text)  # all mapped
            path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # qsf, python
            return args, {"PATH": path, "HOME": os.environ["HOME"], **env, **local}

        def healthcheck(name: str) -> subprocess.CompletedProcess:
            args, env = command(name, "healthcheck")
            return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)

        started: list[Service] = []
        try:
            ingest = Service("ingest", *command("ingest"))
            started.append(ingest)
            processor = Service("processor", *command("processor"))
            started.append(processor)
            announced = processor.line_with("BtcEthPairs: group ")
            running = Path(f"/proc/{processor.proc.pid}/cmdline").read_bytes().decode().split("\0")
            wait_for(lambda: _trades(admin)[2] == 2, "trades of both symbols in the database", proc=processor.proc)
            wait_for(lambda: _reported(admin), "the processor's report to pipeline_health", proc=processor.proc)
            processor_health = healthcheck("processor")

            dashboard = Service("dashboard", *command("dashboard"))
            started.append(dashboard)
            served = dashboard.line_with("http://")
            dashboard_health = healthcheck("dashboard")
            base = f"http://127.0.0.1:{port}/"
            login = _get(base)[0]
            # logged in, the page draws the database's series (the password only in PGPASSWORD)
            with browser_page(base + f"?access_token={DASHBOARD_PASSWORD}") as (page, requests):
                wait_for_charts(page, 3)  # prices, spread and correlation, pipeline health
                page.get_by_text("events/s").first.wait_for()
                title = page.title()

            assert ingest.stop() == 0, ingest.err
            published = int(ingest.line_with(" trades in ").split()[0].replace(",", ""))
            codes = {s.name: s.stop() for s in (processor, dashboard)}
            summary = processor.line_with("BtcEthPairs: processed ")
            sent = {(t.symbol, t.id): t.time_ms * 1_000_000 for symbol in binance.symbols
                    for t in binance.exchange.trades(symbol) if t.id in set(binance.sent_ids(symbol))}
        finally:  # after a failure: stopped as docker does (the dashboard stops its server)
            for s in started:
                if s.proc.poll() is None:
                    s.stop()

    assert codes == {"processor": 0, "dashboard": 0}, {s.name: "".join(s.err) for s in started}
    # every trade Binance sent was published once; the database holds each processed one once;
    # the rest are the newest, held behind the watermark when the processor stopped (not
    # committed: read again on a restart)
    processed = int(re.search(r"processed ([\d,]+) events \(0 rejected, 0 late\)", summary)[1].replace(",", ""))
    assert len(sent) == published > 0
    rows = _rows(admin)
    assert _trades(admin) == (processed, processed, 2) and set(rows) <= set(sent)
    held = [ts for trade, ts in sent.items() if trade not in rows]
    assert not held or min(held) >= max(rows.values())
    sinks = [running[i + 1] for i, arg in enumerate(running) if arg == "--sink"]
    assert sinks == ["timescale", "telegram"]  # a bot token is set
    assert "state: " in announced and str(tmp_path / "state") in announced
    assert (processor_health.returncode, processor_health.stdout[:8]) == (0, "healthy:"), processor_health.stdout
    assert f":{port}" in served
    assert dashboard_health.returncode == 0, dashboard_health.stderr
    assert login == "/auth/login" and title == "QuantStream live operations"
    assert requests.all and not requests.outside, requests.outside
    for s in started:
        assert not any("Traceback" in line for line in s.err), (s.name, "".join(s.err))
        assert PG_PASSWORD not in "".join(s.out + s.err) and DASHBOARD_PASSWORD not in "".join(s.out + s.err)

