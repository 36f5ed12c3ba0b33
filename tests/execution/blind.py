"""A scheduled trader that reads only the trades' qty: the execution loop then takes each
trade's key and price (for matching and marks) from the batch itself."""

from __future__ import annotations

from tests.execution.traders import Scheduled


class Blind(Scheduled):
    """:class:`Scheduled` (market orders) without the key and price columns."""

    fields = {"trade": ("qty",)}  # noqa: RUF012
    rows = "tuple"

    def on_trade(self, t: tuple) -> None:
        pass
