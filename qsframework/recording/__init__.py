"""Recordings: Hive-partitioned Parquet of events, sorted in the engine's total order."""

from .format import FORMAT_VERSION, MANIFEST
from .reader import FileInfo, Recording
from .source import RecordingSource
from .writer import RecordingWriter

__all__ = ["FORMAT_VERSION", "MANIFEST", "FileInfo", "Recording", "RecordingSource", "RecordingWriter"]
