"""The PostgreSQL sink takes a writer round's tables of several kinds in one transaction (one
commit to wait for); when that fails for any reason, each table is written alone, with the
merge of re-delivered rows and the refused rows found as :meth:`PostgresSink.write` does.
Checked against the real database: every row once, the bad row refused by its index."""

from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pyarrow as pa

from qsframework.events import SIGNAL
from qsframework.sinks.postgres import PostgresSink

from ..conftest import make_trades
from .feeds import fresh_database


def _signals(n: int, *, bad: int | None = None) -> pa.Table:
    names = [f"s{i}" if i != bad else "nul\x00" for i in range(n)]
    return pa.table({
        "ts_event": np.arange(n, dtype=np.int64) * 1000, "ts_recv": np.arange(n, dtype=np.int64) * 1000,
        "source": ["test"] * n, "key": ["BTCUSDT"] * n, "seq": np.arange(n, dtype=np.int64),
        "strategy": ["S"] * n, "name": names, "value": np.arange(n, dtype=np.float64), "attrs": [None] * n,
    }, schema=SIGNAL.schema)


async def _stored(dsn: str) -> tuple[list[tuple], list[tuple]]:
    con = await asyncpg.connect(dsn)
    try:
        trades = [tuple(r) for r in await con.fetch("SELECT key, seq FROM trades ORDER BY key, seq")]
        signals = [tuple(r) for r in await con.fetch("SELECT name, seq FROM signals ORDER BY seq")]
        return trades, signals
    finally:
        await con.close()


def test_several_kinds_in_one_transaction_and_one_by_one_when_it_fails(stack_endpoints):
    dsn = fresh_database(stack_endpoints.pg_dsn, "t")
    trades = make_trades(41, 400)

    async def go() -> tuple[int, list, int, list, tuple]:
        sink = PostgresSink(dsn)
        await sink.start()
        try:
            before = sink.copies
            first = await sink.write_all([("trade", trades.slice(0, 200)), ("signal", _signals(50))])
            together = sink.copies - before
            # again, overlapping what is stored, with a row the database refuses: one by one
            second = await sink.write_all([("trade", trades), ("signal", _signals(80, bad=60))])
            return together, first, sink.merged, second, await _stored(dsn)
        finally:
            await sink.close()

    together, first, merged, second, (stored_trades, stored_signals) = asyncio.run(go())
    assert together == 1 and first == [[], []]
    assert merged >= 2  # both tables overlapped stored rows
    assert second[0] == [] and [r.index for r in second[1]] == [60]
    assert "postgres refused the row" in second[1][0].reason
    expected_trades = sorted(zip(trades.column("key").to_pylist(), trades.column("seq").to_pylist()))
    assert stored_trades == expected_trades  # each once
    assert stored_signals == [(f"s{i}", i) for i in range(80) if i != 60]
