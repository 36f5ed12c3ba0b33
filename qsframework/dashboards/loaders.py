"""Loaders for the backtest and sweep dashboards, usable from any notebook (marimo or Jupyter):
``load_backtest(dir)`` reads a ``qsf backtest --out`` directory, ``load_prices``/``load_series``
return DuckDB-downsampled series, ``load_sweep(dir)`` reads a sweep's table."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from ..errors import UserError
from ..recording import Recording
from .downsample import POINTS, bucket_width, downsample, points_of
from .overview import Overviews

#: the tables a backtest directory may hold (each optional but report.json)
TABLES = ("signals", "alerts", "fills", "orders", "equity")


@dataclass(frozen=True, kw_only=True)
class Backtest:
    """One backtest's outputs: its report, tables (empty when absent) and recording."""

    dir: Path
    report: dict[str, Any]
    recording: Path | None
    tables: Mapping[str, pl.DataFrame]

    @property
    def metrics(self) -> pl.DataFrame:
        """report.json's ``metrics`` as rows ``metric, value`` in the report's order."""
        m = self.report.get("metrics") or {}
        return pl.DataFrame({"metric": list(m), "value": [None if v is None else float(v) for v in m.values()]},
                            schema={"metric": pl.String, "value": pl.Float64})

    @property
    def span(self) -> tuple[int, int]:
        """First and last event time (ns) of the run."""
        s = self.report.get("span") or {}
        first, last = s.get("first_ns"), s.get("last_ns")
        if first is None or last is None:
            raise UserError(f"{self.dir}/report.json has no span (the backtest saw no events)")
        return int(first), int(last)

    def keys(self) -> list[str]:
        """The recording's trade keys (symbols), else those of the fills and signals."""
        if self.recording is not None:
            rec = Recording(self.recording)
            found = {k for f in rec.files("trade") for k in (f.keys or ())}
            if found or not rec.files("trade"):
                return sorted(found)
            rows = _con().sql("SELECT DISTINCT key FROM read_parquet($files)",
                              params={"files": [str(f.path) for f in rec.files("trade")]}).fetchall()
            return sorted(str(r[0]) for r in rows)
        return sorted({k for t in ("fills", "orders") for k in self.tables[t]["key"]} if self.tables else set())


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("SET threads=2")
    return con


def _read_report(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path.parent}: no report.json (not a qsf backtest --out directory)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a report (a JSON object is expected)")
    return doc


def _recording_of(out: Path, report: Mapping[str, Any], recording: str | Path | None) -> Path | None:
    """The recording: the one given, else report.json's (relative to the cwd, then to DIR)."""
    if recording is not None:
        path = Path(recording)
        if not path.is_dir():
            raise UserError(f"recording {recording}: not a directory")
        return path
    named = report.get("recording")
    if not isinstance(named, str):
        return None
    for candidate in (Path(named), out / named, out.parent / named):
        if candidate.is_dir():
            return candidate
    return None


def load_backtest(dir: str | Path, recording: str | Path | None = None) -> Backtest:
    """A ``qsf backtest --out DIR`` (or ``qsf process --out``) directory, read whole but for the
    recording (read downsampled through :func:`load_prices`)."""
    out = Path(dir)
    if not out.is_dir():
        raise UserError(f"backtest dir {dir}: not a directory")
    report = _read_report(out / "report.json")
    tables: dict[str, pl.DataFrame] = {}
    for name in TABLES:
        path = out / f"{name}.parquet"
        try:
            tables[name] = pl.read_parquet(path) if path.is_file() else pl.DataFrame()
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise UserError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None
    return Backtest(dir=out, report=report, recording=_recording_of(out, report, recording), tables=tables)


def load_prices(recording: str | Path, *, keys: Sequence[str] | None = None, start: int | None = None,
                end: int | None = None, points: int = POINTS, kind: str = "trade") -> pl.DataFrame:
    """The recording's prices in ``[start, end]`` (ns, default: all), downsampled to at most
    POINTS rows per key: columns ``key, t, price, time`` (each bucket's low and high). Read from
    the files' min/max overviews (:mod:`.overview`, built on first use) and raw rows at the ends."""
    rec = Recording(recording)
    files = rec.files(kind)
    span = rec.span()
    if not files or span is None:
        return points_of(_empty_buckets(), name="price")
    lo, hi = start if start is not None else span[0], end if end is not None else span[1]
    buckets = Overviews("price").minmax(files, start=lo, end=hi, width=bucket_width(lo, hi, points), keys=keys)
    return points_of(buckets, name="price")


def _series(source: str, value: str, params: Mapping[str, object], *, start: int | None, end: int | None,
            points: int, name: str) -> pl.DataFrame:
    """Downsampled VALUE of SOURCE over ``[start, end]``, the whole of it by default."""
    con = _con()
    lo_hi = con.sql(f"SELECT min(ts_event), max(ts_event) FROM {source}", params=dict(params)).fetchall()[0]
    if lo_hi[0] is None:
        return points_of(_empty_buckets(), name=name)
    lo, hi = start if start is not None else int(lo_hi[0]), end if end is not None else int(lo_hi[1])
    return points_of(downsample(con, source, value, start=lo, end=hi, points=points, params=params), name=name)


def load_series(path: str | Path, value: str, *, where: str = "TRUE", start: int | None = None,
                end: int | None = None, points: int = POINTS) -> pl.DataFrame:
    """A downsampled series of one output table (e.g. ``equity.parquet``, ``value`` or
    ``equity``): VALUE and WHERE are SQL over its columns; columns ``key, t, value, time``."""
    source = f"(SELECT * FROM read_parquet($path) WHERE {where})"
    return _series(source, value, {"path": str(path)}, start=start, end=end, points=points, name="value")


def load_drawdown(path: str | Path, *, start: int | None = None, end: int | None = None,
                  points: int = POINTS) -> pl.DataFrame:
    """Drawdown of ``equity.parquet`` (``equity / running max - 1``, <= 0) downsampled."""
    source = ("(SELECT ts_event, key, equity / max(equity) OVER (PARTITION BY key ORDER BY ts_event "
              "ROWS UNBOUNDED PRECEDING) - 1 AS dd FROM read_parquet($path))")
    return _series(source, "dd", {"path": str(path)}, start=start, end=end, points=points, name="drawdown")


def _empty_buckets() -> pl.DataFrame:
    return pl.DataFrame(schema={"key": pl.String, "bucket": pl.Int64, "t_low": pl.Int64, "low": pl.Float64,
                                "t_high": pl.Int64, "high": pl.Float64, "n": pl.Int64})


def dashboard_inputs(cli_args: Mapping[str, Any]) -> dict[str, str | None]:
    """A notebook's inputs: ``-- --dir D --recording R`` (marimo's cli_args), else the
    environment (QSF_DASHBOARD_DIR, QSF_DASHBOARD_RECORDING)."""
    def pick(name: str, env: str) -> str | None:
        value = cli_args.get(name)
        if isinstance(value, list):
            value = value[-1] if value else None
        return str(value) if value not in (None, "") else (os.environ.get(env) or None)

    return {"dir": pick("dir", "QSF_DASHBOARD_DIR"), "recording": pick("recording", "QSF_DASHBOARD_RECORDING")}
