"""Small strategies for the processor's fault tests (loaded by path, like a user's)."""

from __future__ import annotations

from dataclasses import dataclass

from qsframework import Strategy


class TradesAndGaps(Strategy):
    """A signal per trade and per gap: reads two topics (PREFIX.trades, PREFIX.gaps)."""

    kinds = ("trade", "gap")

    def on_trade(self, t) -> None:
        self.ctx.signal(t.key, "trade", float(t.seq))

    def on_gap(self, g) -> None:
        self.ctx.signal(g.key, "gap", float(g.first_id))


@dataclass(frozen=True, kw_only=True)
class FailParams:
    fail_at: int = -1  # the seq of the trade whose handler raises (-1: none)
    fail_on_stop: bool = False


class FailsAt(Strategy):
    """A signal per trade; the handler raises on the trade with seq ``fail_at``."""

    kinds = ("trade",)
    Params = FailParams

    def on_trade(self, t) -> None:
        if t.seq == self.p.fail_at:
            raise ZeroDivisionError(f"cannot divide trade {t.seq}")
        self.ctx.signal(t.key, "trade", float(t.seq))

    def on_stop(self) -> None:
        if self.p.fail_on_stop:
            raise RuntimeError("no summary today")
