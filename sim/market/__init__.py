"""The seeded market simulator: synthetic Binance spot trades (``qsf recordings generate``)."""

from .model import DEFAULT_START_NS, SymbolSpec, symbol_spec
from .trades import estimate_rate, simulate_trades

__all__ = ["DEFAULT_START_NS", "SymbolSpec", "estimate_rate", "simulate_trades", "symbol_spec"]
