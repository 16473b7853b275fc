"""The columnar store: every scalar of a logdir in Parquet segments under ``logdir/store/``,
with multi-resolution pyramids, for reading thousands of runs fast. No Ray needed.

- :func:`index` builds or extends it (also ``rayplex index LOGDIR``); any TensorBoard logdir.
- :func:`read_series` reads exact M4 buckets (first, last, min, max per bucket) at any zoom.
- :func:`sql` runs a read-only DuckDB query over views ``scalars``, ``runs`` and ``params``.
- :func:`compact` merges small segments (``index`` does it too).

Needs ``pip install "rayplex[store]"`` (pyarrow, duckdb, pandas). The on-disk format is
described in :mod:`rayplex.store.format`.

Example:
    >>> import rayplex
    >>> rayplex.index("/tmp/exp1")  # doctest: +SKIP
    >>> rayplex.read_series("/tmp/exp1", "agent/reward/*", buckets=500)  # doctest: +SKIP
"""

from rayplex.store.format import StoreFormatError
from rayplex.store.indexer import IndexReport, compact, index
from rayplex.store.query import SERIES_COLUMNS, StoreWarning, read_series, sql

__all__ = [
    "SERIES_COLUMNS",
    "IndexReport",
    "StoreFormatError",
    "StoreWarning",
    "compact",
    "index",
    "read_series",
    "sql",
]
