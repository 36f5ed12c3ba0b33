"""Loading a strategy or a sink by spec: a missing file or module is one line that names
what was being loaded (a strategy for qsf backtest, a sink for qsf process --sink), exit 2."""

from __future__ import annotations

import subprocess

import pytest

from qsframework.errors import UserError
from qsframework.loader import load_sink, load_strategy

from ..conftest import SPREAD_SPEC, run_qsf


@pytest.mark.parametrize(("load", "spec", "message"), [
    (load_strategy, "nope/missing.py:X", "strategy file 'nope/missing.py' does not exist"),
    (load_strategy, "no_such_module_qsf:X", "strategy module 'no_such_module_qsf' not found"),
    (load_sink, "nope/missing.py:X", "sink file 'nope/missing.py' does not exist"),
    (load_sink, "no_such_module_qsf:X", "sink module 'no_such_module_qsf' not found"),
])
def test_a_missing_file_or_module_names_what_was_loaded(load, spec, message):
    with pytest.raises(UserError) as caught:
        load(spec)
    assert str(caught.value) == message + (" (give file.py:Class or module:Class)" if "module" in message else "")


def _qsf(tmp_path, *args: str) -> subprocess.CompletedProcess:
    # the broker is never reached: the spec fails first
    return run_qsf(*args, env={"QSF_KAFKA_BOOTSTRAP": "127.0.0.1:9"}, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize(("args", "line"), [
    (["process", SPREAD_SPEC, "--sink", "missing.py:Sink"], "qsf: error: sink file 'missing.py' does not exist\n"),
    (["process", SPREAD_SPEC, "--sink", "no_such_module_qsf:Sink"],
     "qsf: error: sink module 'no_such_module_qsf' not found (give file.py:Class or module:Class)\n"),
    (["process", "missing.py:Strategy"], "qsf: error: strategy file 'missing.py' does not exist\n"),
    (["backtest", "missing.py:Strategy", "--recording", ".", "--out", "o"],
     "qsf: error: strategy file 'missing.py' does not exist\n"),
])
def test_the_cli_says_sink_file_or_strategy_file_in_one_line_with_exit_code_2(tmp_path, args, line):
    r = _qsf(tmp_path, *args)
    assert (r.returncode, r.stderr) == (2, line)
