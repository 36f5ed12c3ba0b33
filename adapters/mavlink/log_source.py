"""What the ``.tlog`` and DataFlash readers share as sources: a log file read into telemetry
events, the ones that break a validity rule counted by reason (and handed to ``on_reject``),
and the recording's origin naming the log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from qsframework.recording.imports import ImportSource

from .decode import EventCounts, count_events, valid_rows


class LogStats(EventCounts, Protocol):
    rejected: dict[str, int]


class LogSource(ImportSource):
    """A telemetry log of ``format`` (its events' ``source`` is ``source``), counted in ``stats``."""

    def __init__(self, path: str | Path, stats: LogStats, *, source: str, format: str,
                 progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.stats = stats
        self.progress = progress
        self._origin = {"source": source, "imported_from": self.path.name, "format": format, "synthetic": False}
        self._where = (("file", self.path.name.encode()),)

    def origin(self) -> dict:
        if not self.stats.rejected:
            return dict(self._origin)
        return {**self._origin, "rejected": dict(self.stats.rejected)}

    def valid(self, kind: str, decoded: pa.Table) -> pa.Table:
        """The events of ``decoded`` that keep the validity rules, counted in :attr:`stats`
        and told to ``progress``; the others are counted by reason and refused."""
        table, invalid = valid_rows(kind, decoded, self.stats.rejected)
        self.refuse_invalid(kind, decoded, invalid, self._where)
        if table.num_rows:
            count_events(self.stats, table)
            if self.progress is not None:
                self.progress(table.num_rows)
        return table
