"""Execution simulation: orders filled against recorded or live trades (latency, slippage,
fees, participation), the portfolio, the equity grid and the run's metrics."""
