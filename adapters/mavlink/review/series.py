"""Vectorised pieces the checks share: the stretches where a condition holds, the armed
state at each event, distances between fixes; all Polars expressions over a kind's frame."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True, slots=True)
class Interval:
    """Evidence: ``start``..``end`` (ns, event time) and what held there."""

    start: int
    end: int
    detail: str


def runs(frame: pl.DataFrame, cond: pl.Expr, *, value: pl.Expr | None = None,
         worst: str = "max") -> pl.DataFrame:
    """The stretches of consecutive rows of ``frame`` where ``cond`` is true (null = false):
    ``start`` (first row's ts_event), ``last`` (last row's), ``end`` (the next row's, or the
    last's), ``held`` = last - start (ns, as a detector's timer counts it), ``rows`` and the
    ``worst`` (max or min) of ``value``."""
    value = pl.lit(None, pl.Float64) if value is None else value.cast(pl.Float64)
    marked = frame.select(
        pl.col("ts_event").alias("ts"), cond.fill_null(False).alias("c"), value.alias("v"),
        pl.col("ts_event").shift(-1).alias("nxt"),
    ).with_columns(run=(pl.col("c") != pl.col("c").shift(1)).fill_null(True).cum_sum())
    agg = pl.col("v").max() if worst == "max" else pl.col("v").min()
    return (marked.filter(pl.col("c")).group_by("run", maintain_order=True)
            .agg(start=pl.col("ts").first(), last=pl.col("ts").last(),
                 end=pl.col("nxt").last().fill_null(pl.col("ts").last()), rows=pl.len(), worst=agg)
            .with_columns(held=pl.col("last") - pl.col("start")).drop("run"))


def intervals(stretches: pl.DataFrame, text: str, *, unit: str = "", digits: int = 2) -> list[Interval]:
    """Evidence from :func:`runs`' stretches, ``text`` followed by the worst value."""
    out = []
    for r in stretches.iter_rows(named=True):
        worst = "" if r["worst"] is None else f" ({r['worst']:.{digits}f}{unit})"
        out.append(Interval(int(r["start"]), int(r["end"]), f"{text}{worst}"))
    return out


def with_armed(frame: pl.DataFrame, heartbeat: pl.DataFrame | None) -> pl.DataFrame:
    """``frame`` with an ``armed`` column: the armed state of the latest heartbeat at or before
    each row (False before the first); every row counts as armed when there is no heartbeat."""
    if heartbeat is None or "armed" not in heartbeat.columns:
        return frame.with_columns(armed=pl.lit(True))
    states = (heartbeat.select("ts_event", pl.col("armed").fill_null(False))
              .unique("ts_event", keep="last", maintain_order=True).sort("ts_event"))
    joined = frame.sort("ts_event").join_asof(states, on="ts_event", strategy="backward")
    return joined.with_columns(pl.col("armed").fill_null(False))


def step_distance_m(lat: str = "lat", lon: str = "lon") -> pl.Expr:
    """Metres from the previous row's position to this row's (haversine), null on the first."""
    la1, lo1 = pl.col(lat).shift(1).radians(), pl.col(lon).shift(1).radians()
    la2, lo2 = pl.col(lat).radians(), pl.col(lon).radians()
    a = ((la2 - la1) / 2).sin() ** 2 + la1.cos() * la2.cos() * ((lo2 - lo1) / 2).sin() ** 2
    return 2 * EARTH_RADIUS_M * a.sqrt().arcsin()


def distance_from_m(lat0: float, lon0: float, lat: str = "lat", lon: str = "lon") -> pl.Expr:
    """Metres from (``lat0``, ``lon0``) to each row's position (haversine)."""
    import math

    la1, lo1 = math.radians(lat0), math.radians(lon0)
    la2, lo2 = pl.col(lat).radians(), pl.col(lon).radians()
    a = ((la2 - la1) / 2).sin() ** 2 + math.cos(la1) * la2.cos() * ((lo2 - lo1) / 2).sin() ** 2
    return 2 * EARTH_RADIUS_M * a.sqrt().arcsin()
