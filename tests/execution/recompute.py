"""The simulator's results recomputed from a recording alone, with DuckDB and numpy, by the
issue's rules (never calling qsframework's simulator, portfolio or metrics).

Trades are numbered ``pos`` in the engine's total order. An order submitted at event time
``t`` right after the trade numbered ``after`` (or, placed by a timer at ``t``, after every
trade at or before ``t``) can fill on a trade with ``pos > after`` and ``ts_event >= t +
latency``; a cancel placed by a timer at ``c`` stops fills on trades with ``ts_event >= c +
latency`` that come after it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from math import isclose, sqrt
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qsframework.cli import main
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


ORDERS = pa.schema({"id": pa.int64(), "key": pa.string(), "qty": pa.float64(), "side": pa.float64(),
                    "lim": pa.float64(), "first": pa.int64(), "cut": pa.int64()})


class Order(NamedTuple):
    """An order as the strategy placed it (``after`` None: by a timer at ``t``)."""

    id: int
    key: str
    t: int
    qty: float
    limit: float | None = None
    cancel_at: int | None = None
    after: int | None = None


FILL_COLUMNS = ("ts_event", "key", "order_id", "qty", "price", "fee", "liquidity")
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


def _reach(con: duckdb.DuckDBPyConnection, orders: list[Order], cfg: Exec) -> pa.Table:
    """Per order the first trade ``pos`` that may fill it and the first its cancel stops."""
    ts = np.array(con.execute("SELECT ts_event FROM trades ORDER BY pos").fetchall()).ravel()

    def first(after: int, t: int) -> int:  # after `after`, at or after t + latency
        return max(after + 1, int(np.searchsorted(ts, t + cfg.latency_ns, side="left")) + 1)

    def placed(o_after: int | None, t: int) -> int:  # a timer at t follows the trades <= t
        return int(np.searchsorted(ts, t, side="right")) if o_after is None else o_after

    return pa.Table.from_pylist([
        {"id": o.id, "key": o.key, "qty": o.qty, "side": 1.0 if o.qty > 0 else -1.0,
         "lim": o.limit, "first": first(placed(o.after, o.t), o.t),
         "cut": NEVER if o.cancel_at is None else first(placed(None, o.cancel_at), o.cancel_at)}
        for o in orders], schema=ORDERS)


def fills(con: duckdb.DuckDBPyConnection, orders: list[Order], cfg: Exec) -> list[Fill]:
    """Every fill of ``orders``, in the order they happen (trade, then order id)."""
    reach = _reach(con, orders, cfg)
    con.register("orders", reach)
    if cfg.max_participation is None:
        market = con.execute(
            "SELECT f.pos, f.ts_event, o.key, o.id, o.qty,"
            "  f.price * (1 + o.side * $slip / CAST(10000 AS DOUBLE)) AS price"
            " FROM orders o ASOF JOIN trades f ON o.key = f.key AND f.pos >= o.first"
            " WHERE o.lim IS NULL", {"slip": cfg.slippage_bps}).fetchall()
    else:
        if any(o.limit is not None for o in orders):
            raise ValueError("the participation recomputation covers market orders")
        market = _participating(con, reach, cfg)
    limit = con.execute(
        "SELECT t.pos, t.ts_event, o.key, o.id, o.qty, o.lim FROM orders o JOIN trades t"
        " ON t.key = o.key AND t.pos >= o.first AND t.pos < o.cut"
        " AND CASE WHEN o.qty > 0 THEN t.price < o.lim ELSE t.price > o.lim END"
        " WHERE o.lim IS NOT NULL"
        " QUALIFY row_number() OVER (PARTITION BY o.id ORDER BY t.pos) = 1").fetchall()
    out = []
    for rows, liquidity, bps in ((market, "taker", cfg.taker_fee_bps),
                                 (limit, "maker", cfg.maker_fee_bps)):
        out += [(pos, oid, (ts, key, oid, q, p, abs(q) * p * bps / 10_000, liquidity))
                for pos, ts, key, oid, q, p in rows]
    return [fill for *_, fill in sorted(out)]


def cancelled(con: duckdb.DuckDBPyConnection, orders: list[Order], done: list[Fill],
              cfg: Exec) -> set[tuple[int, int]]:
    """(order id, cancel time + latency) of the orders whose cancel took effect: not filled
    before it, and a trade came at or after the cancel's reach."""
    last = con.execute("SELECT max(pos) FROM trades").fetchall()[0][0]
    filled = {f[2] for f in done}
    reach = _reach(con, orders, cfg).column("cut").to_pylist()
    return {(o.id, o.cancel_at + cfg.latency_ns) for o, cut in zip(orders, reach, strict=True)
            if o.cancel_at is not None and o.id not in filled and cut <= last}


def _participating(con: duckdb.DuckDBPyConnection, reach: pa.Table, cfg: Exec) -> list[tuple]:
    """Market orders filling at most F x each trade's quantity, the orders of a key sharing
    a trade in id order: per key, the quantity filled by trade i is F_i = min(F_(i-1) + cap_i,
    A_i) (A_i: the demand of the orders active at trade i), which is C_i + min(0, running min
    of A - C) with C the cumulated capacity; order j holds [D_(j-1), D_j) of the cumulated
    demand D and trade i fills [F_(i-1), F_i) of it."""
    f = cfg.max_participation
    rows = []
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in reach.to_pylist():
        by_key[o["key"]].append(o)
    for key, mine in by_key.items():
        found = con.execute(
            "SELECT pos, ts_event, price, qty FROM trades WHERE key = ? ORDER BY pos", [key]
        ).fetchall()
        if not found:  # no trade of the key at all: its orders never fill
            continue
        pos, ts, price, qty = (np.array(c) for c in zip(*found, strict=True))
        demand = np.cumsum([abs(o["qty"]) for o in mine])
        n_active = np.searchsorted([o["first"] for o in mine], pos, side="right")
        a = np.where(n_active > 0, demand[np.maximum(n_active - 1, 0)], 0.0)
        c = np.cumsum(f * np.abs(qty))
        filled = c + np.minimum(0.0, np.minimum.accumulate(a - c))
        before = np.concatenate(([0.0], filled[:-1]))
        lo_d = np.concatenate(([0.0], demand[:-1]))
        for i in np.flatnonzero(filled > before).tolist():
            for j, o in enumerate(mine):
                take = min(filled[i], demand[j]) - max(before[i], lo_d[j])
                if take > 0:
                    rows.append((int(pos[i]), int(ts[i]), key, o["id"], o["side"] * float(take),
                                 float(price[i]) * (1 + o["side"] * cfg.slippage_bps / 10_000)))
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


def backtest(spec: str, recording: Path, out: Path, params: dict[str, str], cfg: Exec, *,
             extra: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """``qsf backtest`` in this process (``extra``: more options); its fills, orders, equity
    (None when not written) and report."""
    args = ["backtest", spec, "--recording", str(recording), "--out", str(out), *options(cfg),
            *extra]
    for name, value in params.items():
        args += ["-p", f"{name}={value}"]
    main.main(args, standalone_mode=False)
    files = {name: pq.read_table(path) if (path := out / f"{name}.parquet").exists() else None
             for name in ("fills", "orders", "equity")}  # None: not written (nothing ordered)
    return {**files, "report": json.loads((out / "report.json").read_text())}


def check(got: dict[str, Any], con, orders: list[Order], cfg: Exec) -> list[Fill]:
    """Every fill, order status, equity sample and metric as recomputed."""
    want = fills(con, orders, cfg)
    assert table_rows(got["fills"], FILL_COLUMNS) == want
    # orders: accepted as placed; filled when complete; cancelled when the cancel came first
    rows = got["orders"]
    accepted = [r for r in table_rows(rows, ("ts_event", "key", "order_id", "qty", "price", "status"))
                if r[5] == "accepted"]
    assert accepted == [(o.t, o.key, o.id, o.qty, o.limit, "accepted") for o in orders]
    filled = {}
    for _, _, oid, q, _, _, _ in want:
        filled[oid] = filled.get(oid, 0.0) + q
    statuses = table_rows(rows, ("order_id", "status", "filled", "ts_event"))
    assert {(i, f) for i, s, f, _ in statuses if s == "filled"} == {
        (o.id, o.qty) for o in orders if filled.get(o.id) == o.qty}
    assert {(i, t) for i, s, _, t in statuses if s == "cancelled"} == cancelled(con, orders, want, cfg)
    # equity samples
    samples = equity(con, want, cfg)
    eq = got["equity"]
    assert eq.column("ts_event").to_pylist() == [s["ts_event"] for s in samples]
    assert eq.column("cash").to_pylist() == [s["cash"] for s in samples]
    assert [dict(p) for p in eq.column("positions").to_pylist()] == [s["positions"] for s in samples]
    for value, s in zip(eq.column("equity").to_pylist(), samples, strict=True):
        assert isclose(value, s["equity"], rel_tol=1e-12, abs_tol=1e-9)
    # metrics
    expected = metrics(samples, want, cfg)
    reported = got["report"]["metrics"]
    assert list(reported) == list(expected)
    for name, value in expected.items():
        if value is None or isinstance(value, int):
            assert reported[name] == value, name
        else:
            assert isclose(reported[name], value, rel_tol=1e-12, abs_tol=1e-9), name
    return want


def table_rows(table: pa.Table, columns: tuple[str, ...]) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
