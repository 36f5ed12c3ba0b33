"""``qsf process --record`` never doubles nor loses a row across crashes: its files are staged
hidden with the offsets and checkpoint they cover, published once committed, and settled at
restart by the rule of the --out parts; readers never see a staged file, and a new file
never takes the number of one that exists (published or staged)."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from qsframework.recording import Recording, RecordingWriter

from ..conftest import SPREAD_SPEC, make_trades
from ..live.test_outage import OVERRIDES
from .processes import publish, run_process

PARAMS = [f"-p{k}={v}" for k, v in OVERRIDES.items()]
COLUMNS = ("ts_event", "ts_recv", "source", "key", "seq", "price", "qty", "is_buyer_maker")


def recorded_rows(root: Path) -> list[tuple]:
    """Every trade in the published files of the recording at ``root``, sorted (pyarrow
    reads each file; nothing of qsframework's reader)."""
    rows: list[tuple] = []
    for path in sorted(root.glob("kind=trade/date=*/part-*.parquet")):
        table = pq.read_table(path, columns=list(COLUMNS))
        rows += zip(*(table.column(c).to_pylist() for c in COLUMNS))
    return sorted(rows)


def input_rows(trades: pa.Table) -> list[tuple]:
    return sorted(zip(*(trades.column(c).to_pylist() for c in COLUMNS)))


def assert_recorded_exactly(root: Path, trades: pa.Table) -> None:
    """The recording holds each input trade once: nothing missing, nothing twice."""
    got, want = recorded_rows(root), input_rows(trades)
    assert len(got) == len(want), f"recorded {len(got)} rows for {len(want)} input trades"
    assert got == want
    assert not list(root.glob("kind=*/date=*/.part-*")), "staged files left behind"


def footer_checkpoint(path: Path) -> int | None:
    """The checkpoint in a --record file's footer (None: unreadable, a file still being written)."""
    try:
        return int((pq.read_schema(path).metadata or {})[b"qsf.checkpoint"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def snapshot_checkpoint(state: Path) -> int:
    """The checkpoint of the --state snapshot (0 before the first)."""
    try:
        return pickle.loads((state / "processor.state").read_bytes())["checkpoint"]
    except FileNotFoundError:
        return 0


def inside_record_window(proc: subprocess.Popen, record: Path, state: Path) -> bool:
    """Freeze ``proc`` (SIGSTOP) if a --record file is staged, complete, for a checkpoint the
    snapshot does not cover: the moment a crash doubled its rows when the recorder wrote them
    as final before the commit. True if frozen so."""
    if not list(record.glob("kind=*/date=*/.part-*.parquet.tmp")):
        return False
    proc.send_signal(signal.SIGSTOP)
    covered = snapshot_checkpoint(state)
    for path in record.glob("kind=*/date=*/.part-*.parquet.tmp"):
        checkpoint = footer_checkpoint(path)
        if checkpoint is not None and checkpoint > covered:
            return True
    proc.send_signal(signal.SIGCONT)
    return False


def split_at(trades: pa.Table, at: int) -> tuple[pa.Table, pa.Table]:
    """Two halves of a table in total order, cut where the event time moves on."""
    ts = trades.column("ts_event").to_pylist()
    while ts[at] == ts[at - 1]:
        at += 1
    return trades.slice(0, at), trades.slice(at)


def _hide(path: Path) -> Path:
    """Put a published file back as a staged one, as a crash before its publication leaves it."""
    hidden = path.with_name(f".{path.name}.tmp")
    os.replace(path, hidden)
    return hidden


# -- the writer and the readers --------------------------------------------------------------

def test_a_new_recording_file_never_takes_the_number_of_an_existing_or_staged_one(tmp_path):
    trades = make_trades(40, 400)
    with RecordingWriter(tmp_path) as w:
        w.write("trade", trades.slice(0, 100))
        w.flush()
        w.write("trade", trades.slice(100, 100))
    day = next(tmp_path.glob("kind=trade/date=*"))
    assert sorted(p.name for p in day.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    os.replace(day / "part-00001.parquet", day / "part-00002.parquet")  # a gap (a staged file deleted)

    def written_after(rows: pa.Table) -> set[str]:
        """Write ``rows`` with a new writer; the names it added (nothing may change)."""
        before = {p.name: p.read_bytes() for p in day.iterdir()}
        with RecordingWriter(tmp_path) as w:
            w.write("trade", rows)
        after = {p.name: p.read_bytes() for p in day.iterdir()}
        assert all(after[name] == data for name, data in before.items()), "a file was overwritten"
        return set(after) - set(before)

    assert written_after(trades.slice(200, 50)) == {"part-00003.parquet"}
    staged = RecordingWriter(tmp_path).stage([("trade", trades.slice(250, 50))], offsets={("t", 0): 300},
                                             checkpoint=7)
    assert [p.name for p in staged] == [".part-00004.parquet.tmp"]  # not yet published: still taken
    assert written_after(trades.slice(300)) == {"part-00005.parquet"}
    assert pq.read_metadata(day / "part-00005.parquet").num_rows == 100


def test_readers_never_see_a_staged_recording_file(tmp_path):
    trades = make_trades(41, 1000)
    with RecordingWriter(tmp_path) as w:
        w.write("trade", trades.slice(0, 600))
        staged = w.stage([("trade", trades.slice(600))], offsets={("t", 0): 1000}, checkpoint=3)
    assert len(staged) == 1 and staged[0].exists()
    assert Recording(tmp_path).rows() == 600
    glob = str(tmp_path / "kind=*" / "date=*" / "*.parquet")
    assert duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [glob]).fetchall() == [(600,)]
    assert ds.dataset(tmp_path / "kind=trade", format="parquet", partitioning="hive").count_rows() == 600


# -- restarts settle what a crash left -------------------------------------------------------

@pytest.mark.parametrize("with_state", [True, False], ids=["state", "offsets"])
def test_a_record_file_whose_checkpoint_was_committed_is_published_at_restart(stack_endpoints, tmp_path,
                                                                              with_state):
    """Killed after the commit and before the rename: the restart keeps the file (without
    it, its rows would be missing, since their offsets are committed)."""
    trades = make_trades(42, 3000)
    first, second = split_at(trades, 1800)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    record = tmp_path / "rec"
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--record", str(record),
            "--exit-when-idle", "3", *(["--state", str(tmp_path / "state")] if with_state else [])]
    publish(stack_endpoints.kafka_bootstrap, prefix, "trade", first)
    r = run_process(SPREAD_SPEC, *argv, env=env)
    assert r.returncode == 0, r.stderr
    assert_recorded_exactly(record, first)

    (day,) = record.glob("kind=trade/date=*")
    hidden = [_hide(max(day.glob("part-*.parquet")))]  # the final commit's file
    assert len(recorded_rows(record)) < first.num_rows

    publish(stack_endpoints.kafka_bootstrap, prefix, "trade", second)
    r = run_process(SPREAD_SPEC, *argv, env=env)
    assert r.returncode == 0, r.stderr
    assert f"processed {second.num_rows:,} events" in r.stdout
    assert not any(p.exists() for p in hidden)
    assert_recorded_exactly(record, trades)


def test_a_record_file_its_snapshot_does_not_cover_is_removed_and_its_rows_recorded_once(stack_endpoints,
                                                                                         tmp_path):
    """Killed after the files of a checkpoint were written and before its snapshot was saved:
    the restart resumes from the older snapshot, reads those rows again and records them
    again, so the staged files must go."""
    trades = make_trades(43, 3000)
    first, second = split_at(trades, 1500)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {"QSF_KAFKA_BOOTSTRAP": stack_endpoints.kafka_bootstrap}
    record, state = tmp_path / "rec", tmp_path / "state"
    argv = [*PARAMS, "--topic-prefix", prefix, "--group", f"g-{prefix}", "--record", str(record),
            "--state", str(state), "--exit-when-idle", "3"]
    publish(stack_endpoints.kafka_bootstrap, prefix, "trade", first)
    r = run_process(SPREAD_SPEC, *argv, env=env)
    assert r.returncode == 0, r.stderr
    shutil.copytree(state, tmp_path / "older")
    before = set(record.glob("kind=trade/date=*/part-*.parquet"))

    publish(stack_endpoints.kafka_bootstrap, prefix, "trade", second)
    r = run_process(SPREAD_SPEC, *argv, env=env)
    assert r.returncode == 0, r.stderr
    assert_recorded_exactly(record, trades)
    newer = set(record.glob("kind=trade/date=*/part-*.parquet")) - before
    assert newer
    # the crash: the newer files still staged, the snapshot the one before them
    for path in newer:
        _hide(path)
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "older", state)

    r = run_process(SPREAD_SPEC, *argv, env=env)
    assert r.returncode == 0, r.stderr
    assert f"processed {second.num_rows:,} events" in r.stdout
    assert_recorded_exactly(record, trades)
