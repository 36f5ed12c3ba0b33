"""A user's own sink, the README's 15 lines copied out as a user would, runs beside the
built-in ones in qsf process (--sink file.py:Class) and ends with exactly the backtest's alerts."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid

import pyarrow.csv as csv

from qsframework.events import ALERT
from qsframework.recording import Recording, RecordingWriter
from qsframework.replay import replay
from qsframework.backtest import run_backtest

from ..conftest import ROOT, SPREAD_SPEC, make_trades, qsf_cmd
from .test_process import OVERRIDES, PARAMS


def test_the_readme_sink_gets_exactly_the_backtest_s_alerts(stack_endpoints, tmp_path, spread_cls):
    block = next(b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                 if "class CsvAlerts(Sink)" in b)
    (tmp_path / "csv_alerts.py").write_text(block)
    trades = make_trades(13, 5000, jump=0.02)
    with RecordingWriter(tmp_path / "rec") as w:
        w.write("trade", trades)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(replay(Recording(tmp_path / "rec"), stack_endpoints.kafka_bootstrap, prefix=prefix))
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    r = subprocess.run([*qsf_cmd(), "process", SPREAD_SPEC, *PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}",
                        "--sink", "csv_alerts.py:CsvAlerts", "--commit-interval", "0s", "--exit-when-idle", "2"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    want = run_backtest(spread_cls, Recording(tmp_path / "rec"), overrides=OVERRIDES).tables["alerts"]
    assert want.num_rows > 0
    got = csv.read_csv(tmp_path / "alerts.csv", read_options=csv.ReadOptions(column_names=ALERT.schema.names),
                       convert_options=csv.ConvertOptions(column_types=ALERT.schema))
    assert got.to_pylist() == want.to_pylist()


def test_a_sink_that_is_not_one_is_one_line(tmp_path):
    (tmp_path / "nosink.py").write_text("class NotASink:\n    pass\n")
    env = {**os.environ, "QSF_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    for spec, message in (("nosink.py:NotASink", "is not a qsframework Sink subclass"),
                          ("bogus", "not one of kafka, timescale, telegram")):
        r = subprocess.run([*qsf_cmd(), "process", SPREAD_SPEC, "--sink", spec], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
