"""The base of the sinks that hold each checkpoint's rows back as hidden part files (the rules
of :mod:`qsframework.parts`): staged at :meth:`~StagedSink.flush`, published at
:meth:`~StagedSink.commit`, left hidden for :meth:`~qsframework.io.Sink.settle` at a discard."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

from ..io import Checkpoint, Sink
from ..parts import publish


class StagedSink(Sink):
    """Keeps the list of files staged for checkpoints not yet committed; a subclass says how
    it stages its rows (:meth:`stage`) and forgets the rows not staged (:meth:`drop`)."""

    def __init__(self) -> None:
        self._staged: list[Path] = []  # hidden, their checkpoint not yet committed

    @abstractmethod
    def stage(self, checkpoint: Checkpoint) -> list[Path]:
        """Write the rows taken since the last checkpoint as hidden files of ``checkpoint``."""

    @abstractmethod
    def drop(self) -> None:
        """Forget the rows taken and not staged (their input will be read again)."""

    async def flush(self, checkpoint: Checkpoint | None = None) -> None:
        if checkpoint is not None:
            self._staged += self.stage(checkpoint)

    async def commit(self, checkpoint: Checkpoint) -> None:
        staged, self._staged = self._staged, []
        for path in staged:
            publish(path)

    async def discard(self) -> None:
        """Forget the rows not staged; staged files stay hidden for the restart to settle (their
        checkpoint's snapshot may be saved already, with its offsets not yet committed)."""
        self._staged = []
        self.drop()
