"""DESIGN.md invariants 1-3 as properties: determinism, total order, batch-boundary invariance."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.engine import Engine

from ..conftest import make_trades


def run(cls, table: pa.Table, *, path: str, batch_size: int, **overrides) -> tuple[pa.Table, pa.Table]:
    engine = Engine(cls, overrides={k: str(v) for k, v in overrides.items()}, path=path)
    for batch in table.to_batches(max_chunksize=batch_size):
        engine.process("trade", batch)
    engine.finish()
    out = engine.ctx.outputs
    return out.signals.drain(), out.alerts.drain()


params = st.fixed_dictionaries(
    {
        "window_sample": st.sampled_from([("1s", "250ms"), ("2s", "500ms"), ("3s", "1s"), ("10s", "1s")]),
        "threshold": st.sampled_from([0.002, 0.005, 0.01]),
        "rearm": st.sampled_from([0.0, 0.5, 1.0]),
    }
).map(lambda p: {"window": p["window_sample"][0], "sample": p["window_sample"][1],
                 "threshold": p["threshold"], "rearm": p["rearm"]})


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), p=params)
def test_paths_and_batch_sizes_agree(spread_cls, seed, n, p):
    table = make_trades(seed, n, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    reference = run(spread_cls, table, path="event", batch_size=65536, **p)
    for path in ("event", "batch"):
        for size in (1, 7, 65536):
            got = run(spread_cls, table, path=path, batch_size=size, **p)
            assert got[0].equals(reference[0]), (path, size)
            assert got[1].equals(reference[1]), (path, size)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 600), sizes=st.lists(st.integers(1, 40), min_size=1), p=params)
def test_paths_mixed_within_one_run_agree(spread_cls, seed, n, sizes, p):
    """Live micro-batches of varying sizes switch between the per-event and the batch
    handler (path "auto"): the state handed between them keeps the outputs identical."""
    table = make_trades(seed, n, symbols=("BTCUSDT", "ETHUSDT"))
    reference = run(spread_cls, table, path="event", batch_size=65536, **p)
    engine = Engine(spread_cls, overrides={k: str(v) for k, v in p.items()}, path="auto", small_batch=12)
    pos, i = 0, 0
    while pos < n:
        size = sizes[i % len(sizes)]
        engine.process("trade", table.slice(pos, size).to_batches()[0])
        pos, i = pos + size, i + 1
    engine.finish()
    outputs = engine.ctx.outputs
    assert outputs.signals.drain().equals(reference[0])
    assert outputs.alerts.drain().equals(reference[1])


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(50, 3000))
def test_same_input_same_output_bit_for_bit(spread_cls, seed, n):
    table = make_trades(seed, n)
    first = run(spread_cls, table, path="batch", batch_size=97, window="2s", sample="500ms")
    second = run(spread_cls, table, path="batch", batch_size=97, window="2s", sample="500ms")
    for a, b in zip(first, second):
        assert a.equals(b)
    # bit for bit, not merely close: the float64 payloads are byte-identical
    value = first[0].column("value").combine_chunks()
    again = second[0].column("value").combine_chunks()
    assert value.buffers()[1].to_pybytes() == again.buffers()[1].to_pybytes()


def test_generated_data_exercises_both_outputs(spread_cls):
    """Guard: the property tests above are not vacuous on this data."""
    table = make_trades(7, 3000)
    signals, alerts = run(spread_cls, table, path="event", batch_size=65536, window="2s", sample="500ms")
    names = set(signals.column("name").to_pylist())
    assert names == {"spread", "divergence"}
    divergences = signals.filter(pa.compute.equal(signals.column("name"), "divergence"))
    assert alerts.num_rows == divergences.num_rows > 0
    assert alerts.column("ts_event").equals(divergences.column("ts_event"))
