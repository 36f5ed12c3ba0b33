"""A min/max overview of each recording file, so a wide price view reads a fraction of the rows
(about 8% for a whole 100M-event span) yet draws exactly what a full scan draws.

Per file, value column and level ``k`` the overview keeps the rows that are a running extreme
inside their fine bucket ``t >> k`` (per key): a new low or high from the bucket's start
(strictly lower/higher) or from its end (lower/higher or equal). Any query bucket at least
``2**k`` wide cuts a fine bucket at most once, into a prefix and a suffix, and each part's
lowest and highest row (earliest on ties) is one of those rows; so the extremes over the kept
rows equal those over every row. The two fine buckets holding the range's ends are read raw.
Overviews live in the user cache (``~/.cache/qsf/overview``), keyed by the file's path, size
and modification time (a changed file gets a new one), written atomically on first use; one
that cannot be written or read is passed by (the file's rows are read).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit

from ..recording.files import FileInfo
from ..user_cache import writable_cache_dir
from .scan import minmax_files, read_batches

#: fine buckets per file of each level (coarse levels serve wide views with fewer rows)
LEVELS = (1 << 6, 1 << 8, 1 << 10)
ROW_GROUP = 65_536  # rows per row group: a range reads only the groups it overlaps


def levels_of(ts_min: int, ts_max: int, counts: Sequence[int] = LEVELS) -> list[int]:
    """The shifts ``k`` (fine bucket ``2**k`` ns) giving each file about COUNTS fine buckets."""
    span = max(1, ts_max - ts_min + 1)
    return sorted({max(0, math.ceil(math.log2(span / c))) if span > c else 0 for c in counts})


@njit(cache=True, nogil=True)
def _running_extremes(key: np.ndarray, f: np.ndarray, x: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Which rows (ordered by KEY, then time; F their fine buckets) are a running low or high of
    their key's bucket from its start (strict) or from its end (or equal)."""
    n = len(x)
    keep = np.zeros(n, dtype=np.bool_)
    lo = hi = 0.0
    for i in range(n):
        if i == 0 or f[i] != f[i - 1] or key[i] != key[i - 1]:
            keep[i] = True
            lo = hi = x[i]
        elif x[i] < lo or x[i] > hi:
            keep[i] = True
        lo, hi = min(lo, x[i]), max(hi, x[i])
    for i in range(n - 1, -1, -1):
        if i == n - 1 or f[i] != f[i + 1] or key[i] != key[i + 1]:
            lo = hi = x[i]
        if x[i] <= lo or x[i] >= hi:
            keep[i] = True
        lo, hi = min(lo, x[i]), max(hi, x[i])
    return keep


def kept_rows(table: pa.Table, value: str, shifts: Sequence[int]) -> dict[int, pa.Table]:
    """Per shift, TABLE's (``ts_event, key, VALUE``) running extremes per key and fine bucket
    ``t >> shift``, in TABLE's order; NaN and null values left out."""
    table = table.select(["ts_event", "key", value])
    x = table.column(value).cast(pa.float64()).fill_null(np.nan).to_numpy()
    table = table.filter(pa.array(~np.isnan(x))).combine_chunks()
    x = x[~np.isnan(x)]
    t = table.column("ts_event").to_numpy()
    keys = pc.dictionary_encode(table.column("key")).combine_chunks().indices.to_numpy(zero_copy_only=False)
    ordered = len(t) < 2 or bool((np.diff(t) >= 0).all())
    order = np.argsort(keys, kind="stable") if ordered else np.lexsort((t, keys))  # by key, then time
    k, ts, xs = keys[order], t[order], x[order]
    return {shift: table.take(np.sort(order[_running_extremes(k, ts >> shift, xs)])) for shift in shifts}


class Overviews:
    """The overviews of one value column, in CACHE (the user cache by default; None: none kept,
    every read is a full scan)."""

    def __init__(self, value: str, *, cache: Path | None | bool = True, counts: Sequence[int] = LEVELS) -> None:
        self.value = value
        self.cache = writable_cache_dir("overview") if cache is True else (cache or None)
        self.counts = tuple(counts)

    def _path(self, f: FileInfo, shift: int) -> Path | None:
        if self.cache is None:
            return None
        st = f.path.stat()
        text = f"{f.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.value}"
        return self.cache / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}-{shift}.parquet"

    def build(self, f: FileInfo) -> None:
        """Write F's overview at every level (one read of the file), each file atomically."""
        table = pq.read_table(f.path, columns=["ts_event", "key", self.value])
        for shift, kept in kept_rows(table, self.value, levels_of(f.ts_min, f.ts_max, self.counts)).items():
            path = self._path(f, shift)
            if path is None:
                return
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            pq.write_table(kept, tmp, row_group_size=ROW_GROUP, compression="zstd")
            os.replace(tmp, path)

    def batches(self, f: FileInfo, *, start: int, end: int, width: int) -> Iterator[pa.RecordBatch]:
        """F's rows that decide the extremes of buckets WIDTH wide over ``[start, end]``: the
        overview of the coarsest level no wider than WIDTH, raw rows in the end buckets (all raw
        when no level fits or there is no cache)."""
        shifts = [k for k in levels_of(f.ts_min, f.ts_max, self.counts) if (1 << k) <= width]
        shift = max(shifts, default=0)
        first, last = start >> shift, end >> shift
        kept = self._kept(f, shift, (first + 1) << shift, (last << shift) - 1) if shifts and last > first + 1 else None
        if kept is None:  # no level fits, no cache, or the ends are (nearly) one fine bucket
            yield from _raw(f, self.value, start, end)
            return
        yield from _raw(f, self.value, start, ((first + 1) << shift) - 1)
        yield from kept.to_batches()
        yield from _raw(f, self.value, last << shift, end)

    def _kept(self, f: FileInfo, shift: int, lo: int, hi: int) -> pa.Table | None:
        """F's overview rows at level SHIFT with times in ``[lo, hi]``, building it if need be;
        None when there is no cache or it cannot be written or read (then the rows are read; a
        damaged one is removed, to be built again next time)."""
        path = self._path(f, shift)
        if path is None:
            return None
        try:
            if not path.exists():
                self.build(f)
            return pq.read_table(path, filters=[("ts_event", ">=", lo), ("ts_event", "<=", hi)])
        except (OSError, pa.ArrowException):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # the next view builds it again
            return None

    def minmax(self, files: Sequence[FileInfo], *, start: int, end: int, width: int,
               keys: Sequence[str] | None = None) -> pl.DataFrame:
        """:func:`.scan.minmax_files`'s buckets (without ``n``: overview rows stand for many)."""
        by_path = {str(f.path): f for f in files}
        return minmax_files(list(by_path), self.value, start=start, end=end, width=width, keys=keys,
                            batches_of=lambda p: self.batches(by_path[p], start=start, end=end, width=width)).drop("n")


def _raw(f: FileInfo, value: str, lo: int, hi: int) -> Iterable[pa.RecordBatch]:
    """F's rows with times in ``[lo, hi]`` (row groups outside it are not read)."""
    for batch in read_batches([str(f.path)], value, start=lo, end=hi):
        ts = batch.column("ts_event")
        yield batch.filter(pc.and_(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)))
