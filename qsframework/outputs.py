"""Output events (signals, alerts) collected in emission order, as Arrow tables."""

from __future__ import annotations

import pyarrow as pa

from .events import ALERT, SIGNAL, EventKind


class OutputBuffer:
    """Column buffers for one output kind; ``drain()`` hands rows over as an Arrow table."""

    __slots__ = ("kind", "columns", "count")

    def __init__(self, kind: EventKind) -> None:
        self.kind = kind
        self.columns: list[list] = [[] for _ in kind.names]
        self.count = 0

    def append(self, row: tuple) -> None:
        for column, value in zip(self.columns, row):
            column.append(value)
        self.count += 1

    def __len__(self) -> int:
        return len(self.columns[0])

    def drain(self) -> pa.Table:
        table = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(self.columns, self.kind.schema)],
            schema=self.kind.schema,
        )
        self.columns = [[] for _ in self.kind.names]
        return table


class Outputs:
    """What one strategy run emitted: a buffer per output kind."""

    __slots__ = ("signals", "alerts")

    def __init__(self) -> None:
        self.signals = OutputBuffer(SIGNAL)
        self.alerts = OutputBuffer(ALERT)

    def buffers(self) -> dict[str, OutputBuffer]:
        return {"signals": self.signals, "alerts": self.alerts}
