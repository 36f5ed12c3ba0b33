"""A strategy that can hold the processor inside a handler (loaded by path, like a user's).

For the rebalance tests only: on the trade with seq ``gate_at`` it creates ``GATE/reached``
and waits until ``GATE/go`` exists, so the test knows the processor is stuck mid-batch (its
event loop blocked: no heartbeats) with rows consumed and not committed. Otherwise a signal
per trade, so every lost or doubled trade shows in the outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from qsframework import Strategy


@dataclass(frozen=True, kw_only=True)
class GateParams:
    gate_at: int = -1  # the seq of the trade whose handler waits (-1: none)
    gate: str = ""  # the directory of the reached/go files


class GatedTrades(Strategy):
    kinds = ("trade",)
    Params = GateParams

    def on_trade(self, t) -> None:
        if t.seq == self.p.gate_at and self.p.gate:
            gate = Path(self.p.gate)
            (gate / "reached").touch()
            while not (gate / "go").exists():  # the test's go-ahead, not a time
                time.sleep(0.05)
        self.ctx.signal(t.key, "trade", float(t.seq))
