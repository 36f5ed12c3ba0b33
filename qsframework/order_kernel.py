"""Compiled check of the total order over a batch's columns (numba, cached).

Kept apart from :mod:`qsframework.order` so numba is imported only when a check runs.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _compare(offsets, data, start, a, b):  # pragma: no cover - compiled
    """-1, 0 or 1 as string ``a`` sorts before, equal to or after string ``b`` (bytes)."""
    alo, ahi = offsets[start + a], offsets[start + a + 1]
    blo, bhi = offsets[start + b], offsets[start + b + 1]
    la, lb = ahi - alo, bhi - blo
    for j in range(min(la, lb)):
        x, y = data[alo + j], data[blo + j]
        if x != y:
            return -1 if x < y else 1
    if la == lb:
        return 0
    return -1 if la < lb else 1


@njit(cache=True, nogil=True)
def first_unsorted(ts, s_off, s_data, s_start, k_off, k_data, k_start, seq, one_source):  # pragma: no cover
    """Index of the first row that sorts before the row ahead of it by
    ``(ts_event, source, key, seq)``, or -1; strings are compared only where times tie,
    sources not at all when ``one_source`` says every row has the same."""
    for r in range(1, len(ts)):
        if ts[r] > ts[r - 1]:
            continue
        if ts[r] < ts[r - 1]:
            return r
        c = 0 if one_source else _compare(s_off, s_data, s_start, r, r - 1)
        if c == 0:
            c = _compare(k_off, k_data, k_start, r, r - 1)
        if c < 0 or (c == 0 and seq[r] < seq[r - 1]):
            return r
    return -1
