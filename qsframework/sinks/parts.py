"""``qsf process --out`` as a :class:`~qsframework.io.Sink`: each output kind a directory of
Parquet parts (``OUT/signals.parquet/part-*.parquet``, see :mod:`qsframework.parts`), staged
hidden at each checkpoint and published once it is committed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import pyarrow as pa

from ..io import Checkpoint, Committed, Refused, Sink
from ..parts import PartsOutput, publish


class PartsSink(Sink):
    def __init__(self, out: Path, kinds: Mapping[str, tuple[str, pa.Schema]], *,
                 optional: Collection[str] = ()) -> None:
        """``kinds``: output kind -> (directory name under ``out``, schema), e.g.
        ``{"signal": ("signals", SIGNAL.schema)}``; the ``optional`` kinds' directories are
        made only once they get rows (the others hold at least an empty part at the end)."""
        self.optional = frozenset(optional)
        self._written: set[str] = set()  # kinds given rows in this run
        self.outputs = {kind: PartsOutput(out / f"{name}.parquet", schema) for kind, (name, schema) in kinds.items()}
        self._staged: list[Path] = []
        self._failed = False

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        out = self.outputs.get(kind)
        if out is not None and table.num_rows:
            out.write(table)
            self._written.add(kind)
        return []

    async def flush(self, checkpoint: Checkpoint | None = None) -> None:
        if checkpoint is not None:
            self._staged += [p for out in self.outputs.values()
                             if (p := out.stage(checkpoint.offsets, checkpoint.number)) is not None]

    async def commit(self, checkpoint: Checkpoint) -> None:
        staged, self._staged = self._staged, []
        for path in staged:
            publish(path)

    async def discard(self) -> None:
        """Forget the rows not staged; staged parts stay hidden for the restart to settle (their
        checkpoint's snapshot may be saved already, with its offsets not yet committed)."""
        self._failed = True
        self._staged = []
        for out in self.outputs.values():
            out.discard()

    def settle(self, committed: Committed) -> tuple[int, int]:
        settled = [out.resolve(committed) for out in self.outputs.values()]
        return sum(p for p, _ in settled), sum(d for _, d in settled)

    async def close(self) -> None:
        """A run that ended normally publishes the rows no input offsets cover (``on_stop``'s)."""
        if not self._failed:
            for kind, out in self.outputs.items():
                if kind not in self.optional or kind in self._written:
                    out.close()
