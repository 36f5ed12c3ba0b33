"""Output events (signals, alerts; orders, fills, equity) collected in emission order, as Arrow tables."""

from __future__ import annotations

import pyarrow as pa

from .events import ALERT, EQUITY, FILL, ORDER, SIGNAL, EventKind


class OutputBuffer:
    """Rows of one output kind in emission order: single rows (``append``) and bulk
    Arrow batches (``extend``) interleave freely; ``drain()`` hands them over as a table."""

    __slots__ = ("kind", "rows", "chunks", "chunk_rows", "count")

    def __init__(self, kind: EventKind) -> None:
        self.kind = kind
        self.rows: list[tuple] = []  # single rows not yet sealed into a chunk
        self.chunks: list[pa.RecordBatch] = []
        self.chunk_rows = 0
        self.count = 0  # everything ever emitted, drained or not

    def append(self, row: tuple) -> None:
        self.rows.append(row)
        self.count += 1

    def extend(self, arrays: list[pa.Array]) -> None:
        """Add rows given as one Arrow array per field, after every row added so far."""
        self.seal()
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.kind.schema)
        self.chunks.append(batch)
        self.chunk_rows += batch.num_rows
        self.count += batch.num_rows

    def seal(self) -> None:
        """Pack the single rows so far into an Arrow chunk (compact; order kept)."""
        if self.rows:
            columns = zip(*self.rows)
            arrays = [pa.array(c, type=f.type) for c, f in zip(columns, self.kind.schema)]
            self.chunks.append(pa.RecordBatch.from_arrays(arrays, schema=self.kind.schema))
            self.chunk_rows += len(self.rows)
            self.rows = []

    def __len__(self) -> int:
        return self.chunk_rows + len(self.rows)

    def drain(self) -> pa.Table:
        self.seal()
        table = pa.Table.from_batches(self.chunks, schema=self.kind.schema)
        self.chunks, self.chunk_rows = [], 0
        return table


class Outputs:
    """What one strategy run emitted: a buffer per output kind."""

    __slots__ = ("signals", "alerts", "orders", "fills", "equity")

    def __init__(self) -> None:
        self.signals = OutputBuffer(SIGNAL)
        self.alerts = OutputBuffer(ALERT)
        self.orders = OutputBuffer(ORDER)
        self.fills = OutputBuffer(FILL)
        self.equity = OutputBuffer(EQUITY)

    def buffers(self) -> dict[str, OutputBuffer]:
        """Signals and alerts: what every strategy emits (its files exist even when empty)."""
        return {"signals": self.signals, "alerts": self.alerts}

    def execution(self) -> dict[str, OutputBuffer]:
        """Orders, fills and equity samples: rows only once the strategy has ordered (their
        files are written only then)."""
        return {"orders": self.orders, "fills": self.fills, "equity": self.equity}
