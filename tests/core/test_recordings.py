"""Recordings: round trip, ordering, filters, atomic files, info, corrupt input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.errors import UserError
from qsframework.order import sort_table
from qsframework.recording import FORMAT_VERSION, MANIFEST, Recording, RecordingWriter

from ..conftest import T0, make_trades

DAY = 86_400 * 10**9


def read_all(rec: Recording, **kw) -> pa.Table:
    batches = list(rec.stream("trade", **kw))
    return pa.Table.from_batches(batches) if batches else pa.table({})


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 3000), chunks=st.integers(1, 6),
       rows_per_file=st.sampled_from([50, 700, 100_000]), batch=st.sampled_from([1, 7, 4096]))
def test_round_trip_in_total_order_whatever_the_write_order(tmp_path_factory, seed, n, chunks, rows_per_file, batch):
    table = make_trades(seed, n, gaps_ms=(0, 1, 100, 3_600_000 * 5))  # spans several days
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    root = tmp_path_factory.mktemp("rec")
    with RecordingWriter(root, rows_per_file=rows_per_file) as w:
        for part in np.array_split(perm, chunks):
            w.write("trade", table.take(pa.array(part)))
    rec = Recording(root)
    batches = list(rec.stream("trade", batch_size=batch))
    assert all(b.num_rows == batch for b in batches[:-1])
    assert pa.Table.from_batches(batches).equals(sort_table(table))
    # Hive layout, one date per directory, zstd, sorted files, version recorded
    for f in rec.files("trade"):
        day = f.path.parent.name.removeprefix("date=")
        ts = pq.read_table(f.path).column("ts_event").to_numpy()
        assert (np.datetime64(int(ts.min()), "ns").astype("datetime64[D]").astype(str)) == day
        assert (np.diff(ts) >= 0).all()
        md = pq.read_metadata(f.path)
        assert md.metadata[b"qsf.format_version"] == str(FORMAT_VERSION).encode()
        assert md.row_group(0).column(0).compression == "ZSTD"
    assert json.loads((root / MANIFEST).read_text())["version"] == FORMAT_VERSION


def test_filters_by_time_and_key(tmp_path):
    table = make_trades(11, 5000, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    with RecordingWriter(tmp_path, rows_per_file=1000) as w:
        w.write("trade", table)
    rec = Recording(tmp_path)
    ts = table.column("ts_event").to_numpy()
    start, end = int(ts[1200]), int(ts[3900])
    got = read_all(rec, start=start, end=end, keys=["ETHUSDT", "SOLUSDT"])
    mask = (ts >= start) & (ts < end) & np.isin(table.column("key").to_numpy(zero_copy_only=False), ["ETHUSDT", "SOLUSDT"])
    assert got.equals(table.filter(pa.array(mask)))
    assert read_all(rec, start=int(ts[-1]) + 1).num_rows == 0


def test_info_counts_keys_and_span(tmp_path):
    table = make_trades(12, 2000, symbols=("BTCUSDT", "ETHUSDT"))
    with RecordingWriter(tmp_path) as w:
        w.write("trade", table)
    info = Recording(tmp_path).info()["kinds"]["trade"]
    keys = table.column("key").to_pylist()
    assert info["rows"] == 2000
    assert info["keys"]["BTCUSDT"]["rows"] == keys.count("BTCUSDT")
    assert info["ts_min"] == table.column("ts_event")[0].as_py()
    assert info["ts_max"] == table.column("ts_event")[-1].as_py()


def test_bad_recordings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Recording(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a recording"):
        Recording(tmp_path / "empty")
    with RecordingWriter(tmp_path / "r") as w:
        w.write("trade", make_trades(1, 100))
    part = next((tmp_path / "r").rglob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt"):
        Recording(tmp_path / "r")


WRITER = """
import sys, itertools
sys.path.insert(0, {root!r})
from tests.conftest import make_trades
from qsframework.recording import RecordingWriter
w = RecordingWriter({out!r}, rows_per_file=20_000)
for i in itertools.count():
    w.write("trade", make_trades(i, 20_000, start={t0} + i * 10**13))
    print(i, flush=True)
"""


def test_killed_writer_leaves_only_whole_files(tmp_path):
    from ..conftest import ROOT

    out = tmp_path / "rec"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(ROOT), out=str(out), t0=T0)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    for _ in range(3):
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rec = Recording(out)  # every visible file has a valid footer
    files = rec.files("trade")
    assert len(files) >= 3
    for f in files:
        assert pq.read_table(f.path).num_rows == f.rows > 0
    assert sum(b.num_rows for b in rec.stream("trade")) == sum(f.rows for f in files)
    assert not list(out.rglob("*.parquet.tmp")) or all(p.name.startswith(".") for p in out.rglob("*.tmp"))
