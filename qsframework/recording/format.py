"""Constants of the recording format (documented in recordings/README.md)."""

FORMAT_NAME = "qsf-recording"
FORMAT_VERSION = 1
MANIFEST = "recording.json"
#: key-value metadata written in every Parquet file's footer
META_PREFIX = b"qsf."
PART_GLOB = "kind=*/date=*/part-*.parquet"
