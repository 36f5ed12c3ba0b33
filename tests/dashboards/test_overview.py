"""The price panel's min/max overview: for every range and bucket width, the same buckets,
extremes and times as a Polars group-by over every raw row; rebuilt when the file changes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.dashboards.overview import Overviews, levels_of
from qsframework.recording.files import FileInfo

COLUMNS = ["key", "bucket", "t_low", "low", "t_high", "high"]


def _write(path: Path, rows: list[tuple[int, str, float]]) -> FileInfo:
    """ROWS in time order as a part file with small row groups (so the ends read few of them)."""
    raw = pl.DataFrame(rows, schema={"ts_event": pl.Int64, "key": pl.String, "price": pl.Float64},
                       orient="row").sort("ts_event", maintain_order=True)
    raw.write_parquet(path, row_group_size=16)
    return FileInfo(path=path, kind="trade", rows=raw.height, ts_min=int(raw["ts_event"].min()),
                    ts_max=int(raw["ts_event"].max()))


def _exact(f: FileInfo, start: int, end: int, width: int) -> pl.DataFrame:
    """Every row's buckets in Polars: each one's lowest and highest price, the earliest time on ties."""
    rows = pl.read_parquet(f.path).filter(pl.col("ts_event").is_between(start, end) & pl.col("price").is_not_nan())
    return (rows.with_columns(((pl.col("ts_event") - start) // width).alias("bucket"))
            .group_by("key", "bucket").agg(
                pl.col("ts_event").sort_by("price", "ts_event").first().alias("t_low"), pl.col("price").min().alias("low"),
                pl.col("ts_event").sort_by(-pl.col("price"), "ts_event").first().alias("t_high"),
                pl.col("price").max().alias("high"))
            .sort("key", "bucket"))


#: prices from a few values, so ties (earliest time wins) are common; NaN never drawn
PRICE = st.one_of(st.sampled_from([1.0, 2.0, 2.5, 3.0]), st.just(float("nan")))


@settings(max_examples=40)
@given(rows=st.lists(st.tuples(st.integers(0, 5_000), st.sampled_from(["a", "b"]), PRICE), min_size=1, max_size=400),
       cut=st.tuples(st.floats(0, 1), st.floats(0, 1)), points=st.integers(2, 80),
       counts=st.lists(st.integers(2, 64), min_size=1, max_size=3))
def test_overview_equals_every_row(rows: list[tuple[int, str, float]], cut: tuple[float, float], points: int,
                                   counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = _write(Path(d) / "part.parquet", rows)
        lo, hi = f.ts_min, f.ts_max
        start, end = sorted(lo + int(c * (hi - lo)) for c in cut)
        width = max(1, -(-(end - start + 1) // (points // 2)))
        overviews = Overviews("price", cache=Path(d), counts=counts)
        got = overviews.minmax([f], start=start, end=end, width=width)
        assert got.select(COLUMNS).equals(_exact(f, start, end, width))
        assert got.equals(overviews.minmax([f], start=start, end=end, width=width))  # now from the cache
        levels = levels_of(lo, hi, counts)
        if (1 << min(levels)) <= width:  # a level served it: its overview was written
            assert any(Path(d).glob("*.parquet"))


def test_a_changed_file_gets_a_new_overview_a_damaged_one_is_passed_by(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    path = tmp_path / "part.parquet"
    rows = [(t, "ab"[t % 2], float(t % 17)) for t in range(0, 100_000, 7)]
    overviews = Overviews("price", cache=cache, counts=(64,))
    f = _write(path, rows)
    width = (f.ts_max - f.ts_min) // 10
    assert overviews.minmax([f], start=f.ts_min, end=f.ts_max, width=width).select(COLUMNS).equals(
        _exact(f, f.ts_min, f.ts_max, width))
    built = {p.name for p in cache.iterdir()}
    assert len(built) == 1 and pl.read_parquet(cache / built.pop()).height < len(rows)  # fewer rows than the file
    changed = [(t, k, -x) for t, k, x in rows]  # same times and size, other prices
    f = _write(path, changed)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert overviews.minmax([f], start=f.ts_min, end=f.ts_max, width=width).select(COLUMNS).equals(
        _exact(f, f.ts_min, f.ts_max, width))
    assert len(list(cache.iterdir())) == 2
    for made in cache.iterdir():  # a damaged overview is passed by (the rows are read), then rebuilt
        made.write_bytes(b"not parquet")
    for _ in range(2):
        assert overviews.minmax([f], start=f.ts_min, end=f.ts_max, width=width).select(COLUMNS).equals(
            _exact(f, f.ts_min, f.ts_max, width))
    assert sum(pq.ParquetFile(p).metadata.num_rows > 0 for p in cache.iterdir() if p.stat().st_size > 100) == 1
