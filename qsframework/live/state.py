"""The ``--state`` snapshot: written atomically (fsynced, renamed), read back at a restart."""

from __future__ import annotations

import os
import pickle
from pathlib import Path


def save_state(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict | None:
    """The snapshot at ``path``, or None if there is none."""
    if not path.exists():
        return None
    return pickle.loads(path.read_bytes())
