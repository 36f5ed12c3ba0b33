"""Directories a sweep writes whole or not at all (points, decoded and copied recordings):
built in a temporary sibling, renamed into place, so a reader never meets half of one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"  # a directory being written: <parent>/.tmp-<name>-<pid>


@contextmanager
def staged_dir(final: Path, *, complete: Callable[[Path], bool] = Path.is_dir) -> Iterator[Path]:
    """An empty temporary directory beside ``final``, renamed to ``final`` when the block ends
    without error and removed in any case. Where another process finished ``final`` meanwhile
    (``complete(final)``: the same contents) that one is kept; an incomplete one is replaced."""
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            if not complete(final):  # a leftover, not another process's finished one
                shutil.rmtree(final)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
