"""The mypyc-compiled per-event core: same outputs as its source, and never a stale build."""

from __future__ import annotations

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

from qsframework import compiled
from qsframework.engine import Engine

from .conftest import make_trades

CORE = "qsframework.strategies.spread_core"


def source_core() -> types.ModuleType:
    """The core's source, imported on its own (never the compiled build)."""
    return compiled.import_source(CORE, as_name="spread_core_source")


def outputs(cls, table: pa.Table, overrides: dict[str, str]) -> tuple[pa.Table, pa.Table]:
    engine = Engine(cls, overrides=overrides, path="event")
    for batch in table.to_batches(max_chunksize=97):
        engine.process("trade", batch)
    engine.finish()
    return engine.ctx.outputs.signals.drain(), engine.ctx.outputs.alerts.drain()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 1500),
    threshold=st.sampled_from(["0.001", "0.003", "0.01"]),
    rearm=st.sampled_from(["0", "0.5", "1"]),
)
def test_installed_core_matches_its_source_bit_for_bit(spread_cls, seed, n, threshold, rearm):
    """Whatever the install built (compiled or not), the per-event path gives exactly the
    outputs of the core's Python source run by the interpreter."""
    table = make_trades(seed, n)
    overrides = {"window": "2s", "sample": "250ms", "threshold": threshold, "rearm": rearm}
    strategy_module = sys.modules[spread_cls.__module__]
    installed = strategy_module.core
    expected = outputs(spread_cls, table, overrides)
    try:
        strategy_module.core = source_core()
        got = outputs(spread_cls, table, overrides)
    finally:
        strategy_module.core = installed
    assert got[0].equals(expected[0])
    assert got[1].equals(expected[1])


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
        with caplog.at_level(logging.WARNING, logger="qsframework.compiled"):
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
