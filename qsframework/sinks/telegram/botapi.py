"""The Bot API call the sink makes: ``sendMessage`` over httpx, rate-limited, 429s waited
out, 5xx and connection errors retried with backoff, refusals raised; the token goes into
the URL only at the transport, so no log, exception or repr shows it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .config import ENV_CHAT_ID, ENV_TOKEN, MASK, TelegramConfig
from .ratelimit import RateLimiter

log = logging.getLogger("qsf.sink.telegram")


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
        path = request.url.raw_path.replace(f"/bot{MASK}/".encode(), f"/bot{self.token}/".encode(), 1)
        real = httpx.Request(request.method, request.url.copy_with(raw_path=path),
                             headers=request.headers, stream=request.stream, extensions=request.extensions)
        return await self.inner.handle_async_request(real)

    async def aclose(self) -> None:
        await self.inner.aclose()


class BotApi:
    """``sendMessage`` to the configured chat, counted in ``stats``; :meth:`open` before use."""

    def __init__(self, config: TelegramConfig, *, limiter: RateLimiter, stats: TelegramStats,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = config
        self.limiter = limiter
        self.stats = stats
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._url = f"{config.api_base.rstrip('/')}/bot{MASK}/sendMessage"

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        inner = self._transport or httpx.AsyncHTTPTransport(retries=0)
        self._client = httpx.AsyncClient(transport=_TokenTransport(inner, self.cfg.token),
                                         timeout=self.cfg.timeout_s, follow_redirects=False)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, text: str) -> dict[str, Any]:
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
