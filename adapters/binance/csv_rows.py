"""The rows of a Binance dump's CSV, checked: a block's used columns (typed, or as text when
a value does not parse) in range, the bad rows counted with their line numbers and reasons,
times in ms or µs made ns, and the ids of files imported before (to drop the overlap)."""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from qsframework.io import Rejected

Refuse = Callable[[Rejected], None]  # takes a bad row with its reason

MAX_EXAMPLES = 10  # bad-row reasons kept
_MAX_LINES = 1_000_000  # line numbers of malformed rows kept per file (for exact line numbers)
_US_FROM = 10**14  # times at or above are microseconds (10**14 ms would be the year 5138)
_MAX_MS = (2**63 - 1) // 10**6
_MAX_US = (2**63 - 1) // 10**3

TYPES = {
    "id": pa.int64(), "price": pa.float64(), "qty": pa.float64(), "time": pa.int64(),
    "is_buyer_maker": pa.bool_(),
}
USED = tuple(TYPES)
TRUE, FALSE = ["True", "true"], ["False", "false"]
_TEXT_RULES = {  # (regex, what a good value is) for the text fallback
    "id": (r"^-?\d{1,18}$", "an integer"),
    "price": (r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$", "a number"),
    "qty": (r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$", "a number"),
    "time": (r"^-?\d{1,18}$", "an integer"),
    "is_buyer_maker": (r"^(True|true|False|false)$", "True or False"),
}


class Tally:
    """Bad rows of one file: counts, lines of malformed rows, the first reasons; with
    ``refuse``, every bad row too, as its text (or its read values as JSON) and reason."""

    def __init__(self, name: str, header: bool, *, refuse: Refuse | None = None) -> None:
        self.name = name
        self.header = header
        self.refuse = refuse
        self.refused_upto = 0  # the last line of a malformed row refused (a re-read counts again)
        self.value_rows = 0
        self.value_examples: list[tuple[int | None, str]] = []
        self.reset_malformed()

    def reset_malformed(self) -> None:
        self.malformed_rows = 0
        self.lines = array("q")  # physical line numbers of malformed rows, in order
        self.malformed_examples: list[tuple[int | None, str]] = []

    @property
    def bad_rows(self) -> int:
        return self.malformed_rows + self.value_rows

    def malformed(self, row: pacsv.InvalidRow) -> str:
        """pyarrow's invalid_row_handler: count the row and skip it."""
        self.malformed_rows += 1
        if len(self.lines) < _MAX_LINES and row.number is not None:
            self.lines.append(row.number)
        why = f"expected {row.expected_columns} columns, found {row.actual_columns}"
        if len(self.malformed_examples) < MAX_EXAMPLES:
            self.malformed_examples.append((row.number, why))
        if self.refuse is not None and (row.number is None or row.number > self.refused_upto):
            self.refused_upto = row.number or self.refused_upto
            self._refuse(row.text.encode(), why, row.number)
        return "skip"

    def _refuse(self, value: bytes, why: str, line: int | None) -> None:
        """Hand a bad row to ``refuse``, naming its file and line."""
        if self.refuse is None:
            return
        where = [("file", self.name.encode())] + ([("line", str(line).encode())] if line else [])
        self.refuse(Rejected(value, why, kind="trade", origin=tuple(where)))

    def line(self, row: int) -> int | None:
        """Physical line (1-based) of the ``row``-th well-formed data row (0-based)."""
        if len(self.lines) >= _MAX_LINES:
            return None
        base = row + 1 + self.header
        line = base
        while (n := base + bisect_right(self.lines, line)) != line:
            line = n
        return line

    def invalid(self, rows: np.ndarray, reasons: list[str], total: int,
                values: list[bytes] | None = None) -> None:
        """``total`` rows with bad values; ``rows`` (all of them when refusing, with their
        ``values``), the first ones, with their reasons."""
        self.value_rows += total
        for i, (r, reason) in enumerate(zip(rows.tolist(), reasons, strict=True)):
            line = self.line(r)
            if len(self.value_examples) < MAX_EXAMPLES:
                self.value_examples.append((line, reason))
            if values is not None:
                self._refuse(values[i], reason, line)

    def broke_rules(self, reasons: list[str]) -> None:
        """Rows that parsed but break a validity rule (their lines are not tracked)."""
        self.value_rows += len(reasons)
        room = MAX_EXAMPLES - len(self.value_examples)
        self.value_examples.extend((None, why) for why in reasons[:max(room, 0)])

    def examples(self) -> list[str]:
        found = sorted(self.malformed_examples + self.value_examples, key=lambda e: e[0] or 0)
        return [
            f"line {ln} of {self.name}: {why}" if ln else f"{self.name}: {why}"
            for ln, why in found[:MAX_EXAMPLES]
        ]


def _value_reason(name: str, value: float) -> str | None:
    """Why a parsed value is bad, or None."""
    if name == "id" and value < 0:
        return f"id must not be negative, got {value}"
    if name in ("price", "qty") and not (value > 0 and np.isfinite(value)):
        return f"{name} must be a positive number, got {value}"
    if name == "time" and not (0 < value <= _MAX_MS or _US_FROM <= value <= _MAX_US):
        return f"time {value} is out of range (neither ms nor µs since 1970)"
    return None


def _all_good(cols: dict[str, pa.Array]) -> bool:
    """True when every parsed value is in range: the cheap test for the common case."""
    ids, price, qty, t = (cols[n].to_numpy() for n in ("id", "price", "qty", "time"))
    if not len(ids):
        return True
    # NaN makes min and max NaN, which fails every comparison
    if not (ids.min() >= 0 and price.min() > 0 and price.max() < np.inf
            and qty.min() > 0 and qty.max() < np.inf):
        return False
    lo, hi = t.min(), t.max()
    return bool((0 < lo and hi <= _MAX_MS) or (_US_FROM <= lo and hi <= _MAX_US))


def _checked(cols: dict[str, pa.Array], text_ok: dict[str, pa.Array] | None) -> pa.Array | None:
    """Mask of good rows (None when all are good)."""
    if text_ok is None and _all_good(cols):
        return None
    t = cols["time"]
    masks = [
        pc.greater_equal(cols["id"], 0),
        pc.and_(pc.greater(cols["price"], 0.0), pc.is_finite(cols["price"])),
        pc.and_(pc.greater(cols["qty"], 0.0), pc.is_finite(cols["qty"])),
        pc.or_(
            pc.and_(pc.greater(t, 0), pc.less_equal(t, _MAX_MS)),
            pc.and_(pc.greater_equal(t, _US_FROM), pc.less_equal(t, _MAX_US)),
        ),
        *(text_ok or {}).values(),
    ]
    ok = masks[0]
    for m in masks[1:]:
        ok = pc.and_(ok, m)
    if pc.all(ok).as_py():
        return None
    return ok


def _reasons(cols: dict[str, pa.Array], text_ok: dict[str, pa.Array] | None,
             raw: pa.RecordBatch | None, rows: np.ndarray) -> list[str]:
    out = []
    for r in rows.tolist():
        why = None
        for name in USED:
            if text_ok is not None and raw is not None and not text_ok[name][r].as_py():
                value = raw.column(name)[r].as_py()
                why = f"{name} is not {_TEXT_RULES[name][1]}: {value!r}"
            else:
                why = _value_reason(name, cols[name][r].as_py())
            if why:
                break
        out.append(why or "bad row")
    return out


def from_text(batch: pa.RecordBatch) -> tuple[dict[str, pa.Array], dict[str, pa.Array] | None]:
    """Typed columns of a text batch and text masks (None when every text parses).

    Bad texts are replaced by a placeholder, so the columns stay aligned with the rows.
    """
    maker = batch.column("is_buyer_maker")
    if pc.all(pc.is_in(maker, value_set=pa.array(TRUE + FALSE))).as_py():
        try:  # the whole block at once, as the typed pass would
            cols = {n: pc.cast(batch.column(n), t) for n, t in TYPES.items() if t != pa.bool_()}
        except pa.ArrowInvalid:
            pass
        else:
            cols["is_buyer_maker"] = pc.is_in(maker, value_set=pa.array(TRUE))
            return cols, None
    cols, oks = {}, {}
    for name, (pattern, _) in _TEXT_RULES.items():
        col = batch.column(name)
        ok = pc.match_substring_regex(col, pattern)
        fill = "False" if name == "is_buyer_maker" else "0"
        clean = pc.if_else(ok, col, fill)
        if name == "is_buyer_maker":
            cols[name] = pc.is_in(clean, value_set=pa.array(TRUE))
        else:
            cols[name] = pc.cast(clean, TYPES[name])
        oks[name] = ok
    return cols, oks


def keep_good(cols: dict[str, pa.Array], oks: dict[str, pa.Array] | None,
              raw: pa.RecordBatch | None, tally: Tally, start: int) -> dict[str, pa.Array]:
    """The rows of a block (its first at well-formed row ``start``) whose used values are
    good; the others go to ``tally``."""
    ok = _checked(cols, oks)
    if ok is None:
        return cols
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    if tally.refuse is None:
        first = bad[: max(0, MAX_EXAMPLES - len(tally.value_examples))]
        tally.invalid(first + start, _reasons(cols, oks, raw, first), len(bad))
    else:
        read = {n: raw.column(n) if raw is not None else cols[n] for n in USED}  # as read: text or typed
        values = [orjson.dumps({n: c[r].as_py() for n, c in read.items()}) for r in bad.tolist()]
        tally.invalid(bad + start, _reasons(cols, oks, raw, bad), len(bad), values)
    return {n: pc.filter(c, ok) for n, c in cols.items()}


def to_ns(t: pa.Array) -> tuple[pa.Array, int, int, bool, bool]:
    """Times in ms or µs (told by magnitude) as exact ns: (ns, min, max, saw ms, saw µs)."""
    bounds = pc.min_max(t)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo >= _US_FROM:
        return pc.multiply(t, 10**3), lo * 10**3, hi * 10**3, False, True
    if hi < _US_FROM:
        return pc.multiply(t, 10**6), lo * 10**6, hi * 10**6, True, False
    ns = pc.if_else(pc.less(t, _US_FROM), pc.multiply(t, 10**6), pc.multiply(t, 10**3))
    bounds = pc.min_max(ns)
    return ns, bounds["min"].as_py(), bounds["max"].as_py(), True, True


class Seen:
    """Id ranges imported per symbol, merged; a row inside one is a duplicate."""

    def __init__(self) -> None:
        self.ranges: dict[str, list[tuple[int, int]]] = {}

    def snapshot(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        ranges = np.array(self.ranges.get(symbol, []), np.int64).reshape(-1, 2)
        return ranges[:, 0].copy(), ranges[:, 1].copy()

    def add(self, symbol: str, lo: int, hi: int) -> None:
        merged: list[tuple[int, int]] = []
        for a, b in sorted([*self.ranges.get(symbol, []), (lo, hi)]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        self.ranges[symbol] = merged


def duplicates(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    if not len(starts) or not len(ids):
        return None
    idx = np.searchsorted(starts, ids, side="right") - 1
    dup = (idx >= 0) & (ids <= ends[np.maximum(idx, 0)])
    return dup if dup.any() else None

