"""Recordings on object storage: a real S3-speaking HTTP server (moto in server mode) holds
the sample recording; ``qsf sweep --recording s3://...`` writes the local-path sweep's table
and point files, and a missing bucket, key, a bad URI or an endpoint nothing listens on is
one line, exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from ..conftest import ROOT, qsf_cmd
from ..fakes.aws import aws_server
from .conftest import PAIRS
from .same import same_sweep

SAMPLE = ROOT / "recordings" / "sample"
END = "2026-01-05T00:30:00Z"
GRID = ("-g", "threshold=0.001,0.002", "-g", "window=30s,60s")
SECRET = "qsf-test-secret-never-printed"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> dict[str, str]:
    """A moto S3 server on a free port with bucket ``rec`` holding the sample recording under
    ``sample/``; returns the AWS environment that reaches it."""
    with aws_server(SECRET) as env:
        fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key=env["AWS_ACCESS_KEY_ID"],
                               secret_key=SECRET, region=env["AWS_DEFAULT_REGION"], allow_bucket_creation=True)
        fs.create_dir("rec")
        pafs.copy_files(str(SAMPLE), "rec/sample", destination_filesystem=fs)
        yield {**os.environ, **env}


def sweep(out: Path, recording: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``qsf sweep`` as a user runs it, in the environment ``env`` (None: this one)."""
    return subprocess.run([*qsf_cmd(), "sweep", PAIRS, "--recording", recording, "--out", str(out),
                           "--end", END, "--workers", "2", *GRID],
                          capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    run = sweep(out, str(SAMPLE))
    assert run.returncode == 0, run.stderr
    return out


@pytest.mark.parametrize("uri", ["s3://rec/sample", SAMPLE.as_uri()])
def test_uri_sweep_equals_the_local_path_sweep(s3, local_sweep, tmp_path, uri):
    run = sweep(tmp_path, uri, s3)
    assert run.returncode == 0, run.stderr
    assert SECRET not in run.stdout + run.stderr
    same_sweep(local_sweep, tmp_path, skip=frozenset({"recording"}))
    for report in (tmp_path / "points").glob("*/report.json"):
        assert json.loads(report.read_text())["recording"] == uri
    assert not (tmp_path / ".cache").exists()  # the copied recording went with the cache


@pytest.mark.parametrize("uri, says", [
    ("s3://no-such-bucket/sample", "does not exist"),
    ("s3://rec/no-such-key", "does not exist"),
    ("nosuchscheme://rec/sample", "Unrecognized filesystem"),
    ("s3://", "no bucket"),
])
def test_bad_recording_uri_is_one_line(s3, tmp_path, uri, says):
    run = sweep(tmp_path, uri, s3)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(f"qsf: error: recording {uri!r}")
    assert says in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert SECRET not in run.stderr


def test_unreachable_endpoint_is_one_line(s3, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = sweep(tmp_path, "s3://rec/sample", {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("qsf: error: recording 's3://rec/sample': ")
    assert "connect" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert SECRET not in run.stderr and not (tmp_path / "points").exists()
