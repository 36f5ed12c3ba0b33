"""Arrow string columns as numpy views of their buffers, the form compiled kernels take."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def string_buffers(column: pa.Array) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(offsets, data, start, length) of a string column, without copying when possible."""
    if pa.types.is_dictionary(column.type) or not (
        pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    ):
        column = column.cast(pa.string())
    if column.null_count:
        column = column.fill_null("\x00")
    offset_type = np.int64 if pa.types.is_large_string(column.type) else np.int32
    bufs = column.buffers()
    offsets = np.frombuffer(bufs[1], dtype=offset_type)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    # always read-only, whoever made the buffers: one compiled signature, not two
    offsets.flags.writeable = False
    data.flags.writeable = False
    return offsets, data, column.offset, len(column)
