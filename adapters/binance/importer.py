"""Import Binance historical spot dumps (data.binance.vision) into a recording of trades:
:class:`BinanceCsvSource` reads them as a :class:`~qsframework.io.FileSource`,
:func:`import_binance_csv` writes it as a new recording.

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

import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from qsframework.errors import UserError
from qsframework.events import TRADE
from qsframework.io import Batch
from qsframework.recording.imports import ImportSource, import_recording
from qsframework.validity import check

from .csv_rows import FALSE, MAX_EXAMPLES, TRUE, TYPES, USED, Seen, Tally, duplicates, from_text, keep_good, to_ns
from .dumps import COLUMNS, Checksum, Dump, Kind, binance_symbol, estimate_rows, open_csv, resolve

__all__ = ["BLOCK_SIZE", "BinanceCsvSource", "FileStats", "ImportStats", "estimate_rows", "import_binance_csv"]

SOURCE = "binance"
BLOCK_SIZE = 4 << 20  # bytes of CSV per Arrow batch


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


# -- reading ---------------------------------------------------------------------------
def _csv_batches(dump: Dump, tally: Tally, *, text: bool) -> Iterator[pa.RecordBatch]:
    names = COLUMNS[dump.kind]
    types = {n: pa.string() for n in USED} if text else TYPES
    with open_csv(dump.path, dump.member) as fh:
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
                include_columns=list(USED),
                null_values=[],
                strings_can_be_null=False,
                true_values=TRUE,
                false_values=FALSE,
            ),
        )
        yield from reader


def _good_rows(dump: Dump, tally: Tally) -> Iterator[tuple[dict[str, pa.Array], int]]:
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
        cols = {n: batch.column(n) for n in USED}
        yield keep_good(cols, None, None, tally, done), batch.num_rows
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
        cols, oks = from_text(batch)
        yield keep_good(cols, oks, batch, tally, start), batch.num_rows


class BinanceCsvSource(ImportSource):
    """Trades of Binance spot ``trades``/``aggTrades`` dumps, file after file in the order
    given, a block of CSV at a time (kind ``trade``). Every file is checked (name, columns,
    checksum) when the source is made, before anything is read. Bad rows are counted per
    file (:attr:`files`, :meth:`stats`) and, with :attr:`on_reject`, handed over with their
    reason; ``progress(n)`` is called with the rows just read."""

    def __init__(self, files: Sequence[str | Path], *, symbol: str | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        if not files:
            raise UserError("no dump files to import")
        self.dumps = [resolve(f, binance_symbol(symbol)) for f in files]
        kinds: dict[str, set[str]] = {}
        for d in self.dumps:
            kinds.setdefault(d.symbol, set()).add(d.kind)
            if len(kinds[d.symbol]) > 1:
                raise UserError(
                    f"{d.symbol} has both trades and aggTrades files; import one kind per recording"
                )
        self.progress = progress
        self.files: list[FileStats] = []  # of the files read so far
        self.examples: list[str] = []  # their first bad rows' reasons
        self._seen = Seen()

    def origin(self) -> dict:
        return {
            "synthetic": False,
            "source": SOURCE,
            "imported_from": "Binance historical spot dumps (data.binance.vision)",
            "importer": __name__,
            "files": [{"name": d.path.name, "symbol": d.symbol, "kind": d.kind,
                       "checksum": d.checksum} for d in self.dumps],
        }

    def __iter__(self) -> Iterator[Batch]:
        for d in self.dumps:
            yield from self._read(d)

    def stats(self, out: Path) -> ImportStats:
        """The totals of the files read, imported into ``out``."""
        results = self.files
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
            bad_examples=tuple(self.examples[:MAX_EXAMPLES]),
        )

    def _read(self, d: Dump) -> Iterator[Batch]:
        """The trades of one dump; its :class:`FileStats` are added to :attr:`files` at its end."""
        tally = Tally(d.path.name, d.header, refuse=self.refuse if self.refusing else None)
        starts, ends = self._seen.snapshot(d.symbol)
        progress = self.progress
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
                dup = duplicates(ids, starts, ends)
                if dup is not None:
                    keep = pa.array(~dup)
                    cols = {k: pc.filter(c, keep) for k, c in cols.items()}
                    dups += int(dup.sum())
                    n = len(cols["id"])
                    if n == 0:
                        continue
                ns, lo, hi, ms, us = to_ns(cols["time"])
                saw_ms, saw_us = saw_ms or ms, saw_us or us
                batch = pa.RecordBatch.from_arrays(
                    [ns, ns, pa.repeat(SOURCE, n), pa.repeat(d.symbol, n), cols["id"],
                     cols["price"], cols["qty"], cols["is_buyer_maker"]],
                    schema=TRADE.schema,
                )
                full = batch
                batch, invalid = check("trade", batch)  # the rules of every entry point (time floor, ...)
                if invalid:
                    tally.broke_rules([bad.reason for bad in invalid])
                    self.refuse_invalid("trade", full, invalid, (("file", d.path.name.encode()),))
                    if not batch.num_rows:
                        continue
                    lo, hi = (v.as_py() for v in pc.min_max(batch.column("ts_event")).values())
                ts_lo = lo if ts_lo is None else min(ts_lo, lo)
                ts_hi = hi if ts_hi is None else max(ts_hi, hi)
                rows += batch.num_rows
                yield "trade", pa.Table.from_batches([batch])
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, pa.ArrowException) as exc:
            raise UserError(f"reading {str(d.path)!r} failed ({exc}); nothing was imported") from None
        if progress is not None and tally.malformed_rows > reported:
            progress(tally.malformed_rows - reported)
        if id_lo is not None and id_hi is not None:
            self._seen.add(d.symbol, id_lo, id_hi)
        unit: Literal["ms", "us", "ms+us"] | None = (
            "ms+us" if saw_ms and saw_us else "ms" if saw_ms else "us" if saw_us else None
        )
        self.files.append(FileStats(
            path=d.path, symbol=d.symbol, kind=d.kind, checksum=d.checksum, rows=rows,
            bad_rows=tally.bad_rows, skipped_duplicates=dups, time_unit=unit,
            first_ts_event=ts_lo, last_ts_event=ts_hi,
        ))
        self.examples += tally.examples()


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
    symbol = binance_symbol(symbol)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{str(out)!r} exists and is not an empty directory; choose a new one")
    source = BinanceCsvSource(files, symbol=symbol, progress=progress)
    import_recording(source, out)
    return source.stats(out)
