"""The marks the execution loop takes from a batch's columns when it needs them (not per
event): every equity sample, on recordings longer than one chunk of the per-event loop, in
batches of several sizes, against the DuckDB as-of recomputation of tests/execution/recompute.py.
Two strategies: one that reads key and price (the loop reuses its lists) and one that reads
neither (the loop reads them from the batch)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework import Duration
from qsframework.recording import RecordingWriter

from ..conftest import T0
from . import recompute as rc
from .test_independent import schedule
from .traders import ScheduleParams

HERE = Path(__file__).parent
SPECS = [str(HERE / "traders.py") + ":Scheduled", str(HERE / "blind.py") + ":Blind"]
KEYS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def trades(seed: int, n: int) -> pa.Table:
    """``n`` trades of three keys: ties, short and long gaps, dyadic prices and quantities."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice([0, 1, 13, 60, 400, 2_500], size=n, p=[0.2, 0.2, 0.3, 0.2, 0.07, 0.03])
    ts = T0 + np.cumsum(gaps) * 1_000_000
    return pa.table({
        "ts_event": pa.array(ts, pa.int64()), "ts_recv": pa.array(ts, pa.int64()),
        "source": pa.array(rng.choice(["a", "b"], size=n)),
        "key": pa.array(rng.choice(KEYS, size=n, p=[0.6, 0.3, 0.1])),
        "seq": pa.array(np.arange(n), pa.int64()),
        "price": rng.integers(9_000, 11_000, size=n) / 100,
        "qty": rng.integers(1, 256, size=n) / 64,
        "is_buyer_maker": [False] * n,
    })


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(50, 9_000), st.sampled_from([7, 333, 4096, 65_536]),
       st.sampled_from([250_000_000, 10**9]), st.sampled_from(SPECS))
def test_equity_samples_mark_each_held_key_at_its_last_price(seed, n, batch, mark_every, spec):
    cfg = rc.Exec(mark_every_ns=mark_every, taker_fee_bps=7.5)
    p = ScheduleParams(keys=",".join(KEYS), every=Duration("1s"), hold=Duration("2500ms"), qty=0.25)
    params = {"keys": p.keys, "every": "1s", "hold": "2500ms", "qty": "0.25"}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rec"
        with RecordingWriter(rec) as w:
            w.write("trade", trades(seed, n))
        con = rc.connect(rec)
        orders = schedule(con, p)
        got = rc.backtest(spec, rec, Path(tmp) / "out", params, cfg, extra=["--batch-size", str(batch)])
        if orders:
            rc.check(got, con, orders, cfg)
        else:  # a recording too short for the first order: no execution files at all
            assert got["fills"] is None and got["orders"] is None and got["equity"] is None
