"""The grid's ranges (exact, hi included when on the grid) and the shared decoded recording
(read as the recording it came from: the same rows, rejected rows and counts)."""

from __future__ import annotations

from fractions import Fraction

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.durations import Duration
from qsframework.recording import Recording
from qsframework.sweep.grid import parse_values
from qsframework.sweep.shared import SharedRecording, decode
from qsframework.validity import DEFAULT_BOUNDS, TimeBounds

from .conftest import PAIRS  # noqa: F401 - the package's fixtures


@settings(max_examples=60)
@given(lo=st.integers(0, 10_000), step=st.integers(1, 500), count=st.integers(0, 40),
       extra=st.integers(0, 499), digits=st.integers(0, 6))
def test_a_float_range_is_exact_and_includes_hi_on_the_grid(lo, step, count, extra, digits):
    scale = Fraction(1, 10**digits)
    hi = lo + count * step + min(extra, step - 1)  # on the grid when extra is 0
    text = ":".join(f"{n}e-{digits}" for n in (lo, hi, step))
    want, v = [], Fraction(lo) * scale
    while v <= hi * scale:
        want.append(float(v))  # the float nearest the exact value
        v += step * scale
    assert list(parse_values("threshold", float, text)) == want


def test_duration_and_int_ranges():
    assert parse_values("window", Duration, "30s:2m:30s") == (30_000_000_000, 60_000_000_000,
                                                              90_000_000_000, 120_000_000_000)
    assert [str(v) for v in parse_values("window", Duration, "30s,1m,30s")] == ["30s", "1m"]
    assert parse_values("n", int, "1:10:4") == (1, 5, 9)


def concat(windows) -> dict[str, pa.Table]:
    out: dict[str, list] = {}
    for w in windows:
        for kind, batch in zip(w.kinds, w.batches):
            out.setdefault(kind, []).append(batch)
    return {k: pa.Table.from_batches(v) for k, v in out.items()}


@pytest.mark.parametrize("narrow", [False, True])
def test_the_shared_recording_reads_as_the_recording(recording, tmp_path, narrow):
    lo, hi = duckdb.connect().execute(
        f"SELECT min(ts_event), max(ts_event) FROM read_parquet('{recording}/kind=*/*/*.parquet')").fetchone()
    bounds = TimeBounds(max_future_ns=DEFAULT_BOUNDS.max_future_ns, floor_ns=lo + 60 * 10**9)
    cols = {"trade": ["ts_event", "ts_recv", "source", "key", "seq", "price", "qty"]}
    path = decode(recording, tmp_path / "cache", kinds=["trade"], keys=None, start=None, end=None,
                  bounds=bounds, columns=cols, batch_size=4096)
    shared, original = SharedRecording(path), Recording(recording)
    start, end, keys = (lo + 30 * 10**9, hi - 60 * 10**9, ["BTCUSDT"]) if narrow else (None, None, None)
    got_rej, want_rej = [], []
    got = concat(shared.windows(["trade"], start=start, end=end, keys=keys, batch_size=4096, columns=cols,
                                bounds=bounds, on_reject=got_rej.append))
    want = concat(original.windows(["trade"], start=start, end=end, keys=keys, batch_size=4096, columns=cols,
                                   bounds=bounds, on_reject=want_rej.append))
    assert got["trade"].num_rows > 0 and got["trade"].equals(want["trade"])
    assert sum(r.rows.num_rows for r in want_rej) > 0  # the floor's
    assert pa.concat_tables([r.rows for r in got_rej]).equals(pa.concat_tables([r.rows for r in want_rej]))
    assert [x for r in got_rej for x in r.reasons] == [x for r in want_rej for x in r.reasons]
    assert shared.count(["trade"], start=start, end=end, keys=keys) == original.count(
        ["trade"], start=start, end=end, keys=keys)
    assert (shared.kinds, shared.span(), shared.root) == (original.kinds, original.span(), original.root)
