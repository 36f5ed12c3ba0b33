"""Telegram sink against a real local HTTP server answering like the Bot API."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid

import pyarrow as pa
import pytest

from qsframework.events import ALERT
from qsframework.sinks.telegram import (
    MAX_MESSAGE_CHARS,
    MemoryDedupStore,
    PostgresDedupStore,
    RateLimiter,
    TelegramAPIError,
    TelegramConfig,
    TelegramSink,
    TelegramUnavailable,
    format_alert,
)

from ..fakes.botapi import BotApiServer, check_html

TOKEN = "123456789:AAE-secret_Token-do-not-log"
CHAT = "424242"
T0 = 1_767_573_687_064_000_000  # 2026-01-05T00:41:27.064Z


@pytest.fixture
def bot():
    with BotApiServer(TOKEN) as server:
        yield server


def config(server: BotApiServer, **options) -> TelegramConfig:
    fast = {"per_chat_interval_s": 0.01, "backoff_s": 0.01, "max_backoff_s": 0.05}
    return TelegramConfig(token=options.pop("token", TOKEN), chat_id=options.pop("chat_id", CHAT),
                          api_base=server.url, **{**fast, **options})


def alerts(n: int, *, text: str = "spread z-score {i} above 3", prefix: str = "a") -> pa.Table:
    rows = [
        {"ts_event": T0 + i * 1_000_000, "ts_recv": T0 + i * 1_000_000, "source": "qsf",
         "key": "BTCUSDT/ETHUSDT", "seq": i, "strategy": "btc_eth_spread", "name": "divergence",
         "severity": "warning", "text": text.format(i=i), "dedup_key": f"{prefix}-{i}"}
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=ALERT.schema)


async def send(cfg: TelegramConfig, *tables: pa.Table, store=None) -> TelegramSink:
    sink = TelegramSink(cfg, store=store)
    async with sink:
        for table in tables:
            await sink.write("alert", table)
    return sink


def test_config_from_env_masks_the_token():
    with pytest.raises(ValueError, match="QSF_TELEGRAM_TOKEN and QSF_TELEGRAM_CHAT_ID"):
        TelegramConfig.from_env({})
    with pytest.raises(ValueError, match="set QSF_TELEGRAM_CHAT_ID"):
        TelegramConfig.from_env({"QSF_TELEGRAM_TOKEN": TOKEN})
    cfg = TelegramConfig.from_env({"QSF_TELEGRAM_TOKEN": TOKEN, "QSF_TELEGRAM_CHAT_ID": CHAT,
                                   "QSF_TELEGRAM_API": "http://127.0.0.1:1"})
    assert (cfg.token, cfg.chat_id, cfg.api_base) == (TOKEN, CHAT, "http://127.0.0.1:1")
    assert TelegramConfig.from_env({"QSF_TELEGRAM_TOKEN": TOKEN, "QSF_TELEGRAM_CHAT_ID": CHAT}).api_base \
        == "https://api.telegram.org"
    for text in (repr(cfg), str(cfg), repr(TelegramSink(cfg))):
        assert TOKEN not in text and "secret" not in text and "***" in text


def test_messages_arrive_with_html_escaping(bot):
    table = alerts(1, text="<script>alert('x')</script> & a<b")
    table = table.set_column(table.schema.get_field_index("key"), "key", pa.array(["BTC<USDT>"]))
    sink = asyncio.run(send(config(bot), table))
    assert sink.stats.sent == 1
    (msg,) = bot.messages
    assert msg.chat_id == CHAT and msg.parse_mode == "HTML"
    assert "&lt;script&gt;" in msg.html and "<script>" not in msg.html
    assert msg.text == ("[WARNING] divergence BTC<USDT>\n<script>alert('x')</script> & a<b\n"
                        "2026-01-05T00:41:27.064Z · btc_eth_spread")
    assert msg.html.startswith("<b>[WARNING] divergence</b> BTC&lt;USDT&gt;\n")
    assert msg.html.endswith("<i>2026-01-05T00:41:27.064Z · btc_eth_spread</i>")


def test_long_text_is_cut_without_breaking_an_entity():
    for n in range(3990, 4010):
        row = alerts(1, text="x" * n + "&" * 800).to_pylist()[0]
        text = format_alert(row)
        assert len(text) <= MAX_MESSAGE_CHARS
        assert check_html(text)[0] is None


def test_same_alerts_are_sent_once_memory(bot):
    store = MemoryDedupStore()
    first = asyncio.run(send(config(bot), alerts(3), alerts(3), store=store))
    assert len(bot.messages) == 3 and first.stats.deduplicated == 3
    second = asyncio.run(send(config(bot), pa.concat_tables([alerts(4), alerts(4)]), store=store))
    assert len(bot.messages) == 4 and second.stats.sent == 1 and second.stats.deduplicated == 7
    assert store.keys == {f"a-{i}" for i in range(4)}


def test_same_alerts_are_sent_once_postgres(bot, stack_endpoints):
    import asyncpg

    table_name = f"tg_{uuid.uuid4().hex[:10]}"
    dsn = stack_endpoints.pg_dsn

    def store() -> PostgresDedupStore:
        return PostgresDedupStore(dsn, table=table_name)

    asyncio.run(send(config(bot), alerts(3), store=store()))
    again = asyncio.run(send(config(bot), alerts(5), store=store()))  # another sink, same table
    assert len(bot.messages) == 5
    assert again.stats.sent == 2 and again.stats.deduplicated == 3
    assert sorted(m.text.split("\n")[1] for m in bot.messages) == [f"spread z-score {i} above 3" for i in range(5)]

    async def keys() -> list[str]:
        con = await asyncpg.connect(dsn)
        try:
            return [r[0] for r in await con.fetch(f"SELECT dedup_key FROM {table_name} ORDER BY 1")]
        finally:
            await con.close()

    assert asyncio.run(keys()) == [f"a-{i}" for i in range(5)]
    with pytest.raises(ValueError, match="table name"):
        PostgresDedupStore(dsn, table="x; DROP TABLE alerts")


def test_429_retry_after_is_honoured(bot):
    bot.fail_next([429], retry_after=1)
    sink = asyncio.run(send(config(bot), alerts(1)))
    assert [r.status for r in bot.requests] == [429, 200]
    assert bot.messages[0].at - bot.requests[0].at >= 1.0
    assert sink.stats.rate_limited == 1 and sink.stats.sent == 1


def test_5xx_and_dropped_connections_are_retried(bot):
    bot.fail_next([500, 502, "drop", 503])
    store = MemoryDedupStore()
    sink = asyncio.run(send(config(bot), alerts(2), store=store))
    assert [r.status for r in bot.requests] == [500, 502, 0, 503, 200, 200]
    assert len(bot.messages) == 2 and sink.stats.retries == 4
    assert store.keys == {"a-0", "a-1"}


def test_too_many_5xx_raise_and_nothing_is_marked(bot):
    bot.fail_next([500, 502, 503])
    store = MemoryDedupStore()
    with pytest.raises(TelegramUnavailable, match="failed 3 times"):
        asyncio.run(send(config(bot, max_retries=2), alerts(1), store=store))
    assert not bot.messages and not store.keys
    asyncio.run(send(config(bot, max_retries=2), alerts(1), store=store))  # Telegram is back
    assert len(bot.messages) == 1 and store.keys == {"a-0"}


def test_4xx_raise_a_clear_error(bot):
    with pytest.raises(TelegramAPIError, match="error 401: Unauthorized") as err:
        asyncio.run(send(config(bot, token="999:wrong-secret"), alerts(1)))
    assert err.value.error_code == 401 and "wrong-secret" not in str(err.value)
    bot.fail_next([403])
    with pytest.raises(TelegramAPIError, match="error 403: Forbidden: bot was blocked by the user"):
        asyncio.run(send(config(bot), alerts(1)))
    assert [r.status for r in bot.requests] == [401, 403] and not bot.messages


def test_per_chat_rate(bot):
    interval = 0.2
    t0 = time.monotonic()
    asyncio.run(send(config(bot, per_chat_interval_s=interval, coalesce_after=None), alerts(6)))
    at = [m.at for m in bot.messages]
    assert len(at) == 6
    # the k-th message's slot is granted k intervals after the first at the earliest, and it
    # arrives after its slot: a causal bound (gaps between arrivals may shrink under load,
    # when one request travels slower than the next)
    assert all(a - t0 >= k * interval for k, a in enumerate(at))


def test_global_rate_across_chats(bot):
    limiter = RateLimiter(per_chat_interval_s=0.0, global_rate_per_s=10.0)

    async def main() -> None:
        sinks = [TelegramSink(config(bot, chat_id=str(c), per_chat_interval_s=0.0), limiter=limiter)
                 for c in (1, 2, 3)]
        for s in sinks:
            await s.start()
        await asyncio.gather(*(s.write("alert", alerts(2)) for s in sinks))
        for s in sinks:
            await s.close()

    t0 = time.monotonic()
    asyncio.run(main())
    assert len(bot.messages) == 6 and {m.chat_id for m in bot.messages} == {"1", "2", "3"}
    assert bot.messages[-1].at - t0 >= 0.5


def test_burst_is_coalesced_and_all_keys_marked(bot):
    store = MemoryDedupStore()
    sink = asyncio.run(send(config(bot, coalesce_after=5), alerts(20), store=store))
    assert len(bot.messages) == 6 and sink.stats.sent == 6 and sink.stats.coalesced == 15
    assert [m.text.split("\n")[1] for m in bot.messages[:5]] == [f"spread z-score {i} above 3" for i in range(5)]
    last = bot.messages[-1].text
    assert "+15 more" in last and "15 × [WARNING] divergence" in last
    assert store.keys == {f"a-{i}" for i in range(20)}
    asyncio.run(send(config(bot, coalesce_after=5), alerts(20), store=store))
    assert len(bot.messages) == 6


def test_token_never_logged(bot, caplog):
    caplog.set_level(logging.DEBUG)
    bot.fail_next([429, 500, "drop", 502], retry_after=0)
    errors: list[BaseException] = []
    sink = asyncio.run(send(config(bot, coalesce_after=2), alerts(6)))
    assert sink.stats.retries == 3 and sink.stats.rate_limited == 1
    for cfg in (config(bot, token="999:wrong-secret"), config(bot, max_retries=0)):
        if cfg.max_retries == 0:
            bot.fail_next([500])
        try:
            asyncio.run(send(cfg, alerts(1, prefix="b")))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    assert [type(e) for e in errors] == [TelegramAPIError, TelegramUnavailable]
    assert "bot***/sendMessage" in caplog.text  # httpx's own request log is captured
    texts = [caplog.text, *(r.getMessage() for r in caplog.records),
             *("".join(traceback.format_exception(e)) for e in errors)]
    for text in texts:
        assert TOKEN not in text and "secret" not in text
