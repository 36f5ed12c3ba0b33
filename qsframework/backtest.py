"""Backtest: a recording through the engine into signals/alerts Parquet and a report.

A strategy that orders also gets orders/fills/equity Parquet, the execution settings and its
metrics in the report (files written only once it has ordered: one that never orders writes
exactly what it did before execution existed).

Rows of the recording that break a validity rule (``bounds``: the same floor and
max-future as ``qsf process``) are skipped, counted per reason in the report and written
with their reason to ``rejected.parquet``; exact duplicates are dropped and counted.
A small input whose batch path is not compiled yet runs per event while a background
process compiles it for the next run (:mod:`qsframework.warmup`).
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import warmup
from .durations import format_time
from .engine import Engine, Path as EnginePath
from .errors import UserError
from .execution.config import ExecutionConfig
from .execution.metrics import compute_metrics
from .outputs import OutputBuffer
from .params import describe_params
from .readahead import read_ahead
from .recording import Recording
from .recording.reader import Rejected
from .strategy import Strategy
from .validity import DEFAULT_BOUNDS, NS_PER_S, TimeBounds

#: rejected.parquet: one row per skipped input row, with its reason and the row as JSON
REJECTED_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("file", pa.string()),
    pa.field("ts_event", pa.int64()),
    pa.field("key", pa.string()),
    pa.field("seq", pa.int64()),
    pa.field("row", pa.string(), nullable=False),
])


def rejected_table(rejects: list[Rejected]) -> pa.Table:
    """Rejected rows of any kinds as one table of :data:`REJECTED_SCHEMA`."""
    rows = []
    for r in rejects:
        for row, reason, file in zip(r.rows.to_pylist(), r.reasons, r.files):
            rows.append({"kind": r.kind, "reason": reason, "file": file, "ts_event": row.get("ts_event"),
                         "key": row.get("key"), "seq": row.get("seq"),
                         "row": json.dumps(row, sort_keys=True)})
    return pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA)


class ParquetOutput:
    """Streams one output kind into ``OUT/<name>.parquet``, renamed into place on close."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.schema = schema
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


@dataclass(frozen=True, kw_only=True)
class BacktestResult:
    events_in: int
    signals: int
    alerts: int
    wall_s: float
    ts_first: int | None
    ts_last: int | None
    report: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_backtest(
    strategy_cls: type[Strategy],
    recording: Recording,
    *,
    out: Path | None = None,
    overrides: dict[str, Any] | None = None,
    start: int | None = None,
    end: int | None = None,
    batch_size: int = 65_536,
    path: EnginePath = "auto",
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    flush_rows: int = 100_000,
    spec: str | None = None,
    bounds: TimeBounds = DEFAULT_BOUNDS,
    execution: ExecutionConfig | None = None,
) -> BacktestResult:
    """Run ``strategy_cls`` over ``recording``; write outputs under ``out`` (or keep them in memory).

    ``on_total`` learns how many rows the run will read (the kinds, keys and time range the
    strategy reads), ``on_progress`` each batch's rows and last time."""
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if start is not None and end is not None and end <= start:
        raise UserError("--end must be after --start")
    execution = execution or ExecutionConfig()
    engine = Engine(strategy_cls, overrides=overrides, path=path, seed=seed, execution=execution)
    kinds = [k for k in engine.kinds if k in recording.kinds]
    if not kinds:
        raise UserError(
            f"recording {str(recording.root)!r} has no {'/'.join(engine.kinds)} events "
            f"(it has: {', '.join(recording.kinds) or 'nothing'})"
        )
    buffers: dict[str, OutputBuffer] = engine.ctx.outputs.buffers()
    trading = engine.ctx.outputs.execution()  # joins buffers at the first order
    writers: dict[str, ParquetOutput] = {}
    kept: dict[str, list[pa.Table]] = {name: [] for name in buffers | trading}
    rejects: list[Rejected] = []  # appended by the reading thread, taken by drain()
    reasons: Counter[str] = Counter()
    kept_rejects: list[pa.Table] = []
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {str(out)!r} exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create --out {str(out)!r}: {exc.strerror}") from None
        writers = {n: ParquetOutput(out / f"{n}.parquet", b.kind.schema) for n, b in buffers.items()}
        writers["rejected"] = ParquetOutput(out / "rejected.parquet", REJECTED_SCHEMA)

    def drain(force: bool = False) -> None:
        if engine.sim.trading and "orders" not in buffers:
            buffers.update(trading)
            if out is not None:
                writers.update({n: ParquetOutput(out / f"{n}.parquet", b.kind.schema)
                                for n, b in trading.items()})
        while rejects:
            r = rejects.pop(0)
            reasons.update(r.reasons)
            table = rejected_table([r])
            if "rejected" in writers:
                writers["rejected"].write(table)
            else:
                kept_rejects.append(table)
        for name, buf in buffers.items():
            if len(buf) and (force or len(buf) >= flush_rows):
                table = buf.drain()
                if name in writers:
                    writers[name].write(table)
                else:
                    kept[name].append(table)

    counted = on_total is not None or path == "auto"
    total = recording.count(kinds, start=start, end=end, keys=engine.keys) if counted else None
    if on_total is not None and total is not None:
        on_total(total)
    if on_phase is not None:
        on_phase("prepare")
    # e.g. compiling kernels on first use (not in wall_s); a small input on a cold batch
    # path runs per event while a background process compiles it for the next run
    prepare_s = engine.prepare(rows=total)
    warm_up = warmup.start(spec or _spec_of(strategy_cls), overrides or {}) if engine.cold else None
    prepare_s += recording.prepare()
    if on_phase is not None:
        on_phase("run")
    first = last = None
    engine.on_outputs = drain  # a long timer catch-up writes its outputs out as it goes
    t0 = time.perf_counter()
    try:
        stream = recording.windows(
            kinds, start=start, end=end, keys=engine.keys, batch_size=batch_size,
            columns={k: engine.columns(k) for k in kinds}, bounds=bounds, on_reject=rejects.append,
        )
        for window in read_ahead(stream):
            engine.process_window(window, filtered=True)
            if first is None:
                first = window.first_ts()
            last = window.last_ts()
            drain()
            if on_progress is not None:
                on_progress(window.num_rows, last)
        engine.finish()
        drain(force=True)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()
    wall = time.perf_counter() - t0
    counts = {n: b.count for n, b in buffers.items()}
    tables = {
        n: pa.concat_tables(kept[n]) if kept[n] else buffers[n].kind.schema.empty_table()
        for n in buffers
        if out is None
    }
    rejected = sum(reasons.values())
    warnings = _warnings(engine, recording, kinds, start=start, end=end, rejected=reasons,
                         out=out)
    report = {
        "strategy": spec or f"{strategy_cls.__module__}:{strategy_cls.__qualname__}",
        "strategy_name": strategy_cls.name,
        "params": describe_params(engine.params),
        "recording": str(recording.root),
        "path": "batch" if engine.uses_batch_path else "event",
        "warm_up": str(warm_up) if warm_up is not None else None,
        "batch_size": batch_size,
        "events_in": engine.events_in,
        "rejected": {"total": rejected, "reasons": dict(reasons.most_common())},
        "duplicates": engine.duplicates,
        "bounds": {"max_future_s": bounds.max_future_ns / NS_PER_S,
                   "floor": format_time(bounds.floor_ns)},
        "outputs": counts,
        "wall_s": round(wall, 6),
        "prepare_s": round(prepare_s, 6),
        "events_per_s": round(engine.events_in / wall, 1) if wall > 0 else None,
        "span": {
            "first_ns": first,
            "last_ns": last,
            "first": format_time(first) if first is not None else None,
            "last": format_time(last) if last is not None else None,
            "seconds": (last - first) / 1e9 if first is not None else 0.0,
        },
        "warnings": warnings,
    }
    if engine.sim.trading:
        report["execution"] = execution.describe()
        if out is not None:
            equity, fills = pq.read_table(out / "equity.parquet"), pq.read_table(out / "fills.parquet")
        else:
            equity, fills = tables["equity"], tables["fills"]
        report["metrics"] = compute_metrics(equity, fills, cash=execution.cash,
                                            mark_every_ns=execution.mark_every_ns)
    if out is not None:
        tmp = out / ".report.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out / "report.json")
    if out is None:
        tables["rejected"] = pa.concat_tables(kept_rejects) if kept_rejects else REJECTED_SCHEMA.empty_table()
    return BacktestResult(
        events_in=engine.events_in,
        signals=counts["signals"],
        alerts=counts["alerts"],
        wall_s=wall,
        ts_first=first,
        ts_last=last,
        report=report,
        tables=tables,
        warnings=warnings,
    )


def _spec_of(cls: type[Strategy]) -> str:
    """``file.py:Class`` for a strategy class, loadable in another process."""
    return f"{inspect.getfile(cls)}:{cls.__qualname__}"


def _warnings(engine: Engine, recording: Recording, kinds: list[str], *, start: int | None,
              end: int | None, rejected: Counter[str], out: Path | None) -> list[str]:
    """What a user should know about the input: rows skipped, duplicates, nothing matched."""
    notes = []
    total = sum(rejected.values())
    if total:
        top = "; ".join(f"{n:,} {reason}" for reason, n in rejected.most_common(3))
        more = f"; {len(rejected) - 3} more reasons" if len(rejected) > 3 else ""
        where = f" (listed in {out / 'rejected.parquet'})" if out is not None else ""
        notes.append(f"{total:,} events rejected and skipped: {top}{more}{where}")
    if engine.duplicates:
        notes.append(f"{engine.duplicates:,} exact duplicate events dropped")
    files = [f for kind in kinds for f in recording.files(kind)]
    have = None if any(f.keys is None for f in files) else {k for f in files for k in f.keys or ()}
    missing = sorted(set(engine.keys or ()) - have) if have is not None else []
    if missing:
        notes.append(f"the recording has no events of {', '.join(missing)} "
                     f"(it has {', '.join(sorted(have or ())) or 'none'})")
    if engine.events_in == 0 and not total:
        span = recording.span()
        if span is not None and ((start is not None and start > span[1]) or (end is not None and end <= span[0])):
            why = f"the recording spans {format_time(span[0])} .. {format_time(span[1])}"
        elif missing:
            why = "none of the strategy's keys are in the recording"
        else:
            why = "no event of the recording passed the time and key filters"
        notes.append(f"no events matched: {why}")
    return notes
