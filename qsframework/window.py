"""A window: a slice of the engine's total order holding events of several kinds.

Per kind one Arrow batch (its rows in total order) and, per row of the window in total
order, the index of its kind: the engine walks the rows in order without an Arrow call per
event, and a window still splits into the runs of one kind the per-run route takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True, slots=True)
class Window:
    """Rows of ``kinds`` in total order: ``batches[i]`` holds kind ``kinds[i]``'s rows, and
    ``which[j]`` is the kind index of the window's row ``j``."""

    kinds: tuple[str, ...]
    batches: tuple[pa.RecordBatch, ...]
    which: np.ndarray  # int8, one per row

    @classmethod
    def single(cls, kind: str, batch: pa.RecordBatch) -> Window:
        return cls((kind,), (batch,), np.zeros(batch.num_rows, np.int8))

    @classmethod
    def merge(cls, parts: list[tuple[str, pa.RecordBatch]]) -> Window:
        """The rows of ``parts`` (one batch per kind, each in total order) merged by
        ``(ts_event, source, key, kind, seq)``."""
        parts = sorted(parts, key=lambda p: p[0])
        kinds = tuple(k for k, _ in parts)
        batches = tuple(b for _, b in parts)
        if len(parts) == 1:
            return cls.single(kinds[0], batches[0])
        return cls(kinds, batches, merge_order(batches))

    @property
    def num_rows(self) -> int:
        return len(self.which)

    def first_ts(self) -> int:
        return _ts(self.batches[int(self.which[0])], 0)

    def last_ts(self) -> int:
        batch = self.batches[int(self.which[-1])]
        return _ts(batch, batch.num_rows - 1)

    def runs(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        """The window as ``(kind, batch)`` runs of one kind, in total order."""
        if len(self.kinds) == 1:
            if self.batches[0].num_rows:
                yield self.kinds[0], self.batches[0]
            return
        which = self.which
        starts = run_starts(which)
        ends = [*starts[1:].tolist(), len(which)]
        taken = [0] * len(self.kinds)
        for s, e, k in zip(starts.tolist(), ends, which[starts].tolist()):
            yield self.kinds[k], self.batches[k].slice(taken[k], e - s)
            taken[k] += e - s


def _ts(batch: pa.RecordBatch, i: int) -> int:
    return int(batch.column("ts_event")[i].as_py())


def run_starts(which: np.ndarray) -> np.ndarray:
    """Indices where a run of one kind starts."""
    if not len(which):
        return np.empty(0, np.int64)
    return np.flatnonzero(np.concatenate(([True], which[1:] != which[:-1])))


def merge_order(batches: tuple[pa.RecordBatch, ...]) -> np.ndarray:
    """Per row of the merged order, the index of its batch (the batches are per kind, in kind
    name order, each in total order). Sorts by time alone unless rows of different kinds
    share a time; then by the whole order, strings compared by their ranks."""
    lengths = [b.num_rows for b in batches]
    part = np.repeat(np.arange(len(batches), dtype=np.int8), lengths)
    ts = np.concatenate([b.column("ts_event").to_numpy() for b in batches])
    order = np.argsort(ts, kind="stable")  # merges runs: each batch is sorted already
    which = part[order]
    sts = ts[order]
    tie = sts[1:] == sts[:-1]
    if tie.any() and (tie & (which[1:] != which[:-1])).any():
        seq = np.concatenate([b.column("seq").to_numpy() for b in batches])
        source = _ranks([b.column("source") for b in batches])
        key = _ranks([b.column("key") for b in batches])
        order = np.lexsort((seq, part, key, source, ts))
        which = part[order]
    return which


def _ranks(columns: list[pa.Array]) -> np.ndarray:
    """Each string's rank among the distinct strings of ``columns`` (byte order)."""
    enc = pc.dictionary_encode(pa.concat_arrays(columns))
    rank = pc.rank(enc.dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy()
    return rank[enc.indices.to_numpy()]
