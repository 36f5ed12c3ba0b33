"""QuantStream: one strategy class, backtested on recordings and run live, with proof both agree."""

from . import user_cache  # noqa: F401 - before numba is imported: where kernels are cached
from .durations import Duration
from .events import ALERT, KINDS, SIGNAL, TRADE, EventKind, define_kind
from . import telemetry  # noqa: F401 - registers the telemetry kinds
from .execution.config import ExecutionConfig
from .execution.records import Fill, Order
from .strategy import Context, Strategy
from . import sweep  # callable: qsframework.sweep(...) runs a sweep (see the subpackage)
from .timers import TimerFires

__version__ = "0.1.0"

__all__ = [
    "ALERT",
    "KINDS",
    "SIGNAL",
    "TRADE",
    "Context",
    "Duration",
    "EventKind",
    "ExecutionConfig",
    "Fill",
    "Order",
    "Strategy",
    "TimerFires",
    "define_kind",
    "sweep",
    "__version__",
]
