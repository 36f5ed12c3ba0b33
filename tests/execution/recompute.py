"""The simulator's results recomputed from a recording alone, with DuckDB and numpy, by the
issue's rules (never calling qsframework's simulator, portfolio or metrics).

Orders are given as rows ``(id, key, t, qty, limit, cancel_at)``: submitted at event time
``t`` after every trade at or before ``t`` (as from a timer, or with a latency >= 1 ns), so
a trade can fill an order when ``ts_event >= t + max(latency, 1)``, and a cancel placed at
``c`` stops fills from ``ts_event >= c + max(latency, 1)`` on.
"""

from __future__ import annotations

from collections import defaultdict
from math import sqrt
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from qsframework.execution.config import ExecutionConfig as Exec

YEAR_NS = 365 * 86_400 * 10**9
NEVER = 2**62


def options(cfg: Exec) -> list[str]:
    """``cfg`` as ``qsf backtest`` options."""
    opts = ["--latency", f"{cfg.latency_ns}ns", "--slippage-bps", repr(cfg.slippage_bps),
            "--taker-fee-bps", repr(cfg.taker_fee_bps), "--maker-fee-bps", repr(cfg.maker_fee_bps),
            "--cash", repr(cfg.cash), "--mark-every", f"{cfg.mark_every_ns}ns"]
    if cfg.max_participation is not None:
        opts += ["--max-participation", repr(cfg.max_participation)]
    return opts


ORDERS = pa.schema({"id": pa.int64(), "key": pa.string(), "active": pa.int64(), "qty": pa.float64(),
                    "side": pa.float64(), "lim": pa.float64(), "cutoff": pa.int64()})
Order = tuple[int, str, int, float, float | None, int | None]  # id, key, t, qty, limit, cancel_at
Fill = tuple[int, str, int, float, float, float, str]  # ts_event, key, order_id, qty, price, fee, liq


def connect(recording: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the recording's trades as ``trades``, numbered ``pos`` in the
    engine's total order (ts_event, source, key, seq)."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE trades AS SELECT row_number() OVER (ORDER BY ts_event, source, key, seq) AS pos,"
        " ts_event, source, key, seq, price, qty"
        f" FROM read_parquet('{recording}/kind=trade/**/*.parquet', hive_partitioning = false)")
    return con


def span(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    return con.execute("SELECT min(ts_event), max(ts_event) FROM trades").fetchall()[0]


def last_prices(con: duckdb.DuckDBPyConnection, asks: list[tuple[str, int]]) -> list[float | None]:
    """Each (key, T): the price of the key's last trade at or before T, in total order."""
    if not asks:
        return []
    keys, times = zip(*asks, strict=True)
    con.register("asks", pa.table({"i": pa.array(range(len(asks)), pa.int64()), "key": keys,
                                   "t": pa.array(times, pa.int64())}))
    rows = con.execute(
        "WITH lasts AS (SELECT key, ts_event, price FROM trades"
        "  QUALIFY row_number() OVER (PARTITION BY key, ts_event ORDER BY pos DESC) = 1)"
        " SELECT a.i, l.price FROM asks a ASOF LEFT JOIN lasts l ON a.key = l.key AND l.ts_event <= a.t"
        " ORDER BY a.i").fetchall()
    return [price for _, price in rows]


def fills(con: duckdb.DuckDBPyConnection, orders: list[Order], cfg: Exec) -> list[Fill]:
    """Every fill of ``orders``, in the order they happen (trade, then order id)."""
    gap = max(cfg.latency_ns, 1)
    con.register("orders", pa.Table.from_pylist([
        {"id": i, "key": k, "active": t + gap, "qty": q, "side": 1.0 if q > 0 else -1.0,
         "lim": lim, "cutoff": NEVER if c is None else c + gap} for i, k, t, q, lim, c in orders],
        schema=ORDERS))
    if cfg.max_participation is None:
        market = con.execute(
            "WITH firsts AS (SELECT key, ts_event, pos, price FROM trades"
            "  QUALIFY row_number() OVER (PARTITION BY key, ts_event ORDER BY pos) = 1)"
            " SELECT f.pos, f.ts_event, o.key, o.id, o.qty,"
            "  f.price * (1 + o.side * $slip / CAST(10000 AS DOUBLE)) AS price"
            " FROM orders o ASOF JOIN firsts f ON o.key = f.key AND f.ts_event >= o.active"
            " WHERE o.lim IS NULL", {"slip": cfg.slippage_bps}).fetchall()
    else:
        if any(o[4] is not None for o in orders):
            raise ValueError("the participation recomputation covers market orders")
        market = _participating(con, orders, cfg)
    limit = con.execute(
        "SELECT t.pos, t.ts_event, o.key, o.id, o.qty, o.lim FROM orders o JOIN trades t"
        " ON t.key = o.key AND t.ts_event >= o.active AND t.ts_event < o.cutoff"
        " AND CASE WHEN o.qty > 0 THEN t.price < o.lim ELSE t.price > o.lim END"
        " WHERE o.lim IS NOT NULL"
        " QUALIFY row_number() OVER (PARTITION BY o.id ORDER BY t.pos) = 1").fetchall()
    out = []
    for rows, liquidity, bps in ((market, "taker", cfg.taker_fee_bps),
                                 (limit, "maker", cfg.maker_fee_bps)):
        out += [(pos, oid, (ts, key, oid, q, p, abs(q) * p * bps / 10_000, liquidity))
                for pos, ts, key, oid, q, p in rows]
    return [fill for *_, fill in sorted(out)]


def _participating(con: duckdb.DuckDBPyConnection, orders: list[Order], cfg: Exec) -> list[tuple]:
    """Market orders filling at most F x each trade's quantity, the orders of a key sharing
    a trade in id order: per key, the quantity filled by trade i is F_i = min(F_(i-1) + cap_i,
    A_i) (A_i: the demand of the orders active at trade i), which is C_i + min(0, running min
    of A - C) with C the cumulated capacity; order j holds [D_(j-1), D_j) of the cumulated
    demand D and trade i fills [F_(i-1), F_i) of it."""
    f, gap = cfg.max_participation, max(cfg.latency_ns, 1)
    rows = []
    by_key: dict[str, list[Order]] = defaultdict(list)
    for o in orders:
        by_key[o[1]].append(o)
    for key, mine in by_key.items():
        pos, ts, price, qty = (np.array(c) for c in zip(*con.execute(
            "SELECT pos, ts_event, price, qty FROM trades WHERE key = ? ORDER BY pos", [key]
        ).fetchall(), strict=True))
        active = np.array([t + gap for _, _, t, _, _, _ in mine])
        demand = np.cumsum([abs(q) for _, _, _, q, _, _ in mine])
        n_active = np.searchsorted(active, ts, side="right")
        a = np.where(n_active > 0, demand[np.maximum(n_active - 1, 0)], 0.0)
        c = np.cumsum(f * np.abs(qty))
        filled = c + np.minimum(0.0, np.minimum.accumulate(a - c))
        before = np.concatenate(([0.0], filled[:-1]))
        lo_d = np.concatenate(([0.0], demand[:-1]))
        for i in np.flatnonzero(filled > before).tolist():
            for j in range(len(mine)):
                take = min(filled[i], demand[j]) - max(before[i], lo_d[j])
                if take > 0:
                    oid, _, _, q, _, _ = mine[j]
                    side = 1.0 if q > 0 else -1.0
                    rows.append((int(pos[i]), int(ts[i]), key, oid, side * float(take),
                                 float(price[i]) * (1 + side * cfg.slippage_bps / 10_000)))
    return rows


def equity(con: duckdb.DuckDBPyConnection, done: list[Fill], cfg: Exec) -> list[dict[str, Any]]:
    """The equity samples: every multiple T of mark_every from the first event's time up to the
    last event, and the last event's time, each the state after the events at or before T."""
    first, last = span(con)
    m = cfg.mark_every_ns
    grid = list(range(-(-first // m) * m, last + 1, m))
    if not grid or grid[-1] != last:
        grid.append(last)
    fill_ts = np.array([f[0] for f in done], np.int64)
    # cash after each fill: a buy pays qty x price + fee, a sell receives |qty| x price - fee
    cash = np.cumsum([cfg.cash, *(-(q * p + fee) for _, _, _, q, p, fee, _ in done)])
    upto = np.searchsorted(fill_ts, grid, side="right")  # fills at or before each T
    keys = sorted({f[1] for f in done})
    held = {k: np.cumsum([0.0, *(f[3] if f[1] == k else 0.0 for f in done)]) for k in keys}
    marks = last_prices(con, [(k, t) for t in grid for k in keys])
    samples = []
    for g, t in enumerate(grid):
        n = int(upto[g])
        positions = {k: float(held[k][n]) for k in keys if held[k][n] != 0.0}
        value = float(cash[n])
        for i, k in enumerate(keys):
            if k in positions:
                value += positions[k] * marks[g * len(keys) + i]
        samples.append({"ts_event": t, "cash": float(cash[n]), "equity": value,
                        "positions": positions})
    return samples


def metrics(samples: list[dict[str, Any]], done: list[Fill], cfg: Exec) -> dict[str, Any]:
    """The report's metrics, by their definitions, with numpy."""
    e = np.array([s["equity"] for s in samples])
    q = np.array([f[3] for f in done])
    p = np.array([f[4] for f in done])
    peak = np.maximum.accumulate(e)
    r = e[1:] / e[:-1] - 1
    periods = YEAR_NS / cfg.mark_every_ns
    spread = len(r) >= 2 and not np.all(r == r[0])
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) if len(r) >= 2 else 0.0
    return {
        "pnl": float(e[-1] - cfg.cash),
        "return": float((e[-1] - cfg.cash) / cfg.cash),
        "fees": float(np.sum([f[5] for f in done])),
        "fills": len(done),
        "turnover": float(np.sum(np.abs(q * p))),
        "max_drawdown": float(np.max((peak - e) / peak)),
        "sharpe": float(np.mean(r) / np.std(r, ddof=1) * sqrt(periods)) if spread else None,
        "sortino": float(np.mean(r) / downside * sqrt(periods)) if downside > 0 else None,
        "exposure": float(np.mean([bool(s["positions"]) for s in samples])),
        "win_rate": _win_rate(done),
    }


def _win_rate(done: list[Fill]) -> float | None:
    """Closing fills with a positive realised PnL before fees, by average cost per key."""
    book: dict[str, tuple[float, float]] = {}  # key -> (position, average cost)
    outcomes = []
    for _, key, _, q, p, _, _ in done:
        pos, cost = book.get(key, (0.0, 0.0))
        if pos * q < 0:  # against the position: closes min(|q|, |pos|) of it
            outcomes.append(min(abs(q), abs(pos)) * (p - cost) * np.sign(pos) > 0)
            new = pos + q
            cost = p if new * pos < 0 else cost
        else:
            new = pos + q
            cost = (abs(pos) * cost + abs(q) * p) / abs(new)
        book[key] = (new, cost if new != 0 else 0.0)
    return float(np.mean(outcomes)) if outcomes else None


def table_rows(table: pa.Table, columns: tuple[str, ...]) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
