"""The sinks ``qsf process`` options ask for: ``--out``, ``--record`` and each ``--sink`` (a
built-in name, or ``file.py:Class`` / ``module:Class``)."""

from __future__ import annotations

from ..engine import Engine
from ..errors import UserError
from ..io import Sink
from ..loader import load_sink
from ..recording import RecordingWriter
from .config import ProcessConfig

#: the kinds a strategy's run emits, each to its topic with --sink kafka (PREFIX.signals, ...)
OUTPUT_KINDS = ("signal", "alert", "order", "fill", "equity")


def sinks_of(config: ProcessConfig, engine: Engine) -> list[Sink]:
    """The sinks of ``config``, in the order of the options; ``engine`` tells the outputs'
    names and schemas (the ``--out`` part directories)."""
    sinks: list[Sink] = []
    if config.out is not None:
        from ..sinks.parts import PartsSink

        outputs = engine.ctx.outputs
        kinds = {b.kind.name: (name, b.kind.schema) for name, b in (outputs.buffers() | outputs.execution()).items()}
        # orders/fills/equity directories appear only once the strategy has ordered
        sinks.append(PartsSink(config.out, kinds, optional={b.kind.name for b in outputs.execution().values()}))
    if config.record is not None:
        from ..sinks.recording import RecordingSink

        sinks.append(RecordingSink(RecordingWriter(config.record), staged=True))
    for name in config.sinks:
        if name == "timescale":
            from ..sinks.postgres import PostgresSink

            if not config.pg_dsn:
                raise ValueError("the timescale sink needs a database: set QSF_PG_DSN")
            sinks.append(PostgresSink(config.pg_dsn))
        elif name == "telegram":
            from ..sinks.telegram import (
                MemoryDedupStore,
                PostgresDedupStore,
                TelegramConfig,
                TelegramSink,
            )

            store = PostgresDedupStore(config.pg_dsn) if config.pg_dsn else MemoryDedupStore()
            sinks.append(TelegramSink(TelegramConfig.from_env(), store=store))
        elif name == "kafka":
            from ..sinks.kafka import KafkaSink

            sinks.append(KafkaSink(config.bootstrap, OUTPUT_KINDS, prefix=config.prefix))
        else:
            cls = load_sink(name)
            try:
                sinks.append(cls())
            except Exception as exc:
                raise UserError(f"--sink {name}: {type(exc).__name__}: {exc}") from None
    return sinks
