"""The spread strategy's definition and its accelerated implementation agree bit for bit:
the plain Python class, the mypyc-compiled per-event core (never a stale build of it) and
the numba batch kernel; and the fast paths hold exactly the definition's state fields."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import sys
import types

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsframework.engine import Engine
from qsframework.strategies.accel import compiled, spread

from ..conftest import make_trades

CORE = "qsframework.strategies.accel.spread_core"


def source_core() -> types.ModuleType:
    """The core's source, imported on its own (never the compiled build)."""
    return compiled.import_source(CORE, as_name="spread_core_source")


def outputs(cls, table: pa.Table, overrides: dict[str, str], *, path: str = "event",
            size: int = 97) -> tuple[pa.Table, pa.Table]:
    engine = Engine(cls, overrides=overrides, path=path)
    for batch in table.to_batches(max_chunksize=size):
        engine.process("trade", batch)
    engine.finish()
    return engine.ctx.outputs.signals.drain(), engine.ctx.outputs.alerts.drain()


#: random trades and the parameters that decide when the rule fires and re-arms
MARKETS = {
    "seed": st.integers(0, 2**32 - 1),
    "n": st.integers(1, 1500),
    "threshold": st.sampled_from(["0.001", "0.003", "0.01"]),
    "rearm": st.sampled_from(["0", "0.5", "1"]),
}


@settings(max_examples=30, deadline=None)
@given(**MARKETS)
def test_installed_core_matches_its_source_bit_for_bit(spread_cls, seed, n, threshold, rearm):
    """Whatever the install built (compiled or not), the per-event path gives exactly the
    outputs of the core's Python source run by the interpreter."""
    table = make_trades(seed, n)
    overrides = {"window": "2s", "sample": "250ms", "threshold": threshold, "rearm": rearm}
    installed = spread.core
    expected = outputs(spread_cls, table, overrides)
    try:
        spread.core = source_core()
        got = outputs(spread_cls, table, overrides)
    finally:
        spread.core = installed
    assert got[0].equals(expected[0])
    assert got[1].equals(expected[1])


@settings(max_examples=30, deadline=None)
@given(**MARKETS, window=st.sampled_from([("2s", "250ms"), ("1s", "1s"), ("3s", "500ms")]),
       size=st.sampled_from([1, 7, 97, 65_536]))
def test_plain_definition_matches_the_accelerated_paths_bit_for_bit(spread_cls, seed, n, threshold,
                                                                     rearm, window, size):
    """The class as written (``.plain``) gives exactly what the compiled core (per event) and
    the numba kernel (per batch, any batch size) give."""
    table = make_trades(seed, n)
    overrides = {"window": window[0], "sample": window[1], "threshold": threshold, "rearm": rearm}
    expected = outputs(spread_cls.plain, table, overrides, size=size)
    for path in ("event", "batch"):
        got = outputs(spread_cls, table, overrides, path=path, size=size)
        assert got[0].equals(expected[0]), path
        assert got[1].equals(expected[1]), path


def test_the_plain_definition_runs_without_the_accelerated_code(spread_cls):
    """``.plain`` is the definition itself: its handlers are the ones written in the file."""
    plain = spread_cls.plain
    assert plain is not spread_cls and issubclass(spread_cls, plain)
    assert plain.name == spread_cls.name == "btc_eth_spread"
    engine = Engine(plain, path="auto")
    assert not engine.uses_batch_path
    assert type(engine.strategy.s) is plain.State


def test_fast_paths_must_hold_the_definitions_fields(spread_cls):
    """A state field the core and kernel do not know, or one they know that the state lacks,
    fails when the accelerated class is made, not as wrong numbers later."""
    state = spread_cls.plain.State
    extra = dataclasses.make_dataclass(
        "Extra", [("spread_ema", float, dataclasses.field(default=0.0))], bases=(state,),
        slots=True, kw_only=True)
    fewer = dataclasses.make_dataclass(
        "Fewer", [(f.name, f.type, f) for f in dataclasses.fields(state) if f.name != "nzb"],
        slots=True, kw_only=True)
    for wrong in (extra, fewer):
        with pytest.raises(TypeError, match="fields"):
            spread.Layout(wrong).check()
    spread.Layout(state).check()


def test_generated_data_reaches_both_divergence_and_rearm(spread_cls):
    """The property above is not vacuous: its data fires, re-arms and fires again."""
    signals, alerts = outputs(spread_cls, make_trades(3, 1500), {
        "window": "2s", "sample": "250ms", "threshold": "0.001", "rearm": "0.5",
    })
    names = signals.column("name").to_pylist()
    assert names.count("divergence") >= 2 and alerts.num_rows == names.count("divergence")
    assert names.count("spread") > 10


@pytest.mark.skipif(
    os.environ.get("QSF_PURE_PYTHON") or not (shutil.which("cc") or shutil.which("gcc")),
    reason="no C compiler here (or QSF_PURE_PYTHON set): the install is pure Python",
)
def test_install_compiled_the_core_where_a_compiler_exists():
    module = compiled.load(CORE)
    assert compiled.is_compiled(module), f"{CORE} runs uncompiled from {module.__file__}"
    assert module.SOURCE_SHA256 == compiled.source_hash(compiled.source_path(CORE).read_bytes())


def fake_build(tmp_path, name: str, built_from: bytes, source: bytes) -> None:
    """A stand-in for a compiled module of ``name`` built from ``built_from``, with ``source``
    now in the .py beside it."""
    (tmp_path / "core.py").write_bytes(source)
    build = types.ModuleType(name)
    build.__file__ = str(tmp_path / "core.cpython-311-x86_64-linux-gnu.so")
    build.SOURCE_SHA256 = hashlib.sha256(built_from).hexdigest()
    build.WHO = "build"
    sys.modules[name] = build


def test_a_build_matching_its_source_is_used(tmp_path):
    name = "qsf_test_fresh.core"
    text = b"WHO = 'source'\n"
    fake_build(tmp_path, name, text, text)
    try:
        assert compiled.load(name).WHO == "build"
    finally:
        sys.modules.pop(name, None)


def test_a_build_older_than_its_source_is_not_used(tmp_path, caplog):
    """An edited source in an editable checkout runs as written, with a warning."""
    name = "qsf_test_stale.core"
    fake_build(tmp_path, name, b"WHO = 'source'\n", b"WHO = 'edited source'\n")
    try:
        with caplog.at_level(logging.WARNING, logger="qsframework.strategies.accel.compiled"):
            module = compiled.load(name)
        assert module.WHO == "edited source"
        assert sys.modules[name] is module  # pickles find the class that runs
        assert "older than" in caplog.text
    finally:
        sys.modules.pop(name, None)


def test_pure_python_switch_runs_the_source(tmp_path, monkeypatch):
    name = "qsf_test_pure.core"
    text = b"WHO = 'source'\n"
    fake_build(tmp_path, name, text, text)
    monkeypatch.setenv("QSF_PURE_PYTHON", "1")
    try:
        assert compiled.load(name).WHO == "source"
    finally:
        sys.modules.pop(name, None)
