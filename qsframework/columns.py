"""Arrow columns as Python values for the per-event paths, by the fastest exact route."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def pylists(col: pa.Array) -> Callable[[int, int], list]:
    """Python values of rows [lo, hi) of an Arrow column, by the fastest exact route."""
    t = col.type
    if col.null_count:
        return lambda lo, hi: col.slice(lo, hi - lo).to_pylist()
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        values = col.to_numpy(zero_copy_only=False)
        return lambda lo, hi: values[lo:hi].tolist()
    if pa.types.is_string(t) and len(col) >= 64:
        # few distinct values (keys, sources): build each string once, then pick them by
        # index, which also hands the strategy the same str object for the same key
        enc = pc.dictionary_encode(col)
        if len(enc.dictionary) * 8 <= len(col):
            strings = np.empty(len(enc.dictionary), dtype=object)
            strings[:] = enc.dictionary.to_pylist()
            index = enc.indices.to_numpy()
            return lambda lo, hi: strings[index[lo:hi]].tolist()
    return lambda lo, hi: col.slice(lo, hi - lo).to_pylist()


EVENT_CHUNK = 4096  # rows turned into Python objects at a time on the per-event paths


def event_chunks(batch: pa.RecordBatch, row: type, *, named: bool
                 ) -> Iterator[tuple[int, int, Iterator[tuple]]]:
    """``(lo, hi, rows)``: rows [lo, hi) of ``batch`` as tuples (``row`` named tuples when
    ``named``), a few thousand at a time: their Python objects are made, used and freed
    while still in the CPU cache, and freed memory is reused for the next rows."""
    columns = [pylists(c) for c in batch.columns]
    n = batch.num_rows
    for lo in range(0, n, EVENT_CHUNK):
        hi = min(n, lo + EVENT_CHUNK)
        yield lo, hi, rows([values(lo, hi) for values in columns], row, named=named)[0]


def rows(lists: list[list], row: type, *, named: bool) -> tuple[Iterator[tuple], Iterator[Any]]:
    """The rows of columns ``lists`` as tuples (``row`` named tuples when ``named``), and the
    iterator over the first column they advance: its ``__length_hint__()`` is the number of
    rows not yet taken, so a loop can tell which row it is on without counting."""
    lead = iter(lists[0])
    events = zip(lead, *lists[1:])
    return (map(partial(tuple.__new__, row), events) if named else events), lead
