"""Import Binance historical spot dumps (data.binance.vision) into a recording of trades.

Reads ``SYMBOL-trades-*.zip`` / ``SYMBOL-aggTrades-*.zip`` (or the CSVs they hold), in the
order given, as a stream of Arrow batches of ``BLOCK_SIZE`` bytes of CSV (memory stays
bounded by those and the writer's buffer, whatever the file size) and writes ``trade`` events:
``ts_event = ts_recv`` = trade time in ns, ``source = "binance"``, ``key`` = symbol,
``seq`` = trade id (aggregate id for aggTrades).

- **Checksums**: ``<file>.CHECKSUM`` (``<sha256>  <name>``) is verified for every file
  before anything is written; a mismatch writes nothing. Files without one are "unverified".
- **Time unit**: per value, ``time >= 10**14`` is microseconds (dumps from 2025 on), below
  is milliseconds; both become int64 ns with integer arithmetic.
- **Bad rows** (wrong column count, non-numeric or empty value, price or qty not positive
  and finite, time out of range, boolean not True/False) are counted and skipped; only
  the columns used are checked (``quote_qty``, first/last trade id and ``is_best_match``
  are not). Blocks are parsed typed; when a value does not parse, pyarrow fails the whole
  block, so the file is read again as text from its start (skipping the rows already
  written) and each later block is cast as a whole, falling back to vectorized per-row
  text rules only in blocks that hold a bad value. A bad value costs time, never rows.
- **Duplicates**: a row is skipped when its id lies within the id range ``[first, last]``
  of an earlier file of the same symbol. Binance ids are consecutive within a dump, so
  this drops exactly the overlap of daily and monthly files, in whatever order they come.
  Trades and aggTrades of one symbol cannot go into one recording (they are the same
  trades counted twice, with ids from different sequences).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from qsframework.errors import UserError
from qsframework.events import TRADE
from qsframework.recording import RecordingWriter
from qsframework.recording.writer import new_recording
from qsframework.validity import check

Kind = Literal["trades", "aggTrades"]
Checksum = Literal["verified", "unverified"]

SOURCE = "binance"
BLOCK_SIZE = 4 << 20  # bytes of CSV per Arrow batch
MAX_EXAMPLES = 10  # bad-row reasons kept
_MAX_LINES = 1_000_000  # line numbers of malformed rows kept per file (for exact line numbers)
_US_FROM = 10**14  # times at or above are microseconds (10**14 ms would be the year 5138)
_MAX_MS = (2**63 - 1) // 10**6
_MAX_US = (2**63 - 1) // 10**3

COLUMNS: dict[Kind, tuple[str, ...]] = {
    "trades": ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"),
    "aggTrades": (
        "id", "price", "qty", "first_trade_id", "last_trade_id", "time",
        "is_buyer_maker", "is_best_match",
    ),
}
_TYPES = {
    "id": pa.int64(), "price": pa.float64(), "qty": pa.float64(), "time": pa.int64(),
    "is_buyer_maker": pa.bool_(),
}
_BY_COLUMNS: dict[int, Kind] = {len(c): k for k, c in COLUMNS.items()}
_USED = tuple(_TYPES)
_TRUE, _FALSE = ["True", "true"], ["False", "false"]
_TEXT_RULES = {  # (regex, what a good value is) for the text fallback
    "id": (r"^-?\d{1,18}$", "an integer"),
    "price": (r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$", "a number"),
    "qty": (r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$", "a number"),
    "time": (r"^-?\d{1,18}$", "an integer"),
    "is_buyer_maker": (r"^(True|true|False|false)$", "True or False"),
}
_NAME = re.compile(  # BTCUSDT-trades-2024-01-15, BTCUSDT-aggTrades-2024-01
    r"^(?P<symbol>[^-\s]+)-(?P<kind>trades|aggtrades)-\d{4}-\d{2}(-\d{2})?$", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class FileStats:
    """What one dump file gave."""

    path: Path
    symbol: str
    kind: Kind
    checksum: Checksum
    rows: int  # trades written
    bad_rows: int
    skipped_duplicates: int
    time_unit: Literal["ms", "us", "ms+us"] | None  # None when no valid row
    first_ts_event: int | None
    last_ts_event: int | None


@dataclass(frozen=True, slots=True)
class ImportStats:
    """Totals of an import; ``files`` in the order given."""

    out: Path
    files: tuple[FileStats, ...]
    rows: int  # trades written
    bad_rows: int
    skipped_duplicates: int
    by_symbol: dict[str, int]  # trades written per symbol
    kind: Kind | Literal["mixed"]
    first_ts_event: int | None
    last_ts_event: int | None
    bad_examples: tuple[str, ...]  # the first few reasons, "line N of FILE: reason"

    @property
    def unverified(self) -> tuple[Path, ...]:
        """Files imported without a CHECKSUM file."""
        return tuple(f.path for f in self.files if f.checksum == "unverified")


@dataclass(frozen=True, slots=True)
class _Dump:
    """A dump file, resolved: where its CSV is and what it holds."""

    path: Path
    member: str | None  # the CSV inside the zip; None for a plain CSV
    symbol: str
    kind: Kind
    header: bool
    checksum: Checksum


# -- opening and checking files --------------------------------------------------------
def _member(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{str(path)!r} is not a readable zip file ({exc})") from None
    own = f"{path.name[:-4]}.csv"
    if own in names:
        return own
    if len(names) == 1:
        return names[0]
    raise UserError(f"{str(path)!r} should hold one CSV file but holds {len(names)}")


@contextmanager
def _open(path: Path, member: str | None) -> Iterator[IO[bytes]]:
    if member is None:
        with open(path, "rb") as fh:
            yield fh
    else:
        with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
            yield fh


def _head(path: Path, member: str | None) -> list[bytes]:
    """The first complete lines of the CSV (about 64 KiB), blank lines dropped."""
    with _open(path, member) as fh:
        data = fh.read(1 << 16)
        more = bool(fh.read(1))
    lines = data.split(b"\n")
    if more:
        lines = lines[:-1]  # cut mid-line
    return [ln.strip() for ln in lines if ln.strip()]


def _verify(path: Path) -> Checksum:
    side = path.with_name(path.name + ".CHECKSUM")
    if not side.exists():
        return "unverified"
    words = side.read_text(errors="replace").split()
    expected = words[0].lower() if words else ""
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise UserError(f"{str(side)!r} does not start with a SHA-256 hex digest")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise UserError(
            f"checksum mismatch for {str(path)!r}: its SHA-256 is not the one in {side.name} "
            "(the file is damaged or incomplete; download it again)"
        )
    return "verified"


def _resolve(file: str | Path, symbol: str | None) -> _Dump:
    path = Path(file)
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".zip", ".csv"):
        raise UserError(f"{str(path)!r} is neither a .zip nor a .csv Binance dump")
    match = _NAME.match(path.name[: -len(suffix)])
    sym = symbol or (match["symbol"].upper() if match else None)
    if sym is None:
        raise UserError(
            f"cannot tell the symbol of {str(path)!r} from its name; pass symbol= (--symbol)"
        )
    member = _member(path) if suffix == ".zip" else None
    try:
        lines = _head(path, member)
        checksum = _verify(path)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise UserError(f"cannot read {str(path)!r} ({exc})") from None
    header = bool(lines) and not lines[0].split(b",")[0].strip().lstrip(b"-").isdigit()
    counts = Counter(ln.count(b",") + 1 for ln in lines[header:])
    columns = counts.most_common(1)[0][0] if counts else None
    named: Kind | None = None
    if match:
        named = "trades" if match["kind"].lower() == "trades" else "aggTrades"
    by_columns = _BY_COLUMNS.get(columns or 0)
    if named and columns is not None and by_columns != named:
        raise UserError(
            f"{str(path)!r} is named as {named} but its rows have {columns} columns, "
            f"not the {len(COLUMNS[named])} of a spot {named} dump"
        )
    kind = named or by_columns
    if kind is None:
        raise UserError(
            f"cannot tell whether {str(path)!r} holds trades (7 columns) or aggTrades (8); "
            f"its rows have {columns or 'no'} columns"
        )
    return _Dump(path, member, sym, kind, header, checksum)


# -- bad rows --------------------------------------------------------------------------
class _Tally:
    """Bad rows of one file: counts, lines of malformed rows, the first reasons."""

    def __init__(self, name: str, header: bool) -> None:
        self.name = name
        self.header = header
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
        if len(self.malformed_examples) < MAX_EXAMPLES:
            self.malformed_examples.append(
                (row.number, f"expected {row.expected_columns} columns, found {row.actual_columns}")
            )
        return "skip"

    def line(self, row: int) -> int | None:
        """Physical line (1-based) of the ``row``-th well-formed data row (0-based)."""
        if len(self.lines) >= _MAX_LINES:
            return None
        base = row + 1 + self.header
        line = base
        while (n := base + bisect_right(self.lines, line)) != line:
            line = n
        return line

    def invalid(self, rows: np.ndarray, reasons: list[str], total: int) -> None:
        self.value_rows += total
        for r, reason in zip(rows.tolist(), reasons, strict=True):
            if len(self.value_examples) < MAX_EXAMPLES:
                self.value_examples.append((self.line(r), reason))

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
        for name in _USED:
            if text_ok is not None and raw is not None and not text_ok[name][r].as_py():
                value = raw.column(name)[r].as_py()
                why = f"{name} is not {_TEXT_RULES[name][1]}: {value!r}"
            else:
                why = _value_reason(name, cols[name][r].as_py())
            if why:
                break
        out.append(why or "bad row")
    return out


def _from_text(batch: pa.RecordBatch) -> tuple[dict[str, pa.Array], dict[str, pa.Array] | None]:
    """Typed columns of a text batch and text masks (None when every text parses).

    Bad texts are replaced by a placeholder, so the columns stay aligned with the rows.
    """
    maker = batch.column("is_buyer_maker")
    if pc.all(pc.is_in(maker, value_set=pa.array(_TRUE + _FALSE))).as_py():
        try:  # the whole block at once, as the typed pass would
            cols = {n: pc.cast(batch.column(n), t) for n, t in _TYPES.items() if t != pa.bool_()}
        except pa.ArrowInvalid:
            pass
        else:
            cols["is_buyer_maker"] = pc.is_in(maker, value_set=pa.array(_TRUE))
            return cols, None
    cols, oks = {}, {}
    for name, (pattern, _) in _TEXT_RULES.items():
        col = batch.column(name)
        ok = pc.match_substring_regex(col, pattern)
        fill = "False" if name == "is_buyer_maker" else "0"
        clean = pc.if_else(ok, col, fill)
        if name == "is_buyer_maker":
            cols[name] = pc.is_in(clean, value_set=pa.array(_TRUE))
        else:
            cols[name] = pc.cast(clean, _TYPES[name])
        oks[name] = ok
    return cols, oks


# -- reading ---------------------------------------------------------------------------
def _csv_batches(dump: _Dump, tally: _Tally, *, text: bool) -> Iterator[pa.RecordBatch]:
    names = COLUMNS[dump.kind]
    types = {n: pa.string() for n in _USED} if text else _TYPES
    with _open(dump.path, dump.member) as fh:
        reader = pacsv.open_csv(
            fh,
            read_options=pacsv.ReadOptions(
                column_names=list(names),
                skip_rows=int(dump.header),
                block_size=BLOCK_SIZE,
                use_threads=False,  # serial parsing keeps row numbers of bad rows known
            ),
            parse_options=pacsv.ParseOptions(invalid_row_handler=tally.malformed),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(_USED),
                null_values=[],
                strings_can_be_null=False,
                true_values=_TRUE,
                false_values=_FALSE,
            ),
        )
        yield from reader


def _good_rows(dump: _Dump, tally: _Tally) -> Iterator[tuple[dict[str, pa.Array], int]]:
    """(typed good rows, rows read) per block; bad rows go to ``tally``."""
    done = 0  # well-formed rows handed on
    typed = _csv_batches(dump, tally, text=False)
    while True:
        try:
            batch = next(typed)
        except StopIteration:
            return
        except pa.ArrowInvalid:  # a value that does not parse: re-read as text from here
            break
        cols = {n: batch.column(n) for n in _USED}
        yield _filter(cols, None, None, tally, done), batch.num_rows
        done += batch.num_rows
    tally.reset_malformed()  # the text pass counts malformed rows again, from the start
    seen = 0
    for batch in _csv_batches(dump, tally, text=True):
        if seen + batch.num_rows <= done:
            seen += batch.num_rows
            continue
        start = seen
        if seen < done:
            batch, start = batch.slice(done - seen), done
        seen = start + batch.num_rows
        cols, oks = _from_text(batch)
        yield _filter(cols, oks, batch, tally, start), batch.num_rows


def _filter(cols: dict[str, pa.Array], oks: dict[str, pa.Array] | None,
            raw: pa.RecordBatch | None, tally: _Tally, start: int) -> dict[str, pa.Array]:
    ok = _checked(cols, oks)
    if ok is None:
        return cols
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    first = bad[: max(0, MAX_EXAMPLES - len(tally.value_examples))]
    tally.invalid(first + start, _reasons(cols, oks, raw, first), len(bad))
    return {n: pc.filter(c, ok) for n, c in cols.items()}


def _to_ns(t: pa.Array) -> tuple[pa.Array, int, int, bool, bool]:
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


class _Seen:
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


def _duplicates(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    if not len(starts) or not len(ids):
        return None
    idx = np.searchsorted(starts, ids, side="right") - 1
    dup = (idx >= 0) & (ids <= ends[np.maximum(idx, 0)])
    return dup if dup.any() else None


# -- the import ------------------------------------------------------------------------
def import_binance_csv(
    files: Sequence[str | Path],
    *,
    out: str | Path,
    symbol: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportStats:
    """Import Binance spot ``trades``/``aggTrades`` dumps, in the order given, into ``out``.

    ``symbol`` overrides the symbol named in the file names (and is needed when a name
    does not tell it). ``progress(n)`` is called with the rows just read. Every file is
    checked (name, columns, checksum) before anything is written.
    """
    if not files:
        raise UserError("no dump files to import")
    if symbol is not None:
        symbol = symbol.strip().upper()
        if not symbol or re.search(r"[\s,/-]", symbol):
            raise UserError(f"symbol {symbol!r} is not a Binance symbol such as BTCUSDT")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{str(out)!r} exists and is not an empty directory; choose a new one")
    dumps = [_resolve(f, symbol) for f in files]
    kinds: dict[str, set[str]] = {}
    for d in dumps:
        kinds.setdefault(d.symbol, set()).add(d.kind)
        if len(kinds[d.symbol]) > 1:
            raise UserError(
                f"{d.symbol} has both trades and aggTrades files; import one kind per recording"
            )
    origin = {
        "synthetic": False,
        "source": SOURCE,
        "imported_from": "Binance historical spot dumps (data.binance.vision)",
        "importer": __name__,
        "files": [{"name": d.path.name, "symbol": d.symbol, "kind": d.kind,
                   "checksum": d.checksum} for d in dumps],
    }
    seen = _Seen()
    results: list[FileStats] = []
    examples: list[str] = []
    with new_recording(out, origin=origin) as writer:  # a failed import leaves nothing behind
        for d in dumps:
            stats, tally = _import_file(d, writer, seen, progress)
            results.append(stats)
            examples += tally.examples()
    by_symbol: dict[str, int] = {}
    for f in results:
        by_symbol[f.symbol] = by_symbol.get(f.symbol, 0) + f.rows
    firsts = [f.first_ts_event for f in results if f.first_ts_event is not None]
    lasts = [f.last_ts_event for f in results if f.last_ts_event is not None]
    file_kinds = {f.kind for f in results}
    return ImportStats(
        out=out,
        files=tuple(results),
        rows=sum(f.rows for f in results),
        bad_rows=sum(f.bad_rows for f in results),
        skipped_duplicates=sum(f.skipped_duplicates for f in results),
        by_symbol=by_symbol,
        kind=file_kinds.pop() if len(file_kinds) == 1 else "mixed",
        first_ts_event=min(firsts, default=None),
        last_ts_event=max(lasts, default=None),
        bad_examples=tuple(examples[:MAX_EXAMPLES]),
    )


def _import_file(
    d: _Dump, writer: RecordingWriter, seen: _Seen, progress: Callable[[int], None] | None
) -> tuple[FileStats, _Tally]:
    tally = _Tally(d.path.name, d.header)
    starts, ends = seen.snapshot(d.symbol)
    rows = dups = 0
    id_lo = id_hi = ts_lo = ts_hi = None
    saw_ms = saw_us = False
    reported = 0  # malformed rows told to progress (the text pass recounts from 0)
    try:
        for cols, read in _good_rows(d, tally):
            if progress is not None:
                progress(read + max(0, tally.malformed_rows - reported))
                reported = max(reported, tally.malformed_rows)
            n = len(cols["id"])
            if n == 0:
                continue
            ids = cols["id"].to_numpy()
            lo, hi = int(ids.min()), int(ids.max())
            id_lo = lo if id_lo is None else min(id_lo, lo)
            id_hi = hi if id_hi is None else max(id_hi, hi)
            dup = _duplicates(ids, starts, ends)
            if dup is not None:
                keep = pa.array(~dup)
                cols = {k: pc.filter(c, keep) for k, c in cols.items()}
                dups += int(dup.sum())
                n = len(cols["id"])
                if n == 0:
                    continue
            ns, lo, hi, ms, us = _to_ns(cols["time"])
            saw_ms, saw_us = saw_ms or ms, saw_us or us
            batch = pa.RecordBatch.from_arrays(
                [ns, ns, pa.repeat(SOURCE, n), pa.repeat(d.symbol, n), cols["id"],
                 cols["price"], cols["qty"], cols["is_buyer_maker"]],
                schema=TRADE.schema,
            )
            batch, invalid = check("trade", batch)  # the rules of every entry point (time floor, ...)
            if invalid:
                tally.broke_rules([bad.reason for bad in invalid])
                if not batch.num_rows:
                    continue
                lo, hi = (v.as_py() for v in pc.min_max(batch.column("ts_event")).values())
            ts_lo = lo if ts_lo is None else min(ts_lo, lo)
            ts_hi = hi if ts_hi is None else max(ts_hi, hi)
            writer.write("trade", batch)
            rows += batch.num_rows
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, pa.ArrowException) as exc:
        raise UserError(f"reading {str(d.path)!r} failed ({exc}); nothing was imported") from None
    if progress is not None and tally.malformed_rows > reported:
        progress(tally.malformed_rows - reported)
    if id_lo is not None and id_hi is not None:
        seen.add(d.symbol, id_lo, id_hi)
    unit: Literal["ms", "us", "ms+us"] | None = (
        "ms+us" if saw_ms and saw_us else "ms" if saw_ms else "us" if saw_us else None
    )
    stats = FileStats(
        path=d.path, symbol=d.symbol, kind=d.kind, checksum=d.checksum, rows=rows,
        bad_rows=tally.bad_rows, skipped_duplicates=dups, time_unit=unit,
        first_ts_event=ts_lo, last_ts_event=ts_hi,
    )
    return stats, tally


def estimate_rows(files: Sequence[str | Path]) -> int:
    """About how many rows ``files`` hold (CSV size / mean line length of the first lines).

    Cheap: reads zip directories and 64 KiB of each file. For a progress bar's total.
    """
    total = 0
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"{str(path)!r} does not exist or is not a file")
        if path.suffix.lower() == ".zip":
            member = _member(path)
            with zipfile.ZipFile(path) as zf:
                size = zf.getinfo(member).file_size
        else:
            member, size = None, path.stat().st_size
        lines = _head(path, member)
        if lines:
            mean = sum(len(ln) + 1 for ln in lines) / len(lines)
            total += round(size / mean)
    return total
