"""Where numba keeps compiled kernels: a user cache directory unless ``NUMBA_CACHE_DIR`` says.

Compiling the kernels takes seconds (the spread kernel ~15 s); with ``cache=True`` numba
stores them next to their source, which a non-editable install in a read-only
site-packages does not allow. A per-user directory works for every install, so only the
very first run on a machine compiles. Imported by the package before numba is.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/qsf/numba`` (default ``~/.cache/qsf/numba``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qsf" / "numba"


def use_user_cache() -> None:
    """Point numba at :func:`user_cache_dir` when it can be written and nobody chose another."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = user_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # numba's own default (next to the source, else its user-wide directory)
    if os.access(path, os.W_OK):
        os.environ["NUMBA_CACHE_DIR"] = str(path)


use_user_cache()
