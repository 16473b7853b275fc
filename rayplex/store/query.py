"""Querying the store: :func:`read_series` (exact M4 buckets from the pyramids) and :func:`sql`
(DuckDB over the store, read-only).

Both bring the store up to date first (``refresh=True``: an incremental :func:`rayplex.index`
when an event file grew), so they work on any TensorBoard logdir. A committed segment that
cannot be opened (torn) is skipped with a :class:`StoreWarning` and listed in the answer's
``attrs["skipped_segments"]``; the next :func:`rayplex.index` rebuilds it.

Example:
    >>> df = read_series("/tmp/exp1", "agent/reward/*", buckets=200)  # doctest: +SKIP
    >>> sql("/tmp/exp1", "SELECT run, max(value) FROM scalars GROUP BY run")  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import operator
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from rayplex.config import STORE_QUERY_RETRIES
from rayplex.store.format import (
    CATALOG_KEY,
    Layout,
    Manifest,
    PathLike,
    Segment,
    require_store_deps,
)
from rayplex.store.indexer import index, pending_bytes
from rayplex.store.pyramid import Buckets, Plan, plan

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["SERIES_COLUMNS", "SeriesBuckets", "StoreWarning", "read_series", "series_buckets",
           "sql"]

SERIES_COLUMNS = ("run", "tag", "step_lo", "step_hi", "first", "last", "min", "max", "count")
Patterns = Union[str, Sequence[str], None]


class StoreWarning(UserWarning):
    """A torn segment was skipped, or the store could not be brought up to date."""


# ----------------------------------------------------------------------------- arguments


def _patterns(value: Patterns, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name} must be a name or glob pattern (or a list of them), got {value!r}")


def _matches(name: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_buckets(buckets: Any) -> int:
    if isinstance(buckets, bool):
        raise ValueError(f"buckets must be a positive int, got {buckets!r}")
    try:
        n = operator.index(buckets)
    except TypeError:
        raise ValueError(f"buckets must be a positive int, got {buckets!r}") from None
    if n < 1:
        raise ValueError(f"buckets must be a positive int, got {buckets!r}")
    return n


def _check_steps(steps: Any) -> tuple[int, int] | None:
    if steps is None:
        return None
    bad = ValueError(f"steps must be None or (lo, hi) with int lo <= hi, got {steps!r}")
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or len(steps) != 2:
        raise bad
    if any(isinstance(s, bool) for s in steps):
        raise bad
    try:
        lo, hi = operator.index(steps[0]), operator.index(steps[1])
    except TypeError:
        raise bad from None
    if lo > hi:
        raise bad
    return lo, hi


# ----------------------------------------------------------------------------- store access


def is_uri(logdir: PathLike) -> bool:
    """A logdir on object storage: its store is read as the bucket holds it (never indexed
    into the local copy, which the next sync overwrites)."""
    from rayplex.remote import is_uri as remote_uri

    return remote_uri(os.fspath(logdir))


def _refresh(layout: Layout, refresh: bool) -> Manifest:
    """Bring the store up to date (if asked and needed); return its committed manifest."""
    if refresh:
        try:
            manifest = Manifest.load(layout)
            if not layout.manifest.exists() or pending_bytes(layout, manifest) or any(
                    not _segment_ok(layout, seg) for seg in manifest.segments):
                index(layout.logdir)
        except OSError as exc:  # e.g. a read-only logdir: read what is there
            if isinstance(exc, FileNotFoundError):
                raise
            warnings.warn(f"cannot update the store of {str(layout.logdir)!r} ({exc}); reading "
                          "it as it is", StoreWarning, stacklevel=3)
    if not layout.manifest.exists():
        raise FileNotFoundError(
            f"{str(layout.logdir)!r} has no store yet: run `rayplex index {layout.logdir}` "
            "(or pass refresh=True)")
    return Manifest.load(layout)


_FOOTERS: dict[tuple[str, int, int], Any] = {}
"""Open Parquet footers of segment files, by (path, size, mtime): segments are immutable, so a
footer read once serves every later query of the process."""


def _footer(path: Path) -> Any:
    """The Parquet metadata of ``path`` (cached); raises if it does not open."""
    import pyarrow.parquet as pq

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    meta = _FOOTERS.get(key)
    if meta is None:
        meta = pq.read_metadata(path)
        if len(_FOOTERS) > 4096:
            _FOOTERS.clear()
        _FOOTERS[key] = meta
    return meta


def _segment_ok(layout: Layout, seg: Segment) -> bool:
    """:func:`rayplex.store.indexer.segment_ok`, with footers cached."""
    try:
        for name, size in ((seg.raw, seg.raw_bytes), (seg.pyr, seg.pyr_bytes)):
            path = layout.store / name
            if path.stat().st_size != size:
                return False
            _footer(path)
    except Exception:  # noqa: BLE001 - any failure to open means torn
        return False
    return True


def _readable(layout: Layout, manifest: Manifest, skipped: list[str]) -> list[Segment]:
    """The segments of ``manifest`` that open. A missing file may be one a compaction just
    replaced: the manifest is re-read then (a few times) before anything counts as torn."""
    for _ in range(STORE_QUERY_RETRIES):
        bad = [seg for seg in manifest.segments if not _segment_ok(layout, seg)]
        if not bad:
            return list(manifest.segments)
        latest = Manifest.load(layout)
        if latest == manifest:
            break
        manifest = latest
    for seg in bad:
        skipped.append(seg.raw)
        warnings.warn(f"store segment {seg.raw} of {str(layout.logdir)!r} is torn or missing: "
                      "skipped (`rayplex index` rebuilds it)", StoreWarning, stacklevel=4)
    return [seg for seg in manifest.segments if seg not in bad]


@dataclass(frozen=True)
class _Filter:
    """Rows wanted from a segment file: ``tag`` in ``tags`` (and ``run`` in ``runs`` unless
    None), and ``key`` (``bucket`` of pyramid rows, ``step`` of raw ones) in one of ``ranges``
    ``(level, first, end)`` (``level`` None for raw rows)."""

    tags: frozenset[str]
    runs: frozenset[str] | None
    key: str
    ranges: tuple[tuple[int | None, int, int], ...]


def _stats(meta: Any, name: str) -> list[tuple[Any, Any]]:
    """(min, max) of column ``name`` in each row group (None, None where unknown)."""
    schema = meta.schema
    index = [schema.column(i).name for i in range(len(schema))].index(name)
    out = []
    for rg in range(meta.num_row_groups):
        st = meta.row_group(rg).column(index).statistics
        out.append((st.min, st.max) if st is not None and st.has_min_max else (None, None))
    return out


def _row_groups(meta: Any, filters: _Filter) -> list[int]:
    """The row groups whose statistics do not rule them out."""
    tags = _stats(meta, "tag")
    keys = _stats(meta, filters.key)
    levels = _stats(meta, "level") if filters.key == "bucket" else None
    runs = sorted(filters.runs) if filters.runs is not None else None
    run_stats = _stats(meta, "run") if runs is not None else None
    lo_tag, hi_tag = min(filters.tags), max(filters.tags)
    out = []
    for rg in range(meta.num_row_groups):
        tmin, tmax = tags[rg]
        if tmin is not None and (tmax < lo_tag or tmin > hi_tag or not any(
                tmin <= t <= tmax for t in filters.tags)):
            continue
        if runs is not None and run_stats is not None and run_stats[rg][0] is not None:
            rmin, rmax = run_stats[rg]  # any wanted run in [rmin, rmax]?
            at = bisect.bisect_left(runs, rmin)
            if at == len(runs) or runs[at] > rmax:
                continue
        kmin, kmax = keys[rg]
        ok = False
        for level, first, end in filters.ranges:
            if levels is not None and levels[rg][0] is not None and level is not None and not (
                    levels[rg][0] <= level <= levels[rg][1]):
                continue
            if kmin is not None and (kmax < first or kmin >= end):
                continue
            ok = True
            break
        if ok:
            out.append(rg)
    return out


def _member(column: Any, names: frozenset[str]) -> np.ndarray[Any, Any]:
    """Which rows of a dictionary column hold one of ``names`` (looked up once per distinct
    value)."""
    out = []
    for chunk in column.chunks:
        lut = np.array([v in names for v in chunk.dictionary.to_pylist()] or [False])
        out.append(lut[chunk.indices.to_numpy(zero_copy_only=False)])
    return np.concatenate(out) if out else np.zeros(0, bool)


def _read(path: Path, columns: list[str], filters: _Filter) -> Any:
    """The rows of one segment file that ``filters`` wants: row groups skipped by their
    statistics (files are sorted by tag), the rest filtered in memory; ``run`` and ``tag``
    read as dictionaries. The footer comes from the process's cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = _footer(path)
    groups = _row_groups(meta, filters)
    need = list(dict.fromkeys([*columns, "tag", filters.key,
                               *(["run"] if filters.runs is not None else []),
                               *(["level"] if filters.key == "bucket" else [])]))
    with pq.ParquetFile(path, metadata=meta, read_dictionary=["run", "tag"]) as file:
        table = file.read_row_groups(groups, columns=need) if groups else \
            file.schema_arrow.empty_table().select(need)
    if table.num_rows == 0:
        return table.select(columns)
    mask = _member(table.column("tag"), filters.tags)
    if filters.runs is not None:
        mask &= _member(table.column("run"), filters.runs)
    key = table.column(filters.key).to_numpy()
    level = table.column("level").to_numpy() if filters.key == "bucket" else None
    wanted = np.zeros(len(key), bool)
    for lv, first, end in filters.ranges:
        hit = (key >= first) & (key < end)
        if level is not None and lv is not None:
            hit &= level == lv
        wanted |= hit
    mask &= wanted
    return table.select(columns).filter(pa.array(mask))


# ----------------------------------------------------------------------------- read_series


def _segment_catalog(layout: Layout, seg: Segment) -> tuple[list[str], list[str], list[int],
                                                            list[int]]:
    """(runs, tags, first steps, last steps) of the series of one segment."""
    meta = _footer(layout.store / seg.pyr).metadata or {}
    raw = meta.get(CATALOG_KEY.encode())
    if raw is not None:
        cat = json.loads(raw)
        return cat["run"], cat["tag"], cat["first_step"], cat["last_step"]
    import pyarrow.compute as pc  # only here: its import costs a cold query 0.1-0.2 s
    import pyarrow.parquet as pq

    table = pq.read_table(layout.store / seg.pyr, columns=["run", "tag", "first_step",
                                                          "last_step"],
                          filters=pc.field("level") == seg.top)  # written before the catalogue
    cols = [table.column(c).to_pylist() for c in ("run", "tag", "first_step", "last_step")]
    return cols[0], cols[1], cols[2], cols[3]


def _catalog(layout: Layout, segments: list[Segment], runs: list[str] | None,
             tags: list[str]) -> dict[tuple[str, str], list[int]]:
    """``{(run, tag): [first step, last step]}`` of the matching series."""
    found: dict[tuple[str, str], list[int]] = {}
    verdict: dict[tuple[str, str], bool] = {}
    for seg in segments:
        for run, tag, lo, hi in zip(*_segment_catalog(layout, seg), strict=True):
            key = (run, tag)
            ok = verdict.get(key)
            if ok is None:
                ok = verdict[key] = _matches(tag, tags) and _matches(run, runs)
            if not ok:
                continue
            span = found.get(key)
            if span is None:
                found[key] = [lo, hi]
            else:
                span[0], span[1] = min(span[0], lo), max(span[1], hi)
    return found


def _series_ids(table: Any, ids: dict[tuple[str, str], int]) -> np.ndarray[Any, Any]:
    """Series id of each row (-1 for a series not asked for); only the distinct run and tag
    names are looked up."""
    import pyarrow as pa

    if table.num_rows == 0:
        return np.zeros(0, np.int64)

    def codes(name: str) -> tuple[np.ndarray[Any, Any], list[str]]:
        column = table.column(name)
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        column = column.unify_dictionaries().combine_chunks()
        return column.indices.to_numpy(zero_copy_only=False), column.dictionary.to_pylist()

    run_idx, run_names = codes("run")
    tag_idx, tag_names = codes("tag")
    lookup = np.array([[ids.get((r, t), -1) for t in tag_names] for r in run_names], np.int64)
    out: np.ndarray[Any, Any] = lookup[run_idx, tag_idx]
    return out


_NAMES = ["first_step", "first_seq", "first", "last_step", "last_seq", "last", "min", "max",
          "count"]
"""The pyramid columns a query reads (``sum`` is in no answer: not read, left 0)."""


def _chunks(table: Any, name: str, keep: np.ndarray[Any, Any] | None
            ) -> list[np.ndarray[Any, Any]]:
    """Column ``name`` of ``table`` as numpy arrays, one per chunk (no copy), the rows of
    ``keep`` (None: all)."""
    out, at = [], 0
    for chunk in table.column(name).chunks:
        values = chunk.to_numpy(zero_copy_only=False)
        if keep is not None:
            values = values[keep[at:at + len(values)]]
        at += len(chunk)
        out.append(values)
    return out


def _rows(layout: Layout, segments: list[Segment], query: Plan, keys: list[tuple[str, str]],
          ids: dict[tuple[str, str], int], data: tuple[int, int]) -> Buckets:
    """Every level bucket and raw point the plan needs, of all segments, in (series, step)
    order (``bucket`` = the step a row starts at); ``data``: the smallest and largest step of
    the series (:meth:`Plan.runs`). Columns are gathered chunk by chunk and copied once."""
    tags = frozenset(k[1] for k in keys)
    runs = frozenset(k[0] for k in keys)
    if len(runs) == len({r for r, _ in ids}) and len(runs) > 256:
        runs = None  # type: ignore[assignment]
    plan_runs = query.runs(data)
    raw = tuple((None, first, end) for level, first, end in plan_runs if level == 0)
    cols: dict[str, list[np.ndarray[Any, Any]]] = {
        n: [] for n in ("series", "bucket", *_NAMES)}
    for seg in segments:
        ranges = []
        for level, first, end in plan_runs:
            if level:
                own = min(level, seg.top)
                shift = level - own
                ranges.append((own, first << shift, end << shift))
        if ranges:
            table = _read(layout.store / seg.pyr, ["run", "tag", "level", "bucket", *_NAMES],
                          _Filter(tags, runs, "bucket", tuple(ranges)))
            series = _series_ids(table, ids)
            keep = None if (series >= 0).all() else series >= 0
            cols["series"].append(series if keep is None else series[keep])
            for name in _NAMES:
                cols[name] += _chunks(table, name, keep)
            levels = np.concatenate(_chunks(table, "level", keep) or [np.zeros(0, np.int8)])
            bucket = np.concatenate(_chunks(table, "bucket", keep) or [np.zeros(0, np.int64)])
            cols["bucket"].append(bucket << levels.astype(np.int64))
        if raw:
            table = _read(layout.store / seg.raw, ["run", "tag", "step", "seq", "value"],
                          _Filter(tags, runs, "step", raw))
            series = _series_ids(table, ids)
            keep = None if (series >= 0).all() else series >= 0
            cols["series"].append(series if keep is None else series[keep])
            step, seq, value = (_chunks(table, n, keep) for n in ("step", "seq", "value"))
            for names, parts in ((("bucket", "first_step", "last_step"), step),
                                 (("first_seq", "last_seq"), seq),
                                 (("first", "last", "min", "max"), value)):
                for name in names:
                    cols[name] += parts
            cols["count"] += [np.ones(len(v), np.int64) for v in step]
    if not cols["series"]:
        return Buckets.concat([])
    def joined(name: str, kind: Any) -> Any:
        parts = cols[name]
        return np.concatenate(parts).astype(kind, copy=False) if parts else np.zeros(0, kind)

    i64, f64 = np.int64, np.float64
    rows = Buckets(
        series=joined("series", i64), bucket=joined("bucket", i64),
        first_step=joined("first_step", i64), first_seq=joined("first_seq", i64),
        first=joined("first", f64), last_step=joined("last_step", i64),
        last_seq=joined("last_seq", i64), last=joined("last", f64), min=joined("min", f64),
        max=joined("max", f64), count=joined("count", i64),
        sum=np.zeros(sum(map(len, cols["series"])), f64))
    if len(rows) > 1:  # into (series, step) order: mostly a merge of sorted runs
        base = min(query.lo, int(rows.bucket.min()))  # a widened end starts before lo
        span = query.hi - base + 2
        if len(ids) * span < (1 << 62):
            key = rows.series * span + (rows.bucket - base)
            if (np.diff(key) < 0).any():
                rows = rows.take(np.argsort(key, kind="stable"))
    return rows


def _series_schema() -> Any:
    import pyarrow as pa

    i64, f64 = pa.int64(), pa.float64()
    schema = pa.schema([("run", pa.string()), ("tag", pa.string()), ("step_lo", i64),
                        ("step_hi", i64), ("first", f64), ("last", f64), ("min", f64),
                        ("max", f64), ("count", i64)])
    return schema


def read_series(
    logdir: PathLike,
    tag: str | Sequence[str],
    *,
    runs: Patterns = None,
    buckets: int = 1000,
    steps: tuple[int, int] | None = None,
    as_arrow: bool = False,
    refresh: bool = True,
) -> Any:
    """Curves of many runs at any zoom, read from the store's pyramids: exact M4 buckets.

    Each series (run, tag) is cut into at most ``buckets`` buckets of equal step width, aligned
    across runs. Each output row gives the exact first, last, min and max of the raw points in
    its bucket (every spike is visible at every zoom), their count, and the steps of its first
    and last point. The work and memory are O(buckets) rows per series, not O(points).

    Args:
        logdir: A rayplex logdir or any TensorBoard logdir.
        tag: A tag, or a glob pattern as in :func:`rayplex.read_scalars` (``"agent/reward/*"``),
            or a list of them.
        runs: Only runs matching this name or pattern (or list); ``None`` for all.
        buckets: Buckets per series, at least 1.
        steps: ``(lo, hi)``: only steps ``lo <= step <= hi`` (zoom); ``None``: all of them.
        as_arrow: Return a ``pyarrow.Table`` instead of a pandas DataFrame.
        refresh: First index what the event files gained since the last :func:`rayplex.index`.

    Returns:
        One row per (run, bucket) with columns ``run, tag, step_lo, step_hi, first, last, min,
        max, count``, sorted by run, tag, step_lo; empty when nothing matches. Skipped torn
        segments are listed in ``attrs["skipped_segments"]`` (a DataFrame's) or the table's
        schema metadata.

    Raises:
        ValueError: If ``buckets``, ``steps``, ``tag`` or ``runs`` is malformed (names which).
        FileNotFoundError: If ``logdir`` does not exist (or has no store and ``refresh`` is off).
        ImportError: Without pyarrow/duckdb: ``pip install "rayplex[store]"``.

    Example:
        >>> import tempfile
        >>> from tensorboardX import SummaryWriter
        >>> logdir = tempfile.mkdtemp()
        >>> with SummaryWriter(f"{logdir}/seed0") as w:
        ...     for step in range(1000):
        ...         w.add_scalar("loss", 100.0 if step == 567 else 1.0, step)
        >>> df = read_series(logdir, "loss", buckets=4)
        >>> for row in df[["run", "step_lo", "step_hi", "max", "count"]].values.tolist():
        ...     print(row)
        ['seed0', 0, 255, 1.0, 256]
        ['seed0', 256, 511, 1.0, 256]
        ['seed0', 512, 767, 100.0, 256]
        ['seed0', 768, 999, 1.0, 232]
    """
    answer = series_buckets(logdir, tag, runs=runs, buckets=buckets, steps=steps,
                            refresh=refresh)
    return _series_table(answer, as_arrow)


@dataclass
class SeriesBuckets:
    """:func:`read_series`'s answer as numpy columns, before it becomes a table: ``keys`` the
    (run, tag) of each series id, ``rows`` the output buckets sorted by (run, tag, step_lo)
    (``rows.series`` indexes ``keys``), ``width`` the output bucket width (0: one bucket),
    ``skipped`` the torn segments left out."""

    keys: list[tuple[str, str]]
    rows: Buckets
    width: int
    skipped: list[str]


def series_buckets(logdir: PathLike, tag: str | Sequence[str], *, runs: Patterns = None,
                   buckets: int = 1000, steps: tuple[int, int] | None = None,
                   refresh: bool = True) -> SeriesBuckets:
    """:func:`read_series` without the table: the same buckets as numpy columns (the viewer
    reads them so, without turning a thousand runs' names into strings per row)."""
    tags = _patterns(tag, "tag")
    if tags is None:
        raise ValueError("tag must be a name or glob pattern, got None")
    run_patterns = _patterns(runs, "runs")
    n = _check_buckets(buckets)
    zoom = _check_steps(steps)
    require_store_deps("rayplex.read_series")
    layout = Layout.of(logdir)
    manifest = _refresh(layout, refresh and not is_uri(logdir))  # a bucket's copy: as uploaded
    for attempt in range(STORE_QUERY_RETRIES):
        try:
            return _series_buckets(layout, manifest, tags, run_patterns, n, zoom)
        except FileNotFoundError:  # a compaction removed a segment meanwhile: read again
            if attempt == STORE_QUERY_RETRIES - 1:
                raise
            manifest = Manifest.load(layout)
    raise AssertionError("unreachable")  # pragma: no cover


def _series_buckets(layout: Layout, manifest: Manifest, tags: list[str],
                    runs: list[str] | None, n: int, zoom: tuple[int, int] | None
                    ) -> SeriesBuckets:
    skipped: list[str] = []
    segments = _readable(layout, manifest, skipped)
    found = _catalog(layout, segments, runs, tags)
    keys = sorted(found, key=lambda k: (k[1], k[0]))  # (tag, run): the order of the files
    ids = {key: i for i, key in enumerate(keys)}
    result = Buckets.concat([])
    width = 0
    if found:
        data = min(s[0] for s in found.values()), max(s[1] for s in found.values())
        query = plan(*(zoom if zoom is not None else data), n)
        width = query.width
        rows = _rows(layout, segments, query, keys, ids, data)
        result = rows.combine(rows.series, query.out_bucket(rows.bucket))
        if len({k[1] for k in keys}) > 1:  # answer in (run, tag) order
            order = sorted(range(len(keys)), key=lambda i: keys[i])
            rank = np.empty(len(keys), np.int64)
            rank[order] = np.arange(len(keys))
            result = result.take(np.argsort(rank[result.series], kind="stable"))
    return SeriesBuckets(keys, result, width, skipped)


def _series_table(answer: SeriesBuckets, as_arrow: bool) -> Any:
    """:func:`read_series`' table (or frame) of :func:`series_buckets`' columns."""
    import pyarrow as pa

    keys, result, skipped = answer.keys, answer.rows, answer.skipped

    def names(i: int) -> Any:
        return pa.DictionaryArray.from_arrays(
            pa.array(result.series, pa.int32()),
            pa.array([k[i] for k in keys], pa.string())).dictionary_decode()

    table = pa.table({
        "run": names(0), "tag": names(1),
        "step_lo": result.first_step, "step_hi": result.last_step,
        "first": result.first, "last": result.last, "min": result.min, "max": result.max,
        "count": result.count,
    }, schema=_series_schema())
    if as_arrow:
        return table.replace_schema_metadata(
            {"skipped_segments": json.dumps(skipped)}) if skipped else table
    frame = table.to_pandas()
    frame.attrs["skipped_segments"] = skipped
    return frame


# ----------------------------------------------------------------------------- sql


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


_CREATE_VIEWS = """
CREATE VIEW runs AS
SELECT run, split_part(run, '/', 1) AS "group",
       CASE WHEN len(string_split(run, '/')) = 2 THEN run END AS client,
       min(step) AS first_step, max(step) AS last_step, count(*) AS points,
       max(wall_time) AS last_wall_time
FROM scalars GROUP BY run;
CREATE TABLE params (run VARCHAR, key VARCHAR, value VARCHAR);
"""


def _connect(layout: Layout, segments: list[Segment]) -> Any:
    """An in-memory DuckDB with the views, then locked: no file but the segments readable,
    none writable, no settings changeable."""
    import duckdb

    con = duckdb.connect(":memory:")
    files = [str(layout.store / seg.raw) for seg in segments]
    if files:
        con.execute("CREATE VIEW scalars AS SELECT run, tag, step, wall_time, value FROM "
                    f"read_parquet([{', '.join(_quote(f) for f in files)}])")
    else:
        con.execute("CREATE VIEW scalars AS SELECT NULL::VARCHAR AS run, NULL::VARCHAR AS tag, "
                    "NULL::BIGINT AS step, NULL::DOUBLE AS wall_time, NULL::DOUBLE AS value "
                    "WHERE false")
    con.execute(_CREATE_VIEWS)
    if layout.rayplex:
        from rayplex.layout import params_dir
        from rayplex.logdir_codec import read_params_tree
        from rayplex.nested import flatten_text

        stored = read_params_tree(params_dir(layout.logdir))
        rows = [(client, key, value) for client, params in stored.items()
                for key, value in flatten_text(params).items()]
        if rows:
            con.executemany("INSERT INTO params VALUES (?, ?, ?)", rows)
    con.execute(f"SET allowed_paths = [{', '.join(_quote(f) for f in files)}]")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _check_read_only(query: Any) -> None:
    import duckdb

    if not isinstance(query, str):
        raise ValueError(f"query must be a SQL string, got {type(query).__name__}")
    try:
        statements = duckdb.connect(":memory:").extract_statements(query)
    except duckdb.Error as exc:
        raise ValueError(f"query does not parse: {exc}") from None
    kinds = [s.type.name for s in statements]
    if kinds != ["SELECT"]:
        got = ", ".join(kinds) or "nothing"
        raise ValueError(
            "rayplex.sql is read-only: it runs exactly one SELECT (or WITH ... SELECT) "
            f"statement, got {got} (no ATTACH, COPY, INSERT, SET, ...)")


def sql(logdir: PathLike, query: str, *, refresh: bool = True) -> pandas.DataFrame:
    """Run one read-only SQL query (DuckDB) over the store and return a pandas DataFrame.

    Views:

    - ``scalars(run, tag, step, wall_time, value)``: every point.
    - ``runs(run, group, client, first_step, last_step, points, last_wall_time)``: ``group`` is
      the run's first path component; ``client`` the run when it is a ``group/name`` client
      run (an indexed or combined group), else NULL.
    - ``params(run, key, value)``: rayplex's hyper-parameters, ``run`` the client id
      (``learner/main``), ``key`` flattened with ``/`` (``Args/lr``), ``value`` as text (JSON
      for non-strings: ``TRY_CAST(value AS DOUBLE)``).

    Only one SELECT (or WITH) statement runs; DuckDB is locked down after the views are made
    (``enable_external_access = false``, only the store's segments readable, configuration
    locked), so a query can read no other file and write none.

    Args:
        logdir: A rayplex logdir or any TensorBoard logdir.
        query: The SQL.
        refresh: First index what the event files gained since the last :func:`rayplex.index`.

    Returns:
        The result as a :class:`pandas.DataFrame` (``attrs["skipped_segments"]`` lists torn
        segments that were left out).

    Raises:
        ValueError: If ``query`` is not a single SELECT/WITH statement, or does not parse.
        duckdb.Error: If DuckDB rejects it (unknown column, or a file access it refuses).
        ImportError: Without pyarrow/duckdb: ``pip install "rayplex[store]"``.

    Example:
        >>> import tempfile
        >>> from tensorboardX import SummaryWriter
        >>> logdir = tempfile.mkdtemp()
        >>> for seed in range(3):
        ...     with SummaryWriter(f"{logdir}/seed{seed}") as w:
        ...         for step in range(10):
        ...             w.add_scalar("acc", seed + step / 10, step)
        >>> sql(logdir, "SELECT run, round(max(value), 2) AS best FROM scalars GROUP BY run "
        ...     "ORDER BY best DESC LIMIT 1")
             run  best
        0  seed2   2.9
    """
    require_store_deps("rayplex.sql")
    _check_read_only(query)
    import duckdb

    layout = Layout.of(logdir)
    manifest = _refresh(layout, refresh and not is_uri(logdir))  # a bucket's copy: as uploaded
    for attempt in range(STORE_QUERY_RETRIES):
        skipped: list[str] = []
        con = None
        try:
            con = _connect(layout, _readable(layout, manifest, skipped))
            frame = con.execute(query).df()
        except (duckdb.IOException, duckdb.PermissionException):
            # A compaction removed a segment meanwhile (DuckDB, its file gone, takes the name for
            # a glob it may not expand): read the new manifest again. Anything else is raised.
            latest = Manifest.load(layout)
            if attempt == STORE_QUERY_RETRIES - 1 or latest == manifest:
                raise
            manifest = latest
            continue
        finally:
            if con is not None:
                con.close()
        frame.attrs["skipped_segments"] = skipped
        return frame
    raise AssertionError("unreachable")  # pragma: no cover
