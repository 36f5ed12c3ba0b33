"""Marimo dashboards on backtest, sweep, live and flight data, and the loaders they use
(callable from any notebook, marimo or Jupyter): ``load_backtest``, ``load_prices``,
``load_series``, ``load_drawdown``, ``load_sweep``; live (``load_live_*`` on PostgreSQL) and
flight (``load_flight`` and what takes its :class:`Flight`)."""

from .downsample import POINTS, bucket_width, downsample, points_of
from .flight_loaders import Flight, home_and_fence, load_faults, load_flight, load_flight_alerts, load_panels, load_track
from .live_loaders import (load_live_dead_letters, load_live_equity, load_live_health, load_live_health_latest,
                           load_live_prices, load_live_recent, load_live_spread)
from .loaders import (
           Backtest,
           dashboard_inputs,
           load_backtest,
           load_drawdown,
           load_prices,
           load_series,
)
from .sweep_loaders import Sweep, heatmap_cells, load_sweep

__all__ = ["POINTS", "Backtest", "Sweep", "bucket_width", "dashboard_inputs", "downsample",
           "heatmap_cells", "load_backtest", "load_drawdown", "load_prices", "load_series",
           "load_sweep", "points_of",
           "Flight", "home_and_fence", "load_faults", "load_flight", "load_flight_alerts", "load_panels", "load_track",
           "load_live_dead_letters", "load_live_equity", "load_live_health", "load_live_health_latest",
           "load_live_prices", "load_live_recent", "load_live_spread"]
