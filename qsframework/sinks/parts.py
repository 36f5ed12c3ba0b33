"""``qsf process --out`` as a :class:`~qsframework.io.Sink`: each output kind a directory of
Parquet parts (``OUT/signals.parquet/part-*.parquet``, see :mod:`qsframework.parts`), staged
hidden at each checkpoint and published once it is committed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import pyarrow as pa

from ..io import Checkpoint, Committed, Refused
from ..parts import PartsOutput
from .staged import StagedSink


class PartsSink(StagedSink):
    def __init__(self, out: Path, kinds: Mapping[str, tuple[str, pa.Schema]], *,
                 optional: Collection[str] = ()) -> None:
        """``kinds``: output kind -> (directory name under ``out``, schema), e.g.
        ``{"signal": ("signals", SIGNAL.schema)}``; the ``optional`` kinds' directories are
        made only once they get rows (the others hold at least an empty part at the end)."""
        super().__init__()
        self.optional = frozenset(optional)
        self._written: set[str] = set()  # kinds given rows in this run
        self.outputs = {kind: PartsOutput(out / f"{name}.parquet", schema) for kind, (name, schema) in kinds.items()}
        self._failed = False

    async def write(self, kind: str, table: pa.Table) -> list[Refused]:
        out = self.outputs.get(kind)
        if out is not None and table.num_rows:
            out.write(table)
            self._written.add(kind)
        return []

    def stage(self, checkpoint: Checkpoint) -> list[Path]:
        return [p for out in self.outputs.values()
                if (p := out.stage(checkpoint.offsets, checkpoint.number)) is not None]

    def drop(self) -> None:
        self._failed = True
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
