"""Warm a strategy's batch path in a detached background process, for the next run.

``qsf backtest --path auto`` runs a small input per event when the strategy's batch path
would compile first (:meth:`Strategy.batch_ready`) and starts this process, so the next run
finds the compiled kernels in the cache. It never blocks the run, downloads nothing, and a
failure in it is silent: the next run simply finds the batch path cold again. While it runs
it holds a lock file, so one warm-up per strategy runs at a time and others can wait for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from .user_cache import writable_cache_dir


def start(spec: str, overrides: dict[str, Any]) -> Path | None:
    """Start warming the batch path of strategy ``spec`` unless that is under way already.

    Returns the lock file the warm-up holds until it is done (its own or the one already
    running), or None when none could start (no writable cache, no POSIX process spawn).
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    folder = writable_cache_dir("warmup")
    if folder is None or not hasattr(os, "posix_spawn"):
        return None
    name = hashlib.sha256(f"{os.getcwd()}\0{spec}".encode()).hexdigest()[:20]
    lock = folder / f"{name}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return lock  # a warm-up of this strategy is running
    try:
        # the child inherits the locked descriptor, so the lock lasts exactly as long as it runs
        os.set_inheritable(fd, True)
        quiet = [(os.POSIX_SPAWN_OPEN, n, os.devnull, os.O_RDWR, 0) for n in (0, 1, 2)]
        # -P: not the working directory first on sys.path, where a checkout's qsframework/
        # folder would shadow the installed package (as for the qsf command itself)
        argv = [sys.executable, "-P", "-m", __name__, str(fd), spec,
                json.dumps(overrides, default=str)]
        os.posix_spawn(sys.executable, argv, os.environ, file_actions=quiet, setsid=True)
    except OSError:
        return None
    finally:
        os.close(fd)
    return lock


def main(argv: list[str]) -> None:
    """``python -m qsframework.warmup LOCK_FD SPEC OVERRIDES_JSON``: compile, then exit, which
    releases the lock held on LOCK_FD."""
    _lock_fd, spec, overrides = int(argv[0]), argv[1], json.loads(argv[2])
    try:
        os.nice(10)  # behind whatever the user runs now
    except OSError:
        pass
    from .engine import Engine
    from .loader import load_strategy

    Engine(load_strategy(spec), overrides=overrides, path="batch").prepare()


if __name__ == "__main__":
    main(sys.argv[1:])
