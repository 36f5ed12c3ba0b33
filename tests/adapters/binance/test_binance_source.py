"""The dump importer as a FileSource: trade batches in the order of the files, through
pump() to any sink, and every bad row handed to on_reject once, with its reason, text and line.

Expected rows and reasons are written out from the CSV lines the tests make."""

from __future__ import annotations

import asyncio
import json

import pyarrow as pa
import pytest
from qsframework.adapters.binance import importer
from qsframework.adapters.binance.importer import BinanceCsvSource, import_binance_csv

from qsframework.errors import UserError
from qsframework.io import FileSource, Rejected, pump
from qsframework.testing import ListSink

from .test_binance_import import MS, dump, read_back, trade_line


def refusals(source: FileSource) -> list[Rejected]:
    """The list ``source`` hands what it refuses to, from now on."""
    refused: list[Rejected] = []

    async def keep(rejected: Rejected) -> None:
        refused.append(rejected)

    source.on_reject = keep
    return refused


def run(source: FileSource) -> tuple[ListSink, list[Rejected]]:
    """Pump ``source`` into a ListSink, keeping what it refuses."""
    refused = refusals(source)
    sink = ListSink()
    asyncio.run(pump(source, [sink]))
    return sink, refused


def origin(r: Rejected) -> dict[str, str]:
    return {k: v.decode() for k, v in r.origin}


def test_dumps_are_a_file_source_of_trades_in_file_order_with_bad_rows_refused(tmp_path):
    btc = dump(tmp_path, "BTCUSDT-trades-2024-01-01.csv", [
        trade_line(1, "10", "1", MS),            # line 1
        "2,10,1",                                # line 2: 3 columns
        trade_line(3, "abc", "1", MS + 3),       # line 3: not a number (the text pass)
        trade_line(4, "10", "-1", MS + 4),       # line 4: negative qty
        trade_line(5, "10", "1", 1_000),         # line 5: 1970, before the validity floor
        trade_line(6, "12", "2", MS + 6),        # line 6
    ], checksum=None)
    eth = dump(tmp_path, "ETHUSDT-trades-2024-01-01.zip", [
        trade_line(7, "2", "3", MS + 1), trade_line(8, "2.5", "4", MS + 2),
    ])
    source = BinanceCsvSource([btc, eth])
    assert isinstance(source, FileSource)
    sink, refused = run(source)

    assert {kind for kind, _ in sink.batches} == {"trade"}
    got = sink.table("trade").to_pydict()
    assert got["key"] == ["BTCUSDT", "BTCUSDT", "ETHUSDT", "ETHUSDT"]  # file after file
    assert got["seq"] == [1, 6, 7, 8]
    assert got["price"] == [10.0, 12.0, 2.0, 2.5]
    assert got["ts_event"] == [(MS + d) * 1_000_000 for d in (0, 6, 1, 2)]
    assert sink.flushes >= 1 and sink.closed

    assert [r.kind for r in refused] == ["trade"] * 4
    by_line = {origin(r).get("line"): r for r in refused}
    assert set(by_line) == {"2", "3", "4", None}
    assert all(origin(r)["file"] == btc.name for r in refused)
    assert by_line["2"].value == b"2,10,1" and by_line["2"].reason == "expected 7 columns, found 3"
    assert by_line["3"].reason == "price is not a number: 'abc'"
    assert json.loads(by_line["3"].value)["price"] == "abc"  # as read
    assert by_line["4"].reason.startswith("qty must be a positive number")
    assert json.loads(by_line["4"].value)["qty"] == "-1"
    assert by_line[None].reason.startswith("ts_event before the floor")
    assert json.loads(by_line[None].value)["seq"] == 5  # the event, as JSON
    stats = source.stats(tmp_path / "unused")
    assert stats.bad_rows == len(refused) and stats.rows == 4
    assert [f.rows for f in stats.files] == [2, 2]


def test_a_re_read_from_the_text_pass_refuses_each_bad_row_once(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "BLOCK_SIZE", 300)  # a few rows per block
    lines = [trade_line(i, "100.5", "0.25", MS + i) for i in range(200)]
    lines[20] = "20,100.5"  # malformed, in a block read on the typed pass, read again as text
    lines[150] = trade_line(150, "1e", "0.25", MS + 150)  # only the text pass can take this block
    lines[170] = trade_line(170, "100.5", "0", MS + 170)
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.csv", lines, checksum=None)
    sink, refused = run(BinanceCsvSource([f]))
    assert sink.table("trade").column("seq").to_pylist() == [i for i in range(200) if i not in (20, 150, 170)]
    assert [origin(r)["line"] for r in refused] == ["21", "151", "171"]
    assert refused[0].value == b"20,100.5"


def test_without_a_handler_nothing_is_held_and_the_import_is_unchanged(tmp_path):
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", [
        trade_line(1, "10", "1", MS), "2,10,1", trade_line(3, "11", "1", MS + 3),
    ])
    source = BinanceCsvSource([f])
    batches = list(source)  # read synchronously, as a FileSource may be
    assert pa.concat_tables([t for _, t in batches]).column("seq").to_pylist() == [1, 3]
    assert source._refused == []
    stats = import_binance_csv([f], out=tmp_path / "rec")
    assert read_back(tmp_path / "rec")["seq"] == [1, 3] and stats.bad_rows == 1


def test_files_are_checked_when_the_source_is_made(tmp_path):
    good = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", [trade_line(1, "5", "1", MS)])
    bad = dump(tmp_path, "BTCUSDT-trades-2024-01-02.zip", [trade_line(2, "5", "1", MS)], checksum="0" * 64)
    with pytest.raises(UserError, match="checksum mismatch"):
        BinanceCsvSource([good, bad])
    with pytest.raises(UserError, match="no dump files"):
        BinanceCsvSource([])
