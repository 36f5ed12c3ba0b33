"""The execution settings of a run: latency, slippage, fees, initial cash, equity sampling."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..durations import Duration


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    """How simulated orders fill; the same for ``qsf backtest`` and ``qsf process``.

    Validated on construction: a bad value is a ``ValueError`` with one clear sentence.
    """

    latency_ns: int = 0
    slippage_bps: float = 0.0
    taker_fee_bps: float = 10.0
    maker_fee_bps: float = 10.0
    cash: float = 100_000.0
    mark_every_ns: int = 1_000_000_000
    max_participation: float | None = None

    def __post_init__(self) -> None:
        if self.latency_ns < 0:
            raise ValueError("latency must not be negative")
        for name in ("slippage_bps", "taker_fee_bps", "maker_fee_bps", "cash"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number >= 0, not {value}")
        if self.mark_every_ns <= 0:
            raise ValueError("mark every must be a positive duration")
        p = self.max_participation
        if p is not None and not (0 < p <= 1):
            raise ValueError(f"max participation must be in (0, 1], not {p}")

    def describe(self) -> dict[str, Any]:
        """The settings as report.json shows them (durations as text, e.g. ``"250ms"``)."""
        out = asdict(self)
        out["latency"] = str(Duration(out.pop("latency_ns")))
        out["mark_every"] = str(Duration(out.pop("mark_every_ns")))
        return out
