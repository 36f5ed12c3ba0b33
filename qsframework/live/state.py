"""Where ``qsf process`` keeps its engine snapshot between runs: by default a compacted Kafka
topic per consumer group (:class:`~.state_topic.TopicState`, so a restart on another machine
resumes exactly), ``--state DIR`` a local file (written atomically: fsynced, renamed), or
nowhere (``--no-state``: a restart rebuilds nothing and resumes from the committed offsets)."""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path

from ..parts import atomic_write_bytes


class StateStore(ABC):
    """Keeps the latest snapshot (a pickled dict with its ``offsets`` and ``checkpoint``)."""

    #: for the start-up line, e.g. ``Kafka topic qsf.state.g``
    label: str

    @abstractmethod
    async def load(self) -> dict | None:
        """The latest complete snapshot, or None if there is none."""

    @abstractmethod
    async def save(self, blob: bytes, *, checkpoint: int) -> None:
        """Keep ``blob`` (checkpoint ``checkpoint``) as the latest snapshot, durably, before
        the offsets it carries are committed."""

    @property
    def keeps(self) -> bool:
        """False for :class:`NoState` (no snapshot is even taken)."""
        return True


class DirState(StateStore):
    """``--state DIR``: ``DIR/processor.state``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "processor.state"
        self.label = f"directory {directory}"

    async def load(self) -> dict | None:
        return load_state(self.path)

    async def save(self, blob: bytes, *, checkpoint: int) -> None:
        save_state(self.path, blob)


class NoState(StateStore):
    """``--no-state``: a restart resumes from the group's committed offsets with a fresh engine."""

    label = "none (--no-state: a restart starts the strategy afresh from the committed offsets)"

    async def load(self) -> dict | None:
        return None

    async def save(self, blob: bytes, *, checkpoint: int) -> None:
        pass

    @property
    def keeps(self) -> bool:
        return False


def save_state(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, blob)


def load_state(path: Path) -> dict | None:
    """The snapshot at ``path``, or None if there is none."""
    if not path.exists():
        return None
    return pickle.loads(path.read_bytes())
