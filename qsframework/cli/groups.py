"""The command groups, and how a package adds commands to them.

A package registers commands with an entry point in the group ``qsframework.commands``
naming a function that takes :class:`Commands`::

    [project.entry-points."qsframework.commands"]
    myvenue = "myvenue.commands:register"

    def register(cli: Commands) -> None:
        cli.record.add_command(record_myvenue)   # qsf record myvenue
        cli.ingest.add_command(ingest_myvenue)   # qsf ingest myvenue

The Binance and MAVLink adapters register theirs this way; the core never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from .. import __version__

ENTRY_POINTS = "qsframework.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="qsf")
def main() -> None:
    """QuantStream: backtest a strategy on recordings, run the same class live."""


@main.group()
def recordings() -> None:
    """Inspect and create recordings (Parquet files of events)."""


@recordings.group("import")
def recordings_import() -> None:
    """Import outside data as a recording."""


@main.group()
def ingest() -> None:
    """Publish events to Kafka topics (qsf.trades, ...)."""


@main.group()
def record() -> None:
    """Record live sources straight to a recording (Parquet)."""


@dataclass(frozen=True, slots=True)
class Commands:
    """The groups a package adds its commands to."""

    main: click.Group  # qsf X
    recordings: click.Group  # qsf recordings X
    imports: click.Group  # qsf recordings import X
    record: click.Group  # qsf record X
    ingest: click.Group  # qsf ingest X


COMMANDS = Commands(main=main, recordings=recordings, imports=recordings_import, record=record, ingest=ingest)
