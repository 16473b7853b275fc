"""Building the store: read new event records since each file's cursor, write them as a new
immutable segment with its pyramid, commit the manifest; merge small segments.

Exactly once, across kills at any point:

1. The indexer takes ``store/LOCK`` (``flock``; a killed indexer's lock goes with its process).
2. It removes orphans: segment files the manifest does not list, and temp files.
3. It rebuilds a listed segment that cannot be opened (torn) from the event-file byte ranges
   the manifest records for it.
4. For each event file it reads whole, CRC-valid records from the file's cursor on
   (:func:`rayplex.tfrecord.iter_records`), keeps the scalars, and every ``segment_rows``
   points (and at the end) writes ``seg-N.parquet`` and ``pyr-N.parquet`` (fsynced), then
   commits: appends to the manifest log one record that lists them and carries the advanced
   cursors, and fsyncs it (:class:`rayplex.store.format.Change`). Until that record is whole
   the new files are orphans; after it, their points are in and their bytes are behind the
   cursors. So no point is lost and none is read twice. A torn record (a kill while
   appending) is cut off by the next indexer before it appends.
5. Compaction merges without ``LOCK``, so indexing goes on meanwhile: holding
   ``store/COMPACTING`` (one compaction at a time), it takes ``LOCK`` briefly to remove orphans
   and reserve the merged segment's id (a commit that only advances ``next_id``), writes the
   merged segment unlocked, then under ``LOCK`` again commits a change listing it instead of the
   ones it merged (if they are all still listed), and only then deletes those. An indexer
   removes orphans only when no compaction is at work (it cannot take ``COMPACTING``): the
   merged segment is unlisted until its commit. A change that drops segments is committed
   by a checkpoint, as is every commit once the log is large (:class:`_Manifests`).

Example:
    >>> report = index("/tmp/exp1")  # doctest: +SKIP
    >>> report.points, report.segments  # doctest: +SKIP
    (120000, 1)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rayplex.atomic import TEMP_PREFIX, atomic_write_bytes, fsync_dir
from rayplex.config import (
    COMPACT_BELOW,
    COMPACT_MIN,
    INDEX_READ_CHUNK_BYTES,
    SEGMENT_ROWS,
    STORE_LOG_CHECKPOINT_BYTES,
    STORE_PYRAMID_ROW_GROUP_ROWS,
    STORE_ROW_GROUP_ROWS,
)
from rayplex.store.format import (
    CATALOG_KEY,
    COMPACTING,
    LOCK,
    LOG_FILE,
    SEGMENT_FILE,
    UPLOADED_SUFFIX,
    Change,
    Layout,
    Manifest,
    PathLike,
    Segment,
    TagStat,
    pyramid_schema,
    raw_schema,
    require_store_deps,
)
from rayplex.store.pyramid import F64, I64, Buckets
from rayplex.store.wire import Chunk, decode_chunk
from rayplex.tfrecord import NotRegularFileError, open_regular

__all__ = ["IndexReport", "compact", "index"]

_KILL_ENV = "RAYPLEX_STORE_KILL_AT"

Progress = Callable[[int, int], None]
"""Called with (bytes read so far, bytes to read) as indexing goes."""


@dataclass
class IndexReport:
    """What one :func:`index` run did.

    Attributes:
        logdir: The absolute logdir.
        points: Points added.
        bytes_read: Event-file bytes consumed.
        segments: Segments committed (not counting compaction's).
        compacted: Segments merged by compaction.
        orphans_removed: Uncommitted files of a killed indexer that were removed.
        rebuilt: Torn segments rebuilt from their event files.
        shrunk: Event files now shorter than their cursor (replaced or truncated; not re-read).
        store_bytes: Size of the store's committed files afterwards.
        event_bytes: Size of the event files read.
        seconds: Wall time taken.
    """

    logdir: str
    points: int = 0
    bytes_read: int = 0
    segments: int = 0
    compacted: int = 0
    orphans_removed: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    shrunk: list[str] = field(default_factory=list)
    store_bytes: int = 0
    event_bytes: int = 0
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        """Store size over event-file size (0 when there are no event files)."""
        return self.store_bytes / self.event_bytes if self.event_bytes else 0.0


def _stage(name: str) -> None:
    """Test hook: ``RAYPLEX_STORE_KILL_AT=name[:n]`` SIGKILLs this process the n-th time (default
    first) the indexer reaches stage ``name``: a real kill at a chosen point of the protocol."""
    spec = os.environ.get(_KILL_ENV)
    if not spec:
        return
    want, _, count = spec.partition(":")
    if want != name:
        return
    left = int(count or "1") - 1
    if left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
    os.environ[_KILL_ENV] = f"{want}:{left}"


@contextlib.contextmanager
def _locked(store: Path, name: str = LOCK, wait: bool = True) -> Iterator[bool]:
    """Hold the lock file ``store/name`` (``flock``: another holder, in this process too, has
    its own open file and is excluded; a killed holder's lock goes with it). Yields True when
    held; False (at once) if ``wait`` is off and someone else holds it."""
    fd = os.open(store / name, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _chunks(path: Path, start: int, stop: int) -> Iterator[tuple[int, Chunk]]:
    """``(offset, chunk)`` for the whole, CRC-valid records of ``path`` in ``[start, stop)``,
    a few MB at a time, decoded in bulk; ends at a torn or broken record."""
    with open_regular(path) as file:
        pos, size = start, INDEX_READ_CHUNK_BYTES
        while pos < stop:
            file.seek(pos)
            want = min(size, stop - pos)
            blob = file.read(want)
            chunk = decode_chunk(blob)
            if not chunk.used:
                if len(blob) == want and want < stop - pos:
                    size *= 2  # one record larger than a chunk
                    continue
                return
            yield pos, chunk
            pos += chunk.used
            size = INDEX_READ_CHUNK_BYTES


_Todo = tuple[str, str, Path, int, int]
"""An event file to read: ``(run, key, path, start, stop)``."""


def _read_whole(path: Path, start: int, stop: int) -> bytes:
    with open_regular(path) as file:
        file.seek(start)
        return file.read(stop - start)


def _decode_batch(batch: list[tuple[str, str, Path, int, bytes]]
                  ) -> Iterator[tuple[str, str, int, Chunk]]:
    """``(run, key, offset, chunk)`` of small event-file ranges decoded together: their bytes
    are joined and decoded in one call (its fixed cost shared), and the chunk is cut back into
    one per file at the files' boundaries. A file whose records do not end exactly at its end
    (torn or broken: the joined decode stops in it, or a record runs past it) is decoded alone,
    as :func:`_chunks` does, and the files after it are joined again; a file's chunk is then
    what decoding it alone gives."""
    i = 0
    while i < len(batch):
        chunk = decode_chunk(b"".join(item[4] for item in batch[i:]))
        edge = 0
        for run, key, path, start, blob in batch[i:]:
            i += 1
            edge += len(blob)
            records = int(np.searchsorted(chunk.ends, edge, side="right"))
            if not blob or (records and int(chunk.ends[records - 1]) == edge):
                head, chunk = chunk.split(records)
                edge = 0
                if head.used:
                    yield run, key, start, head
                continue
            # a file that is not whole: alone, as unbatched; join the ones after it anew
            with contextlib.suppress(NotRegularFileError, FileNotFoundError):  # gone meanwhile
                for at, alone in _chunks(path, start, start + len(blob)):
                    yield run, key, at, alone
            break


def _file_chunks(todo: list[_Todo]) -> Iterator[tuple[str, str, int, Chunk]]:
    """``(run, key, offset, chunk)`` of the event files' ranges, in ``todo``'s order. Ranges
    smaller than a read chunk are decoded a batch at a time (:func:`_decode_batch`), others
    piece by piece (:func:`_chunks`). A file replaced or removed since it was listed is
    skipped from where it fails."""
    batch: list[tuple[str, str, Path, int, bytes]] = []
    held = 0
    for n, (run, key, path, start, stop) in enumerate(todo):
        small = stop - start < INDEX_READ_CHUNK_BYTES
        if small:
            try:
                blob = _read_whole(path, start, stop)
            except (NotRegularFileError, FileNotFoundError):
                blob = None
            if blob is not None:
                batch.append((run, key, path, start, blob))
                held += len(blob)
        if batch and (not small or held >= INDEX_READ_CHUNK_BYTES or n == len(todo) - 1):
            yield from _decode_batch(batch)
            batch, held = [], 0
        if not small:
            try:
                for at, chunk in _chunks(path, start, stop):
                    yield run, key, at, chunk
            except (NotRegularFileError, FileNotFoundError):
                continue  # replaced or removed since it was listed


_STATISTICS = ("run", "tag", "step", "level", "bucket")
"""The columns whose row-group statistics readers use to skip row groups (query.py)."""
_DELTA = ("step", "seq", "bucket", "first_step", "first_seq", "last_step", "last_seq", "count")
"""Integer columns that grow, or nearly, along a series: delta-encoded (smaller, cheaper to
compress). Floats are byte-stream-split (their exponent bytes then compress)."""


def _write_parquet(table: Any, path: Path, arrow_schema: bool = True,
                   row_group_rows: int = STORE_ROW_GROUP_ROWS,
                   ends: list[int] | None = None) -> int:
    """Write ``table`` to ``path`` (new file), fsync it; return its size. Statistics only of
    :data:`_STATISTICS`, encodings chosen per column (any Parquet reader reads them). Without
    ``arrow_schema`` dictionary-typed string columns read back as plain strings (Parquet's
    dictionary-encoded strings either way), and schema metadata is lost. ``ends``: the row
    groups' end rows (each at most ``row_group_rows`` after the previous one); None: every
    ``row_group_rows`` rows."""
    import pyarrow.parquet as pq

    names = set(table.column_names)
    floats = [f.name for f in table.schema if f.type == "double"]
    delta = [c for c in _DELTA if c in names]
    with open(path, "xb") as f:
        with pq.ParquetWriter(f, table.schema, compression="zstd", use_dictionary=["run", "tag"],
                              write_statistics=[c for c in _STATISTICS if c in names],
                              column_encoding={**dict.fromkeys(floats, "BYTE_STREAM_SPLIT"),
                                               **dict.fromkeys(delta, "DELTA_BINARY_PACKED")},
                              store_schema=arrow_schema) as writer:
            if ends is None:
                writer.write_table(table, row_group_size=row_group_rows)
            else:
                for start, end in zip([0, *ends[:-1]], ends, strict=True):
                    writer.write_table(table.slice(start, end - start),
                                       row_group_size=end - start)
        f.flush()
        os.fsync(f.fileno())
    return os.path.getsize(path)


def _group_ends(starts: list[int], n: int, most: int) -> list[int]:
    """Row-group ends for ``n`` rows in stretches beginning at ``starts`` (a pyramid file's
    (tag, level) stretches): a stretch of at least ``most // 8`` rows starts a row group, small
    ones share one (up to ``most // 8`` rows, then the next starts a group); no group exceeds
    ``most``.

    Example:
        >>> _group_ends([0, 20_000, 20_100, 20_200], 30_000, 8_192)
        [8192, 16384, 20000, 20200, 28392, 30000]
    """
    least = most // 8
    ends: list[int] = []
    begin = 0
    bounds = [*starts, n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if a > begin and (a - begin >= least or b - a >= least):
            ends.append(a)
            begin = a
        while b - begin > most:
            begin += most
            ends.append(begin)
    if n > begin:
        ends.append(n)
    return ends


def _codes(column: Any) -> tuple[I64, list[str]]:
    """``(code, names)``: each row's rank among the sorted distinct names of a string column."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column).combine_chunks()
    codes, names = _ranked(encoded.indices.to_numpy(zero_copy_only=False),
                           encoded.dictionary.to_pylist())
    return codes, names


def _ranked(ids: I64, names: list[str]) -> tuple[I64, list[str]]:
    """Ids into ``names`` as ranks among the sorted names, and the sorted names."""
    rank = np.empty(len(names), np.int64)
    rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    return (rank[ids] if len(names) else np.zeros(0, np.int64)), sorted(names)


def _arrow(values: Any) -> Any:
    """A pyarrow array over a numpy array's memory. (``pa.array`` and ``pa.table`` of numpy
    arrays import pandas, about a second, to ask whether it is a pandas object; an indexer
    needs no pandas.)"""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])


def _strings(names: list[str], codes: I64 | None = None) -> Any:
    """A pyarrow string array of ``names``, built from its buffers (as :func:`_arrow`), or of
    ``names[code]`` for each of ``codes`` (gathered by Arrow's ``take``)."""
    import pyarrow as pa

    data = [name.encode("utf-8") for name in names]
    sizes = np.array([len(d) for d in data], np.int64)
    offsets = np.zeros(len(sizes) + 1, np.int32)
    np.cumsum(sizes, out=offsets[1:])
    strings = pa.Array.from_buffers(pa.string(), len(sizes), [
        None, pa.py_buffer(offsets), pa.py_buffer(np.frombuffer(b"".join(data), np.uint8))])
    return strings if codes is None else strings.take(_arrow(codes))


def _names(codes: I64, names: list[str]) -> Any:
    """A dictionary-typed string column (no string is copied per row)."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(_arrow(codes.astype(np.int32)), _strings(names))


def _with_dictionaries(schema: Any) -> Any:
    import pyarrow as pa

    kind = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([pa.field(f.name, kind) if f.name in ("run", "tag") else f
                      for f in schema])


@dataclass
class _Points:
    """A segment's points as numpy columns; run and tag as codes into their sorted names."""

    run: I64
    runs: list[str]
    tag: I64
    tags: list[str]
    step: I64
    wall_time: F64
    value: F64
    seq: I64

    @classmethod
    def of_table(cls, raw: Any) -> _Points:
        """From a raw Arrow table (string run and tag)."""
        tag, tags = _codes(raw.column("tag"))
        run, runs = _codes(raw.column("run"))
        return cls(run, runs, tag, tags, *(raw.column(c).to_numpy() for c in
                                           ("step", "wall_time", "value", "seq")))

    def __len__(self) -> int:
        return len(self.step)

    def sorted(self) -> _Points:
        """Sorted by (tag, run, step, seq).

        Points come in reading order (seq grows), each series' steps mostly growing: a stable
        sort by series alone (a radix sort when there are fewer than 65,536 series) is then
        the whole order, and a full sort is needed only when some series' steps go back.
        Then run, tag and seq are not gathered but made: each series' codes repeated, and
        seqs that are consecutive (as the indexer numbers them) are the order itself."""
        n, width = len(self), max(1, len(self.runs))
        series = self.tag * width + self.run
        if n and int(series.max()) < 1 << 16 and (np.diff(self.seq) > 0).all():
            order = np.argsort(series.astype(np.uint16), kind="stable")
            counts = np.bincount(series, minlength=1)
            s = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
            step = self.step[order]
            if ((s[1:] != s[:-1]) | (step[1:] >= step[:-1])).all():
                seq = self.seq[0] + order if self.seq[-1] - self.seq[0] == n - 1 \
                    else self.seq[order]
                return _Points(s % width, self.runs, s // width, self.tags, step,
                               self.wall_time[order], self.value[order], seq)
        order = np.lexsort((self.seq, self.step, series))
        if not (np.diff(order) != 1).any():
            return self
        return _Points(self.run[order], self.runs, self.tag[order], self.tags, self.step[order],
                       self.wall_time[order], self.value[order], self.seq[order])

    def table(self) -> Any:
        """The raw Arrow table (run and tag dictionary-typed)."""
        import pyarrow as pa

        return pa.table({"run": _names(self.run, self.runs), "tag": _names(self.tag, self.tags),
                         "step": _arrow(self.step), "wall_time": _arrow(self.wall_time),
                         "value": _arrow(self.value), "seq": _arrow(self.seq)},
                        schema=_with_dictionaries(raw_schema()))


def _pyramid_table(raw: _Points) -> tuple[Any, int, list[int]]:
    """The pyramid of points sorted by (tag, run, step, seq), sorted by (tag, level, run,
    bucket), its top level, and the first row of each (tag, level). Its schema metadata holds
    the segment's catalogue: each series' run, tag, first and last step, and what
    ``rayplex ls`` shows of it."""
    import pyarrow as pa

    n, run, tag = len(raw), raw.run, raw.tag
    change = np.r_[True, (run[1:] != run[:-1]) | (tag[1:] != tag[:-1])] if n else np.zeros(0, bool)
    series = np.cumsum(change) - 1
    heads = np.flatnonzero(change)
    points = Buckets.from_points(series, raw.step, raw.seq, raw.value)
    levels = points.levels(stop_at=len(heads))
    rows = Buckets.concat([b for _, b in levels])
    level = np.concatenate([np.full(len(b), lv, np.int8) for lv, b in levels]) if levels \
        else np.zeros(0, np.int8)
    key = tag[heads][rows.series] * 64 + level
    order = np.argsort(key.astype(np.uint16) if len(raw.tags) <= 1024 else key, kind="stable")
    rows, level, key = rows.take(order), level[order], key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]).tolist() if len(key) else []
    columns: dict[str, Any] = {  # strings: the schema (and its metadata) is stored
        "run": _strings(raw.runs, run[heads][rows.series]),
        "tag": _strings(raw.tags, tag[heads][rows.series]),
        "level": _arrow(level), "bucket": _arrow(rows.bucket)}
    for name in ("first_step", "first_seq", "first", "last_step", "last_seq", "last", "min",
                 "max", "count", "sum"):
        columns[name] = _arrow(getattr(rows, name))
    ends = np.r_[heads[1:], n] - 1 if n else np.zeros(0, np.int64)
    catalog = {"run": [raw.runs[i] for i in run[heads].tolist()],
               "tag": [raw.tags[i] for i in tag[heads].tolist()],
               "first_step": raw.step[heads].tolist(), "last_step": raw.step[ends].tolist(),
               **_last_points(raw, series, heads, ends)}
    table = pa.table(columns, schema=pyramid_schema())
    table = table.replace_schema_metadata({CATALOG_KEY: json.dumps(catalog)})
    return table, levels[-1][0] if levels else 2, starts


def _last_points(raw: _Points, series: I64, heads: I64, ends: I64) -> dict[str, list[Any]]:
    """Per series of points sorted by (tag, run, step, seq): its point count, smallest seq,
    and the wall time, seq and value of its point at the largest (step, wall_time, seq) (what
    ``rayplex ls`` shows as the last value)."""
    if not len(heads):
        return {k: [] for k in ("count", "first_seq", "last_wall_time", "last_seq", "last_value")}
    step, seq, wall = raw.step, raw.seq, raw.wall_time
    at_last = np.flatnonzero(step == step[ends][series])  # the last step's points, each series
    owner = series[at_last]
    # largest (wall_time, seq) among them: sort by (series, wall, seq), take each series' end
    order = at_last[np.lexsort((seq[at_last], wall[at_last], owner))]
    pick = order[np.r_[owner[1:] != owner[:-1], True]]  # owner is sorted already
    return {"count": (np.r_[heads[1:], len(step)] - heads).tolist(),
            "first_seq": np.minimum.reduceat(seq, heads).tolist(),
            "last_wall_time": wall[pick].tolist(), "last_seq": seq[pick].tolist(),
            "last_value": raw.value[pick].tolist()}


def _write_segment(layout: Layout, seg_id: int, raw: _Points, sources: list[list[Any]]) -> Segment:
    """Write a segment's two files (uncommitted until the manifest lists them)."""
    raw = raw.sorted()
    segment = Segment(seg_id, len(raw), 0, 0, 2)
    with open(layout.store / segment.src, "xb") as f:
        f.write(json.dumps(sources, separators=(",", ":")).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    segment.raw_bytes = _write_parquet(raw.table(), layout.store / segment.raw,
                                       arrow_schema=False)
    _stage("raw-written")
    pyramid, segment.top, starts = _pyramid_table(raw)
    segment.pyr_bytes = _write_parquet(  # a level starts a row group: skipped by its statistics
        pyramid, layout.store / segment.pyr, row_group_rows=STORE_PYRAMID_ROW_GROUP_ROWS,
        ends=_group_ends(starts, len(pyramid), STORE_PYRAMID_ROW_GROUP_ROWS))
    _stage("pyramid-written")
    fsync_dir(layout.store)
    return segment


class _Manifests:
    """The indexer's side of the manifest (held under ``store/LOCK``): commits append a record
    to the log; a checkpoint writes the whole manifest as a new snapshot with a new, empty log.

    Opening it cuts a torn tail off the log and removes logs the snapshot does not name (of a
    checkpoint killed half-way)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.manifest, self.log_bytes = Manifest.read(layout)
        self.snapshot_bytes = 0
        with contextlib.suppress(FileNotFoundError):
            self.snapshot_bytes = layout.manifest.stat().st_size
        log = self.manifest.log
        if log is not None and (layout.store / log).exists():
            with open(layout.store / log, "r+b") as f:
                if os.fstat(f.fileno()).st_size > self.log_bytes:
                    f.truncate(self.log_bytes)
                    os.fsync(f.fileno())
        elif log is not None:
            self.manifest.log = None  # a snapshot without its log: the next commit checkpoints
        for entry in os.scandir(layout.store):
            if LOG_FILE.match(entry.name) and entry.name != log:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def commit(self, change: Change, checkpoint: bool = False) -> None:
        """Apply ``change`` and make it durable: append it to the log, or checkpoint (asked,
        no log yet, or the log would outgrow both the snapshot and its bound)."""
        self.manifest.apply(change)
        line = change.line()
        if checkpoint or self.manifest.log is None or self.log_bytes + len(line) > max(
                STORE_LOG_CHECKPOINT_BYTES, self.snapshot_bytes):
            self.checkpoint()
        else:
            with open(self.layout.store / self.manifest.log, "ab") as f:
                half = len(line) // 2
                f.write(line[:half])
                f.flush()
                _stage("record-half")
                f.write(line[half:])
                f.flush()
                os.fsync(f.fileno())
            self.log_bytes += len(line)
        _stage("committed")

    def checkpoint(self) -> None:
        """Write the whole manifest as the snapshot, continued by a new empty log."""
        store, old = self.layout.store, self.manifest.log
        named = LOG_FILE.match(old or "")
        number = int(named.group(1)) + 1 if named else 1
        self.manifest.log = f"MANIFEST-{number:08d}.log"
        with open(store / self.manifest.log, "wb") as f:
            os.fsync(f.fileno())
        data = self.manifest.to_json()
        atomic_write_bytes(self.layout.manifest, data)
        self.snapshot_bytes, self.log_bytes = len(data), 0
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(store / old)


def _remove_orphans(layout: Layout, manifest: Manifest) -> list[str]:
    listed = {name for seg in manifest.segments for name in seg.files}
    removed = []
    for entry in os.scandir(layout.store):
        name = entry.name.removesuffix(UPLOADED_SUFFIX)  # a segment's marker goes with it
        if (SEGMENT_FILE.match(name) and name not in listed) or entry.name.startswith(
                TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            removed.append(entry.name)
    return sorted(removed)


def segment_ok(layout: Layout, segment: Segment) -> bool:
    """True if both files of ``segment`` are there, have their committed sizes and open as
    Parquet (their footers are intact), or if the bucket holds it (:func:`uploaded`)."""
    import pyarrow.parquet as pq

    if layout.uploaded(segment):
        return True
    for name, size in ((segment.raw, segment.raw_bytes), (segment.pyr, segment.pyr_bytes)):
        path = layout.store / name
        try:
            if path.stat().st_size != size:
                return False
            pq.ParquetFile(path).close()
        except Exception:  # noqa: BLE001 - any failure to open means torn
            return False
    return True


_Stat = tuple[int, int, int]
_WHOLE: dict[Path, dict[str, _Stat]] = {}
"""Per store: ``{file: (size, mtime_ns, inode)}`` of the listed segment files this process
found whole (:func:`segment_ok`). Segment files are immutable: one that stats the same is the
file checked, so a round opens only new or changed files, not every segment of a growing
store (about a millisecond each)."""


def _whole(layout: Layout, segment: Segment, known: dict[str, _Stat],
           seen: dict[str, _Stat]) -> bool:
    """:func:`segment_ok`, skipped for files that stat as in ``known``; adds to ``seen`` the
    stats of the files found whole."""
    stats = {}
    for name in (segment.raw, segment.pyr):
        try:
            st = os.stat(layout.store / name)
        except OSError:
            return False
        stats[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
    if any(known.get(name) != stat for name, stat in stats.items()) and not segment_ok(
            layout, segment):
        return False
    seen.update(stats)
    return True


class _Builder:
    """Collects points (and the byte ranges they came from) for the next segment."""

    def __init__(self, manifests: _Manifests) -> None:
        self.manifests = manifests
        self.manifest = manifests.manifest
        self.runs: dict[str, int] = {}
        self.tags: dict[str, int] = {}
        self.parts: list[tuple[int, I64, I64, I64, F64, F64]] = []
        """Per chunk: run id, its tags' ids, each point's tag (into those), step, wall time,
        value."""
        self.rows = 0
        self.sources: dict[str, list[int]] = {}
        self.cursors: dict[str, int] = {}
        self.others: dict[tuple[str, str], TagStat] = {}

    def add(self, run: str, key: str, start: int, chunk: Chunk) -> None:
        """Add a chunk's scalars, read from ``key``'s bytes ``[start, start + chunk.used)``,
        and the tags of its other values."""
        end = start + chunk.used
        if chunk.others:
            before = np.searchsorted(chunk.record, [o[0] for o in chunk.others]).tolist()
            base = self.manifest.next_seq + self.rows
            for (_, tag, kind, step, wall), k in zip(chunk.others, before, strict=True):
                order = 2 * (base + k)
                stat = TagStat(kind, 1, step, step, wall, order, order, None)
                old = self.others.get((run, tag))
                self.others[(run, tag)] = stat if old is None else old.then(stat)
        if len(chunk):
            ids = np.array([self.tags.setdefault(t, len(self.tags)) for t in chunk.tags],
                           np.int64)
            self.parts.append((self.runs.setdefault(run, len(self.runs)), ids, chunk.tag,
                               chunk.step, chunk.wall_time, chunk.value))
            self.rows += len(chunk)
        self.sources.setdefault(key, [start, end])[1] = end
        self.cursors[key] = end

    def points(self, first_seq: int) -> _Points:
        """What was collected, seqs from ``first_seq`` on."""
        if not self.parts:
            empty = np.zeros(0, np.int64)
            return _Points(empty, [], empty, [], empty, np.zeros(0), np.zeros(0), empty)
        run_rank, runs = _ranked(np.arange(len(self.runs), dtype=np.int64), list(self.runs))
        tag_rank, tags = _ranked(np.arange(len(self.tags), dtype=np.int64), list(self.tags))
        run = np.repeat(run_rank[[p[0] for p in self.parts]], [len(p[2]) for p in self.parts])
        tag = np.concatenate([tag_rank[p[1]][p[2]] for p in self.parts])
        cols = [np.concatenate([p[i] for p in self.parts]) for i in range(3, 6)]
        return _Points(run, runs, tag, tags, cols[0].astype(np.int64, copy=False),
                       cols[1].astype(np.float64, copy=False),
                       cols[2].astype(np.float64, copy=False),
                       np.arange(first_seq, first_seq + self.rows, dtype=np.int64))

    def commit(self, layout: Layout) -> int:
        """Write what was collected (if anything) and commit it with the cursors."""
        if not self.cursors:
            return 0
        manifest, rows = self.manifest, self.rows
        change = Change(manifest.next_id, manifest.next_seq, cursors=dict(self.cursors))
        if rows:
            sources = [[key, start, end] for key, (start, end) in self.sources.items()]
            change.add.append(
                _write_segment(layout, manifest.next_id, self.points(manifest.next_seq), sources))
            change.next_id += 1
            change.next_seq += rows
        for (run, tag), stat in self.others.items():
            change.tags.setdefault(run, {})[tag] = stat
        self.manifests.commit(change)
        self.__init__(self.manifests)  # type: ignore[misc]
        return 1 if rows else 0


def _rebuild(layout: Layout, manifests: _Manifests, segment: Segment) -> bool:
    """Rebuild a torn segment from its sources, under a new id, keeping its seqs; False if
    its sources cannot be read either (then it stays, skipped and reported by readers)."""
    sources = segment.ranges(layout)
    if sources is None:
        return False
    manifest = manifests.manifest
    raw_rows = _Builder(manifests)
    runs = {key: run for run, key, _ in layout.event_files()}
    paths = {key: path for _, key, path in layout.event_files()}
    for key, start, end in sources:
        if key not in paths:
            continue
        for at, chunk in _chunks(paths[key], start, end):
            raw_rows.add(runs[key], key, at, chunk)
    # The seqs of the torn segment are lost with it: give the points new ones (after all
    # others), so that ties at one step still resolve in reading order.
    points = raw_rows.points(manifest.next_seq)
    new = _write_segment(layout, manifest.next_id, points, sources)
    manifests.commit(Change(manifest.next_id + 1, manifest.next_seq + len(points), [new],
                            [segment.id]), checkpoint=True)
    for name in segment.files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.store / name)
    return True


def _store_bytes(manifest: Manifest) -> int:
    return sum(seg.raw_bytes + seg.pyr_bytes for seg in manifest.segments)


def compact(logdir: PathLike, *, below: int = COMPACT_BELOW, min_segments: int = 2) -> int:
    """Merge the store's small segments (fewer than ``below`` points) into one, atomically.

    It waits for a compaction at work in another thread or process, and holds the store's lock
    only to reserve the merged segment's id and to commit it: indexers go on while it merges.

    Args:
        logdir: The logdir whose store to compact.
        below: Segments with fewer points than this are merged.
        min_segments: Do nothing unless at least this many are small.

    Returns:
        How many segments were merged (0 if none).

    Example:
        >>> compact("/tmp/exp1")  # doctest: +SKIP
        5
    """
    require_store_deps("rayplex.store.compact")
    layout = Layout.of(logdir)
    if not layout.manifest.exists():
        return 0
    return _compact(layout, below, min_segments, wait=True)


def _merge_ranges(sources: list[list[Any]]) -> list[list[Any]]:
    """Byte ranges per file, adjacent ones joined (keeps a merged segment's record short)."""
    out: list[list[Any]] = []
    for key, start, end in sorted(sources, key=lambda s: (s[0], s[1])):
        if out and out[-1][0] == key and out[-1][2] == start:
            out[-1][2] = end
        else:
            out.append([key, start, end])
    return out


def _unlink(layout: Layout, names: tuple[str, ...]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.store / name)


def _compact(layout: Layout, below: int, min_segments: int, wait: bool) -> int:
    """Merge the small segments into one (the protocol's step 5); how many were merged. Holds
    ``COMPACTING`` throughout (``wait`` off: 0 at once if another compaction is at work) and
    ``LOCK`` only to reserve an id and to commit: indexers commit while it merges."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _locked(layout.store, COMPACTING, wait) as alone:
        if not alone:
            return 0
        with _locked(layout.store):
            manifests = _Manifests(layout)
            manifest = manifests.manifest
            _remove_orphans(layout, manifest)  # both locks held: no one's files are in the making
            small = [seg for seg in manifest.segments  # (up: the bucket holds it, PUT once)
                     if seg.rows < below and not layout.uploaded(seg)]
            if len(small) < max(2, min_segments):
                return 0
            merged_id = manifest.next_id  # reserved: an indexer's next segment takes the next
            manifests.commit(Change(merged_id + 1, manifest.next_seq))
        _stage("compact-reserved")
        ranges = [seg.ranges(layout) for seg in small]
        if any(r is None for r in ranges):
            return 0  # a segment whose sources are gone: keep it as it is
        sources = _merge_ranges([src for r in ranges if r is not None for src in r])
        try:
            table = pa.concat_tables([pq.read_table(layout.store / seg.raw, schema=raw_schema())
                                      for seg in small])
        except FileNotFoundError:
            return 0  # went up and left staging meanwhile (rayplex.store.indexer.uploaded)
        merged = _write_segment(layout, merged_id, _Points.of_table(table), sources)
        del table
        _stage("compact-written")
        with _locked(layout.store):
            manifests = _Manifests(layout)
            manifest = manifests.manifest
            if (not {seg.id for seg in small} <= {seg.id for seg in manifest.segments}
                    or any(layout.uploaded(seg) for seg in small)):
                _unlink(layout, merged.files)  # one was rebuilt or went up meanwhile
                return 0
            manifests.commit(Change(manifest.next_id, manifest.next_seq, [merged],
                                    [seg.id for seg in small]), checkpoint=True)
        _stage("compact-committed")
        for seg in small:
            _unlink(layout, seg.files)
    return len(small)


def uploaded(logdir: PathLike, up: Callable[[str], bool]) -> int:
    """In a staging directory (a logdir on object storage), mark each committed segment whose
    every file the bucket holds (``up(name)``) and delete its files here. The marker
    (:data:`~rayplex.store.format.UPLOADED_SUFFIX`, fsynced) comes first, so a segment whose
    files are gone is never taken for torn (a rebuild from event files deleted meanwhile
    would lose its points), and compaction leaves it alone (the bucket holds it: merged
    again, it would be PUT again). Under the store's lock. Returns how many files were
    deleted."""
    layout = Layout.of(logdir)
    if not layout.manifest.exists():
        return 0
    gone = 0
    with _locked(layout.store):
        for seg in Manifest.load(layout).segments:
            if not all(up(name) for name in seg.files if name != seg.src or not seg.sources):
                continue
            if not layout.uploaded(seg):
                atomic_write_bytes(layout.store / (seg.raw + UPLOADED_SUFFIX), b"")
            for name in seg.files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(layout.store / name)
                    gone += 1
    return gone


def pending_bytes(layout: Layout, manifest: Manifest | None = None) -> int:
    """Event-file bytes not yet behind a cursor (0: the store is up to date). Only stats files."""
    manifest = manifest or Manifest.load(layout)
    total = 0
    for _, key, path in layout.event_files():
        with contextlib.suppress(OSError):
            total += max(0, path.stat().st_size - manifest.cursors.get(key, 0))
    return total


def index(
    logdir: PathLike,
    *,
    progress: Progress | None = None,
    compaction: bool = True,
    segment_rows: int = SEGMENT_ROWS,
    limits: Mapping[str, int] | None = None,
) -> IndexReport:
    """Build or extend the columnar store of a logdir (rayplex's, or any TensorBoard logdir).

    Reads every event file from its cursor on, adds the new scalars as new segments with
    their pyramids, and commits. Safe to kill at any point: the next run loses and duplicates
    nothing. One indexer works at a time (others wait for the lock).

    Args:
        logdir: A rayplex logdir (event files under ``tensorboard/``) or any TensorBoard logdir
            (tensorboardX, ``torch.utils.tensorboard``, Lightning...). The store goes to
            ``logdir/store/``.
        progress: Called with (bytes read, bytes to read) as it goes.
        compaction: Merge small segments at the end (see :func:`compact`), after the lock
            is released; skipped if another compaction is at work.
        segment_rows: Points per segment (bounds memory).
        limits: Read each event file only up to this byte (keys as the manifest's cursors:
            paths relative to the event root); files not in it are left alone. The live feed
            passes the hub's committed sizes (:mod:`rayplex.store.follower`).

    Returns:
        An :class:`IndexReport`.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist.
        ImportError: Without pyarrow/duckdb (``pip install "rayplex[store]"``).
        ValueError: If ``segment_rows`` is not a positive int.

    Example:
        >>> import tempfile
        >>> from tensorboardX import SummaryWriter
        >>> logdir = tempfile.mkdtemp()
        >>> with SummaryWriter(f"{logdir}/run1") as w:
        ...     for step in range(100):
        ...         w.add_scalar("loss", 1 / (step + 1), step)
        >>> index(logdir).points
        100
        >>> index(logdir).points   # nothing new
        0
    """
    if isinstance(segment_rows, bool) or not isinstance(segment_rows, int) or segment_rows < 1:
        raise ValueError(f"segment_rows must be a positive int, got {segment_rows!r}")
    require_store_deps("rayplex.index")
    started = time.monotonic()
    layout = Layout.of(logdir)
    report = IndexReport(str(layout.logdir))
    layout.store.mkdir(exist_ok=True)
    with _locked(layout.store):
        manifests = _Manifests(layout)
        manifest = manifests.manifest
        with _locked(layout.store, COMPACTING, wait=False) as alone:
            if alone:  # else a compaction's merged segment, unlisted until it commits, is here
                report.orphans_removed = _remove_orphans(layout, manifest)
        known = _WHOLE.get(layout.store, {})
        seen: dict[str, _Stat] = {}
        for segment in list(manifest.segments):
            if not _whole(layout, segment, known, seen) and _rebuild(layout, manifests, segment):
                report.rebuilt.append(segment.raw)
        _WHOLE[layout.store] = seen
        files = layout.event_files()
        sizes = {}
        for _, key, path in files:
            with contextlib.suppress(OSError):
                sizes[key] = path.stat().st_size
            if limits is not None and key in sizes:
                if key in limits:
                    sizes[key] = min(sizes[key], limits[key])
                else:
                    del sizes[key]
        report.event_bytes = sum(sizes.values())
        todo = sum(max(0, size - manifest.cursors.get(key, 0)) for key, size in sizes.items())
        builder = _Builder(manifests)
        seq_before = manifest.next_seq
        ranges: list[_Todo] = []
        for run, key, path in files:
            start, size = manifest.cursors.get(key, 0), sizes.get(key)
            if size is None or size == start:
                continue
            if size < start:
                report.shrunk.append(key)
                continue
            ranges.append((run, key, path, start, size))
        for run, key, at, chunk in _file_chunks(ranges):
            while len(chunk) > segment_rows - builder.rows:  # cut at a record
                records = int(chunk.record[segment_rows - builder.rows]) or 1
                head, chunk = chunk.split(records)
                builder.add(run, key, at, head)
                report.bytes_read += head.used
                at += head.used
                report.segments += builder.commit(layout)
            builder.add(run, key, at, chunk)
            report.bytes_read += chunk.used
            if progress is not None:
                progress(report.bytes_read, todo)
            if builder.rows >= segment_rows:
                report.segments += builder.commit(layout)
        report.segments += builder.commit(layout)
        report.points = manifest.next_seq - seq_before
        report.store_bytes = _store_bytes(manifest)
    if compaction:  # after the lock: readers' and other indexers' rounds go on meanwhile
        report.compacted = _compact(layout, COMPACT_BELOW, COMPACT_MIN, wait=False)
        if report.compacted:
            report.store_bytes = _store_bytes(Manifest.load(layout))
    report.seconds = time.monotonic() - started
    return report
