"""A review's results: one :class:`Check` per test, ``review.json`` (schema in the README)
and the table printed to the terminal."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from qsframework.durations import format_time
from qsframework.errors import UserError

from .series import Interval

Status = Literal["pass", "warn", "fail", "na"]
SCHEMA_VERSION = 1
MAX_EVIDENCE = 20
"""Evidence intervals kept per check (the first ones; ``evidence_total`` counts them all)."""
RANK: dict[str, int] = {"na": 0, "pass": 1, "warn": 2, "fail": 3}


@dataclass(frozen=True, slots=True)
class Check:
    """One test's verdict: ``status``, a one-line ``summary``, the measured ``value`` (in
    ``unit``), the thresholds it was judged by and the event-time intervals that show it.
    ``alerts`` names the UavAnomaly alerts that belong to it."""

    name: str
    title: str
    status: Status
    summary: str
    value: float | None = None
    unit: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    evidence: tuple[Interval, ...] = ()
    alerts: tuple[str, ...] = ()


def na(name: str, title: str, why: str, *, alerts: tuple[str, ...] = ()) -> Check:
    """The check cannot run: ``why`` says which data the log lacks."""
    return Check(name, title, "na", why, alerts=alerts)


def worst(*statuses: Status) -> Status:
    return max(statuses, key=RANK.__getitem__)


def _when(ts: int, t0: int) -> dict[str, Any]:
    return {"t_s": round((ts - t0) / 1e9, 3), "time": format_time(ts)}


def document(flight: Any, checks: list[Check]) -> dict[str, Any]:
    """``review.json``'s content."""
    t0 = flight.t0
    alerts = flight.alerts
    rows = []
    for c in checks:
        mine = alerts.filter(pl.col("name").is_in(list(c.alerts))) if c.alerts else alerts.clear()
        counts = dict(sorted(mine.group_by("name").len().iter_rows())) if mine.height else {}
        rows.append({
            "name": c.name, "title": c.title, "status": c.status, "summary": c.summary,
            "value": c.value, "unit": c.unit, "thresholds": c.thresholds,
            "evidence": [{"start": _when(e.start, t0), "end": _when(e.end, t0), "detail": e.detail}
                         for e in c.evidence[:MAX_EVIDENCE]],
            "evidence_total": len(c.evidence), "alerts": counts,
        })
    statuses = [c.status for c in checks]
    return {
        "schema": SCHEMA_VERSION,
        "log": {"path": str(flight.path), "format": flight.format, "onboard": flight.onboard,
                "boot_clock": flight.boot_clock, "start": format_time(flight.t0),
                "end": format_time(flight.t1), "duration_s": round((flight.t1 - flight.t0) / 1e9, 3),
                "events": {k: f.height for k, f in sorted(flight.frames.items())}},
        "verdict": worst(*statuses) if any(s != "na" for s in statuses) else "na",
        "counts": {s: statuses.count(s) for s in ("pass", "warn", "fail", "na")},
        "parameters": dict(flight.overrides),
        "tests": rows,
        "alerts": [{**_when(r["ts_event"], t0), "name": r["name"], "severity": r["severity"], "text": r["text"]}
                   for r in alerts.iter_rows(named=True)],
    }


def write_review(out: Path, doc: dict[str, Any]) -> Path:
    """Write ``out/review.json`` atomically (``out`` is created)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "review.json"
        tmp = out / "review.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {out}/review.json: {exc.strerror or exc}") from None
    return path


_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "na": "dim"}


def print_table(doc: dict[str, Any], *, console: Any = None) -> None:
    """The review as a rich table: status, test, summary, first evidence time."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    log = doc["log"]
    since = "boot (the log has no GPS time)" if log.get("boot_clock") else log["start"]
    table = Table(title=f"{log['path']} ({log['format']}, {log['duration_s']:.0f} s from {since})",
                  title_justify="left")
    for col in ("status", "test", "summary", "at (s)"):
        table.add_column(col, no_wrap=col != "summary")
    for t in doc["tests"]:
        at = ", ".join(f"{e['start']['t_s']:.1f}" for e in t["evidence"][:3])
        if t["evidence_total"] > 3:
            at += f" (+{t['evidence_total'] - 3})"
        table.add_row(f"[{_STYLE[t['status']]}]{t['status'].upper()}[/]", t["title"], t["summary"], at)
    console.print(table)
    counts = doc["counts"]
    console.print(f"verdict: [{_STYLE[doc['verdict']]}]{doc['verdict'].upper()}[/] ({counts['pass']} pass, "
                  f"{counts['warn']} warn, {counts['fail']} fail, {counts['na']} n/a); "
                  f"{len(doc['alerts'])} UavAnomaly alerts")
