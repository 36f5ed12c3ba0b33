"""Recordings on object storage: ``qsf sweep --recording s3://bucket/path`` (or any URI
pyarrow's filesystems read, ``file://`` too). The sweep's decode step alone reads it, copying
its files under ``OUT/.cache`` with :mod:`pyarrow.fs`; the points read the decoded recording.

S3's endpoint, region and credentials come from the usual AWS environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``~/.aws``); nothing of them is printed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import UserError
from ..recording.files import first_line
from .staging import staged_dir

STAGED = "recording-"  # OUT/.cache/recording-<hash>: a URI's files, copied here


def is_uri(recording: str | Path) -> bool:
    """Whether ``recording`` names object storage (``scheme://...``) rather than a local path."""
    return isinstance(recording, str) and "://" in recording


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of ``uri``; a bad URI or an unreachable bucket is one line."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise UserError(f"recording {uri!r}: {first_line(exc)}") from None


def _files(uri: str) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """The recording's files (a missing bucket, key or an empty prefix: one line)."""
    fs, root = _open(uri)
    root = root.rstrip("/")
    if not root:
        raise UserError(f"recording {uri!r}: no bucket and path")
    try:
        if fs.get_file_info(root).type != pafs.FileType.Directory:
            raise UserError(f"recording {uri!r} does not exist or is not a directory")
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"recording {uri!r}: {first_line(exc)}") from None
    files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
    if not files:
        raise UserError(f"recording {uri!r} does not exist or is not a directory")
    return fs, root, files


def check(uri: str) -> None:
    """Fail early, with one line, when ``uri`` is no readable recording directory."""
    _files(uri)


def stage(uri: str, cache: Path) -> Path:
    """A local copy of the recording at ``uri`` under ``cache``, named by its files' paths,
    sizes and modification times (reused while they are unchanged); copied to a temporary
    directory renamed into place, so a copy is always complete."""
    fs, root, files = _files(uri)
    what = [uri, [[f.path, f.size, f.mtime_ns] for f in files]]
    dest = cache / (STAGED + hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16])
    if dest.is_dir():
        return dest
    local = pafs.LocalFileSystem()
    try:
        with staged_dir(dest) as tmp:
            for f in files:
                target = tmp / f.path[len(root):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(f.path, str(target), source_filesystem=fs, destination_filesystem=local)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"recording {uri!r} cannot be read: {first_line(exc)}") from None
    return dest
