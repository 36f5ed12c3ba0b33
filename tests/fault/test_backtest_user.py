"""What a user sees from ``qsf backtest``: a raising strategy, no matching events and the
progress total (the first run on a cold cache: test_first_run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from qsframework.backtest import run_backtest
from qsframework.recording import Recording, RecordingWriter
from qsframework.sim.market import simulate_trades

from ..conftest import SPREAD_SPEC, run_qsf as qsf

RAISING = '''
from qsframework import Strategy


class Fragile(Strategy):
    """Divides by the price minus the first price: fails on the first repeat of it."""

    def on_start(self):
        self.first = None

    def on_trade(self, t):
        if self.first is None:
            self.first = (t.key, t.price)
        elif t.key == self.first[0]:
            self.ctx.signal(t.key, "inverse", 1.0 / (t.price - self.first[1]))
'''


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    rec = tmp_path_factory.mktemp("user") / "rec"
    with RecordingWriter(rec, rows_per_file=5_000) as w:
        for table in simulate_trades(["BTCUSDT", "ETHUSDT", "SOLUSDT"], minutes=6, seed=5):
            w.write("trade", table)
    return rec


@pytest.fixture()
def fragile(tmp_path) -> str:
    path = tmp_path / "fragile.py"
    path.write_text(RAISING)
    return f"{path}:Fragile"


def first_repeat(rec: Path) -> tuple[str, int]:
    """The first trade whose price equals its key's first price (independently, in DuckDB)."""
    return duckdb.sql(f"""
        WITH t AS (SELECT *, first_value(price) OVER (PARTITION BY key ORDER BY ts_event, source, key, seq) AS p0,
                          row_number() OVER (PARTITION BY key ORDER BY ts_event, source, key, seq) AS n
                   FROM read_parquet('{rec}/kind=trade/*/*.parquet')),
             k AS (SELECT key FROM t ORDER BY ts_event, source, key, seq LIMIT 1)
        SELECT t.key, ts_event FROM t JOIN k USING (key) WHERE n > 1 AND price = p0
        ORDER BY ts_event, source, seq LIMIT 1""").fetchall()[0]


def test_a_raising_strategy_is_one_line_naming_it_and_the_event(recording, fragile, tmp_path):
    from qsframework.durations import format_time

    key, ts = first_repeat(recording)
    r = qsf("backtest", fragile, "--recording", str(recording), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [
        f"qsf: error: strategy Fragile (fragile) failed in on_trade on trade {key} at "
        f"{format_time(ts)} (ts_event {ts}): ZeroDivisionError: float division by zero"
    ]
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "out" / "signals.parquet").exists()  # nothing half-written
    assert not (tmp_path / "out" / "report.json").exists()


def test_verbose_shows_the_strategy_traceback(recording, fragile, tmp_path):
    r = qsf("backtest", fragile, "--recording", str(recording), "--out", str(tmp_path / "out"), "-v")
    assert r.returncode == 2
    assert "Traceback (most recent call last)" in r.stderr
    assert "fragile.py" in r.stderr and "1.0 / (t.price - self.first[1])" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("qsf: error: strategy Fragile")


@pytest.mark.parametrize(("args", "needle"), [
    (("--start", "2030-01-01"), "no events matched: the recording spans 2026-01-05T00:00:00"),
    (("-p", "a=XRPUSDT", "-p", "b=DOGEUSDT"), "the recording has no events of DOGEUSDT, XRPUSDT"),
])
def test_a_backtest_matching_nothing_says_so(recording, tmp_path, args, needle):
    r = qsf("backtest", SPREAD_SPEC, "--recording", str(recording), "--out", str(tmp_path / "out"), *args)
    assert r.returncode == 0, r.stderr
    assert any(line.startswith("qsf: warning: ") and needle in line for line in r.stderr.splitlines()), r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["events_in"] == 0 and any(needle in w for w in report["warnings"])


def test_bad_bounds_are_one_line(recording, tmp_path):
    for args, needle in [(("--max-future", "soon"), "--max-future"), (("--floor", "yesterday-ish"), "--floor")]:
        r = qsf("backtest", SPREAD_SPEC, "--recording", str(recording), "--out", str(tmp_path / "o"), *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_progress_total_counts_only_what_the_strategy_reads(recording, spread_cls):
    """The spread strategy reads two of three symbols, here in a time window."""
    rec = Recording(recording)
    lo, hi = rec.span()
    start, end = lo + (hi - lo) // 3, lo + 2 * (hi - lo) // 3
    expected = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{recording}/kind=trade/*/*.parquet') "
        f"WHERE key IN ('BTCUSDT', 'ETHUSDT') AND ts_event >= {start} AND ts_event < {end}"
    ).fetchall()[0][0]
    totals: list[int] = []
    result = run_backtest(spread_cls, rec, start=start, end=end, on_total=totals.append)
    assert totals == [expected] == [result.events_in]
    assert expected < rec.rows() / 2
