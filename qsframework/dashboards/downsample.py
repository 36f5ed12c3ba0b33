"""Downsampling in DuckDB: fixed time buckets, each keeping its lowest and highest point (at their
own times), so a chart of millions of rows gets at most ``points`` rows per series and still shows
every spike."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import duckdb
import polars as pl

#: the most points one series sends to the browser
POINTS = 4000


def bucket_width(start: int, end: int, points: int = POINTS) -> int:
    """Nanoseconds per bucket so that ``[start, end]`` holds at most ``points // 2`` buckets
    (each bucket yields two points: its min and its max)."""
    buckets = max(1, points // 2)
    return max(1, math.ceil((end - start + 1) / buckets))


def downsample(con: duckdb.DuckDBPyConnection, source: str, value: str, *, start: int, end: int,
               points: int = POINTS, keys: Sequence[str] | None = None,
               params: Mapping[str, object] | None = None) -> pl.DataFrame:
    """Bucketed min/max of VALUE (an SQL expression) per ``key`` over SOURCE (SQL of a relation
    with ``ts_event`` and ``key``, its ``$name`` parameters in PARAMS) in ``[start, end]``: one row per (key, bucket) with ``bucket`` (its
    index), ``t_low``/``low`` and ``t_high``/``high`` (the extremes and their times, the earliest
    on ties) and ``n``; sorted by key and bucket."""
    width = bucket_width(start, end, points)
    sql = f"""
        WITH v AS (
            SELECT key, ts_event AS t, ({value})::DOUBLE AS x FROM {source}
            WHERE ts_event BETWEEN $start AND $end AND ($keys IS NULL OR list_contains($keys, key))
        )
        SELECT key, (t - $start) // $width AS bucket,
               arg_min(t, (x, t)) AS t_low, min(x) AS low,
               arg_max(t, (x, -t)) AS t_high, max(x) AS high, count(*) AS n
        FROM v WHERE x IS NOT NULL AND NOT isnan(x)
        GROUP BY ALL ORDER BY key, bucket
    """
    named = {"start": start, "end": end, "width": width, "keys": list(keys) if keys is not None else None}
    named.update(params or {})
    return pl.from_arrow(con.sql(sql, params=named).to_arrow_table())  # type: ignore[return-value]


def points_of(buckets: pl.DataFrame, *, name: str = "value") -> pl.DataFrame:
    """The chart's rows of a bucketed frame: each bucket's low and high as ``key, time, NAME``
    (one row when both are the same point; two trades may share a time), in time order, with ``time`` as a UTC datetime."""
    low = buckets.select("key", pl.col("t_low").alias("t"), pl.col("low").alias(name))
    high = buckets.select("key", pl.col("t_high").alias("t"), pl.col("high").alias(name))
    both = pl.concat([low, high]).unique(subset=["key", "t", name], keep="first", maintain_order=True).sort("key", "t")
    return both.with_columns(pl.from_epoch("t", time_unit="ns").dt.replace_time_zone("UTC").alias("time"))
