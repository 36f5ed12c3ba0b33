"""``OUT/report.json`` of a paper-trading ``qsf process --out`` run: the execution settings and
the metrics of :func:`~qsframework.execution.metrics.compute_metrics` over every published
``equity`` and ``fills`` part (earlier runs of the same ``--out`` and ``--state`` included), so
they equal ``qsf backtest``'s on a recording of the same input."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..events import EQUITY, FILL, EventKind
from ..execution.config import ExecutionConfig
from ..execution.metrics import Metrics, compute_metrics
from .config import ProcessStats


def published(directory: Path, kind: EventKind) -> pa.Table:
    """The published parts of an ``--out`` directory as one table, in part order (the order the
    rows were emitted in, across restarts too); empty when there are none."""
    parts = sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []
    if not parts:
        return kind.schema.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=kind.schema) for p in parts])


def write_report(out: Path, *, strategy: str, execution: ExecutionConfig, stats: ProcessStats) -> Metrics | None:
    """Write ``out/report.json`` once the strategy has ordered (its equity parts exist) and
    return its metrics; a strategy that never ordered gets no report (None)."""
    equity = published(out / "equity.parquet", EQUITY)
    if equity.num_rows == 0:
        return None
    fills = published(out / "fills.parquet", FILL)
    metrics = compute_metrics(equity, fills, cash=execution.cash, mark_every_ns=execution.mark_every_ns)
    run = {k: v for k, v in asdict(stats).items()
           if k not in ("metrics", "first_processed_at", "last_processed_at")}
    report = {"strategy": strategy, "execution": execution.describe(), "metrics": metrics, "run": run}
    tmp = out / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / "report.json")
    return metrics
