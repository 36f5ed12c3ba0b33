"""Per-user cache directories: compiled kernels, and which recording files passed the checks.

Compiling the kernels takes seconds (the spread kernel ~15 s); with ``cache=True`` numba
stores them next to their source, which a non-editable install in a read-only
site-packages does not allow. A per-user directory works for every install, so only the
very first run on a machine compiles. Imported by the package before numba is.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/qsf/<name>`` (default ``~/.cache/qsf/<name>``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qsf" / name


def writable_cache_dir(name: str) -> Path | None:
    """:func:`user_cache_dir`, created; None when it cannot be written."""
    path = user_cache_dir(name)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def use_for_numba() -> None:
    """Point numba at the ``numba`` user cache when it can be written and nobody chose another
    (else numba's default: next to the source, or its own user-wide directory)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = writable_cache_dir("numba")
    if path is not None:
        os.environ["NUMBA_CACHE_DIR"] = str(path)


use_for_numba()
