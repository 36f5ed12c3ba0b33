"""Map a string column to small integer codes fast (numba), e.g. symbol -> leg index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from numba import njit

from qsframework.buffers import string_buffers


@njit(cache=True, nogil=True)
def codes_kernel(offsets, data, start, n, want_offsets, want_data):  # pragma: no cover - compiled
    """Compiled core of :func:`key_codes`; callable from other numba kernels.

    Values are compared as (length, first 8 bytes packed in a word), then byte by byte
    past the eighth: one or two integer compares per row for symbol-sized keys.
    """
    m = len(want_offsets) - 1
    want_len = np.empty(m, np.int64)
    want_word = np.zeros(m, np.uint64)
    for k in range(m):
        lo, hi = want_offsets[k], want_offsets[k + 1]
        want_len[k] = hi - lo
        for j in range(min(8, hi - lo)):
            want_word[k] |= np.uint64(want_data[lo + j]) << np.uint64(8 * j)
    out = np.full(n, -1, np.int8)
    for r in range(n):
        lo, hi = offsets[start + r], offsets[start + r + 1]
        length = hi - lo
        word = np.uint64(0)
        for j in range(min(8, length)):
            word |= np.uint64(data[lo + j]) << np.uint64(8 * j)
        for k in range(m):
            if want_len[k] != length or want_word[k] != word:
                continue
            same = True
            wlo = want_offsets[k]
            for j in range(8, length):
                if data[lo + j] != want_data[wlo + j]:
                    same = False
                    break
            if same:
                out[r] = k
                break
    return out


@njit(cache=True, nogil=True)
def pair_codes_kernel(offsets, data, start, n, want_offsets, want_data):  # pragma: no cover - compiled
    """:func:`codes_kernel` for a column known to hold only the two wanted keys (the
    engine hands a strategy only the keys it asked for): one length or byte compare per
    row, at the first place where the two keys differ."""
    len_a = want_offsets[1] - want_offsets[0]
    len_b = want_offsets[2] - want_offsets[1]
    out = np.empty(n, np.int8)
    if len_a != len_b:
        for r in range(n):
            out[r] = 0 if offsets[start + r + 1] - offsets[start + r] == len_a else 1
        return out
    p = 0
    while p < len_a and want_data[p] == want_data[len_a + p]:
        p += 1
    if p == len_a:  # the same key twice
        out[:] = 0
        return out
    byte_a = want_data[p]
    for r in range(n):
        out[r] = 0 if data[offsets[start + r] + p] == byte_a else 1
    return out


def encode_keys(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The wanted keys as (offsets, utf-8 bytes), the form ``codes_kernel`` takes."""
    if len(keys) > 127:
        raise ValueError("key_codes handles at most 127 keys")
    want = [k.encode() for k in keys]
    offsets = np.cumsum([0, *map(len, want)]).astype(np.int64)
    data = np.frombuffer(b"".join(want), dtype=np.uint8) if any(want) else np.empty(0, np.uint8)
    return offsets, data


def key_codes(column: pa.Array | pa.ChunkedArray, keys: Sequence[str]) -> np.ndarray:
    """int8 array: the index in ``keys`` of each row's value, -1 for any other value."""
    if isinstance(column, pa.ChunkedArray):
        parts = [key_codes(c, keys) for c in column.chunks]
        return np.concatenate(parts) if parts else np.empty(0, np.int8)
    want_offsets, want_data = encode_keys(keys)
    offsets, data, start, n = string_buffers(column)
    return codes_kernel(offsets, data, start, n, want_offsets, want_data)
