"""The store's on-disk format: where it lives, its manifest, its two Parquet schemas.

The store of a logdir is the directory ``store/`` in it::

    store/MANIFEST.json          which segments exist, and how far each event file was read
    store/LOCK                   held (flock) by the one indexer at work
    store/seg-00000001.parquet   raw points: run, tag, step, wall_time, value, seq
                                 (sorted by tag, run, step, seq)
    store/pyr-00000001.parquet   their pyramid: run, tag, level, bucket, first/last/min/max/count/sum
                                 (sorted by tag, level, run, bucket; a tag's rows are contiguous,
                                 so row-group statistics skip the others)
    store/src-00000001.json      the event-file byte ranges the segment was read from

Segment files are immutable once written. The manifest is the commit point: it is replaced
atomically (:mod:`rayplex.atomic`) and lists the segments that exist together with the cursor
of every event file (the byte offset after the last whole, CRC-valid record consumed). A segment
file the manifest does not list is an orphan of an indexer that was killed before it committed:
readers ignore it and the next indexer run removes it. A listed segment that cannot be opened
(a torn file) is skipped by readers, reported, and rebuilt by the next indexer run from the
event-file byte ranges its ``src-<id>.json`` records (kept out of the manifest, which a commit
rewrites whole: the manifest grows with segments and event files, not with their product).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Union

from rayplex.layout import MANIFEST, STORE_DIR, TENSORBOARD

__all__ = [
    "CATALOG_KEY",
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
SEGMENT_FILE = re.compile(r"^(seg|pyr)-(\d{8,})\.parquet$|^src-(\d{8,})\.json$")
EXTRA_HINT = 'pip install "rayplex[store]"'


class StoreFormatError(ValueError):
    """The manifest is not one this version of rayplex can read."""


def require_store_deps(what: str) -> None:
    """Import pyarrow and duckdb, or raise an ImportError that names the extra to install.

    Example:
        >>> require_store_deps("read_series")  # with rayplex[store] installed: no error
    """
    missing = []
    for name in ("pyarrow", "duckdb", "pandas"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
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


@dataclass
class Manifest:
    """The store's commit record.

    Attributes:
        version: :data:`FORMAT_VERSION`.
        next_id: The next segment id.
        next_seq: The next point's ``seq``.
        segments: The committed segments, in id order.
        cursors: ``{event-file key: byte offset read up to}``.
        tags: ``{run: {tag: TagStat}}`` of the values that are not scalars (histograms,
            images, text...), for ``rayplex ls``; None in a store built before it was kept
            (then ``ls`` reads the event files).
    """

    version: int
    next_id: int
    next_seq: int
    segments: list[Segment]
    cursors: dict[str, int]
    tags: dict[str, dict[str, TagStat]] | None = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Manifest:
        """A store with nothing in it."""
        return cls(FORMAT_VERSION, 1, 0, [], {}, {})

    def to_json(self) -> bytes:
        """Serialize (sorted keys, so equal manifests give equal bytes)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest.

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
            return cls(FORMAT_VERSION, int(obj["next_id"]), int(obj["next_seq"]),
                       [Segment(**seg) for seg in obj["segments"]],
                       {str(k): int(v) for k, v in obj["cursors"].items()},
                       None if tags is None else {
                           str(run): {str(tag): TagStat(*stat) for tag, stat in by_tag.items()}
                           for run, by_tag in tags.items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, StoreFormatError):
                raise
            raise StoreFormatError(f"unreadable store manifest: {exc}") from None

    @classmethod
    def load(cls, layout: Layout) -> Manifest:
        """The committed manifest of ``layout``'s store, or an empty one if there is none."""
        try:
            with open(layout.manifest, "rb") as f:
                return cls.from_json(f.read())
        except FileNotFoundError:
            return cls.empty()
