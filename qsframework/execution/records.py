"""What ``on_fill`` and ``on_order`` receive: a fill and an order's status change."""

from __future__ import annotations

from typing import Literal, NamedTuple


class Fill(NamedTuple):
    """An order (partly) filled on a trade of ``key``: signed ``qty`` at ``price``, paying
    ``fee``; ``ts_event`` is the trade's time."""

    ts_event: int
    key: str
    order_id: int
    qty: float
    price: float
    fee: float
    liquidity: Literal["taker", "maker"]


class Order(NamedTuple):
    """An order's status change; ``price`` is None for a market order, ``filled`` the signed
    quantity filled so far."""

    ts_event: int
    key: str
    order_id: int
    qty: float
    price: float | None
    tag: str
    status: Literal["accepted", "filled", "cancelled"]
    filled: float
