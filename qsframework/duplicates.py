"""Exact duplicates in the total order: a row equal to the row before it of its kind in
``ts_event``, ``source``, ``key`` and ``seq`` (sorted by those, equal rows are adjacent)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: per kind, the last row seen: ``(ts_event, seq, source, key)``
LastRows = dict[str, tuple[int, int, str, str]]


def drop(last: LastRows, kind: str, batch: pa.RecordBatch
         ) -> tuple[pa.RecordBatch, np.ndarray | None, int]:
    """``batch`` without its duplicates (the row before the first is ``last[kind]``, which
    is then set to the batch's last row), the mask of the rows kept (None: all) and how
    many were dropped. Compares the numbers first, so a batch without equal neighbours
    costs two vector compares."""
    ts = batch.column("ts_event").to_numpy()
    seq = batch.column("seq").to_numpy()
    n = len(ts)
    before = last.get(kind)
    maybe = (ts[1:] == ts[:-1]) & (seq[1:] == seq[:-1])
    head = before is not None and before[0] == ts[0] and before[1] == seq[0]
    source, key = batch.column("source"), batch.column("key")
    last[kind] = (int(ts[-1]), int(seq[-1]), source[n - 1].as_py(), key[n - 1].as_py())
    if not head and not maybe.any():
        return batch, None, 0
    dup = np.zeros(n, bool)
    if head:
        dup[0] = before[2:] == (source[0].as_py(), key[0].as_py())  # type: ignore[index]
    idx = np.flatnonzero(maybe) + 1
    if len(idx):
        at, prev = pa.array(idx), pa.array(idx - 1)
        same = pc.and_(
            pc.equal(source.take(at), source.take(prev)),
            pc.equal(key.take(at), key.take(prev)),
        )
        dup[idx] = same.to_numpy(zero_copy_only=False)
    count = int(dup.sum())
    if not count:
        return batch, None, 0
    return batch.filter(pa.array(~dup)), ~dup, count
