"""The engine's window route: a window of several kinds walked in total order in one pass.

Per kind, once per window and vectorised: conform, the key filter, the duplicate check, the
strategy's columns. Then the rows are walked in total order, ``on_<kind>`` called with row
tuples built per kind a few thousand rows at a time: no Arrow call per event. What the
per-run route would hand elsewhere goes there run by run, through the same code: runs for a
batch handler (path "batch", or "auto" and at least ``small_batch`` rows), and every event
from the strategy's first order on (the execution loop). So the outputs are those of the
window's runs fed one by one to :meth:`~qsframework.engine.Engine.process`, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import EVENT_CHUNK, pylists, rows
from .events import conform, get_kind
from .execution.loop import deliver_notices, row_at
from .window import Window, run_starts

if TYPE_CHECKING:
    from .engine import Engine


@dataclass(frozen=True, slots=True)
class _Part:
    """One kind's rows of a window, ready for its handlers."""

    kind: str
    row: type
    batch: pa.RecordBatch  # the strategy's columns
    full: pa.RecordBatch  # also what the simulator matches on
    handlers: tuple[Any, Any]  # (on_<kind>, on_<kind>_batch)


def process_window(engine: Engine, window: Window, *, filtered: bool = False) -> None:
    """:meth:`Engine.process_window`: ``window`` through ``engine``."""
    if len(window.kinds) == 1:
        engine.process(window.kinds[0], window.batches[0], filtered=filtered)
        return
    parts, which = _prepare(engine, window, filtered=filtered)
    n = len(which)
    if not n:
        return
    if not engine._started:
        engine._start(int(parts[which[0]].batch.column(0)[0].as_py()))
    engine.events_in += n
    rank = _ranks(which, len(parts))
    for s, e, batch_run in _pieces(engine, parts, which):
        if engine.sim.trading:  # it ordered: the rest goes to the execution loop
            _dispatch(engine, parts, which, rank, s, n)
            return
        if batch_run:
            _dispatch(engine, parts, which, rank, s, e)
        else:
            _walk(engine, parts, which, rank, s, e)


def _prepare(engine: Engine, window: Window, *, filtered: bool) -> tuple[list[_Part], np.ndarray]:
    """Each kind's rows conformed, filtered to the strategy's keys, without duplicates; and
    the window's order (kind index per row) over the rows kept."""
    which = window.which
    keep: np.ndarray | None = None  # rows of the window kept (None: all)
    parts: list[_Part] = []
    code = np.full(len(window.kinds), -1, np.int8)  # window kind index -> parts index
    for i, (kind, batch) in enumerate(zip(window.kinds, window.batches)):
        handlers = engine._handlers.get(kind)
        mask: np.ndarray | None = None
        if handlers is not None and batch.num_rows:
            batch = conform(batch, get_kind(kind), engine._inputs[kind])
            if engine._key_set is not None and not filtered:
                wanted = pc.is_in(batch.column("key"), value_set=engine._key_set)
                if wanted.false_count:
                    mask = wanted.to_numpy(zero_copy_only=False)
                    batch = batch.filter(wanted)
            if batch.num_rows:
                batch, unique = engine._drop_duplicates(kind, batch)
                if unique is not None:
                    if mask is None:
                        mask = unique
                    else:
                        mask = mask.copy()
                        mask[mask] = unique
        if handlers is None or not batch.num_rows:
            mask = np.zeros(window.batches[i].num_rows, bool)
        else:
            schema, row = engine._schemas[kind]
            full = batch
            if batch.num_columns != len(schema):
                batch = batch.select(schema.names)
            code[i] = len(parts)
            parts.append(_Part(kind, row, batch, full, handlers))
        if mask is not None:
            if keep is None:
                keep = np.ones(len(which), bool)
            keep[which == i] = mask
    if keep is not None:
        which = which[keep]
    if len(parts) < len(window.kinds):
        which = code[which]
    return parts, which


def _ranks(which: np.ndarray, kinds: int) -> np.ndarray:
    """Per row, its index among its kind's rows."""
    rank = np.empty(len(which), np.int64)
    for k in range(kinds):
        at = np.flatnonzero(which == k)
        rank[at] = np.arange(len(at))
    return rank


def _pieces(engine: Engine, parts: list[_Part], which: np.ndarray) -> list[tuple[int, int, bool]]:
    """The window as ``(start, end, batch_run)``: stretches of rows to walk, and the runs a
    batch handler takes (as :meth:`Engine._dispatch` chooses)."""
    n = len(which)
    many = np.array([p.handlers[1] is not None for p in parts])
    if not many.any():
        return [(0, n, False)]
    one = np.array([p.handlers[0] is not None for p in parts])
    starts = run_starts(which)
    lengths = np.diff(np.append(starts, n))
    kind = which[starts]
    batch_run = many[kind] & ((lengths >= engine._small) | ~one[kind])
    pieces, pos = [], 0
    for r in np.flatnonzero(batch_run).tolist():
        s, e = int(starts[r]), int(starts[r] + lengths[r])
        if pos < s:
            pieces.append((pos, s, False))
        pieces.append((s, e, True))
        pos = e
    if pos < n:
        pieces.append((pos, n, False))
    return pieces


def _dispatch(engine: Engine, parts: list[_Part], which: np.ndarray, rank: np.ndarray,
              s: int, e: int) -> None:
    """Rows ``[s, e)`` run by run through the engine's per-run dispatch."""
    part = which[s:e]
    starts = run_starts(part)
    ends = [*starts[1:].tolist(), e - s]
    for a, b in zip(starts.tolist(), ends):
        p = parts[part[a]]
        at, n = int(rank[s + a]), b - a
        engine._dispatch(p.kind, p.row, p.batch.slice(at, n), p.full.slice(at, n), p.handlers)


def _walk(engine: Engine, parts: list[_Part], which: np.ndarray, rank: np.ndarray,
          s: int, e: int) -> None:
    """Rows ``[s, e)`` per event, in order: the per-event loop of ``Engine._run_events`` over
    several kinds. At the first order the rest of the window goes run by run."""
    ctx = engine.ctx
    timers = ctx.timers
    fire = engine._fire_before
    named = engine.strategy.rows == "named"
    kinds = len(parts)
    handlers = tuple(p.handlers[0] for p in parts)
    makers = [[pylists(c) for c in p.batch.columns] for p in parts]
    taken = np.bincount(which[:s], minlength=kinds).tolist()  # each kind's rows before s
    for lo in range(s, e, EVENT_CHUNK):
        hi = min(e, lo + EVENT_CHUNK)
        w = which[lo:hi]
        order = w.tolist()
        counts = np.bincount(w, minlength=kinds).tolist()
        # per kind, its rows of the chunk paired with its handler, each made as the loop
        # reaches it; the loop takes the next pair from the kind of each row in turn
        chunks: list[Any] = [None] * kinds
        for k, count in enumerate(counts):
            if count:
                first = taken[k]
                kind_rows, _ = rows([make(first, first + count) for make in makers[k]],
                                    parts[k].row, named=named)
                chunks[k] = zip(repeat(handlers[k]), kind_rows)
                taken[k] = first + count
        if max(counts) == len(order):  # one kind in this chunk
            lead = iter((chunks[order[0]],) * len(order))
        else:
            lead = iter(itemgetter(*order)(chunks))  # its length hint tells the loop's row
        event, at = None, e
        try:
            for handler, event in map(next, lead):
                ts = event[0]
                if ts > timers.due and fire(ts):  # the strategy ordered
                    at = row_at(hi, lead)
                    break
                ctx.now = ts
                handler(event)
        except Exception as exc:  # the loop stopped in a handler, on `event`
            p = parts[which[row_at(hi, lead)]]
            engine._handler_failed(exc, p.kind, p.batch, event)
        if at < e:  # from `event` on, run with execution
            _dispatch(engine, parts, which, rank, at, e)
            return
    if ctx.switch:  # the first order came from the last event
        engine.settle_switch()
        deliver_notices(engine)
