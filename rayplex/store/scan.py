"""Scalar rows straight from the store, for ``read_scalars`` and ``rayplex export``: the same
rows as the event files give, in the same order, streamed in bounded batches; and for ``rayplex
ls`` every tag of every run (:func:`stored_tags`) without reading an event.

The store answers only when it is **current**: every event file under ``tensorboard/`` has a
cursor in the manifest equal to its size (one ``stat`` per file), no cursor names a file that is
gone, and every listed segment opens. Otherwise (no store, the store behind a live hub, a torn
segment, no ``[store]`` extra) :func:`open_current` returns None and the callers read the event
files as before.

Order: the event readers sort by ``(run, tag, step, wall_time)`` keeping reading order for ties;
the store sorts by ``(run, tag, step, wall_time, seq)``, ``seq`` being the order the indexer met
the points (reading order within each event file).

Memory: runs are read in batches of at most :data:`BATCH_POINTS` points (one series more than
that is read alone), from the row groups whose ``run`` statistics overlap the batch. Segment files
are opened once up front, so a compaction that removes one meanwhile does not disturb a reader.

Example:
    >>> scan = open_current("/tmp/exp1")  # doctest: +SKIP
    >>> for table in scan.tables(tag="loss"):  # doctest: +SKIP
    ...     print(table.num_rows)
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

from rayplex.config import BATCH_POINTS
from rayplex.store.format import CATALOG_KEY, Layout, Manifest, PathLike, TagStat

__all__ = ["BATCH_POINTS", "COLUMNS", "StoreScan", "open_current", "stored_tags"]

COLUMNS = ["run", "tag", "step", "wall_time", "value"]
_SORT = [("run", "ascending"), ("tag", "ascending"), ("step", "ascending"),
         ("wall_time", "ascending"), ("seq", "ascending")]

Match = Callable[[str], bool]


class _Segment:
    """One open raw segment: its row groups' ``run`` ranges."""

    def __init__(self, file: IO[bytes]) -> None:
        import pyarrow.parquet as pq

        self.file = file
        self.parquet = pq.ParquetFile(file)
        meta = self.parquet.metadata
        run_col = meta.schema.to_arrow_schema().get_field_index("run")
        self.ranges: list[tuple[str | None, str | None]] = []
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(run_col).statistics
            if stats is not None and stats.has_min_max:
                self.ranges.append((str(stats.min), str(stats.max)))
            else:
                self.ranges.append((None, None))

    def read(self, lo: str, hi: str) -> Any:
        groups = [i for i, (a, b) in enumerate(self.ranges)
                  if a is None or b is None or (a <= hi and b >= lo)]
        return self.parquet.read_row_groups(groups, columns=COLUMNS + ["seq"]) if groups else None


class StoreScan:
    """The current store of a logdir, its segments open; close it (or use ``with``)."""

    def __init__(self, layout: Layout, manifest: Manifest, files: list[IO[bytes]]) -> None:
        self.layout = layout
        self.manifest = manifest
        self.segments = [_Segment(f) for f in files]
        self._files = files
        self.series = _series(layout, manifest)
        """``{(run, tag): points}``, sorted."""

    def close(self) -> None:
        """Close the segment files."""
        for f in self._files:
            f.close()

    def __enter__(self) -> StoreScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batches(self, runs: Match, tags: Match) -> Iterator[list[tuple[str, str]]]:
        """Series to read together, in (run, tag) order, at most :data:`BATCH_POINTS` points
        a batch unless one series alone is more."""
        batch: list[tuple[str, str]] = []
        size = 0
        for (run, tag), count in self.series.items():
            if not (runs(run) and tags(tag)):
                continue
            if batch and size + count > BATCH_POINTS:
                yield batch
                batch, size = [], 0
            batch.append((run, tag))
            size += count
        if batch:
            yield batch

    def tables(self, runs: Match, tags: Match) -> Iterator[Any]:
        """Arrow tables of the columns :data:`COLUMNS`, the rows of the matching series in
        ``read_scalars``' order, batch after batch."""
        import pyarrow as pa
        import pyarrow.compute as pc

        for batch in self._batches(runs, tags):
            lo, hi = batch[0][0], batch[-1][0]
            parts = [t for t in (seg.read(lo, hi) for seg in self.segments) if t is not None]
            if not parts:
                continue
            table = pa.concat_tables(parts)
            runs_in, tags_in = sorted({r for r, _ in batch}), sorted({t for _, t in batch})
            keep = pc.and_(pc.is_in(table.column("run"), value_set=pa.array(runs_in)),
                           pc.is_in(table.column("tag"), value_set=pa.array(tags_in)))
            if len(runs_in) * len(tags_in) != len(batch):  # not every pair: match pairs
                keys = pa.array([f"{run}\0{tag}" for run, tag in batch])
                joined = pc.binary_join_element_wise(table.column("run"), table.column("tag"),
                                                     "\0")
                keep = pc.and_(keep, pc.is_in(joined, value_set=keys))
            table = table.filter(keep).sort_by(_SORT)
            yield table.select(COLUMNS)


def _series(layout: Layout, manifest: Manifest) -> dict[tuple[str, str], int]:
    """``{(run, tag): points}`` from each segment's top pyramid level (a few rows a series)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[tuple[str, str], int] = {}
    for seg in manifest.segments:
        table = pq.read_table(layout.store / seg.pyr, columns=["run", "tag", "count"],
                              filters=pc.field("level") == seg.top)
        for run, tag, count in zip(*(table.column(c).to_pylist() for c in ("run", "tag", "count")),
                                   strict=True):
            counts[(run, tag)] = counts.get((run, tag), 0) + int(count)
    return dict(sorted(counts.items()))


def _current(layout: Layout, manifest: Manifest) -> bool:
    """Every event file read up to its size, no cursor of a file that is gone."""
    keys = set()
    for _, key, path in layout.event_files():
        keys.add(key)
        try:
            size = path.stat().st_size
        except OSError:
            return False
        if manifest.cursors.get(key, 0 if size == 0 else -1) != size:
            return False
    return keys >= set(manifest.cursors)


_LS_FIELDS = ("count", "first_seq", "last_wall_time", "last_seq", "last_value")


def _scalar_stats(layout: Layout, manifest: Manifest) -> Iterator[tuple[str, str, TagStat]]:
    """Each segment's series as ``(run, tag, TagStat)``, from the pyramid files' catalogues.

    Raises:
        KeyError: If a segment was written before its catalogue had what ``ls`` shows.
    """
    import pyarrow.parquet as pq

    for seg in manifest.segments:
        meta = pq.read_metadata(layout.store / seg.pyr).metadata or {}
        cat = json.loads(meta[CATALOG_KEY.encode()])
        columns = [cat[name] for name in ("run", "tag", "first_step", "last_step", *_LS_FIELDS)]
        for run, tag, first, last, count, first_seq, wall, last_seq, value in zip(
                *columns, strict=True):
            yield run, tag, TagStat("scalar", count, first, last, wall, 2 * first_seq + 1,
                                    2 * last_seq + 1, value)


def stored_tags(logdir: PathLike) -> dict[tuple[str, str], TagStat] | None:
    """``{(run, tag): TagStat}`` of every tag of every run (scalars and the others), sorted,
    from the store's catalogues and manifest without reading an event — or None when the store
    is absent, not current, or older than the tag table (then read the event files). Never
    raises for a store it cannot use.

    Example:
        >>> stats = stored_tags("/tmp/exp1")  # doctest: +SKIP
        >>> stats[("learner", "main/loss")].last_step  # doctest: +SKIP
        99
    """
    try:
        current = _current_store(logdir)
        if current is None or current[1].tags is None:
            return None
        layout, manifest = current
        assert manifest.tags is not None
        parts: dict[tuple[str, str], list[TagStat]] = {}
        for run, by_tag in manifest.tags.items():
            for tag, stat in by_tag.items():
                parts[(run, tag)] = [stat]
        for run, tag, stat in _scalar_stats(layout, manifest):
            parts.setdefault((run, tag), []).append(stat)
    except Exception:  # noqa: BLE001 - gone, torn, compacted meanwhile, old: the events answer
        return None
    out = {}
    for key, stats in sorted(parts.items()):
        stats.sort(key=lambda stat: stat.first_order)
        out[key] = functools.reduce(TagStat.then, stats)
    return out


def _current_store(logdir: PathLike) -> tuple[Layout, Manifest] | None:
    """The layout and manifest of a rayplex logdir's store if it is current (every event
    file's cursor at its size), else None; raises what reading them raised."""
    from rayplex.store.follower import store_available

    if not store_available():
        return None
    layout = Layout.of(logdir)
    if not layout.rayplex or not layout.manifest.exists():
        return None
    manifest = Manifest.load(layout)
    return (layout, manifest) if _current(layout, manifest) else None


def open_current(logdir: PathLike) -> StoreScan | None:
    """The store of a rayplex logdir, open for reading, if it is current; else None (read the
    event files instead). Never raises for a store it cannot use."""
    try:
        current = _current_store(logdir)
        if current is None:
            return None
        layout, manifest = current
        files: list[IO[bytes]] = []
        try:
            for seg in manifest.segments:
                f = open(layout.store / seg.raw, "rb")  # noqa: SIM115 - closed by StoreScan
                files.append(f)
                if os.fstat(f.fileno()).st_size != seg.raw_bytes:
                    raise OSError(f"segment {seg.raw} is torn")
            scan = StoreScan(layout, manifest, files)
            if Manifest.load(layout) != manifest:  # a compaction between load and open
                raise OSError("the store changed while opening it")
            return scan
        except BaseException:
            for opened in files:
                opened.close()
            raise
    except Exception:  # noqa: BLE001 - gone, torn or damaged: the event files answer
        return None
