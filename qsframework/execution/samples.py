"""The equity grid's rows on their way to the outputs: single samples (the per-event path,
one grid time at a time) and spans of samples built in bulk with numpy (a quiet stretch of
the grid, cash and positions constant over it), kept in order and turned into Arrow columns
once per flush rather than once per sample."""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from ..outputs import OutputBuffer

#: the positions held at a sample, in key order: (key, signed quantity)
Held = list[tuple[str, float]]
#: a run of samples as columns: times, seqs, cash, equity, positions per row, keys, quantities
Piece = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]


class EquityRows:
    """Equity samples not in the outputs yet, in the order they were taken."""

    __slots__ = ("source", "strategy", "singles", "pieces")

    def __init__(self, *, source: str, strategy: str) -> None:
        self.source, self.strategy = source, strategy
        #: single samples (t, seq, cash, equity, held) since the last piece
        self.singles: list[tuple[int, int, float, float, Held]] = []
        self.pieces: list[Piece] = []

    def __bool__(self) -> bool:
        return bool(self.singles or self.pieces)

    def span(self, times: np.ndarray, first_seq: int, cash: float, equity: np.ndarray | float,
             held: Held) -> None:
        """Samples at ``times`` with consecutive seqs from ``first_seq``, all holding ``held``
        with ``cash``; ``equity`` per sample (or one value for all)."""
        self._seal()
        n = len(times)
        k = len(held)
        self.pieces.append((
            times, np.arange(first_seq, first_seq + n, dtype=np.int64), np.full(n, cash),
            np.broadcast_to(np.asarray(equity, np.float64), (n,)), np.full(n, k, np.int32),
            [key for key, _ in held] * n, np.tile(np.array([q for _, q in held], np.float64), n),
        ))

    def _seal(self) -> None:
        """The single samples so far as one piece (keeps them before what comes next)."""
        rows = self.singles
        if not rows:
            return
        self.singles = []
        times, seqs, cash, equity, helds = zip(*rows)
        self.pieces.append((
            np.array(times, np.int64), np.array(seqs, np.int64), np.array(cash, np.float64),
            np.array(equity, np.float64), np.fromiter(map(len, helds), np.int32, len(helds)),
            [key for held in helds for key, _ in held],
            np.array([q for held in helds for _, q in held], np.float64),
        ))

    def flush(self, into: OutputBuffer) -> None:
        """Everything kept so far into ``into`` as one Arrow batch."""
        self._seal()
        pieces = self.pieces
        if not pieces:
            return
        self.pieces = []
        times, seqs, cash, equity, counts, keys, values = (
            zip(*pieces) if len(pieces) > 1 else ([c] for c in pieces[0]))
        times_a = pa.array(np.concatenate(times))
        n = len(times_a)
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.concatenate(counts), out=offsets[1:])
        positions = pa.MapArray.from_arrays(
            pa.array(offsets), pa.array(list(chain.from_iterable(keys)), pa.string()),
            pa.array(np.concatenate(values)))
        into.extend([
            times_a, times_a, pa.repeat(self.source, n), pa.repeat("portfolio", n),
            pa.array(np.concatenate(seqs)), pa.repeat(self.strategy, n),
            pa.array(np.concatenate(cash)), pa.array(np.concatenate(equity)), positions,
        ])
