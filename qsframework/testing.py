"""Unit-testing strategies and connectors without a recording, a broker or a database.

    from qsframework.events import Trade
    from qsframework.testing import run_strategy

    out = run_strategy(MyStrategy, [Trade(ts_event=1, ts_recv=1, source="t", key="BTCUSDT",
                                          seq=1, price=100.0, qty=1.0, is_buyer_maker=False)],
                       params={"window": "30s"})
    assert out["signals"].num_rows == 0

:func:`run_strategy` runs the engine as a backtest does (one total order, the validity rules,
exact duplicates dropped), so what passes here behaves the same in ``qsf backtest`` and live.
:class:`TableSource` and :class:`ListSink` are the smallest :class:`~qsframework.io.Source` and
:class:`~qsframework.io.Sink`, for testing code written against those bases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from .engine import Engine, Path
from .errors import UserError
from .events import KINDS, conform, get_kind
from .execution.config import ExecutionConfig
from .io import Batch, Checkpoint, FileSource, Refused, Sink
from .order import merge_kinds, merge_windows, sort_table
from .strategy import Strategy
from .validity import DEFAULT_BOUNDS, TimeBounds, check
from .window import Window

Events = Mapping[str, pa.Table | Iterable[Any]] | Iterable[Any]


def _tables(events: Events) -> dict[str, pa.Table]:
    """Events as one table per kind, each with the kind's schema (rows may be named tuples of
    the kind's row type, such as :class:`~qsframework.events.Trade`, or mappings)."""
    if isinstance(events, Mapping):
        given = dict(events)
    else:
        by_row = {k.row: name for name, k in KINDS.items()}
        given = {}
        for row in events:
            kind = by_row.get(type(row))
            if kind is None:
                raise TypeError(f"cannot tell the kind of {row!r}: pass a mapping {{kind: rows}}")
            given.setdefault(kind, []).append(row)
    tables = {}
    for kind, rows in given.items():
        ek = get_kind(kind)
        if not isinstance(rows, pa.Table | pa.RecordBatch):
            rows = [r._asdict() if hasattr(r, "_asdict") else dict(r) for r in rows]
            rows = pa.Table.from_pylist(rows, schema=ek.schema)
        tables[kind] = pa.Table.from_batches([conform(rows, ek)])
    return tables


class TableSource(FileSource):
    """Events held in memory, handed out in the engine's total order, ``batch_size`` rows at
    a time; rows that break a validity rule are kept aside in :attr:`rejected` (by reason)."""

    def __init__(self, events: Events, *, batch_size: int = 65_536,
                 bounds: TimeBounds = DEFAULT_BOUNDS) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.rejected: Counter[str] = Counter()
        self._tables = {}
        for kind, table in _tables(events).items():
            valid, invalid = check(kind, table, bounds)
            self.rejected.update(r.reason for r in invalid)
            self._tables[kind] = sort_table(valid)

    def __iter__(self) -> Iterator[Batch]:
        streams = {k: t.to_batches(max_chunksize=self.batch_size) for k, t in self._tables.items()}
        for kind, batch in merge_kinds(streams):  # a run of one kind may span input batches
            for at in range(0, batch.num_rows, self.batch_size):
                yield kind, pa.Table.from_batches([batch.slice(at, self.batch_size)])


    def windows(self, kinds: Iterable[str]) -> Iterator[Window]:
        """The events of ``kinds`` as windows of the total order (what a backtest hands
        :meth:`Engine.process_window <qsframework.engine.Engine.process_window>`), from
        batches of ``batch_size`` rows per kind."""
        wanted = set(kinds)
        return merge_windows({k: t.to_batches(max_chunksize=self.batch_size)
                              for k, t in self._tables.items() if k in wanted and t.num_rows})


class ListSink(Sink):
    """Keeps every batch written to it, in order; :meth:`table` gives one kind's rows."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.started = self.closed = False
        self.flushes = 0

    async def start(self) -> None:
        self.started = True

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        self.batches.append((kind, table))
        return []

    async def flush(self, checkpoint: Checkpoint | None = None) -> None:
        self.flushes += 1

    async def close(self) -> None:
        self.closed = True

    def table(self, kind: str) -> pa.Table:
        tables = [t for k, t in self.batches if k == kind]
        return pa.concat_tables(tables) if tables else get_kind(kind).empty()


def run_strategy(strategy_cls: type[Strategy], events: Events, *, params: dict[str, Any] | None = None,
                 path: Path = "auto", batch_size: int = 65_536, seed: int = 0,
                 bounds: TimeBounds = DEFAULT_BOUNDS,
                 execution: ExecutionConfig | None = None) -> dict[str, pa.Table]:
    """Run ``strategy_cls`` over ``events`` (rows of the kinds' row types, or ``{kind: rows or
    table}``) as a backtest would; returns its outputs by name (``"signals"``, ``"alerts"``,
    and ``"orders"``, ``"fills"``, ``"equity"``: empty unless it ordered; ``execution`` sets
    how its orders fill).
    ``params`` overrides the strategy's defaults, given as on the command line (``"30s"``) or
    as values. Raises :class:`~qsframework.errors.UserError` when a row breaks a validity rule:
    a test's input should be what it means to be."""
    source = TableSource(events, batch_size=batch_size, bounds=bounds)
    if source.rejected:
        reasons = "; ".join(f"{n} {why}" for why, n in source.rejected.most_common())
        raise UserError(f"events break the validity rules: {reasons}")
    engine = Engine(strategy_cls, overrides=params, path=path, seed=seed, execution=execution)
    engine.prepare()
    for window in source.windows(engine.kinds):
        engine.process_window(window)
    engine.finish()
    outputs = engine.ctx.outputs
    return {name: buf.drain() for name, buf in (outputs.buffers() | outputs.execution()).items()}
