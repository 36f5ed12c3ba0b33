"""The shared decoded recording: a sweep decodes the recording once (the strategy's kinds,
columns, keys and time range, validity rules applied) into Arrow IPC files that every worker
memory-maps, instead of each point reading and decoding the Parquet files again.

:class:`SharedRecording` reads them as :class:`~qsframework.recording.Recording` would read
the original: the same batches, the same rejected rows in the same order, the same counts;
a point's outputs are those of a backtest over the recording itself, bit for bit.

A Ray worker reads them from Ray's object store instead (:func:`hold`): nothing on its disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..order import merge_windows
from ..recording import Recording
from ..recording.files import FileInfo
from ..recording.reader import Rejected, _rebatch
from ..validity import DEFAULT_BOUNDS, TimeBounds
from ..window import Window
from .staging import staged_dir

MANIFEST = "decoded.json"
_CALL, _REASON, _FILE = "__qsf_call", "__qsf_reason", "__qsf_file"  # a rejected row's extras
#: decoded recordings this process holds in memory, by their path: file name -> bytes
_HELD: dict[str, Mapping[str, Any]] = {}
HELD_MAX = 4


def hold(path: str, files: Mapping[str, Any]) -> None:
    """Read the decoded recording ``path`` from ``files`` (its file names -> buffers, e.g.
    arrays in Ray's object store) instead of the disk; the last few are kept."""
    _HELD.pop(path, None)
    _HELD[path] = files
    while len(_HELD) > HELD_MAX:
        del _HELD[next(iter(_HELD))]


def is_shared(source: str | Path) -> bool:
    """Whether ``source`` is a decoded recording (else: a recording directory)."""
    return str(source) in _HELD or (Path(source) / MANIFEST).is_file()


def decode(recording: str | Path, cache: Path, *, kinds: Sequence[str], keys: Sequence[str] | None,
           start: int | None, end: int | None, bounds: TimeBounds = DEFAULT_BOUNDS,
           columns: dict[str, list[str]], batch_size: int = 65_536) -> Path:
    """Decode ``recording`` under ``cache`` (once: a directory named by what it holds, reused
    while the recording's files are unchanged); returns the directory. A URI (``s3://``)
    is copied under ``cache`` first (:mod:`.remote`), and named by its URI."""
    from .remote import is_uri, stage

    origin = str(recording) if is_uri(recording) else None
    if origin is not None:
        recording = stage(origin, cache)
    rec = Recording(recording)
    kinds = [k for k in kinds if k in rec.kinds]
    files = {k: rec.files(k) for k in kinds}
    what = {
        "recording": origin or str(Path(recording).resolve()),
        "files": {k: [[str(f.path), os.stat(f.path).st_size, os.stat(f.path).st_mtime_ns] for f in fs]
                  for k, fs in files.items()},
        "kinds": kinds, "keys": None if keys is None else sorted(keys), "start": start, "end": end,
        "bounds": asdict(bounds), "columns": columns, "batch_size": batch_size,
    }
    name = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    dest = cache / name
    if is_shared(dest):
        return dest
    with staged_dir(dest, complete=is_shared) as tmp:
        _write(rec, tmp, kinds=kinds, keys=keys, start=start, end=end, bounds=bounds,
               columns=columns, batch_size=batch_size)
        manifest = {
            "recording": origin or str(rec.root), "kinds": rec.kinds, "decoded": kinds,
            "keys": what["keys"], "start": start, "end": end, "batch_size": batch_size,
            "span": rec.span(),
            "count": rec.count(kinds, start=start, end=end, keys=keys),
            "files": {k: [{"path": str(f.path), "rows": f.rows, "ts_min": f.ts_min, "ts_max": f.ts_max,
                           "keys": None if f.keys is None else sorted(f.keys), "source": f.source}
                          for f in rec.files(k)] for k in rec.kinds},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest))
    return dest


def _write(rec: Recording, tmp: Path, *, kinds: list[str], keys: Sequence[str] | None,
           start: int | None, end: int | None, bounds: TimeBounds, columns: dict[str, list[str]],
           batch_size: int) -> None:
    """Each kind's batches as the engine would get them, pulled in the engine's merge order
    (so rejected rows come in the order a backtest meets them)."""
    writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
    rejects: list[Rejected] = []

    def tee(kind: str, stream: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in stream:
            if kind not in writers:
                writers[kind] = pa.ipc.new_file(str(tmp / f"{kind}.arrow"), batch.schema)
            writers[kind].write_batch(batch)
            yield batch

    streams = {k: tee(k, rec.stream(k, start=start, end=end, keys=keys, batch_size=batch_size,
                                    columns=columns.get(k), bounds=bounds, on_reject=rejects.append))
               for k in kinds}
    try:
        for _ in merge_windows(streams):
            pass
    finally:
        for w in writers.values():
            w.close()
    by_kind: dict[str, list[pa.Table]] = {}
    for call, r in enumerate(rejects):
        extra = {_CALL: pa.array([call] * r.rows.num_rows, pa.int64()),
                 _REASON: pa.array(r.reasons, pa.string()), _FILE: pa.array(r.files, pa.string())}
        table = r.rows
        for name, column in extra.items():
            table = table.append_column(name, column)
        by_kind.setdefault(r.kind, []).append(table)
    for kind, tables in by_kind.items():
        table = pa.concat_tables(tables)
        with pa.ipc.new_file(str(tmp / f"rejected-{kind}.arrow"), table.schema) as w:
            w.write_table(table)


def _mapped(path: Path) -> pa.ipc.RecordBatchFileReader:
    return pa.ipc.open_file(pa.memory_map(str(path), "r"))


class SharedRecording:
    """A decoded recording read like the :class:`Recording` it came from (``root`` is the
    original's path): every batch memory-mapped, nothing decoded again."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._held = _HELD.get(str(path))
        manifest = (self.path / MANIFEST).read_text() if self._held is None else \
            bytes(self._held[MANIFEST]).decode()
        self.doc: dict[str, Any] = json.loads(manifest)
        origin = self.doc["recording"]
        self.root: Path | str = origin if "://" in origin else Path(origin)
        self._files = {k: [FileInfo(path=Path(f["path"]), kind=k, rows=f["rows"], ts_min=f["ts_min"],
                                    ts_max=f["ts_max"], source=f["source"],
                                    keys=None if f["keys"] is None else frozenset(f["keys"]))
                           for f in fs] for k, fs in self.doc["files"].items()}

    def _has(self, name: str) -> bool:
        return (self.path / name).exists() if self._held is None else name in self._held

    def _open(self, name: str) -> pa.ipc.RecordBatchFileReader:
        if self._held is None:
            return _mapped(self.path / name)
        return pa.ipc.open_file(pa.BufferReader(pa.py_buffer(self._held[name])))

    @property
    def kinds(self) -> list[str]:
        return list(self.doc["kinds"])

    def files(self, kind: str) -> list[FileInfo]:
        return list(self._files.get(kind, []))

    def span(self) -> tuple[int, int] | None:
        span = self.doc["span"]
        return None if span is None else (span[0], span[1])

    def prepare(self) -> float:
        return Recording.prepare(self)  # type: ignore[arg-type] - loads the compiled order check

    def _same(self, kinds: Sequence[str], start: int | None, end: int | None,
              keys: Sequence[str] | None) -> bool:
        doc = self.doc
        wanted = None if keys is None else sorted(keys)
        return ([k for k in kinds if k in self.kinds] == doc["decoded"] and start == doc["start"]
                and end == doc["end"] and wanted == doc["keys"])

    def _check(self, kinds: Sequence[str], start: int | None, end: int | None,
               keys: Sequence[str] | None) -> None:
        """Only what was decoded can be read: the same or a narrower range, kinds and keys."""
        doc = self.doc
        ok = (set(kinds) & set(self.kinds) <= set(doc["decoded"])
              and (doc["start"] is None or (start is not None and start >= doc["start"]))
              and (doc["end"] is None or (end is not None and end <= doc["end"]))
              and (doc["keys"] is None or (keys is not None and set(keys) <= set(doc["keys"]))))
        if not ok:
            raise ValueError(f"{self.path} holds {doc['decoded']} in [{doc['start']}, {doc['end']}) "
                             f"of keys {doc['keys']}, not what is asked for")

    def count(self, kinds: Sequence[str], *, start: int | None = None, end: int | None = None,
              keys: Sequence[str] | None = None) -> int:
        """As :meth:`Recording.count`: rows before the validity checks (rejected ones too)."""
        if self._same(kinds, start, end, keys):
            return int(self.doc["count"])
        self._check(kinds, start, end, keys)
        total = 0
        for kind in kinds:
            for name in (f"{kind}.arrow", f"rejected-{kind}.arrow"):
                if self._has(name):
                    reader = self._open(name)
                    for i in range(reader.num_record_batches):
                        total += _mask(reader.get_batch(i), start, end, keys).true_count
        return total

    def windows(self, kinds: Sequence[str], *, start: int | None = None, end: int | None = None,
                keys: Sequence[str] | None = None, batch_size: int = 65_536,
                columns: dict[str, Sequence[str]] | None = None,
                bounds: TimeBounds | None = DEFAULT_BOUNDS,
                on_reject: Callable[[Rejected], None] | None = None) -> Iterator[Window]:
        """The windows :meth:`Recording.windows` gives (the columns, bounds and batch size
        are the decoded ones); the rejected rows go to ``on_reject`` first, in order."""
        same = self._same(kinds, start, end, keys) and batch_size == self.doc["batch_size"]
        if not same:
            self._check(kinds, start, end, keys)
        decoded = [k for k in kinds if k in self.doc["decoded"]]
        if on_reject is not None:
            for r in self._rejected(decoded, None if same else (start, end, keys)):
                on_reject(r)
        streams = {k: self._stream(k, None if same else (start, end, keys), batch_size) for k in decoded
                   if self._has(f"{k}.arrow")}
        return merge_windows(streams) if streams else iter(())

    def _stream(self, kind: str, narrower: tuple | None, batch_size: int) -> Iterator[pa.RecordBatch]:
        reader = self._open(f"{kind}.arrow")
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        if narrower is None:
            yield from batches
            return
        start, end, keys = narrower
        yield from _rebatch((b.filter(_mask(b, start, end, keys)) for b in batches), batch_size)

    def _rejected(self, kinds: list[str], narrower: tuple | None) -> list[Rejected]:
        parts: list[tuple[int, Rejected]] = []
        for kind in kinds:
            name = f"rejected-{kind}.arrow"
            if not self._has(name):
                continue
            table = self._open(name).read_all()
            if narrower is not None:
                table = table.filter(_mask(table, *narrower))
            calls = table.column(_CALL).to_numpy()
            cuts = [0, *(i for i in range(1, len(calls)) if calls[i] != calls[i - 1]), len(calls)]
            for lo, hi in zip(cuts, cuts[1:]):
                if hi > lo:
                    part = table.slice(lo, hi - lo)
                    parts.append((int(calls[lo]), Rejected(
                        kind, part.drop_columns([_CALL, _REASON, _FILE]),
                        part.column(_REASON).to_pylist(), part.column(_FILE).to_pylist())))
        return [r for _, r in sorted(parts, key=lambda p: p[0])]


def _mask(batch: pa.RecordBatch | pa.Table, start: int | None, end: int | None,
          keys: Sequence[str] | None) -> pa.BooleanArray:
    """Rows with ``start <= ts_event < end`` and ``key in keys`` (None: no such bound)."""
    ts = batch.column("ts_event")
    parts = [pc.greater_equal(ts, start) if start is not None else None,
             pc.less(ts, end) if end is not None else None,
             pc.is_in(batch.column("key"), value_set=pa.array(list(keys), pa.string()))
             if keys is not None else None]
    mask: Any = pc.is_valid(ts)
    for part in parts:
        if part is not None:
            mask = pc.and_(mask, part)
    return pc.fill_null(mask, False)
