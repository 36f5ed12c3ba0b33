"""Rows consumed but not yet released to the engine: they wait behind the watermark."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..order import sort_table


class Pending:
    """Consumed rows not yet released to the engine; each keeps its partition and offset
    (columns ``_part``, ``_offset``) so commits never pass an unprocessed row."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}
        self.rows = 0

    def add(self, kind: str, table: pa.Table) -> None:
        if table.num_rows:
            self.tables.setdefault(kind, []).append(table)
            self.rows += table.num_rows

    def take(self, kind: str, upto: int | None) -> pa.Table | None:
        """Remove and return (sorted) the rows with ts_event < ``upto`` (all if None)."""
        parts = self.tables.pop(kind, [])
        if not parts:
            return None
        table = sort_table(pa.concat_tables(parts))
        if upto is None:
            self.rows -= table.num_rows
            return table
        n = int(np.searchsorted(table.column("ts_event").to_numpy(), upto, side="left"))
        if n < table.num_rows:
            self.tables[kind] = [table.slice(n)]
        self.rows -= n
        return table.slice(0, n) if n else None

    def cutoff(self, excess: int, upto: int | None) -> tuple[int, int]:
        """The event time below which the ``excess`` oldest rows wait, and how many rows below
        it the watermark ``upto`` would still hold back."""
        ts = np.concatenate([t.column("ts_event").to_numpy() for parts in self.tables.values() for t in parts])
        cut = int(np.partition(ts, excess - 1)[excess - 1]) + 1
        early = ts < cut if upto is None else (ts >= upto) & (ts < cut)
        return cut, int(early.sum())

    def first_offsets(self) -> dict[int, int]:
        """Per partition id, the smallest offset still pending."""
        out: dict[int, int] = {}
        for parts in self.tables.values():
            for t in parts:
                if not t.num_rows:
                    continue
                grouped = t.group_by("_part").aggregate([("_offset", "min")])
                for part, off in zip(grouped.column("_part").to_pylist(), grouped.column("_offset_min").to_pylist()):
                    out[part] = min(off, out.get(part, off))
        return out

