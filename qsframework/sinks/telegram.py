"""Telegram alert sink: alerts as Bot API ``sendMessage`` calls (HTML parse mode).

At most one message per ``per_chat_interval_s`` per chat and ``global_rate_per_s`` overall;
429 answers are honoured (``retry_after``), 5xx and connection errors retried with backoff.
Bursts are coalesced into a "+N more" message. A dedup key is marked in a :class:`DedupStore`
only after Telegram answered ``ok``, so an alert is never sent twice, except that a crash
between the answer and the mark can resend that one message (or summary) once.

The bot token is part of every request URL: it is kept out of logs, exceptions and reprs.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx
import pyarrow as pa

from ..durations import format_time
from ..io import Refused, Sink
from ..retry import Backoff

log = logging.getLogger("qsf.sink.telegram")

ENV_TOKEN = "QSF_TELEGRAM_TOKEN"
ENV_CHAT_ID = "QSF_TELEGRAM_CHAT_ID"
ENV_API = "QSF_TELEGRAM_API"
DEFAULT_API = "https://api.telegram.org"
MAX_MESSAGE_CHARS = 4000  # Telegram's limit is 4096 characters after entity parsing
_MASK = "***"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, repr=False)
class TelegramConfig:
    """Bot, chat and limits; ``repr`` masks the token.

    Telegram allows about 1 message/s in a private chat and 20/min in a group: use
    ``per_chat_interval_s=3`` for groups.
    """

    token: str
    chat_id: str
    api_base: str = DEFAULT_API
    per_chat_interval_s: float = 1.0
    global_rate_per_s: float = 30.0
    max_retries: int = 8
    coalesce_after: int | None = 5
    timeout_s: float = 10
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() or c in "/?#" for c in self.token):
            raise ValueError("the Telegram bot token is empty or malformed")
        if not str(self.chat_id).strip():
            raise ValueError("the Telegram chat id is empty")
        if self.per_chat_interval_s < 0 or self.global_rate_per_s <= 0:
            raise ValueError("Telegram rate limits must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> TelegramConfig:
        """Token, chat id and optional API base from ``QSF_TELEGRAM_*`` variables."""
        env = os.environ if environ is None else environ
        token, chat_id = env.get(ENV_TOKEN, "").strip(), env.get(ENV_CHAT_ID, "").strip()
        missing = [name for name, value in ((ENV_TOKEN, token), (ENV_CHAT_ID, chat_id)) if not value]
        if missing:
            raise ValueError(
                f"the Telegram sink needs a bot token and a chat id: set {' and '.join(missing)}"
            )
        api = env.get(ENV_API, "").strip() or DEFAULT_API
        return cls(token=token, chat_id=chat_id, api_base=api, **options)

    def __repr__(self) -> str:
        return (
            f"TelegramConfig(token={_MASK!r}, chat_id={self.chat_id!r}, api_base={self.api_base!r}, "
            f"per_chat_interval_s={self.per_chat_interval_s}, global_rate_per_s={self.global_rate_per_s}, "
            f"max_retries={self.max_retries}, coalesce_after={self.coalesce_after}, "
            f"timeout_s={self.timeout_s})"
        )

    __str__ = __repr__

    @property
    def backoff(self) -> Backoff:
        """Between failed sends (5xx, connection errors); 429s wait what the API says."""
        return Backoff(initial_s=self.backoff_s, max_s=self.max_backoff_s, jitter=(0.5, 1.5))

    def redact(self, text: str) -> str:
        """``text`` with the token masked."""
        return text.replace(self.token, _MASK)


# -- errors --------------------------------------------------------------------------------
class TelegramError(Exception):
    """The Telegram sink could not deliver a message (the batch must not be committed)."""


_HINTS = {
    401: f"check the bot token in {ENV_TOKEN}",
    403: f"the bot may not write to the chat in {ENV_CHAT_ID}",
    404: f"check the bot token in {ENV_TOKEN}",
}


class TelegramAPIError(TelegramError):
    """Telegram refused the request (a 4xx other than 429): retrying would not help."""

    def __init__(self, error_code: int, description: str) -> None:
        hint = _HINTS.get(error_code)
        super().__init__(f"Telegram refused sendMessage: error {error_code}: {description}"
                         + (f" ({hint})" if hint else ""))
        self.error_code = error_code
        self.description = description


class TelegramUnavailable(TelegramError):
    """Telegram kept failing (5xx or connection errors) after every retry."""


# -- formatting ----------------------------------------------------------------------------
def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=False)


def _fit(head: str, body: str, tail: str) -> str:
    """``head\\nbody\\ntail`` cut in ``body`` (never inside an entity) to the message limit."""
    room = MAX_MESSAGE_CHARS - len(head) - len(tail) - 3
    if len(body) > room:
        body = re.sub(r"&[#A-Za-z0-9]*$", "", body[: max(room, 0)]) + "…"
    return "\n".join(part for part in (head, body, tail) if part)


def format_alert(row: Mapping[str, Any]) -> str:
    """The HTML text of one alert; every field from the alert is escaped."""
    head = f"<b>[{_esc(row.get('severity') or 'INFO').upper()}] {_esc(row.get('name') or 'alert')}</b>"
    if row.get("key"):
        head += f" {_esc(row['key'])}"
    meta = [format_time(row["ts_event"])] if row.get("ts_event") is not None else []
    if row.get("strategy"):
        meta.append(_esc(row["strategy"]))
    tail = f"<i>{' · '.join(meta)}</i>" if meta else ""
    return _fit(head, _esc(row.get("text")), tail)


def format_summary(rows: Sequence[Mapping[str, Any]], *, max_lines: int = 10) -> str:
    """The HTML text of one "+N more" message standing for ``rows``."""
    counts = Counter(
        (str(r.get("severity") or "INFO").upper(), str(r.get("name") or "alert")) for r in rows
    )
    lines = [f"{n} × [{_esc(sev)}] {_esc(name)}" for (sev, name), n in counts.most_common(max_lines)]
    if len(counts) > max_lines:
        lines.append(f"… and {len(counts) - max_lines} more kinds")
    times = [r["ts_event"] for r in rows if r.get("ts_event") is not None]
    tail = f"<i>{format_time(min(times))} … {format_time(max(times))}</i>" if times else ""
    return _fit(f"<b>+{len(rows)} more alerts</b>", "\n".join(lines), tail)


# -- dedup stores --------------------------------------------------------------------------
class DedupStore(ABC):
    """Dedup keys of the alerts already sent."""

    async def start(self) -> None:
        return None

    @abstractmethod
    async def seen(self, keys: Sequence[str]) -> set[str]:
        """The subset of ``keys`` already marked as sent."""

    @abstractmethod
    async def mark(self, keys: Sequence[str]) -> None:
        """Remember ``keys`` as sent (marking a key twice is harmless)."""

    async def close(self) -> None:
        return None


class MemoryDedupStore(DedupStore):
    """Dedup keys in a set: lost when the process exits (tests, one-off runs)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    async def seen(self, keys: Sequence[str]) -> set[str]:
        return self.keys.intersection(keys)

    async def mark(self, keys: Sequence[str]) -> None:
        self.keys.update(keys)


class PostgresDedupStore(DedupStore):
    """Dedup keys in a PostgreSQL table (created if missing); retries while the database is down."""

    def __init__(self, dsn: str, *, table: str = "telegram_sent",
                 backoff: Backoff = Backoff(initial_s=0.1, max_s=5.0)) -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"not a plain SQL table name: {table!r}")
        self.dsn = dsn
        self.table = table
        self.backoff = backoff
        self.con: Any = None  # asyncpg.Connection
        self.retries = 0

    async def start(self) -> None:
        await self._run(lambda con: con.execute("SELECT 1"))

    async def _connect(self) -> Any:
        import asyncpg

        con = await asyncpg.connect(self.dsn, timeout=5)
        await con.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "dedup_key text PRIMARY KEY, sent_at timestamptz NOT NULL DEFAULT now())"
        )
        return con

    async def _run(self, op: Callable[[Any], Any]) -> Any:
        import asyncpg

        retryable = (OSError, ConnectionError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                     asyncpg.InterfaceError, asyncpg.CannotConnectNowError)
        attempt = 0
        while True:
            try:
                if self.con is None or self.con.is_closed():
                    self.con = await self._connect()
                return await op(self.con)
            except retryable as exc:
                self.retries += 1
                attempt += 1
                delay = self.backoff.delay(attempt)
                log.warning("dedup store unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                if self.con is not None:
                    self.con.terminate()
                    self.con = None
                await asyncio.sleep(delay)

    async def seen(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        sql = f"SELECT dedup_key FROM {self.table} WHERE dedup_key = ANY($1::text[])"
        rows = await self._run(lambda con: con.fetch(sql, list(keys)))
        return {r["dedup_key"] for r in rows}

    async def mark(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        sql = f"INSERT INTO {self.table} (dedup_key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
        await self._run(lambda con: con.execute(sql, list(keys)))

    async def close(self) -> None:
        if self.con is not None:
            await self.con.close()
            self.con = None


# -- rate limiting -------------------------------------------------------------------------
class RateLimiter:
    """Next-allowed send times per chat and for the bot overall (share one across sinks of a bot)."""

    def __init__(self, *, per_chat_interval_s: float = 1.0, global_rate_per_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_chat_interval_s = per_chat_interval_s
        self.global_interval_s = 1.0 / global_rate_per_s
        self.clock = clock
        self._chat_next: dict[str, float] = {}
        self._global_next = 0.0

    async def acquire(self, chat_id: str) -> None:
        """Wait until a message to ``chat_id`` may go, and take that slot."""
        while True:
            now = self.clock()
            wait = max(self._chat_next.get(chat_id, 0.0), self._global_next) - now
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._chat_next[chat_id] = now + self.per_chat_interval_s
            self._global_next = now + self.global_interval_s
            return

    def defer(self, chat_id: str, seconds: float) -> None:
        """No message to ``chat_id`` for ``seconds`` from now (a 429's ``retry_after``)."""
        until = self.clock() + seconds
        self._chat_next[chat_id] = max(self._chat_next.get(chat_id, 0.0), until)


# -- the sink ------------------------------------------------------------------------------
@dataclass(kw_only=True)
class TelegramStats:
    """Counters: messages sent, alerts skipped as already sent or folded into "+N more",
    resends after 5xx/connection errors, and 429 answers."""

    sent: int = 0
    deduplicated: int = 0
    coalesced: int = 0
    retries: int = 0
    rate_limited: int = 0


class _TokenTransport(httpx.AsyncBaseTransport):
    """Puts the token into the URL only here, so httpx's own logs show ``bot***``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, token: str) -> None:
        self.inner = inner
        self.token = token

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.replace(f"/bot{_MASK}/".encode(), f"/bot{self.token}/".encode(), 1)
        real = httpx.Request(request.method, request.url.copy_with(raw_path=path),
                             headers=request.headers, stream=request.stream, extensions=request.extensions)
        return await self.inner.handle_async_request(real)

    async def aclose(self) -> None:
        await self.inner.aclose()


class TelegramSink(Sink):
    """Sends alerts to one Telegram chat, each alert at most once (other kinds are not its
    business: it takes them and sends nothing)."""

    def __init__(self, config: TelegramConfig, *, store: DedupStore | None = None,
                 limiter: RateLimiter | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = config
        self.store = store if store is not None else MemoryDedupStore()
        self.limiter = limiter or RateLimiter(per_chat_interval_s=config.per_chat_interval_s,
                                              global_rate_per_s=config.global_rate_per_s)
        self.stats = TelegramStats()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._url = f"{config.api_base.rstrip('/')}/bot{_MASK}/sendMessage"

    def __repr__(self) -> str:
        return f"TelegramSink({self.cfg!r})"

    async def start(self) -> None:
        if self._client is None:
            inner = self._transport or httpx.AsyncHTTPTransport(retries=0)
            self._client = httpx.AsyncClient(transport=_TokenTransport(inner, self.cfg.token),
                                             timeout=self.cfg.timeout_s, follow_redirects=False)
            await self.store.start()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        """Send the alerts of ``table``; returns once each is sent and marked, a duplicate,
        or covered by a sent and marked "+N more" message. Raises :class:`TelegramError`."""
        if kind == "alert" and table.num_rows:
            await self.write_rows(table.to_pylist())
        return []

    async def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`write` for alert rows as mappings (``dedup_key`` required)."""
        await self.start()
        async with self._lock:
            fresh: dict[str, Mapping[str, Any]] = {}
            total = 0
            for row in rows:
                total += 1
                fresh.setdefault(str(row["dedup_key"]), row)
            seen = await self.store.seen(list(fresh))
            pending = [(k, r) for k, r in fresh.items() if k not in seen]
            self.stats.deduplicated += total - len(pending)
            limit = self.cfg.coalesce_after
            if limit is None or len(pending) <= limit + 1:  # "+1 more" would say less than the alert
                limit = len(pending)
            for key, row in pending[:limit]:
                await self._send(format_alert(row))
                await self.store.mark([key])
            rest = pending[limit:]
            if rest:
                await self._send(format_summary([r for _, r in rest]))
                await self.store.mark([k for k, _ in rest])
                self.stats.coalesced += len(rest)
                log.info("coalesced %d alerts into one message", len(rest))

    async def _send(self, text: str) -> dict[str, Any]:
        """One sendMessage, retried as the Bot API asks; the ``result`` of the answer.

        429s are waited out however many come; 5xx and connection errors count to ``max_retries``.
        """
        assert self._client is not None
        chat = str(self.cfg.chat_id)
        payload = {"chat_id": chat, "text": text, "parse_mode": "HTML", "disable_web_page_preview": True}
        failures = 0
        while True:
            await self.limiter.acquire(chat)
            try:
                resp = await self._client.post(self._url, json=payload)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                failure = f"{type(exc).__name__}: {self.cfg.redact(str(exc)) or 'no detail'}"
            else:
                body = _json(resp)
                if resp.status_code == 200 and body.get("ok") is True:
                    self.stats.sent += 1
                    result = body.get("result") or {}
                    log.debug("sent message %s to chat %s", result.get("message_id"), chat)
                    return result
                if resp.status_code == 429:
                    retry_after = _retry_after(resp, body)
                    self.stats.rate_limited += 1
                    log.warning("Telegram rate limit (429): waiting %.1f s", retry_after)
                    self.limiter.defer(chat, retry_after)
                    continue
                if resp.status_code < 500:
                    code = body.get("error_code", resp.status_code)
                    desc = self.cfg.redact(str(body.get("description") or resp.reason_phrase))
                    raise TelegramAPIError(int(code), desc)
                failure = f"HTTP {resp.status_code}"
            failures += 1
            if failures > self.cfg.max_retries:
                raise TelegramUnavailable(
                    f"Telegram sendMessage failed {failures} times (last: {failure}); giving up"
                ) from None
            self.stats.retries += 1
            delay = self.cfg.backoff.delay(failures)
            log.warning("Telegram sendMessage failed (%s); retry %d/%d in %.2f s",
                        failure, failures, self.cfg.max_retries, delay)
            await asyncio.sleep(delay)


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:  # e.g. an HTML error page from a proxy
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(resp: httpx.Response, body: Mapping[str, Any]) -> float:
    """Seconds to wait from a 429: ``parameters.retry_after``, else the header, else 1."""
    params = body.get("parameters")
    value = params.get("retry_after") if isinstance(params, dict) else None
    if value is None:
        value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0
