"""Binance dump importer: formats, time units, bad rows, checksums, symbols, dedupe."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest
from qsframework.adapters.binance import importer
from qsframework.adapters.binance.importer import estimate_rows, import_binance_csv

from qsframework.errors import UserError
from qsframework.recording import MANIFEST, Recording

MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z in ms
US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z in µs


def trade_line(tid: int, price: str, qty: str, t: int, maker: str = "True") -> str:
    return f"{tid},{price},{qty},12.50000000,{t},{maker},True"


def agg_line(aid: int, price: str, qty: str, t: int, maker: str = "False") -> str:
    return f"{aid},{price},{qty},{aid * 10},{aid * 10 + 2},{t},{maker},True"


def dump(directory: Path, name: str, lines: list[str], *, checksum: str | None = "good") -> Path:
    """Write ``lines`` as Binance does: NAME.zip holding NAME.csv (or a plain .csv)."""
    text = ("\n".join(lines) + "\n").encode()
    path = directory / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(name[:-4] + ".csv", text)
    else:
        path.write_bytes(text)
    if checksum is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if checksum == "good" else checksum
        (directory / f"{name}.CHECKSUM").write_text(f"{digest}  {name}\n")
    return path


def read_back(out: Path) -> dict[str, list]:
    batches = list(Recording(out).stream("trade"))
    return pa.Table.from_batches(batches).to_pydict() if batches else {}


def test_trades_zip_in_ms_verified(tmp_path):
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", [
        "3300000001,42000.01000000,0.00100000,42.00001000,1704067200123,True,True",
        "3300000002,42000.02000000,0.50000000,21000.01000000,1704067200123,False,True",
        "3300000003,41999.99000000,1.25000000,52499.98750000,1704067201999,false,true",
    ])
    stats = import_binance_csv([f], out=tmp_path / "rec")
    got = read_back(tmp_path / "rec")
    assert got["ts_event"] == [1704067200123000000, 1704067200123000000, 1704067201999000000]
    assert got["ts_recv"] == got["ts_event"]
    assert got["seq"] == [3300000001, 3300000002, 3300000003]
    assert got["price"] == [42000.01, 42000.02, 41999.99]
    assert got["qty"] == [0.001, 0.5, 1.25]
    assert got["is_buyer_maker"] == [True, False, False]
    assert set(got["source"]) == {"binance"} and set(got["key"]) == {"BTCUSDT"}
    assert (stats.rows, stats.bad_rows, stats.kind) == (3, 0, "trades")
    assert stats.by_symbol == {"BTCUSDT": 3}
    (fs,) = stats.files
    assert (fs.checksum, fs.time_unit, fs.kind) == ("verified", "ms", "trades")
    assert (stats.first_ts_event, stats.last_ts_event) == (1704067200123000000, 1704067201999000000)
    assert stats.unverified == ()
    origin = json.loads((tmp_path / "rec" / MANIFEST).read_text())["origin"]
    assert origin["source"] == "binance" and origin["synthetic"] is False
    assert [x["name"] for x in origin["files"]] == ["BTCUSDT-trades-2024-01-01.zip"]
    assert Recording(tmp_path / "rec").origin == origin


def test_agg_trades_csv_in_microseconds_exact_and_unverified(tmp_path):
    t = US + 123_457  # not representable exactly as float64 ns
    f = dump(tmp_path, "ETHUSDT-aggTrades-2025-01.csv", [
        agg_line(900, "3300.5", "2.0", t),
        agg_line(901, "3300.25", "0.125", t + 1, "True"),
    ], checksum=None)
    stats = import_binance_csv([f], out=tmp_path / "rec")
    got = read_back(tmp_path / "rec")
    assert got["ts_event"] == [1735689600123457000, 1735689600123458000]
    assert got["seq"] == [900, 901]  # the aggregate id, not the first/last trade ids
    assert got["price"] == [3300.5, 3300.25] and got["qty"] == [2.0, 0.125]
    assert got["is_buyer_maker"] == [False, True]
    assert got["key"] == ["ETHUSDT", "ETHUSDT"]
    assert stats.kind == "aggTrades" and stats.files[0].time_unit == "us"
    assert stats.files[0].checksum == "unverified" and stats.unverified == (f,)


def test_rows_come_back_in_total_order_across_days_and_units(tmp_path):
    day = 86_400_000
    f = dump(tmp_path, "BTCUSDT-trades-2024-01.zip", [
        trade_line(12, "10", "1", MS + day + 5),  # the next day, first in the file
        trade_line(11, "10", "1", MS + 7),
        trade_line(10, "10", "1", MS + 7),  # tie on time: seq decides
        trade_line(13, "10", "1", (MS + 3) * 1000 + 999),  # the same day, in µs
    ])
    stats = import_binance_csv([f], out=tmp_path / "rec")
    got = read_back(tmp_path / "rec")
    assert got["seq"] == [13, 10, 11, 12]
    assert got["ts_event"] == [
        (MS + 3) * 10**6 + 999_000, (MS + 7) * 10**6, (MS + 7) * 10**6, (MS + day + 5) * 10**6
    ]
    dates = sorted(p.parent.name for p in (tmp_path / "rec").glob("kind=trade/*/*.parquet"))
    assert dates == ["date=2024-01-01", "date=2024-01-02"]
    assert stats.files[0].time_unit == "ms+us"


def test_header_line_is_skipped_and_kind_comes_from_columns(tmp_path):
    f = dump(tmp_path, "export.csv", [
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match",
        agg_line(5, "1.5", "3", MS),
        "6,1.5,4",
        agg_line(7, "1.5", "4", MS + 1),
    ], checksum=None)
    stats = import_binance_csv([f], out=tmp_path / "rec", symbol="solusdt")
    got = read_back(tmp_path / "rec")
    assert got["seq"] == [5, 7] and got["key"] == ["SOLUSDT", "SOLUSDT"]
    assert stats.kind == "aggTrades" and stats.by_symbol == {"SOLUSDT": 2}
    assert stats.bad_rows == 1 and stats.bad_examples == (
        "line 3 of export.csv: expected 8 columns, found 3",
    )


def test_symbol_option_overrides_the_file_name(tmp_path):
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", [trade_line(1, "5", "1", MS)])
    stats = import_binance_csv([f], out=tmp_path / "rec", symbol="ethusdt")
    assert read_back(tmp_path / "rec")["key"] == ["ETHUSDT"]
    assert stats.by_symbol == {"ETHUSDT": 1}


def test_missing_symbol_is_a_user_error(tmp_path):
    f = dump(tmp_path, "trades.csv", [trade_line(1, "5", "1", MS)], checksum=None)
    with pytest.raises(UserError, match="symbol"):
        import_binance_csv([f], out=tmp_path / "rec")
    assert not (tmp_path / "rec").exists()


def test_checksum_mismatch_writes_nothing(tmp_path):
    good = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", [trade_line(1, "5", "1", MS)])
    bad = dump(tmp_path, "BTCUSDT-trades-2024-01-02.zip",
               [trade_line(2, "5", "1", MS + 86_400_000)], checksum="0" * 64)
    with pytest.raises(UserError, match=r"checksum mismatch.*BTCUSDT-trades-2024-01-02\.zip"):
        import_binance_csv([good, bad], out=tmp_path / "rec")
    assert not (tmp_path / "rec").exists()


def test_bad_rows_are_counted_and_good_rows_kept(tmp_path):
    lines = [
        trade_line(1, "10", "1", MS),           # line 1
        "2,10,1,10,1704067200001,True",         # line 2: 6 columns
        trade_line(3, "abc", "1", MS + 3),      # line 3: not a number
        trade_line(4, "10", "-1", MS + 4),      # line 4: negative qty
        trade_line(5, "0", "1", MS + 5),        # line 5: zero price
        trade_line(6, "10", "1", MS + 6, "maybe"),  # line 6: bad boolean
        "," + trade_line(7, "10", "1", MS + 7).split(",", 1)[1],  # line 7: empty id
        trade_line(8, "10", "1", 99_999_999_999_999),  # line 8: time out of range
        trade_line(9, "10", "1", MS + 9, "False"),     # line 9
        trade_line(10, "11", "2", MS + 10),     # line 10
    ]
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", lines)
    stats = import_binance_csv([f], out=tmp_path / "rec")
    got = read_back(tmp_path / "rec")
    assert got["seq"] == [1, 9, 10]
    assert got["is_buyer_maker"] == [True, False, True]
    assert got["price"] == [10.0, 10.0, 11.0]
    assert (stats.rows, stats.bad_rows, stats.files[0].bad_rows) == (3, 7, 7)
    name = "BTCUSDT-trades-2024-01-01.zip"
    assert [e.split(":")[0] for e in stats.bad_examples] == [
        f"line {n} of {name}" for n in (2, 3, 4, 5, 6, 7, 8)
    ]
    assert "price is not a number: 'abc'" in stats.bad_examples[1]
    assert "qty must be a positive number" in stats.bad_examples[2]
    assert "is_buyer_maker" in stats.bad_examples[4]


def test_bad_value_in_a_later_block_rereads_without_losing_or_doubling(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "BLOCK_SIZE", 300)  # a few rows per block
    lines = [trade_line(i, "100.5", "0.25", MS + i) for i in range(200)]
    lines[150] = trade_line(150, "1e", "0.25", MS + 150)  # only the text pass can take this block
    lines[20] = "20,100.5"  # malformed, in a block read on the typed pass
    lines[170] = trade_line(170, "100.5", "0", MS + 170)
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.csv", lines, checksum=None)
    seen: list[int] = []
    stats = import_binance_csv([f], out=tmp_path / "rec", progress=seen.append)
    got = read_back(tmp_path / "rec")
    assert got["seq"] == [i for i in range(200) if i not in (20, 150, 170)]
    assert stats.rows == 197 and stats.bad_rows == 3
    assert sum(seen) == 200 and len(seen) > 3
    assert [e.split(":")[0] for e in stats.bad_examples] == [
        f"line {n} of BTCUSDT-trades-2024-01-01.csv" for n in (21, 151, 171)
    ]


def test_values_that_parse_but_are_out_of_range_are_bad_rows(tmp_path):
    lines = [
        trade_line(1, "10", "1", US + 1),
        trade_line(2, "nan", "1", US + 2),
        trade_line(3, "10", "inf", US + 3),
        trade_line(-4, "10", "1", US + 4),
        trade_line(5, "-0.5", "1", US + 5),
        trade_line(6, "10", "1", 0),
        trade_line(7, "10", "1", 10**17),  # ns, not µs: would overflow
        trade_line(8, "10", "0.00000001", US + 8, "false"),
    ]
    f = dump(tmp_path, "BTCUSDT-trades-2025-01-01.zip", lines)
    seen: list[int] = []
    stats = import_binance_csv([f], out=tmp_path / "rec", progress=seen.append)
    got = read_back(tmp_path / "rec")
    assert got["seq"] == [1, 8] and got["qty"] == [1.0, 1e-8]
    assert got["ts_event"] == [(US + 1) * 1000, (US + 8) * 1000]
    assert stats.bad_rows == 6 and sum(seen) == 8
    assert [e.split(":")[0] for e in stats.bad_examples] == [
        f"line {n} of BTCUSDT-trades-2025-01-01.zip" for n in range(2, 8)
    ]
    assert "time 100000000000000000 is out of range" in stats.bad_examples[-1]


def test_rows_that_break_the_validity_rules_are_bad_rows(tmp_path):
    """Times that parse but lie before the floor (2000-01-01) are rejected like every entry
    point rejects them, with the rule as the reason; the other rows are kept."""
    lines = [
        trade_line(1, "10", "1", MS + 1),
        trade_line(2, "10", "1", 5),  # 5 ms after 1970-01-01
        trade_line(3, "10", "1", 946_684_799_999),  # 1999-12-31T23:59:59.999Z
        trade_line(4, "10", "1", MS + 4),
    ]
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", lines)
    stats = import_binance_csv([f], out=tmp_path / "rec")
    got = read_back(tmp_path / "rec")
    assert got["seq"] == [1, 4] and stats.rows == 2 and stats.bad_rows == 2
    assert stats.bad_examples == (
        "BTCUSDT-trades-2024-01-01.zip: ts_event before the floor 2000-01-01T00:00:00Z",) * 2
    assert stats.files[0].first_ts_event == (MS + 1) * 10**6


@pytest.mark.parametrize("monthly_first", [False, True])
def test_overlapping_daily_and_monthly_files_are_written_once(tmp_path, monthly_first):
    daily = dump(tmp_path, "BTCUSDT-trades-2024-01-15.zip",
                 [trade_line(i, "10", "1", MS + i) for i in range(100, 105)])
    monthly = dump(tmp_path, "BTCUSDT-trades-2024-01.zip",
                   [trade_line(i, "10", "1", MS + i) for i in range(90, 111)])
    files = [monthly, daily] if monthly_first else [daily, monthly]
    stats = import_binance_csv(files, out=tmp_path / "rec")
    assert read_back(tmp_path / "rec")["seq"] == list(range(90, 111))
    assert stats.rows == 21 and stats.skipped_duplicates == 5
    skipped = {fs.path.name: fs.skipped_duplicates for fs in stats.files}
    assert skipped[files[1].name] == 5 and skipped[files[0].name] == 0


def test_same_ids_of_another_symbol_are_not_duplicates(tmp_path):
    a = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", [trade_line(1, "10", "1", MS)])
    b = dump(tmp_path, "ETHUSDT-trades-2024-01-01.zip", [trade_line(1, "2", "1", MS)])
    stats = import_binance_csv([a, b], out=tmp_path / "rec")
    assert stats.by_symbol == {"BTCUSDT": 1, "ETHUSDT": 1} and stats.skipped_duplicates == 0


def test_files_that_cannot_be_imported_together_or_at_all(tmp_path):
    t = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip", [trade_line(1, "10", "1", MS)])
    a = dump(tmp_path, "BTCUSDT-aggTrades-2024-01-01.zip", [agg_line(1, "10", "1", MS)])
    with pytest.raises(UserError, match="both trades and aggTrades"):
        import_binance_csv([t, a], out=tmp_path / "rec")
    wrong = dump(tmp_path, "BTCUSDT-trades-2024-01-02.csv", [agg_line(1, "10", "1", MS)])
    with pytest.raises(UserError, match="named as trades but its rows have 8 columns"):
        import_binance_csv([wrong], out=tmp_path / "rec")
    with pytest.raises(UserError, match="does not exist"):
        import_binance_csv([tmp_path / "nope.zip"], out=tmp_path / "rec")
    assert not (tmp_path / "rec").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UserError, match="not an empty directory"):
        import_binance_csv([t], out=tmp_path / "full")


def test_estimate_rows_is_close(tmp_path):
    f = dump(tmp_path, "BTCUSDT-trades-2024-01-01.zip",
             [trade_line(i, "42000.01", "0.001", MS + i) for i in range(5000)])
    assert 4500 <= estimate_rows([f]) <= 5500


def test_cli_import_then_backtest(tmp_path):
    """The README's path for historical data: import a month of dumps, backtest on it."""
    import subprocess

    from ...conftest import qsf_cmd

    t0 = 1_735_689_600_000_000  # 2025-01-01, microseconds as in 2025 dumps
    files = []
    for sym, px, base in (("BTCUSDT", 94000.0, 4_000_000_000), ("ETHUSDT", 3300.0, 1_900_000_000)):
        lines = [trade_line(base + i, f"{px * (1 + 0.0001 * ((i * 7) % 13 - 6)):.2f}", "0.01000000",
                            t0 + i * 150_000 + (sym == "ETHUSDT") * 70_000) for i in range(4000)]
        files.append(dump(tmp_path, f"{sym}-trades-2025-01.zip", lines))
    bad = dump(tmp_path, "ETHUSDT-trades-2025-02.zip", [trade_line(1, "1", "1", t0)], checksum="bad")
    out = tmp_path / "rec"
    r = subprocess.run([*qsf_cmd(), "recordings", "import", "binance-csv", *map(str, files), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "imported 8,000 trades" in r.stdout and "checksum verified" in r.stdout
    bt = subprocess.run([*qsf_cmd(), "backtest", "strategies/btc_eth_spread.py:BtcEthSpread", "--recording",
                         str(out), "--out", str(tmp_path / "bt"), "-p", "window=30s"],
                        capture_output=True, text=True, timeout=120)
    assert bt.returncode == 0, bt.stderr
    assert json.loads((tmp_path / "bt" / "report.json").read_text())["events_in"] == 8000
    r = subprocess.run([*qsf_cmd(), "recordings", "import", "binance-csv", str(bad), "--out", str(tmp_path / "r2")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "checksum" in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r2").exists()
