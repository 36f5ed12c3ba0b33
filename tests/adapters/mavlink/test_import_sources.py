"""The .tlog and DataFlash readers as FileSources: their events through pump() to any sink,
and every event that breaks a validity rule handed to on_reject once, as JSON with its reason,
also when the log turns out to hold no valid telemetry at all.

Expected counts come from pymavlink's own parsers (see tests/fault/test_mavlink_imports.py)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from qsframework.adapters.mavlink.dataflash import DataflashSource
from qsframework.adapters.mavlink.tlog import TlogSource

from qsframework.errors import UserError
from qsframework.io import pump
from qsframework.testing import ListSink

from ...fakes.dataflash_gen import write_boot_time_log, write_dataflash
from ...fault.test_mavlink_imports import bad_value_tlog, expected_rejects
from ..binance.test_binance_source import refusals, run
from .test_dataflash import reference_counts


def test_a_tlog_is_a_file_source_and_its_bad_telemetry_goes_to_on_reject(tmp_path):
    path = bad_value_tlog(tmp_path / "bad.tlog")
    valid, rejected = expected_rejects(path)
    source = TlogSource(path)
    sink, refused = run(source)
    assert Counter({kind: sink.table(kind).num_rows for kind in {k for k, _ in sink.batches}}) == valid
    assert Counter(f"{r.kind}: {r.reason}" for r in refused) == rejected
    assert all(dict(r.origin) == {"file": b"bad.tlog"} for r in refused)
    lats = [json.loads(r.value)["lat"] for r in refused if r.kind == "position"]
    assert lats and all(lat == 200.0 for lat in lats)  # the event as decoded, 2e9 * 1e-7 degrees
    assert source.stats.rejected == dict(rejected)
    assert source.origin()["rejected"] == dict(rejected)


def test_a_dataflash_log_is_a_file_source(tmp_path):
    path = write_dataflash(tmp_path / "flight.bin", 30)
    want, _ = reference_counts(path)
    sink, refused = run(DataflashSource(path, chunk=500))  # several batches
    kinds = {k for k, _ in sink.batches}
    assert Counter({k: sink.table(k).num_rows for k in kinds if k != "heartbeat"}) == want
    seqs = [s for _, t in sink.batches for s in t.column("seq").to_pylist()]
    assert sorted(seqs) == sorted(set(seqs))  # no event twice
    assert refused == []


def test_a_log_without_valid_telemetry_hands_its_rejects_over_before_failing(tmp_path):
    path = write_boot_time_log(tmp_path / "nogps.bin", 100)  # times since boot: before the floor
    source = DataflashSource(path)
    sink = ListSink()
    refused = refusals(source)
    with pytest.raises(UserError, match="no valid telemetry"):
        asyncio.run(pump(source, [sink]))
    assert len(refused) == 100 and sink.batches == []
    assert {r.kind for r in refused} == {"attitude"}
    assert all(r.reason.startswith("ts_event before the floor") for r in refused)
    assert sorted(json.loads(r.value)["seq"] for r in refused) == list(range(100))
