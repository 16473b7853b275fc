"""The store's on-disk format: where it lives, its manifest, its two Parquet schemas.

The store of a logdir is the directory ``store/`` in it::

    store/MANIFEST.json          snapshot: which segments exist, how far each event file was
                                 read, and the name of the log that continues it
    store/MANIFEST-00000001.log  the log: one record a commit, appended (``<crc32 hex> <json>\n``)
    store/LOCK                   held (flock) by the one indexer at work
    store/COMPACTING             held (flock) by the one compaction at work, while it merges
    store/seg-00000001.parquet   raw points: run, tag, step, wall_time, value, seq
                                 (sorted by tag, run, step, seq)
    store/pyr-00000001.parquet   their pyramid: run, tag, level, bucket, first/last/min/max/count/sum
                                 (sorted by tag, level, run, bucket; a tag's rows are contiguous
                                 and each level starts a row group, so row-group statistics skip
                                 the other tags and levels)
    store/src-00000001.json      the event-file byte ranges the segment was read from

Segment files are immutable once written. The manifest is the commit point: the snapshot plus
the :class:`Change` records of its log, replayed in order. A commit appends one record (the
segment it adds, the segments it drops, the cursors it moves: the byte offset after the last
whole, CRC-valid record consumed of each event file it read) and fsyncs the log, so what a
commit writes does not grow with the store. A record cut short or damaged (a killed indexer)
ends the log: readers ignore it and what follows, and the next indexer cuts it off before it
appends. Now and then (when the log outgrows the snapshot, and for every change that drops
segments) the indexer checkpoints: it writes an empty new log, replaces the snapshot atomically
(:mod:`rayplex.atomic`) with the whole manifest naming that log, and removes the old log. So
the snapshot alone is always a consistent, if older, store whose segment files all exist.

In a logdir on object storage (a staging directory, :mod:`rayplex.remote`) a segment leaves once
the bucket holds it: ``store/seg-<id>.parquet.up`` (empty) marks that the bucket holds all its
files, which are then deleted here (:func:`rayplex.store.indexer.uploaded`). Such a segment is
whole (never rebuilt) and never compacted again (each store object is PUT once; compaction
merges the segments not yet up); readers of such a logdir read the bucket, which has every file.

A segment file the manifest does not list is an orphan of an indexer that was killed before it
committed: readers ignore it and the next indexer run removes it (not while a compaction is at
work: its merged segment is unlisted until it commits, so orphans are removed only by whoever
holds both ``LOCK`` and ``COMPACTING``). A listed segment that cannot
be opened (a torn file) is skipped by readers, reported, and rebuilt by the next indexer run
from the event-file byte ranges its ``src-<id>.json`` records.

Event files are found as TensorBoard finds them: the run is the directory of the event file
relative to the event root, ``.`` for files directly in it. The event root is ``logdir/tensorboard``
for a rayplex logdir and the logdir itself for any other TensorBoard logdir.

Every point gets a ``seq``, a number that grows in the order the indexer met the points. Within
one series the order of points is ``(step, seq)``: ``first`` is the value of the smallest, ``last``
of the largest. Pyramid level ``k`` (``k`` in :data:`LEVELS`) has one row per (run, tag,
``step >> k``).

Example:
    >>> manifest = Manifest.empty()
    >>> Manifest.from_json(manifest.to_json()) == manifest
    True
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Union

from rayplex.config import STORE_QUERY_RETRIES
from rayplex.layout import MANIFEST, MANIFEST_LOG, STORE_DIR, TENSORBOARD

__all__ = [
    "CATALOG_KEY",
    "Change",
    "EXTRA_HINT",
    "FORMAT_VERSION",
    "LEVELS",
    "Layout",
    "Manifest",
    "PYRAMID_COLUMNS",
    "RAW_COLUMNS",
    "Segment",
    "StoreFormatError",
    "TagStat",
    "pyramid_schema",
    "raw_schema",
    "require_store_deps",
]

PathLike = Union[str, "os.PathLike[str]"]

FORMAT_VERSION = 1
LOCK = "LOCK"
COMPACTING = "COMPACTING"
"""The compaction's lock: it merges without ``LOCK`` (indexing goes on) and holds this one."""
LEVEL_STRIDE = 2
LEVELS = tuple(range(LEVEL_STRIDE, 63, LEVEL_STRIDE))
"""Precomputed pyramid levels: buckets of ``2**k`` steps for k = 2, 4, ..., 62."""
RAW_COLUMNS = ("run", "tag", "step", "wall_time", "value", "seq")
PYRAMID_COLUMNS = ("run", "tag", "level", "bucket", "first_step", "first_seq", "first",
                   "last_step", "last_seq", "last", "min", "max", "count", "sum")
CATALOG_KEY = "rayplex.series"
"""Schema metadata key of a pyramid file: JSON ``{"run": [...], "tag": [...], "first_step":
[...], "last_step": [...], "count": [...], "first_seq": [...], "last_wall_time": [...],
"last_seq": [...], "last_value": [...]}``, one entry per series in the segment (files written
before it existed lack it: readers then take the catalogue from the top level; files written
before ``count`` lack the last five: ``rayplex ls`` then reads the event files). ``first_seq``
is the smallest seq of the series; ``last_*`` describe its point at the largest
``(step, wall_time, seq)``."""
UPLOADED_SUFFIX = ".up"
"""``store/seg-<id>.parquet.up``: the bucket holds this segment's files (a staging directory)."""
SEGMENT_FILE = re.compile(r"^(seg|pyr)-(\d{8,})\.parquet$|^src-(\d{8,})\.json$")
LOG_FILE = MANIFEST_LOG
"""A manifest log's name; the snapshot names the one that continues it."""
EXTRA_HINT = 'pip install "rayplex[store]"'


class StoreFormatError(ValueError):
    """The manifest is not one this version of rayplex can read."""


def _installed(name: str) -> bool:
    """True if the top-level module ``name`` can be imported, without importing it (an
    import of pandas, pyarrow and duckdb costs about a second; a call imports what it uses)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_store_deps(what: str) -> None:
    """Check that pyarrow, duckdb and pandas are installed (without importing them), or raise
    an ImportError that names the extra to install.

    Example:
        >>> require_store_deps("read_series")  # with rayplex[store] installed: no error
    """
    missing = [name for name in ("pyarrow", "duckdb", "pandas") if not _installed(name)]
    if missing:
        raise ImportError(
            f"{what} needs {', '.join(missing)} (the columnar store): {EXTRA_HINT}")


def raw_schema() -> Any:
    """The Arrow schema of a raw segment."""
    import pyarrow as pa

    return pa.schema([("run", pa.string()), ("tag", pa.string()), ("step", pa.int64()),
                      ("wall_time", pa.float64()), ("value", pa.float64()), ("seq", pa.int64())])


def pyramid_schema() -> Any:
    """The Arrow schema of a pyramid file."""
    import pyarrow as pa

    i64, f64 = pa.int64(), pa.float64()
    return pa.schema([
        ("run", pa.string()), ("tag", pa.string()), ("level", pa.int8()), ("bucket", i64),
        ("first_step", i64), ("first_seq", i64), ("first", f64),
        ("last_step", i64), ("last_seq", i64), ("last", f64),
        ("min", f64), ("max", f64), ("count", i64), ("sum", f64),
    ])


@dataclass(frozen=True)
class Layout:
    """Where a logdir's event files and store are.

    Attributes:
        logdir: The absolute logdir.
        events: The event root: runs are event-file directories relative to it.
        store: The store directory, ``logdir/store``.
        rayplex: True for a rayplex logdir (event files under ``tensorboard/``).
    """

    logdir: Path
    events: Path
    store: Path
    rayplex: bool

    @classmethod
    def of(cls, logdir: PathLike) -> Layout:
        """The layout of ``logdir``.

        A logdir on object storage is its local copy, synced from the bucket now
        (:func:`rayplex.remote.readable`).

        Raises:
            FileNotFoundError: If ``logdir`` does not exist or is not a directory.

        Example:
            >>> Layout.of("/nonexistent")
            Traceback (most recent call last):
            ...
            FileNotFoundError: logdir '/nonexistent' does not exist
        """
        from rayplex.remote import readable

        path = Path(os.path.abspath(os.path.expanduser(readable(logdir))))
        if not path.exists():
            raise FileNotFoundError(f"logdir {str(path)!r} does not exist")
        if not path.is_dir():
            raise FileNotFoundError(f"logdir {str(path)!r} is not a directory")
        rayplex = (path / TENSORBOARD).is_dir()
        events = path / TENSORBOARD if rayplex else path
        return cls(path, events, path / STORE_DIR, rayplex)

    @property
    def manifest(self) -> Path:
        """``store/MANIFEST.json``."""
        return self.store / MANIFEST

    def version(self) -> str:
        """A token that changes whenever the store commits: the snapshot's identity and size,
        and those of the manifest log it names (a commit appends to the log and leaves the
        snapshot alone); ``"none"`` without a store. Cheap: a listing of ``store/`` and a
        ``stat`` of the snapshot and its log (no file is read)."""
        try:
            st = self.manifest.stat()
        except FileNotFoundError:
            return "none"
        token = f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}"
        for name in sorted(os.listdir(self.store)):
            if MANIFEST_LOG.match(name):
                try:
                    log = (self.store / name).stat()
                except FileNotFoundError:
                    continue  # replaced by a checkpoint meanwhile: the snapshot changed too
                token += f"+{name}-{log.st_size}-{log.st_ino}"
        return token

    def uploaded(self, segment: Segment) -> bool:
        """Whether the bucket holds ``segment`` (a staging directory's store: its marker
        ``seg-<id>.parquet.up`` is here, its files may be gone)."""
        return (self.store / (segment.raw + UPLOADED_SUFFIX)).exists()

    def event_files(self) -> list[tuple[str, str, Path]]:
        """``(run, key, path)`` of every event file, by run then name; ``key`` (the file's path
        relative to the event root) names its cursor."""
        from rayplex.logdir_codec import event_files

        out = []
        for run, paths in sorted(event_files(self.events).items()):
            if not self.rayplex and (run == STORE_DIR or run.startswith(STORE_DIR + "/")):
                continue  # our own directory, in a logdir that is also the event root
            for path in paths:
                out.append((run, path.relative_to(self.events).as_posix(), path))
        return out


class TagStat(NamedTuple):
    """What ``rayplex ls`` shows of one tag of one run, for a stretch of its values; two
    stretches combine with :meth:`then`.

    ``first_order``/``last_order`` place a value in reading order: ``2 * seq + 1`` for a scalar,
    ``2 * s`` for another value met just before the scalar that got (or would get) ``seq`` s.

    Example:
        >>> a = TagStat("scalar", 2, 0, 5, 10.0, 1, 3, 0.5)
        >>> b = TagStat("histogram", 1, 5, 5, 10.0, 4, 4, None)
        >>> both = a.then(b)
        >>> both.kind, both.points, both.last_order, both.last_value
        ('scalar', 3, 4, None)
    """

    kind: str
    points: int
    first_step: int
    last_step: int
    last_wall_time: float
    first_order: int
    last_order: int
    last_value: float | None

    def then(self, other: TagStat) -> TagStat:
        """Both stretches: the kind of the first value read; the last value the one at the
        largest (step, wall time), the later read on a tie (as reading the event files in
        order finds it); ``other`` wins a tie of order (it was committed later)."""
        first = self if self.first_order <= other.first_order else other
        mine = (self.last_step, self.last_wall_time, self.last_order)
        last = other if (other.last_step, other.last_wall_time, other.last_order) >= mine \
            else self
        return TagStat(first.kind, self.points + other.points,
                       min(self.first_step, other.first_step), last.last_step,
                       last.last_wall_time, first.first_order, last.last_order, last.last_value)


@dataclass
class Segment:
    """One committed segment: a raw file and its pyramid file.

    Attributes:
        id: Its number (file names ``seg-<id>.parquet``, ``pyr-<id>.parquet``).
        rows: Raw points in it.
        raw_bytes: Size of the raw file.
        pyr_bytes: Size of the pyramid file.
        top: Its highest precomputed level; at every higher level each series has the same
            rows, with ``bucket >> (level - top)``.
        sources: ``[event-file key, start, end]`` byte ranges of the records it holds, in
            manifests written before they moved to the segment's own ``src-<id>.json``
            (:meth:`ranges`); empty otherwise, so that a commit writes only what changed and
            not every segment's ranges again.
    """

    id: int
    rows: int
    raw_bytes: int
    pyr_bytes: int
    top: int
    sources: list[list[Any]] = field(default_factory=list)

    @property
    def raw(self) -> str:
        """The raw file's name."""
        return f"seg-{self.id:08d}.parquet"

    @property
    def pyr(self) -> str:
        """The pyramid file's name."""
        return f"pyr-{self.id:08d}.parquet"

    @property
    def src(self) -> str:
        """The name of the file of its byte ranges (immutable, written before the commit)."""
        return f"src-{self.id:08d}.json"

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the segment."""
        return self.raw, self.pyr, self.src

    def ranges(self, layout: Layout) -> list[list[Any]] | None:
        """Its ``[event-file key, start, end]`` byte ranges, or None if they cannot be read."""
        if self.sources:
            return self.sources
        try:
            with open(layout.store / self.src, "rb") as f:
                ranges = json.loads(f.read().decode("utf-8"))
            return [[str(k), int(a), int(b)] for k, a, b in ranges]
        except (OSError, ValueError, TypeError):
            return None


def _tags_of(obj: Any) -> dict[str, dict[str, TagStat]]:
    return {str(run): {str(tag): TagStat(*stat) for tag, stat in by_tag.items()}
            for run, by_tag in obj.items()}


@dataclass
class Change:
    """One commit, as a record of the manifest log.

    Attributes:
        next_id: The manifest's next segment id after it.
        next_seq: The manifest's next ``seq`` after it.
        add: Segments it adds, in the place of the first one it drops (else at the end).
        drop: Ids of the segments it removes (compacted, or rebuilt as ``add``).
        cursors: ``{event-file key: byte offset}`` of the files it read further.
        tags: ``{run: {tag: TagStat}}`` of the values that are not scalars it read, to be
            combined (:meth:`TagStat.then`) with the manifest's.

    Example:
        >>> change = Change(2, 10, [Segment(1, 10, 500, 600, 2)], cursors={"a/ev": 640})
        >>> manifest = Manifest.empty()
        >>> manifest.replay(change.line()) == len(change.line())
        True
        >>> [s.id for s in manifest.segments], manifest.next_seq, manifest.cursors
        ([1], 10, {'a/ev': 640})
    """

    next_id: int
    next_seq: int
    add: list[Segment] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    tags: dict[str, dict[str, TagStat]] = field(default_factory=dict)

    def line(self) -> bytes:
        """The record: ``<crc32 of the json, 8 hex digits> <json>\\n``."""
        body = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")
        return b"%08x %s\n" % (zlib.crc32(body), body)

    @classmethod
    def parse(cls, line: bytes) -> Change | None:
        """The change of one whole record (without its newline), or None if it is damaged."""
        crc, _, body = line.partition(b" ")
        try:
            if len(crc) != 8 or int(crc, 16) != zlib.crc32(body):
                return None
            obj = json.loads(body.decode("utf-8"))
            return cls(int(obj["next_id"]), int(obj["next_seq"]),
                       [Segment(**seg) for seg in obj["add"]], [int(i) for i in obj["drop"]],
                       {str(k): int(v) for k, v in obj["cursors"].items()},
                       _tags_of(obj["tags"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass
class Manifest:
    """The store's commit record: its snapshot with the changes of its log applied.

    Attributes:
        version: :data:`FORMAT_VERSION`.
        next_id: The next segment id.
        next_seq: The next point's ``seq``.
        segments: The committed segments, in id order.
        cursors: ``{event-file key: byte offset read up to}``.
        tags: ``{run: {tag: TagStat}}`` of the values that are not scalars (histograms,
            images, text...), for ``rayplex ls``; None in a store built before it was kept
            (then ``ls`` reads the event files).
        log: The name of the log (``MANIFEST-<n>.log``) that continues the snapshot; None in
            a store written before the log existed (its next commit checkpoints).
    """

    version: int
    next_id: int
    next_seq: int
    segments: list[Segment]
    cursors: dict[str, int]
    tags: dict[str, dict[str, TagStat]] | None = field(default_factory=dict)
    log: str | None = None

    @classmethod
    def empty(cls) -> Manifest:
        """A store with nothing in it."""
        return cls(FORMAT_VERSION, 1, 0, [], {}, {})

    def to_json(self) -> bytes:
        """Serialize (sorted keys, so equal manifests give equal bytes)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a snapshot (without its log).

        Raises:
            StoreFormatError: If it is not a manifest of a version this rayplex reads.
        """
        try:
            obj = json.loads(data.decode("utf-8"))
            if obj.get("version") != FORMAT_VERSION:
                raise StoreFormatError(
                    f"store format version {obj.get('version')!r}; this rayplex reads "
                    f"{FORMAT_VERSION}")
            tags = obj.get("tags")
            log = obj.get("log")
            if log is not None and not LOG_FILE.match(str(log)):
                raise ValueError(f"bad log name {log!r}")
            return cls(FORMAT_VERSION, int(obj["next_id"]), int(obj["next_seq"]),
                       [Segment(**seg) for seg in obj["segments"]],
                       {str(k): int(v) for k, v in obj["cursors"].items()},
                       None if tags is None else _tags_of(tags),
                       None if log is None else str(log))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, StoreFormatError):
                raise
            raise StoreFormatError(f"unreadable store manifest: {exc}") from None

    def apply(self, change: Change) -> None:
        """Apply one commit's change."""
        dropped = set(change.drop)
        kept = [seg for seg in self.segments if seg.id not in dropped]
        at = next((i for i, seg in enumerate(self.segments) if seg.id in dropped), len(kept))
        self.segments = kept[:at] + list(change.add) + kept[at:]
        self.next_id = max(self.next_id, change.next_id)
        self.next_seq = max(self.next_seq, change.next_seq)
        self.cursors.update(change.cursors)
        if self.tags is not None:
            for run, by_tag in change.tags.items():
                known = self.tags.setdefault(run, {})
                for tag, stat in by_tag.items():
                    known[tag] = known[tag].then(stat) if tag in known else stat

    def replay(self, log: bytes) -> int:
        """Apply the whole, intact records of ``log`` in order, up to the first torn or
        damaged one; return the byte length of what was applied."""
        end = 0
        while True:
            stop = log.find(b"\n", end)
            if stop < 0:
                return end
            change = Change.parse(log[end:stop])
            if change is None:
                return end
            self.apply(change)
            end = stop + 1

    @classmethod
    def read(cls, layout: Layout) -> tuple[Manifest, int]:
        """The committed manifest of ``layout``'s store (an empty one if there is none), and
        the byte length of the intact part of its log.

        A log that is missing was removed by a checkpoint after the snapshot was read: the
        snapshot is read again (a few times) before the log counts as empty.
        """
        data = None
        for _ in range(STORE_QUERY_RETRIES + 2):
            try:
                with open(layout.manifest, "rb") as f:
                    again = f.read()
            except FileNotFoundError:
                return cls.empty(), 0
            if again == data:
                break  # the same snapshot, still without its log (e.g. a copy without it)
            data = again
            manifest = cls.from_json(data)
            if manifest.log is None:
                return manifest, 0
            try:
                with open(layout.store / manifest.log, "rb") as f:
                    log = f.read()
            except FileNotFoundError:
                continue
            return manifest, manifest.replay(log)
        return cls.from_json(again), 0

    @classmethod
    def load(cls, layout: Layout) -> Manifest:
        """The committed manifest of ``layout``'s store (snapshot and log), or an empty one if
        there is none."""
        return cls.read(layout)[0]
