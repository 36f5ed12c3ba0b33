"""Binance historical dump files (data.binance.vision), resolved before anything is read:
the CSV a ``.zip`` holds, the symbol and kind (``trades``/``aggTrades``) its name and columns
tell, a header line or none, and the SHA-256 its ``.CHECKSUM`` file names."""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from qsframework.errors import UserError

Kind = Literal["trades", "aggTrades"]
Checksum = Literal["verified", "unverified"]

COLUMNS: dict[Kind, tuple[str, ...]] = {
    "trades": ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"),
    "aggTrades": (
        "id", "price", "qty", "first_trade_id", "last_trade_id", "time",
        "is_buyer_maker", "is_best_match",
    ),
}
_BY_COLUMNS: dict[int, Kind] = {len(c): k for k, c in COLUMNS.items()}
_NAME = re.compile(  # BTCUSDT-trades-2024-01-15, BTCUSDT-aggTrades-2024-01
    r"^(?P<symbol>[^-\s]+)-(?P<kind>trades|aggtrades)-\d{4}-\d{2}(-\d{2})?$", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Dump:
    """A dump file, resolved: where its CSV is and what it holds."""

    path: Path
    member: str | None  # the CSV inside the zip; None for a plain CSV
    symbol: str
    kind: Kind
    header: bool
    checksum: Checksum


def csv_member(path: Path) -> str:
    """The CSV file inside the zip ``path``: the one named like it, else its only one."""
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
def open_csv(path: Path, member: str | None) -> Iterator[IO[bytes]]:
    """The CSV bytes of a dump: the file itself, or ``member`` of the zip."""
    if member is None:
        with open(path, "rb") as fh:
            yield fh
    else:
        with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
            yield fh


def head(path: Path, member: str | None) -> list[bytes]:
    """The first complete lines of the CSV (about 64 KiB), blank lines dropped."""
    with open_csv(path, member) as fh:
        data = fh.read(1 << 16)
        more = bool(fh.read(1))
    lines = data.split(b"\n")
    if more:
        lines = lines[:-1]  # cut mid-line
    return [ln.strip() for ln in lines if ln.strip()]


def _verify(path: Path) -> Checksum:
    """Check ``path`` against its ``.CHECKSUM`` file, when it has one."""
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


def binance_symbol(symbol: str | None) -> str | None:
    """A symbol given by the user, upper-cased; one that cannot be a Binance symbol is refused."""
    if symbol is None:
        return None
    symbol = symbol.strip().upper()
    if not symbol or re.search(r"[\s,/-]", symbol):
        raise UserError(f"symbol {symbol!r} is not a Binance symbol such as BTCUSDT")
    return symbol


def resolve(file: str | Path, symbol: str | None) -> Dump:
    """The dump ``file``, checked (name, columns, checksum); ``symbol`` overrides its name's."""
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
    member = csv_member(path) if suffix == ".zip" else None
    try:
        lines = head(path, member)
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
    return Dump(path, member, sym, kind, header, checksum)


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
            member = csv_member(path)
            with zipfile.ZipFile(path) as zf:
                size = zf.getinfo(member).file_size
        else:
            member, size = None, path.stat().st_size
        lines = head(path, member)
        if lines:
            mean = sum(len(ln) + 1 for ln in lines) / len(lines)
            total += round(size / mean)
    return total
