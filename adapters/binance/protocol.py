"""Binance Spot trade-stream frames -> ``trade`` and ``gap`` events.

A frame is a combined-stream message ``{"stream": "btcusdt@trade", "data": {...}}`` or a
raw one (the payload alone). Payloads (``p``/``q`` are decimal strings):

- ``trade``:    ``{"e":"trade","E":..,"s":"BTCUSDT","t":id,"p":"..","q":"..","T":..,"m":bool,"M":bool}``
  (older frames also carry the order ids ``b``/``a``; they are ignored)
- ``aggTrade``: ``{"e":"aggTrade","E":..,"s":..,"a":id,"p":..,"q":..,"f":..,"l":..,"T":..,"m":..,"M":..}``

Times are milliseconds, or microseconds with ``timeUnit=MICROSECOND``; the unit is told
by magnitude, so both work. :class:`TradeParser` turns frames into columns, keeps the
trade ids of each symbol strictly increasing (a repeated id is a duplicate and dropped;
a jump is a gap, reported as a ``gap`` event; an id that fills an open gap is accepted),
and gives every bad frame a reason instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from math import inf

import orjson
import pyarrow as pa

from qsframework.events import GAP, TRADE
from qsframework.validity import DEFAULT_BOUNDS, TimeBounds, check

SOURCE = "binance"
STREAM_KINDS = ("trade", "aggTrade")
_ID_FIELD = {"trade": "t", "aggTrade": "a"}
_MICROS = 10**14  # a time above this (year 5138 in ms) is in microseconds
_HOLES_KEPT = 256  # open gaps remembered per symbol, for ids that arrive late
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Reject:
    """A frame that is not a valid trade, and why."""

    frame: bytes
    reason: str
    ts_recv: int


@dataclass(slots=True)
class ParserStats:
    trades: int = 0
    duplicates: int = 0
    gaps: int = 0
    missing: int = 0  # trade ids inside gaps
    late: int = 0  # ids that arrived after their gap was reported
    rejected: int = 0
    control: int = 0  # subscription replies and other non-trade messages
    shutdowns: int = 0

    @property
    def frames(self) -> int:
        """Frames seen (trades taken so far, dropped ones, rejects, control messages)."""
        return self.trades + self.duplicates + self.rejected + self.control + self.shutdowns


def stream_names(symbols: Iterable[str], stream: str) -> dict[str, str]:
    """Wire stream names (lower case) -> symbol (upper case)."""
    if stream not in STREAM_KINDS:
        raise ValueError(f"stream must be one of {', '.join(STREAM_KINDS)}, not {stream!r}")
    out = {}
    for s in symbols:
        sym = s.strip().upper()
        if not sym or not sym.isalnum():
            raise ValueError(f"not a Binance symbol: {s!r}")
        out[f"{sym.lower()}@{stream}"] = sym
    return out


def _positive(text: object) -> float:
    """A price or quantity: a decimal string (or number) that is finite and > 0."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError
    x = float(text)
    if not 0.0 < x < inf:
        raise ValueError
    return x


@dataclass(slots=True)
class TradeParser:
    """Stateful normalizer: feed frames in arrival order, take Arrow tables of events."""

    symbols: Iterable[str]
    stream: str = "trade"
    source: str = SOURCE
    bounds: TimeBounds = DEFAULT_BOUNDS
    stats: ParserStats = field(default_factory=ParserStats)
    _streams: dict[str, str] = field(init=False)
    _symbols: frozenset[str] = field(init=False)
    _event: str = field(init=False)
    _id: str = field(init=False)
    _last: dict[str, int] = field(init=False, default_factory=dict)
    _holes: dict[str, list[list[int]]] = field(init=False, default_factory=dict)
    _rows: list[tuple] = field(init=False)
    _floor: int = field(init=False)
    _ahead: int = field(init=False)
    _gaps: list[tuple] = field(init=False, default_factory=list)
    rejects: list[Reject] = field(init=False, default_factory=list)
    shutdown: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._streams = stream_names(self.symbols, self.stream)
        self._symbols = frozenset(self._streams.values())
        self._event = self.stream
        self._id = _ID_FIELD[self.stream]
        self._rows = []
        self._floor, self._ahead = self.bounds.floor_ns, self.bounds.max_future_ns

    @property
    def stream_path(self) -> str:
        """``/stream?streams=a@trade/b@trade`` for the subscribed symbols."""
        return "/stream?streams=" + "/".join(self._streams)

    @property
    def last_ids(self) -> dict[str, int]:
        return dict(self._last)

    # -- feeding -------------------------------------------------------------------
    def feed(self, frame: bytes | str, ts_recv: int) -> None:
        """One WebSocket frame received at ``ts_recv`` (ns)."""
        try:
            obj = orjson.loads(frame)
            stream = obj.get("stream")
            if stream is None:
                data = obj
                sym = data["s"]
                ok = sym in self._symbols
            else:
                data = obj["data"]
                sym = data["s"]
                ok = self._streams.get(stream) == sym
            if not ok or data["e"] != self._event:
                self._other(frame, obj, ts_recv)
                return
            tid = data[self._id]
            t = data["T"]
            p = data["p"]
            q = data["q"]
            m = data["m"]
            if (type(tid) is not int or type(t) is not int or type(m) is not bool
                    or not 0 <= tid <= _INT64_MAX or t <= 0):
                raise TypeError
            price = float(p)
            qty = float(q)
            if not (0.0 < price < inf and 0.0 < qty < inf) or type(p) is bool or type(q) is bool:
                raise ValueError
        except Exception:  # noqa: BLE001 - any failure: a control message, or find the reason
            try:
                obj = orjson.loads(frame)
            except orjson.JSONDecodeError:
                obj = None
            self._other(frame, obj, ts_recv)
            return
        ts = t * 1_000_000 if t < _MICROS else t * 1_000
        if not self._floor <= ts <= ts_recv + self._ahead:
            # judged before the id bookkeeping: a bad frame must not move the ids on
            self._reject(frame, ts_recv, self._time_reason(sym, tid, ts, ts_recv))
            return
        last = self._last.get(sym)
        if last is not None and tid != last + 1:
            if tid <= last:
                if not self._fill_hole(sym, tid):
                    self.stats.duplicates += 1
                    return
                self.stats.late += 1
            else:
                self._gap(sym, last + 1, tid - 1, ts, ts_recv)
        if last is None or tid > last:
            self._last[sym] = tid
        self._rows.append((ts, ts_recv, sym, tid, price, qty, m, frame))

    def feed_many(self, frames: Iterable[bytes | str], ts_recv: int) -> None:
        for frame in frames:
            self.feed(frame, ts_recv)

    def expect(self, symbol: str, last_id: int) -> None:
        """Resume after ``last_id`` (e.g. from a recording): the next id should follow it."""
        self._last[symbol.upper()] = last_id

    # -- taking --------------------------------------------------------------------
    def pending(self) -> int:
        return len(self._rows) + len(self._gaps)

    def take_trades(self) -> pa.Table:
        """The trades fed since the last take, in arrival order, as a ``trade`` table.

        The table also passes :func:`qsframework.validity.check` (the rules every entry
        point applies); a row that breaks one becomes a reject with its frame and reason."""
        rows, self._rows = self._rows, []
        table = self._table(rows)
        valid, invalid = check("trade", table, self.bounds)
        for bad in invalid:
            row = rows[bad.index]
            self._reject(row[7], row[1], bad.reason)
        self.stats.trades += valid.num_rows
        return valid

    def _table(self, rows: list[tuple]) -> pa.Table:
        n = len(rows)
        c = list(zip(*rows)) if n else [()] * 7
        return pa.Table.from_arrays(
            [
                pa.array(c[0], pa.int64()),
                pa.array(c[1], pa.int64()),
                pa.repeat(self.source, n) if n else pa.array([], pa.string()),
                pa.array(c[2], pa.string()),
                pa.array(c[3], pa.int64()),
                pa.array(c[4], pa.float64()),
                pa.array(c[5], pa.float64()),
                pa.array(c[6], pa.bool_()),
            ],
            schema=TRADE.schema,
        )

    def take_gaps(self) -> pa.Table:
        """The gaps found since the last take, as a ``gap`` table."""
        rows, self._gaps = self._gaps, []
        return gap_table(rows, self.source)

    def take_rejects(self) -> list[Reject]:
        out, self.rejects = self.rejects, []
        return out

    def fill(self, symbol: str, first: int, last: int) -> None:
        """Trades ``first..last`` of ``symbol`` were fetched another way (backfill)."""
        for tid in range(first, last + 1):
            self._fill_hole(symbol, tid)

    # -- the rare paths ----------------------------------------------------------------
    def _gap(self, sym: str, first: int, last: int, ts: int, ts_recv: int) -> None:
        self.stats.gaps += 1
        self.stats.missing += last - first + 1
        self._gaps.append((ts, ts_recv, sym, first, last))
        holes = self._holes.setdefault(sym, [])
        holes.append([first, last])
        if len(holes) > _HOLES_KEPT:
            del holes[0]

    def _fill_hole(self, sym: str, tid: int) -> bool:
        """True if ``tid`` was missing (and is now taken out of its gap)."""
        holes = self._holes.get(sym, ())
        for i, (lo, hi) in enumerate(holes):
            if lo <= tid <= hi:
                if lo == hi:
                    del holes[i]
                elif tid == lo:
                    holes[i][0] = lo + 1
                elif tid == hi:
                    holes[i][1] = hi - 1
                else:
                    holes[i:i + 1] = [[lo, tid - 1], [tid + 1, hi]]
                return True
        return False

    def _other(self, frame: bytes | str, obj: object, ts_recv: int) -> None:
        """A well-formed JSON message that is not one of our trades."""
        data = obj.get("data", obj) if isinstance(obj, dict) else obj
        if isinstance(data, dict) and data.get("e") == "serverShutdown":
            self.stats.shutdowns += 1
            self.shutdown = True
            return
        if isinstance(obj, dict) and "id" in obj and ("result" in obj or "error" in obj):
            self.stats.control += 1
            return
        self._reject(frame, ts_recv)

    def _reject(self, frame: bytes | str, ts_recv: int, reason: str | None = None) -> None:
        raw = frame.encode() if isinstance(frame, str) else bytes(frame)
        self.stats.rejected += 1
        self.rejects.append(Reject(raw, reason or self._reason(raw), ts_recv))

    def _time_reason(self, sym: str, tid: int, ts: int, ts_recv: int) -> str:
        """The validity rule a trade time breaks, in its words (an out-of-range time is
        clamped to int64 first: it is still out of bounds, and the table can hold it)."""
        ts = min(ts, _INT64_MAX)
        _, invalid = check("trade", self._table([(ts, ts_recv, sym, tid, 1.0, 1.0, False)]), self.bounds)
        return invalid[0].reason if invalid else "trade time out of bounds"

    def _reason(self, raw: bytes) -> str:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "malformed JSON"
        if not isinstance(obj, dict):
            return "not a JSON object"
        stream = obj.get("stream")
        data = obj.get("data") if stream is not None else obj
        if stream is not None and stream not in self._streams:
            return f"unknown stream {str(stream)[:64]!r}"
        if not isinstance(data, dict):
            return "no data object"
        if data.get("e") != self._event:
            return f"unexpected event type {str(data.get('e'))[:32]!r}"
        for name in ("s", self._id, "T", "p", "q", "m"):
            if name not in data:
                return f"missing field {name!r}"
        sym = data["s"]
        if stream is not None and self._streams[stream] != sym:
            return f"symbol {str(sym)[:32]!r} does not match stream {stream!r}"
        if stream is None and sym not in self._symbols:
            return f"unknown symbol {str(sym)[:32]!r}"
        if type(data[self._id]) is not int or data[self._id] < 0:
            return f"trade id is not a non-negative integer: {data[self._id]!r}"
        if data[self._id] > _INT64_MAX:
            return f"trade id does not fit in 64 bits: {str(data[self._id])[:32]}"
        if type(data["T"]) is not int or data["T"] <= 0:
            return f"trade time is not a positive integer: {data['T']!r}"
        if type(data["m"]) is not bool:
            return f"buyer-maker flag is not a boolean: {data['m']!r}"
        for name, label in (("p", "price"), ("q", "quantity")):
            try:
                _positive(data[name])
            except (ValueError, TypeError):
                return f"{label} is not a positive number: {str(data[name])[:32]!r}"
        return "invalid trade"


def gap_table(rows: list[tuple], source: str = SOURCE) -> pa.Table:
    """``gap`` events from (ts_event, ts_recv, key, first_id, last_id[, filled]) tuples."""
    cols = list(zip(*rows)) if rows else [[]] * 5
    n = len(rows)
    filled = [r[5] if len(r) > 5 else 0 for r in rows]
    return pa.Table.from_arrays(
        [
            pa.array(cols[0], pa.int64()),
            pa.array(cols[1], pa.int64()),
            pa.array([source] * n, pa.string()),
            pa.array(cols[2], pa.string()),
            pa.array(cols[3], pa.int64()),  # seq: the first missing id
            pa.array(cols[3], pa.int64()),
            pa.array(cols[4], pa.int64()),
            pa.array(filled, pa.int64()),
        ],
        schema=GAP.schema,
    )
