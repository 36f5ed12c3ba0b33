"""Binance's REST API for the trades of a gap: ``historicalTrades`` (raw trades) or
``aggTrades``, page by page from the first missing id."""

from __future__ import annotations

import time

import orjson
import pyarrow as pa

from qsframework.events import TRADE

from .protocol import SOURCE

REST_LIMIT = 1000  # rows per REST page (the API's maximum)


async def fetch_trades(http, symbol: str, first: int, last: int, *, stream: str) -> pa.Table:
    """Trades ``first..last`` of ``symbol`` from the REST API, as a ``trade`` table."""
    path = "/api/v3/historicalTrades" if stream == "trade" else "/api/v3/aggTrades"
    ts_event, ids, prices, qtys, makers = [], [], [], [], []
    next_id = first
    while next_id <= last:
        limit = min(REST_LIMIT, last - next_id + 1)
        resp = await http.get(path, params={"symbol": symbol, "fromId": next_id, "limit": limit})
        resp.raise_for_status()
        page = orjson.loads(resp.content)
        if not isinstance(page, list) or not page:
            break
        for row in page:
            if stream == "trade":
                tid, t, p, q, m = row["id"], row["time"], row["price"], row["qty"], row["isBuyerMaker"]
            else:
                tid, t, p, q, m = row["a"], row["T"], row["p"], row["q"], row["m"]
            if tid < next_id or tid > last:
                continue
            ts_event.append(t * 1_000_000 if t < 10**14 else t * 1_000)
            ids.append(tid)
            prices.append(float(p))
            qtys.append(float(q))
            makers.append(bool(m))
        new_next = max(ids) + 1 if ids else next_id
        if new_next <= next_id:
            break
        next_id = new_next
    n = len(ids)
    now = time.time_ns()
    return pa.Table.from_arrays(
        [pa.array(ts_event, pa.int64()), pa.array([now] * n, pa.int64()),
         pa.array([SOURCE] * n, pa.string()), pa.array([symbol] * n, pa.string()),
         pa.array(ids, pa.int64()), pa.array(prices, pa.float64()),
         pa.array(qtys, pa.float64()), pa.array(makers, pa.bool_())],
        schema=TRADE.schema,
    )

