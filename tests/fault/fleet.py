"""A fleet's telemetry for the scale-out tests: the emulator's "multi" flight (GPS glitch,
vibration, link loss, GPS loss) flown by ``vehicles`` vehicles, each a few hundred ms apart,
as one recording keyed by vehicle."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from qsframework.adapters.mavlink.tlog import import_tlog
from qsframework.recording import Recording, RecordingWriter
from qsframework.sim.vehicle import Scenario, write_tlog

START_US = 1_767_571_200_000_000
SPACING_NS = 137_000_000  # vehicle k flies k * 137 ms after vehicle 0


def fleet_recording(root: Path, *, vehicles: int, duration: float = 160) -> Recording:
    """One flight imported from a ``.tlog``, its rows copied once per vehicle (key ``uav<k>``,
    times shifted by ``k * SPACING_NS``)."""
    write_tlog(Scenario.load("multi"), root / "one.tlog", duration=duration, start_unix_us=START_US)
    import_tlog(root / "one.tlog", out=root / "one")
    one = Recording(root / "one")
    with RecordingWriter(root / "fleet") as writer:
        for kind in one.kinds:
            table = pa.concat_tables(pq.read_table(f.path) for f in one.files(kind))
            for k in range(vehicles):
                shift = pa.scalar(k * SPACING_NS, pa.int64())
                copy = table.set_column(table.schema.get_field_index("key"), "key",
                                        pa.array([f"uav{k}"] * table.num_rows, table.schema.field("key").type))
                for col in ("ts_event", "ts_recv"):
                    i = copy.schema.get_field_index(col)
                    copy = copy.set_column(i, col, pc.add(copy.column(col), shift))
                writer.write(kind, copy)
    return Recording(root / "fleet")
