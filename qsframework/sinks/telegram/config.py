"""The Telegram sink's settings: bot token, chat and limits, read from ``QSF_TELEGRAM_*``;
the token never shows in a repr or a message (:meth:`TelegramConfig.redact`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...retry import Backoff

ENV_TOKEN = "QSF_TELEGRAM_TOKEN"
ENV_CHAT_ID = "QSF_TELEGRAM_CHAT_ID"
ENV_API = "QSF_TELEGRAM_API"
DEFAULT_API = "https://api.telegram.org"
MASK = "***"


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
            f"TelegramConfig(token={MASK!r}, chat_id={self.chat_id!r}, api_base={self.api_base!r}, "
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
        return text.replace(self.token, MASK)
