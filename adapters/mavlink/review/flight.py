"""A flight to review: the log imported as a recording (temporary unless kept), its events
as Polars frames per kind, the messages events do not carry, and UavAnomaly's alerts.

The detectors' thresholds come from the log's own parameters where it has them (e.g.
``BATT_LOW_VOLT`` -> ``batt_low_volt``), then from ``-p`` overrides; the checks read the same
:class:`~qsframework.strategies.uav_params.UavAnomalyParams`, so a review and the live
detectors judge by one set of numbers.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from qsframework.errors import UserError
from qsframework.validity import DEFAULT_FLOOR_NS

from .extras import Extras, read_dataflash_extras, read_tlog_extras

Format = Literal["tlog", "dataflash", "recording"]
DATAFLASH_MAGIC = b"\xa3\x95\x80"  # every DataFlash log opens with the FMT message describing FMT

# ArduPilot parameter -> UavAnomaly parameter (seconds for the timers)
PARAM_MAP: dict[str, str] = {
    "BATT_LOW_VOLT": "batt_low_volt", "BATT_CRT_VOLT": "batt_crt_volt", "BATT_LOW_TIMER": "batt_low_timer",
    "BATT_CAPACITY": "batt_capacity", "FS_EKF_THRESH": "ekf_thresh", "FENCE_RADIUS": "fence_radius",
    "FENCE_ALT_MAX": "fence_alt_max", "FENCE_MARGIN": "fence_margin", "FS_GCS_TIMEOUT": "link_timeout",
    "AHRS_GPS_MINSATS": "gps_min_sats",
}
_SECONDS = frozenset({"batt_low_timer", "link_timeout"})


@dataclass(frozen=True, slots=True)
class Flight:
    """The events of one flight (``frames``: kind -> events in total order), the other
    messages (``extras``), the detectors' parameters and their alerts."""

    path: Path
    format: Format
    onboard: bool  # an onboard (DataFlash) log, or a recording imported from one: no telemetry link
    frames: Mapping[str, pl.DataFrame]
    extras: Extras
    params: Any  # UavAnomalyParams as built for this flight
    overrides: Mapping[str, str]
    alerts: pl.DataFrame
    t0: int
    t1: int
    boot_clock: bool = False  # a DataFlash log without GPS time: t0 is its boot (see BOOT_START_NS)

    def kind(self, name: str) -> pl.DataFrame | None:
        """The events of kind ``name``, None when the flight has none."""
        frame = self.frames.get(name)
        return frame if frame is not None and frame.height else None


def detect_format(path: Path) -> Format:
    """A directory is a recording; a file is DataFlash when it opens like one (or is named
    ``.bin``), else a tlog."""
    if path.is_dir():
        return "recording"
    if not path.exists():
        raise UserError(f"cannot read {path}: no such file")
    if path.suffix.lower() == ".bin":
        return "dataflash"
    try:
        with path.open("rb") as fh:
            head = fh.read(3)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    if not head:
        raise UserError(f"{path} is empty")
    return "dataflash" if head == DATAFLASH_MAGIC else "tlog"


@contextmanager
def _recording_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="qsf-review-") as tmp:
        yield Path(tmp) / "recording"


Progress = Callable[[str, int | None], Callable[[int], None]]
"""A progress display: given a phase ("import", "detectors") and its total (None if unknown),
the function to tell it how many more events are done."""


#: a DataFlash log without GPS time (an indoor or bench flight) is timed from boot: reviewed as
#: if it booted at 2000-01-01T00:00:00Z (the validity floor), so its times read as time since boot
BOOT_START_NS = DEFAULT_FLOOR_NS


def load_flight(path: str | Path, *, keep: str | Path | None = None, overrides: Mapping[str, str] | None = None,
                detectors: bool = True, progress: Progress | None = None) -> Flight:
    """Import ``path`` (tlog, DataFlash or a recording directory), read it, run UavAnomaly on it
    (unless not ``detectors``). The import goes to a temporary directory, removed afterwards,
    unless ``keep`` names one."""
    from qsframework.recording import Recording
    from qsframework.recording.imports import import_recording

    path = Path(path)
    _params({}, overrides or {}, onboard=False)  # a bad -p fails before the import
    fmt = detect_format(path)
    if fmt == "recording" and keep is not None:
        raise UserError(f"{path} is a recording already: --keep-recording applies to a log file")
    extras = Extras()
    boot_clock = False
    advance = progress("import", None) if progress is not None and fmt != "recording" else None
    with _recording_dir(Path(keep) if keep is not None else None) as rec_dir:
        if fmt == "recording":
            rec_dir = path
        elif fmt == "tlog":
            from ..tlog import TlogSource

            source = TlogSource(path, progress=advance)
            import_recording(source, rec_dir)
            extras = read_tlog_extras(path, system_id=source.stats.system_id, component_id=source.stats.component_id)
        else:
            from ..dataflash import DataflashSource

            df_source = DataflashSource(path, progress=advance, boot_start_ns=BOOT_START_NS)
            import_recording(df_source, rec_dir)
            extras = read_dataflash_extras(path, boot_start_ns=BOOT_START_NS)
            boot_clock = df_source.stats.boot_clock
        recording = Recording(rec_dir)
        onboard = fmt == "dataflash" or (recording.origin or {}).get("format") == "dataflash"
        frames = _frames(recording)
        span = recording.span()
        if span is None:
            raise UserError(f"{path} holds no telemetry events")
        params, merged = _params(extras.params, overrides or {}, onboard=onboard)
        alerts = _alerts(recording, merged, progress) if detectors else _no_alerts()
    return Flight(path=path, format=fmt, onboard=onboard, frames=frames, extras=extras, params=params,
                  overrides=merged, alerts=alerts, t0=span[0], t1=span[1], boot_clock=boot_clock)


def _frames(recording: Any) -> dict[str, pl.DataFrame]:
    """Every kind of the recording as a Polars frame in (ts_event, seq) order."""
    out = {}
    for kind in recording.kinds:
        files = [str(f.path) for f in recording.files(kind)]
        out[kind] = pl.read_parquet(files, hive_partitioning=False).sort("ts_event", "seq", maintain_order=True)
    return out


def _params(log_params: Mapping[str, float], overrides: Mapping[str, str], *, onboard: bool) -> tuple[Any, dict[str, str]]:
    """UavAnomaly's parameters: defaults, then the log's ArduPilot parameters, then ``overrides``;
    an onboard log has no telemetry link, so its link detector is off unless asked."""
    from qsframework.params import build_params
    from qsframework.strategies.uav_anomaly import UavAnomalyParams

    known = {f.name for f in dataclasses.fields(UavAnomalyParams)}
    merged: dict[str, str] = {}
    for ap_name, name in PARAM_MAP.items():
        if ap_name in log_params and name in known:
            value = log_params[ap_name]
            merged[name] = f"{value:g}s" if name in _SECONDS else f"{value:g}"
    if onboard:
        merged["link"] = "false"
    merged.update(overrides)
    return build_params(UavAnomalyParams, merged, owner="strategy UavAnomaly"), merged


def _no_alerts() -> pl.DataFrame:
    return pl.DataFrame(schema={"ts_event": pl.Int64, "name": pl.Utf8, "severity": pl.Utf8, "text": pl.Utf8})


def _alerts(recording: Any, overrides: Mapping[str, str], progress: Progress | None) -> pl.DataFrame:
    """UavAnomaly's alerts over the recording (a backtest kept in memory)."""
    from qsframework.backtest import run_backtest
    from qsframework.strategies.uav_anomaly import UavAnomaly

    kinds = sorted(set(recording.kinds) & set(UavAnomaly.kinds))
    if not kinds:
        return _no_alerts()
    advance = progress("detectors", recording.rows(kinds)) if progress is not None else None
    result = run_backtest(UavAnomaly, recording, overrides=dict(overrides),
                          on_progress=None if advance is None else lambda n, _ts: advance(n))
    return pl.from_arrow(result.tables["alerts"]).select("ts_event", "name", "severity", "text")
