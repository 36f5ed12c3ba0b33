"""The engine's total order, and merging per-kind streams into it.

Inputs are processed in ``(ts_event, source, key, kind, seq)`` order: within a kind that is
``(ts_event, source, key, seq)``, the order recordings are sorted in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .events import ORDER_COLUMNS
from .window import Window


def sort_indices(table: pa.Table | pa.RecordBatch) -> pa.Array:
    """Row indices that put one kind's rows in total order (stable)."""
    return pc.sort_indices(table, sort_keys=[(c, "ascending") for c in ORDER_COLUMNS])


def sort_table(table: pa.Table) -> pa.Table:
    return table.take(sort_indices(table))


def is_sorted(batch: pa.Table | pa.RecordBatch) -> bool:
    """True when the rows are already in total order."""
    if batch.num_rows < 2:
        return True
    ts = batch.column("ts_event").to_numpy()
    diffs = np.diff(ts)
    if (diffs < 0).any():
        return False
    if not (diffs == 0).any():
        return True
    idx = sort_indices(batch).to_numpy()
    return bool((idx == np.arange(len(idx))).all())


def first_out_of_order(batch: pa.RecordBatch, last: tuple | None = None, *,
                       one_source: bool = False) -> int:
    """Index of the first row of ``batch`` that sorts before the row ahead of it (row -1:
    ``last``, a ``(ts_event, source, key, seq)`` tuple), or -1 when all are in order.

    One compiled pass that compares strings only where times tie (and no sources when
    ``one_source`` says the batch has one).
    """
    from .buffers import string_buffers
    from .order_kernel import first_unsorted

    if not batch.num_rows:
        return -1
    cols = [batch.column(c) for c in ORDER_COLUMNS]
    if last is not None and tuple(c[0].as_py() for c in cols) < tuple(last):
        return 0
    s_off, s_data, s_start, _ = string_buffers(cols[1])
    k_off, k_data, k_start, _ = string_buffers(cols[2])
    return int(first_unsorted(cols[0].to_numpy(), s_off, s_data, s_start, k_off, k_data,
                              k_start, cols[3].to_numpy(), one_source))


def merge_kinds(
    streams: dict[str, Iterable[pa.RecordBatch]],
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Merge per-kind streams (each already in total order) into one ordered stream.

    Yields ``(kind, batch)`` runs; consecutive rows of one kind stay in one batch.
    """
    for window in merge_windows(streams):
        yield from window.runs()


def merge_windows(streams: dict[str, Iterable[pa.RecordBatch]]) -> Iterator[Window]:
    """Merge per-kind streams (each already in total order) into windows of the total order:
    each holds every kind's rows up to the earliest last time among the streams' next
    batches (rows at that time wait for the next window)."""
    if len(streams) == 1:
        ((kind, stream),) = streams.items()
        for batch in stream:
            if batch.num_rows:
                yield Window.single(kind, batch)
        return
    kinds = sorted(streams)
    iters = {k: iter(streams[k]) for k in kinds}
    buffers: dict[str, pa.RecordBatch | None] = {k: None for k in kinds}
    live = set(kinds)  # streams that may still deliver rows

    def pull(k: str) -> None:
        for batch in iters[k]:
            if batch.num_rows:
                old = buffers[k]
                buffers[k] = batch if old is None else _concat(old, batch)
                return
        live.discard(k)

    while True:
        for k in kinds:
            if k in live and buffers[k] is None:
                pull(k)
        pending = {k: b for k, b in buffers.items() if b is not None}
        if not pending:
            return
        lasts = {k: _last_ts(b) for k, b in pending.items() if k in live}
        bound = min(lasts.values()) if lasts else None
        parts: list[tuple[str, pa.RecordBatch]] = []
        for k, b in pending.items():
            n = b.num_rows if bound is None else int(
                np.searchsorted(b.column("ts_event").to_numpy(), bound, side="left")
            )
            if n:
                parts.append((k, b.slice(0, n)))
                buffers[k] = b.slice(n) if n < b.num_rows else None
        if not parts:  # every buffered row sits at the bound: read further on those streams
            for k, last in lasts.items():
                if last == bound:
                    pull(k)
            continue
        yield Window.merge(parts)


def _last_ts(batch: pa.RecordBatch) -> int:
    return int(batch.column("ts_event")[batch.num_rows - 1].as_py())


def _concat(a: pa.RecordBatch, b: pa.RecordBatch) -> pa.RecordBatch:
    return pa.Table.from_batches([a, b]).combine_chunks().to_batches()[0]
