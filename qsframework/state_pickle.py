"""Engine snapshots as pickles whose bytes stay the same where the state stayed the same.

A strategy holding a 60 s window of trades at 5k/s snapshots to megabytes, yet between two
checkpoints only the trades that entered and left the window changed. The Kafka state store
(:mod:`qsframework.live.state_topic`) cuts a snapshot into content-defined chunks and sends
only those the topic does not hold yet, which saves bytes only when unchanged state pickles to
unchanged bytes wherever it lands in the stream. Two things in a default pickle prevent that:

- frames (protocol 4 and later put a frame header every 64 KiB of output, wherever the
  content is): protocol 3 has none;
- a deque's items are appended in batches of 1000 whose marks move through the items as a
  window slides: here a deque pickles as one tuple of its items.

Lists pickle as pickle does (their batches move the same way): a window held in a deque, a
tuple or a NumPy array is the one sent incrementally. :func:`pickle.loads` reads the result.
"""

from __future__ import annotations

import io
import pickle
from collections import deque
from typing import Any

#: no frames (see above); every Python object since 3.0 pickles in it, nested classes too
PROTOCOL = 3


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is deque:
            return deque, (tuple(obj), obj.maxlen)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """``obj`` pickled so that its unchanged parts keep their bytes (see the module)."""
    out = io.BytesIO()
    try:
        _Pickler(out, protocol=PROTOCOL).dump(obj)
    except RecursionError:
        # a deque that holds itself (its tuple would too): pickle's own way keeps the cycle
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return out.getvalue()
