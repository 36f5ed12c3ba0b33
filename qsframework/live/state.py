"""The ``--state`` snapshot: written atomically (fsynced, renamed), read back at a restart."""

from __future__ import annotations

import pickle
from pathlib import Path

from ..parts import atomic_write_bytes


def save_state(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, blob)


def load_state(path: Path) -> dict | None:
    """The snapshot at ``path``, or None if there is none."""
    if not path.exists():
        return None
    return pickle.loads(path.read_bytes())
