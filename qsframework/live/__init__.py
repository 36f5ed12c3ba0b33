"""``qsf process``: a strategy live on Kafka topics with the backtest's engine (see
:mod:`qsframework.live.processor`)."""

from .config import LogReset, ProcessConfig, ProcessStats, StrategyFailed
from .kafka_source import KafkaSource
from .processor import Processor, install_signal_handlers
from .scale_out import ScaledOut

__all__ = ["KafkaSource", "LogReset", "ProcessConfig", "ProcessStats", "Processor", "ScaledOut", "StrategyFailed", "install_signal_handlers"]
