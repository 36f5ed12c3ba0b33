"""Marimo dashboards on backtest, sweep, live and flight data, and the loaders they use
(callable from any notebook, marimo or Jupyter): ``load_backtest``, ``load_prices``,
``load_series``, ``load_drawdown``, ``load_sweep``."""

from .downsample import POINTS, bucket_width, downsample, points_of
from .loaders import Backtest, dashboard_inputs, load_backtest, load_drawdown, load_prices, load_series
from .sweep_loaders import Sweep, heatmap_cells, load_sweep

__all__ = ["POINTS", "Backtest", "Sweep", "bucket_width", "dashboard_inputs", "downsample",
           "heatmap_cells", "load_backtest", "load_drawdown", "load_prices", "load_series",
           "load_sweep", "points_of"]
