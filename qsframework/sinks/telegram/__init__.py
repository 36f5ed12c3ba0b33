"""Telegram alert sink: alerts as Bot API ``sendMessage`` calls (HTML parse mode).

At most one message per ``per_chat_interval_s`` per chat and ``global_rate_per_s`` overall;
429 answers are honoured (``retry_after``), 5xx and connection errors retried with backoff.
Bursts are coalesced into a "+N more" message. A dedup key is marked in a :class:`DedupStore`
only after Telegram answered ``ok``, so an alert is never sent twice, except that a crash
between the answer and the mark can resend that one message (or summary) once.

The bot token is part of every request URL: it is kept out of logs, exceptions and reprs.
By job: :mod:`.config` (settings), :mod:`.format` (message texts), :mod:`.dedup` (sent keys),
:mod:`.ratelimit`, :mod:`.botapi` (the HTTP call and its retries), :mod:`.sink`.
"""

from __future__ import annotations

from .botapi import BotApi, TelegramAPIError, TelegramError, TelegramStats, TelegramUnavailable
from .config import DEFAULT_API, ENV_API, ENV_CHAT_ID, ENV_TOKEN, TelegramConfig
from .dedup import DedupStore, MemoryDedupStore, PostgresDedupStore
from .format import MAX_MESSAGE_CHARS, format_alert, format_summary
from .ratelimit import RateLimiter
from .sink import TelegramSink

__all__ = [
    "DEFAULT_API", "ENV_API", "ENV_CHAT_ID", "ENV_TOKEN", "MAX_MESSAGE_CHARS", "BotApi", "DedupStore",
    "MemoryDedupStore", "PostgresDedupStore", "RateLimiter", "TelegramAPIError", "TelegramConfig",
    "TelegramError", "TelegramSink", "TelegramStats", "TelegramUnavailable", "format_alert", "format_summary",
]
