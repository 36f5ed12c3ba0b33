"""Walk-forward folds: the ``--walk-forward`` windows and the train/test ranges they cut.

Windows are durations (``train=7d,test=1d[,step=1d]``) or event counts
(``train=200000,test=50000``: a bare integer counts events, in the recording's ``ts_event``
order over all its kinds). ``step`` defaults to ``test``, so the test windows tile the range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from ..durations import parse_duration
from ..errors import UserError
from ..recording import Recording


@dataclass(frozen=True, kw_only=True)
class Windows:
    """Sizes of a fold's train and test windows and the step between folds, in ns or events."""

    train: int
    test: int
    step: int
    unit: Literal["time", "events"]


@dataclass(frozen=True, kw_only=True)
class Fold:
    """One fold: train on ``[train_start, train_end)``, test on ``[test_start, test_end)`` (ns)."""

    fold: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def parse_windows(text: str) -> Windows:
    """``train=7d,test=1d[,step=1d]`` (durations) or ``train=200000,test=50000`` (events)."""
    parts: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in ("train", "test", "step") or name in parts or not value.strip():
            raise UserError(f"--walk-forward {text!r}: expected train=SIZE,test=SIZE[,step=SIZE] "
                            "with durations (7d, 20m) or event counts (200000)")
        parts[name] = value.strip()
    if "train" not in parts or "test" not in parts:
        raise UserError(f"--walk-forward {text!r}: both train= and test= are needed")
    counts = {n: v.isdigit() for n, v in parts.items()}
    if len(set(counts.values())) != 1:
        raise UserError(f"--walk-forward {text!r}: give every window as a duration (20m) or "
                        "every one as an event count (200000), not a mix")
    unit: Literal["time", "events"] = "events" if counts["train"] else "time"
    sizes: dict[str, int] = {}
    for name, value in parts.items():
        try:
            sizes[name] = int(value) if unit == "events" else parse_duration(value)
        except ValueError:
            raise UserError(f"--walk-forward {name}={value!r} is not a duration (e.g. 20m)") from None
        if sizes[name] <= 0:
            raise UserError(f"--walk-forward {name}={value!r} must be positive")
    return Windows(train=sizes["train"], test=sizes["test"], step=sizes.get("step", sizes["test"]),
                   unit=unit)


def plan_folds(windows: Windows, recording: Recording, *, start: int | None = None,
               end: int | None = None) -> list[Fold]:
    """The folds over ``[start, end)`` (default: the recording's span): fold k trains from
    ``k x step`` on, tests right after its train window; the last test window is cut at the end.
    Raises a one-line :class:`UserError` when not even one fold fits."""
    span = recording.span()
    if span is None:
        raise UserError(f"recording {str(recording.root)!r} has no events to walk forward over")
    lo = span[0] if start is None else start
    hi = span[1] + 1 if end is None else end
    if windows.unit == "time":
        folds = _time_folds(windows, lo, hi)
    else:
        folds = _count_folds(windows, recording, lo, hi)
    if not folds:
        raise UserError("--walk-forward: the range holds no fold (a train window and some test "
                        "data after it); the train window is too long for it")
    return folds


def _time_folds(w: Windows, lo: int, hi: int) -> list[Fold]:
    folds = []
    k = 0
    while (test_start := lo + k * w.step + w.train) < hi:
        folds.append(Fold(fold=k, train_start=test_start - w.train, train_end=test_start,
                          test_start=test_start, test_end=min(test_start + w.test, hi)))
        k += 1
    return folds


def _count_folds(w: Windows, recording: Recording, lo: int, hi: int) -> list[Fold]:
    """Boundaries at the ts of the i-th event: events sharing a ts at a boundary all fall in
    the later window (a window cannot split one instant)."""
    n = recording.count(recording.kinds, start=lo, end=hi)
    starts = range(0, max(n - w.train, 0), w.step)
    wanted = sorted({i for s in starts for i in (s, s + w.train, s + w.train + w.test) if i < n})
    ts = _ts_at(recording, lo, hi, wanted)
    folds = []
    for k, s in enumerate(starts):
        test_start = ts[s + w.train]
        test_end = ts.get(s + w.train + w.test, hi)
        folds.append(Fold(fold=k, train_start=ts[s], train_end=test_start,
                          test_start=test_start, test_end=test_end))
    return [f for f in folds if f.train_start < f.train_end < f.test_end]


def _ts_at(recording: Recording, lo: int, hi: int, positions: list[int]) -> dict[int, int]:
    """``ts_event`` of the events at ``positions`` (0-based) in ts order within ``[lo, hi)``."""
    paths = [str(f.path) for k in recording.kinds for f in recording.files(k)]
    if not positions or not paths:
        return {}
    sql = ("SELECT i, ts FROM (SELECT ts_event AS ts, row_number() OVER (ORDER BY ts_event) - 1 AS i "
           "FROM read_parquet(?, union_by_name=true) WHERE ts_event >= ? AND ts_event < ?) "
           "WHERE i IN (SELECT unnest(?::BIGINT[]))")
    with duckdb.connect(":memory:") as con:
        con.execute("SET memory_limit='512MB'")
        rows = con.execute(sql, [paths, lo, hi, positions]).fetchall()
    return {int(i): int(t) for i, t in rows}


def fold_dir(out: Path, fold: Fold) -> Path:
    """Where a fold's train sweep and test point go."""
    return out / "folds" / f"{fold.fold:04d}"
