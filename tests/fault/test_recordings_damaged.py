"""Damaged recordings through the CLI: one line and exit code 2 naming the file, or the
results of the repaired data (never silently wrong results)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from qsframework.order import sort_table
from qsframework.recording import Recording, RecordingWriter
from qsframework.recording.files import runs as _runs
from qsframework.sim.market import simulate_trades

from ..conftest import SPREAD_SPEC, run_qsf as qsf

PARAMS = ("-p", "window=20s", "-p", "sample=1s", "-p", "threshold=0.002")


def backtest(rec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return qsf("backtest", SPREAD_SPEC, "--recording", str(rec), "--out", str(out), *PARAMS, *extra)


def signals(out: Path) -> pa.Table:
    return pq.read_table(out / "signals.parquet")


def write(rec: Path, tables: list[pa.Table]) -> None:
    with RecordingWriter(rec, rows_per_file=8_000) as w:
        for table in tables:
            w.write("trade", table)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, pa.Table]:
    """A 10-minute recording in several part files that do not overlap in time, and the
    signals a backtest gives on it."""
    root = tmp_path_factory.mktemp("damaged")
    rec = root / "rec"
    trades = list(simulate_trades(["BTCUSDT", "ETHUSDT"], minutes=10, seed=11))
    table = sort_table(pa.concat_tables(trades))
    step = pa.array(np.arange(table.num_rows, dtype=np.int64))  # distinct times: files cannot touch
    for name in ("ts_event", "ts_recv"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.add(table.column(name), step))
    write(rec, [table])
    write(root / "overlapping", trades)  # the simulator's chunks: files overlap in time
    assert all(not sort for _, sort in _runs(Recording(rec).files("trade")))
    r = backtest(rec, root / "out")
    assert r.returncode == 0, r.stderr
    ref = signals(root / "out")
    assert ref.num_rows > 100
    return rec, ref


@pytest.fixture()
def rec(pristine, tmp_path) -> Path:
    copy = tmp_path / "rec"
    shutil.copytree(pristine[0], copy)
    return copy


def parts(rec: Path) -> list[Path]:
    return sorted(rec.glob("kind=trade/date=*/part-*.parquet"))


def rewrite(path: Path, table: pa.Table, *, meta: dict | None = None, **kw) -> None:
    """Write ``table`` over ``path`` with the old footer (or ``meta`` merged into it)."""
    old = dict(pq.read_schema(path).metadata or {})
    old.update(meta or {})
    pq.write_table(table.replace_schema_metadata(old), path, compression="zstd", **kw)


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("qsf: error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unsorted_rows_inside_a_file_stop_naming_the_file(rec, tmp_path):
    victim = parts(rec)[1]
    table = pq.read_table(victim)
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    rewrite(victim, shuffled)
    r = backtest(rec, tmp_path / "out")
    one_error_line(r, str(victim), "not in (ts_event, source, key, seq) order")
    assert not (tmp_path / "out" / "signals.parquet").exists()  # outputs stay atomic


def test_unsorted_rows_in_overlapping_files_are_sorted_with_them(pristine, tmp_path):
    """Files that overlap in time are merged by a sort, which puts a shuffled one in order."""
    rec = tmp_path / "rec"
    shutil.copytree(pristine[0].parent / "overlapping", rec)
    assert len(Recording(rec).files("trade")) > 2
    victim = parts(rec)[1]
    table = pq.read_table(victim)
    rewrite(victim, table.take(pa.array(np.random.default_rng(2).permutation(table.num_rows))))
    r = backtest(rec, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    write(ref, list(simulate_trades(["BTCUSDT", "ETHUSDT"], minutes=10, seed=11)))
    assert backtest(ref, tmp_path / "ref-out").returncode == 0
    assert signals(tmp_path / "out").equals(signals(tmp_path / "ref-out"))


def test_rows_swapped_only_among_equal_times_are_caught_too(rec, tmp_path):
    """ts_event still ascends, but two rows at the same time are in the wrong (key) order."""
    victim = parts(rec)[0]
    table = pq.read_table(victim)
    keys = table.column("key").to_pylist()
    i = next(i for i in range(100, table.num_rows - 1) if keys[i] != keys[i + 1])
    ts = table.column("ts_event").to_numpy().copy()
    ts[i + 1] = ts[i]  # a tie, which (ts_event, source, key, seq) orders by key
    order = list(range(table.num_rows))
    if keys[i] < keys[i + 1]:
        order[i], order[i + 1] = i + 1, i
    table = table.set_column(0, "ts_event", pa.array(ts)).take(pa.array(order))
    rewrite(victim, table)
    one_error_line(backtest(rec, tmp_path / "out"), str(victim), "order")


def test_files_out_of_name_order_give_the_results_of_the_sorted_data(pristine, rec, tmp_path):
    files = parts(rec)
    first, last = files[0], files[-1]
    a, b = first.read_bytes(), last.read_bytes()
    first.write_bytes(b)  # the earliest rows now sit in the last file, and the other way
    last.write_bytes(a)
    r = backtest(rec, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert signals(tmp_path / "out").equals(pristine[1])


def test_a_footer_whose_time_range_lies_is_one_line(rec, tmp_path):
    victim = parts(rec)[2]
    meta = pq.read_schema(victim).metadata
    lo, hi = int(meta[b"qsf.ts_min"]), int(meta[b"qsf.ts_max"])
    day = 86_400 * 10**9
    rewrite(victim, pq.read_table(victim), meta={b"qsf.ts_min": str(lo + day).encode(),
                                                 b"qsf.ts_max": str(hi + day).encode()})
    one_error_line(backtest(rec, tmp_path / "out"), str(victim), "footer")
    one_error_line(qsf("recordings", "info", str(rec)), str(victim), "footer")


def test_a_lying_footer_without_statistics_is_caught_while_reading(rec, tmp_path):
    victim = parts(rec)[2]
    meta = pq.read_schema(victim).metadata
    lo, hi = int(meta[b"qsf.ts_min"]), int(meta[b"qsf.ts_max"])
    rewrite(victim, pq.read_table(victim), meta={b"qsf.ts_max": str((lo + hi) // 2).encode()},
            write_statistics=False)
    one_error_line(backtest(rec, tmp_path / "out"), str(victim), "outside the range its footer claims")


@pytest.mark.parametrize("column", ["ts_event", "price"])
def test_a_column_of_the_wrong_type_is_one_line(rec, tmp_path, column):
    victim = parts(rec)[1]
    table = pq.read_table(victim)
    i = table.schema.get_field_index(column)
    table = table.set_column(i, pa.field(column, pa.string()), pc.cast(table.column(column), pa.string()))
    rewrite(victim, table)
    one_error_line(backtest(rec, tmp_path / "out"), str(victim), f"column {column!r} as string")
    one_error_line(qsf("recordings", "info", str(rec)), str(victim), f"column {column!r} as string")


@pytest.mark.parametrize("statistics", [True, False])
def test_null_prices_are_one_line(rec, tmp_path, statistics):
    victim = parts(rec)[1]
    table = pq.read_table(victim)
    price = table.column("price").to_pylist()
    price[10] = None
    i = table.schema.get_field_index("price")
    table = table.set_column(i, pa.field("price", pa.float64(), nullable=True), pa.array(price, pa.float64()))
    rewrite(victim, table, write_statistics=statistics)
    one_error_line(backtest(rec, tmp_path / "out"), str(victim), "nulls in column 'price'")
    one_error_line(qsf("recordings", "info", str(rec)), str(victim), "nulls in column 'price'")


def test_corrupt_data_under_an_intact_footer_is_one_line(rec, tmp_path):
    victim = parts(rec)[1]
    md = pq.read_metadata(victim)
    col = md.row_group(0).column(md.schema.to_arrow_schema().get_field_index("price"))
    start = col.data_page_offset
    raw = bytearray(victim.read_bytes())
    noise = np.random.default_rng(1).integers(0, 256, col.total_compressed_size - 40, dtype=np.uint8)
    raw[start + 20 : start + 20 + len(noise)] = noise.tobytes()
    victim.write_bytes(bytes(raw))
    assert pq.read_metadata(victim).num_rows == md.num_rows  # the footer still reads
    one_error_line(backtest(rec, tmp_path / "out"), str(victim), "cannot be read")
    one_error_line(qsf("recordings", "info", str(rec)), str(victim), "cannot be read")


def test_invalid_rows_are_skipped_counted_and_listed_with_their_reason(rec, tmp_path):
    """Bad values, an event dated 1970 and one too far ahead of its ts_recv: the backtest
    runs on the rest, says so, and lists each skipped row with its reason."""
    victim = parts(rec)[1]
    table = pq.read_table(victim)
    n = table.num_rows
    price, qty = table.column("price").to_numpy().copy(), table.column("qty").to_numpy().copy()
    recv = table.column("ts_recv").to_numpy().copy()
    price[100], qty[200], qty[300], recv[400] = -1.0, 0.0, np.nan, recv[400] - 120 * 10**9
    bad = [100, 200, 300, 400]
    fixed = table.set_column(5, "price", pa.array(price)).set_column(6, "qty", pa.array(qty))
    fixed = fixed.set_column(1, "ts_recv", pa.array(recv))
    old = fixed.slice(0, 1).to_pylist()[0]
    early = pa.Table.from_pylist([{**old, "ts_event": 10**9, "ts_recv": 10**9}], schema=fixed.schema)
    damaged = pa.concat_tables([early, fixed])
    # the reference: the same recording without those rows, rows dropped by position
    ref_rec = tmp_path / "ref"
    shutil.copytree(rec, ref_rec)
    rewrite(victim, damaged, meta={b"qsf.ts_min": b"1000000000"})
    keep = [i for i in range(n) if i not in bad]
    rewrite(ref_rec / victim.relative_to(rec), table.take(pa.array(keep)),
            meta={b"qsf.rows": str(len(keep)).encode()})
    assert backtest(ref_rec, tmp_path / "ref-out").returncode == 0

    r = backtest(rec, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "qsf: warning: 5 events rejected and skipped" in r.stderr
    assert signals(tmp_path / "out").equals(signals(tmp_path / "ref-out"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rejected"]["total"] == 5
    assert report["rejected"]["reasons"] == {
        "price must be > 0": 1,
        "qty must be > 0": 1,
        "qty is not finite": 1,
        "ts_event more than 60 s ahead of ts_recv (max-future)": 1,
        "ts_event before the floor 2000-01-01T00:00:00Z": 1,
    }
    listed = duckdb.sql(
        f"SELECT reason, seq, file FROM '{tmp_path / 'out' / 'rejected.parquet'}' ORDER BY ts_event"
    ).fetchall()
    seqs = table.column("seq").to_pylist()
    assert sorted(s for _, s, _ in listed) == sorted([seqs[0], *(seqs[i] for i in bad)])
    assert {f for _, _, f in listed} == {str(victim)}

    # a looser --max-future lets the row 2 minutes ahead of its ts_recv through
    r = backtest(rec, tmp_path / "loose", "--max-future", "5m")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "loose" / "report.json").read_text())["rejected"]["total"] == 4


def test_exact_duplicates_in_a_recording_are_dropped_and_counted(pristine, rec, tmp_path):
    victim = parts(rec)[2]
    table = pq.read_table(victim)
    doubled = table.take(pa.array(sorted([*range(table.num_rows), 5, 6, 6, 700])))
    rewrite(victim, doubled, meta={b"qsf.rows": str(doubled.num_rows).encode()})
    r = backtest(rec, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "qsf: warning: 4 exact duplicate events dropped" in r.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["duplicates"] == 4
    assert signals(tmp_path / "out").equals(pristine[1])


def test_a_file_checked_once_is_checked_again_once_it_changes(rec, tmp_path):
    """Files that passed the checks are remembered (by path, size and time): a later change
    to one is seen all the same."""
    assert backtest(rec, tmp_path / "first").returncode == 0
    victim = parts(rec)[1]
    table = pq.read_table(victim)
    price = table.column("price").to_numpy().copy()
    price[7] = 0.0
    rewrite(victim, table.set_column(5, "price", pa.array(price)))
    r = backtest(rec, tmp_path / "second")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "second" / "report.json").read_text())
    assert report["rejected"]["reasons"] == {"price must be > 0": 1}
