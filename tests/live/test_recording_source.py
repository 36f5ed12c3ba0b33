"""The recording as a Source (what ``qsf ingest replay`` publishes): every event of the asked
kinds, keys and times, in the total order DuckDB gives over the same Parquet files, in
batches of at most ``batch_size``; paced by event time with ``speed``, no event early."""

from __future__ import annotations

import asyncio
import time

import duckdb
import pyarrow as pa
import pytest

from qsframework.events import GAP
from qsframework.recording import RecordingSource, RecordingWriter

from ..conftest import T0, make_trades

MS = 1_000_000


def _gaps(ts_ms: list[int], keys: list[str]) -> pa.Table:
    n = len(ts_ms)
    ts = [T0 + t * MS for t in ts_ms]
    return pa.table({"ts_event": ts, "ts_recv": ts, "source": ["binance"] * n, "key": keys,
                     "seq": list(range(n)), "first_id": [10 * i + 1 for i in range(n)],
                     "last_id": [10 * i + 5 for i in range(n)], "filled": [0] * n}, schema=GAP.schema)


@pytest.fixture
def rec(tmp_path):
    """Trades written in two runs (two files per day) and gaps that tie with some trades."""
    trades = make_trades(11, 800, gaps_ms=(0, 1, 5, 40))
    ts = ((trades.column("ts_event").to_numpy() - T0) // MS).tolist()
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades.slice(0, 500))
        w.write("gap", _gaps(ts[::37], ["BTCUSDT", "ETHUSDT"] * (len(ts[::37]) // 2) + ["BTCUSDT"] * (len(ts[::37]) % 2)))
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades.slice(500))
    return tmp_path / "rec"


def _expected(rec, *, kinds=("gap", "trade"), keys=None, start=None, end=None) -> list[tuple]:
    """(kind, ts_event, source, key, seq) in total order, computed by DuckDB from the files."""
    parts = [f"SELECT '{k}' AS kind, ts_event, source, key, seq FROM read_parquet('{rec}/kind={k}/*/*.parquet')"
             for k in kinds]
    where = ["TRUE"]
    if keys is not None:
        where.append("key IN (" + ", ".join(f"'{k}'" for k in keys) + ")")
    if start is not None:
        where.append(f"ts_event >= {start}")
    if end is not None:
        where.append(f"ts_event < {end}")
    sql = (f"SELECT * FROM ({' UNION ALL '.join(parts)}) WHERE {' AND '.join(where)} "
           "ORDER BY ts_event, source, key, kind, seq")
    return [tuple(r) for r in duckdb.sql(sql).fetchall()]


def _rows(batches) -> list[tuple]:
    out = []
    for kind, table in batches:
        cols = [table.column(c).to_pylist() for c in ("ts_event", "source", "key", "seq")]
        out.extend((kind, *r) for r in zip(*cols))
    return out


def test_every_event_in_total_order_in_bounded_batches(rec):
    batches = list(RecordingSource(rec, batch_size=7))
    assert all(isinstance(t, pa.Table) and 0 < t.num_rows <= 7 for _, t in batches)
    assert _rows(batches) == _expected(rec)


def test_kinds_keys_start_and_end_select_like_the_query(rec):
    span = _expected(rec)
    start, end = span[100][1], span[600][1]
    got = _rows(RecordingSource(rec, kinds=["trade"], keys=["ETHUSDT"], start=start, end=end))
    want = _expected(rec, kinds=("trade",), keys=["ETHUSDT"], start=start, end=end)
    assert want and got == want


def test_paced_by_event_time_no_event_before_it_is_due(tmp_path):
    trades = make_trades(6, 40, gaps_ms=(25,))  # ~1 s of event time
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    speed = 4.0

    async def arrivals() -> list[tuple[float, pa.Table]]:
        t0 = time.monotonic()  # before the source's own start: arrivals are measured late, never early
        return [(time.monotonic() - t0, table) async for _, table in RecordingSource(tmp_path / "rec", speed=speed).batches()]

    got = asyncio.run(arrivals())
    first = trades.column("ts_event")[0].as_py()
    for at, table in got:  # a batch holds only events due when it left (within a millisecond)
        due = (max(table.column("ts_event").to_pylist()) - first) / 1e9 / speed
        assert at >= due - 0.001
    assert pa.concat_tables([t for _, t in got]).equals(trades)
    assert len(got) > 1  # paced in several batches, not all at once


def test_stop_ends_the_batches(rec):
    async def first_batches() -> int:
        source = RecordingSource(rec, batch_size=10)
        n = 0
        async for _ in source.batches():
            n += 1
            source.stop()
        return n

    assert asyncio.run(first_batches()) == 1


def test_a_speed_that_is_not_positive_is_refused(rec):
    with pytest.raises(ValueError, match="speed must be positive"):
        RecordingSource(rec, speed=0)


def test_stop_ends_a_paced_wait_at_once(tmp_path):
    trades = make_trades(7, 2, gaps_ms=(3_600_000,))  # the second event an hour after the first
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)

    async def first_then_stop() -> int:
        source = RecordingSource(tmp_path / "rec", speed=1.0)
        got = 0
        async for _, table in source.batches():
            got += table.num_rows
            # a stop a little later than this batch lands in the wait for the next (sooner, it
            # ends the batches before the wait: the same outcome, never a failure)
            asyncio.get_running_loop().call_later(0.2, source.stop)
        return got

    # the bound is a safety net: without the stop, the wait is an hour
    assert asyncio.run(asyncio.wait_for(first_then_stop(), 120)) == 1
