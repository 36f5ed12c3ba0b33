"""Simulated Binance spot trades as Arrow tables: the market simulator's entry point.

:func:`simulate_trades` checks its arguments, runs the model (:mod:`.model`) block by block
and cuts the rows into chunks of ``chunk_seconds``, each a table with exactly
``TRADE.schema``; the string columns are built straight from buffers (no Python objects).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from qsframework.events import TRADE

from .model import BLOCK_MS, DEFAULT_START_NS, NS_PER_MS, Simulator, symbol_spec

SOURCE = "binance"


def _normalise(symbols: Sequence[str] | str) -> list[str]:
    if isinstance(symbols, str):
        symbols = [symbols]
    names = [str(s).strip().upper() for s in symbols]
    if not names:
        raise ValueError("symbols must name at least one symbol.")
    if any(not n for n in names):
        raise ValueError("symbols must be non-empty strings.")
    if len(set(names)) != len(names):
        raise ValueError(f"symbols must not repeat, got {list(symbols)!r}.")
    return sorted(names)


def estimate_rate(symbols: Sequence[str] | str) -> float:
    """Expected mean trades per second over all ``symbols`` (e.g. to size progress bars)."""
    return float(sum(symbol_spec(n).rate for n in _normalise(symbols)))


class _Tables:
    """Turns a block's columns into trade tables, caching the symbol and source strings."""

    def __init__(self, names: list[str]) -> None:
        raw = [s.encode() for s in names]
        self.name_len = np.array([len(r) for r in raw], np.int32)
        width = int(self.name_len.max())
        self.name_width = width
        self.same_width = bool((self.name_len == width).all())
        self.name_fixed = np.array(raw, dtype=f"S{width}")
        self.names_arr = pa.array(names, pa.string())
        self.source_arr = pa.array([SOURCE], pa.string())  # grown and sliced as needed

    def _source(self, nrows: int) -> pa.Array:
        """``nrows`` times "binance", sliced from a cached array (no copy)."""
        if len(self.source_arr) < nrows:
            size = max(nrows, 2 * len(self.source_arr))
            offsets = np.arange(0, len(SOURCE) * (size + 1), len(SOURCE), dtype=np.int32)
            data = pa.py_buffer(SOURCE.encode() * size)
            self.source_arr = pa.StringArray.from_buffers(size, pa.py_buffer(offsets), data)
        return self.source_arr.slice(0, nrows)

    def _keys(self, sym: np.ndarray) -> pa.Array:
        """The symbol names of ``sym`` (indices into the sorted names) as a string array."""
        width = self.name_width
        if not self.same_width:
            return self.names_arr.take(sym)
        offsets = np.arange(0, width * (len(sym) + 1), width, dtype=np.int32)
        data = np.take(self.name_fixed, sym).tobytes()
        return pa.StringArray.from_buffers(len(sym), pa.py_buffer(offsets), pa.py_buffer(data))

    def table(self, cols: dict[str, np.ndarray], stop: int | None = None) -> pa.Table:
        """The first ``stop`` rows of a block as a table with exactly ``TRADE.schema``."""
        sl = slice(None, stop)
        nrows = len(cols["ts_event"][sl])
        arrays = [
            pa.array(cols["ts_event"][sl]),
            pa.array(cols["ts_recv"][sl]),
            self._source(nrows),
            self._keys(cols["sym"][sl]),
            pa.array(cols["seq"][sl]),
            pa.array(cols["price"][sl]),
            pa.array(cols["qty"][sl]),
            pa.array(cols["is_buyer_maker"][sl]),
        ]
        return pa.Table.from_arrays(arrays, schema=TRADE.schema)




def simulate_trades(
    symbols: Sequence[str],
    *,
    minutes: float,
    seed: int,
    start_ns: int = DEFAULT_START_NS,
    chunk_seconds: int = 600,
) -> Iterator[pa.Table]:
    """Yields trade tables (schema exactly TRADE.schema), each sorted by
    (ts_event, source, key, seq), chunks consecutive and non-overlapping in time, covering
    [start_ns, start_ns + minutes*60e9): one per ``chunk_seconds`` (the last may be shorter,
    any may be empty). Rows depend only on the set of symbols, minutes, seed and start_ns.
    """
    names = _normalise(symbols)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float, np.number)):
        raise TypeError(f"minutes must be a number, got {minutes!r}.")
    if not minutes > 0 or not math.isfinite(minutes):
        raise ValueError(f"minutes must be positive and finite, got {minutes!r}.")
    seed = _integer("seed", seed, 0)
    chunk_ns = _integer("chunk_seconds", chunk_seconds, 1) * 10**9
    start_ns = _integer("start_ns", start_ns, None)
    return _chunks(names, seed, start_ns, round(float(minutes) * 60e9), chunk_ns)


def _integer(name: str, value: object, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}.")
    return int(value)


def _chunks(
    names: list[str], seed: int, start_ns: int, span_ns: int, chunk_ns: int
) -> Iterator[pa.Table]:
    sim = Simulator(names, seed, start_ns)
    tables = _Tables(names)
    end_ns = start_ns + span_ns
    block_ns = BLOCK_MS * NS_PER_MS
    n_blocks = -(-(end_ns - sim.t0_ms * NS_PER_MS) // block_ns)
    b = 0
    cur: pa.Table | None = None  # current block, rows from ``pos`` on not yet yielded
    cur_ts = np.empty(0, np.int64)
    pos = 0
    for lo in range(start_ns, end_ns, chunk_ns):
        hi = min(lo + chunk_ns, end_ns)
        pieces = []
        while True:
            if cur is None:
                if b >= n_blocks:
                    break
                cols = sim.block(b)
                b += 1
                stop = int(np.searchsorted(cols["ts_event"], end_ns)) if b == n_blocks else None
                cur, pos = tables.table(cols, stop), 0
                cur_ts = cols["ts_event"][:stop]
            j = int(np.searchsorted(cur_ts, hi))
            if j > pos:
                pieces.append(cur.slice(pos, j - pos))
            pos = j
            if (sim.t0_ms * NS_PER_MS + b * block_ns) > hi:
                break  # this block reaches past the chunk: keep it for the next one
            cur = None
        if not pieces:
            yield TRADE.schema.empty_table()
        elif len(pieces) == 1:
            yield pieces[0]
        else:
            yield pa.concat_tables(pieces).combine_chunks()
