"""Two sweeps are the same: equal tables but for the timings, the same point files bit for
bit (report.json equal but for its timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

TIMING = frozenset({"wall_s", "events_per_s", "prepare_s", "warm_up", "path"})


def same_sweep(a: Path, b: Path, *, skip: frozenset[str] = frozenset()) -> None:
    """Equal tables (but for the timings) and point directories with the same files, their
    Parquet bit for bit and report.json equal but for timings (and the ``skip`` keys)."""
    ta, tb = pq.read_table(a / "sweep.parquet"), pq.read_table(b / "sweep.parquet")
    timing = ["events_per_s", "wall_s"]
    assert ta.drop_columns(timing).sort_by("point").equals(tb.drop_columns(timing).sort_by("point"))
    assert ta.schema.metadata == tb.schema.metadata
    same_points(a, b, skip=skip)


def same_points(a: Path, b: Path, *, skip: frozenset[str] = frozenset()) -> None:
    """The same point directories under ``a`` and ``b``, file for file."""
    points = sorted(p.name for p in (a / "points").iterdir())
    assert points == sorted(p.name for p in (b / "points").iterdir()) and len(points) == 4
    for pid in points:
        fa = sorted(f.name for f in (a / "points" / pid).iterdir())
        assert fa == sorted(f.name for f in (b / "points" / pid).iterdir())
        assert "orders.parquet" in fa
        for name in fa:
            x, y = a / "points" / pid / name, b / "points" / pid / name
            if name == "report.json":
                rx, ry = json.loads(x.read_text()), json.loads(y.read_text())
                assert {k: v for k, v in rx.items() if k not in TIMING | skip} == \
                    {k: v for k, v in ry.items() if k not in TIMING | skip}
            else:
                assert x.read_bytes() == y.read_bytes(), (pid, name)
