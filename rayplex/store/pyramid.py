"""Pyramid aggregates and exact M4 buckets: pure numpy, no files.

A :class:`Buckets` holds one row per (series, bucket) with the M4 aggregates of the raw points
in it: the first and last point (smallest / largest ``(step, seq)``, with their step and seq),
min, max, count and sum. :meth:`Buckets.combine` merges rows into coarser buckets exactly: min,
max, count and sum combine trivially, first and last by their ``(step, seq)``. That is how a
level is built from the one below it, how rows of different segments merge, and how a query folds
whole level buckets into its output buckets.

:func:`plan` chooses, for a step range and a number of output buckets, the output bucket width
(a multiple of ``2**k`` for the coarsest precomputed level ``k`` with ``2**k`` at most the ideal
width) and :func:`cover` splits the range into whole level buckets, none crossing an output
bucket's edge: the range's interior at level ``k``, its ragged ends at finer levels, down to raw
points. A query then reads O(buckets + levels) rows per series and its answer is exact.

Example:
    >>> import numpy as np
    >>> pts = Buckets.from_points(np.zeros(6, np.int64), np.arange(6), np.arange(6),
    ...                           np.array([3.0, 9.0, 1.0, 2.0, 5.0, 4.0]))
    >>> b = pts.combine(pts.series, pts.first_step >> 2)   # buckets of 4 steps
    >>> b.first.tolist(), b.last.tolist(), b.min.tolist(), b.max.tolist(), b.count.tolist()
    ([3.0, 5.0], [2.0, 4.0], [1.0, 4.0], [9.0, 5.0], [4, 2])
    >>> cover(1, 17, 4)      # [1, 17) as (level, first bucket, end bucket) runs
    [(0, 1, 4), (2, 1, 4), (0, 16, 17)]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from rayplex.store.format import LEVEL_STRIDE, LEVELS

__all__ = ["Buckets", "Plan", "cover", "plan"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
MAX_LEVEL = LEVELS[-1]


@dataclass
class Buckets:
    """M4 aggregates, one row per (series, bucket); all arrays have the same length."""

    series: I64
    bucket: I64
    first_step: I64
    first_seq: I64
    first: F64
    last_step: I64
    last_seq: I64
    last: F64
    min: F64
    max: F64
    count: I64
    sum: F64

    def __len__(self) -> int:
        return len(self.series)

    @classmethod
    def from_points(cls, series: I64, step: I64, seq: I64, value: F64) -> Buckets:
        """One row per raw point (bucket = step)."""
        series, step, seq = (np.asarray(a, np.int64) for a in (series, step, seq))
        value = np.asarray(value, np.float64)
        return cls(series, step, step, seq, value, step, seq, value, value, value,
                   np.ones(len(series), np.int64), value)

    @classmethod
    def concat(cls, parts: list[Buckets]) -> Buckets:
        """All rows of ``parts`` (in order)."""
        if not parts:
            empty = np.zeros(0, np.int64)
            return cls.from_points(empty, empty, empty, np.zeros(0, np.float64))
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def take(self, index: I64) -> Buckets:
        """The rows at ``index``."""
        return Buckets(*(getattr(self, f.name)[index] for f in fields(self)))

    def combine(self, series: I64, bucket: I64) -> Buckets:
        """Merge the rows that share ``(series[i], bucket[i])`` into one row each, exactly.

        Rows may come in any order and from overlapping ranges (several segments). The result
        is sorted by (series, bucket).
        """
        if len(self) == 0:
            return self.take(np.zeros(0, np.int64))
        series = np.asarray(series, np.int64)
        bucket = np.asarray(bucket, np.int64)
        fast = self._combine_in_order(series, bucket)
        if fast is not None:
            return fast
        by_first = np.lexsort((self.first_seq, self.first_step, bucket, series))
        s, b = series[by_first], bucket[by_first]
        starts = np.flatnonzero(np.r_[True, (s[1:] != s[:-1]) | (b[1:] != b[:-1])])
        ends = np.r_[starts[1:], len(s)] - 1
        by_last = np.lexsort((self.last_seq, self.last_step, bucket, series))
        head, tail = by_first[starts], by_last[ends]
        ordered = self.take(by_first)
        with np.errstate(invalid="ignore"):
            mins = np.fmin.reduceat(ordered.min, starts)
            maxs = np.fmax.reduceat(ordered.max, starts)
        return Buckets(
            series=s[starts], bucket=b[starts],
            first_step=self.first_step[head], first_seq=self.first_seq[head], first=self.first[head],
            last_step=self.last_step[tail], last_seq=self.last_seq[tail], last=self.last[tail],
            min=mins, max=maxs,
            count=np.add.reduceat(ordered.count, starts),
            sum=np.add.reduceat(ordered.sum, starts),
        )

    def _combine_in_order(self, series: I64, bucket: I64, known: bool = False) -> Buckets | None:
        """:meth:`combine` without sorting, when the rows already come in order: sorted by
        (series, bucket), and within each group by both their first and their last
        ``(step, seq)`` (as the levels of sorted points, or a query's rows of one segment, do).
        None otherwise. ``known``: the caller knows they are (not checked)."""
        if known:
            same = (series[1:] == series[:-1]) & (bucket[1:] == bucket[:-1])
        else:
            ds, db = np.diff(series), np.diff(bucket)
            if (ds < 0).any() or ((ds == 0) & (db < 0)).any():
                return None
            same = (ds == 0) & (db == 0)
        if not known and same.any():
            fs, fq, ls, lq = (np.diff(a) for a in (self.first_step, self.first_seq,
                                                  self.last_step, self.last_seq))
            ordered = ((fs > 0) | ((fs == 0) & (fq > 0))) & ((ls > 0) | ((ls == 0) & (lq > 0)))
            if not ordered[same].all():
                return None
        starts = np.flatnonzero(np.r_[True, ~same])
        ends = np.r_[starts[1:], len(series)] - 1
        with np.errstate(invalid="ignore"):
            mins = np.fmin.reduceat(self.min, starts)
            maxs = np.fmax.reduceat(self.max, starts)
        return Buckets(
            series=series[starts], bucket=bucket[starts],
            first_step=self.first_step[starts], first_seq=self.first_seq[starts],
            first=self.first[starts], last_step=self.last_step[ends],
            last_seq=self.last_seq[ends], last=self.last[ends], min=mins, max=maxs,
            count=np.add.reduceat(self.count, starts), sum=np.add.reduceat(self.sum, starts),
        )

    def levels(self, stop_at: int) -> list[tuple[int, Buckets]]:
        """The pyramid of raw points (``self`` from :meth:`from_points`, sorted by (series,
        step, seq)): ``(k, rows)`` for
        k = 2, 4, ... up to the first level with at most ``stop_at`` rows (one per series), or
        :data:`MAX_LEVEL`."""
        out = []
        current, level = self, 0
        for k in LEVELS:
            if len(current) == 0:
                current = current.combine(current.series, current.bucket)
            else:  # sorted points stay in order at every level
                merged = current._combine_in_order(current.series, current.bucket >> (k - level),
                                                   known=True)
                assert merged is not None
                current = merged
            level = k
            out.append((k, current))
            if len(current) <= stop_at:
                break
        return out


def cover(lo: int, end: int, top: int) -> list[tuple[int, int, int]]:
    """Split the steps ``[lo, end)`` into whole aligned buckets of levels ``0, 2, ..., top``.

    Returns ``(level, first bucket, end bucket)`` runs in step order; level 0 means raw steps.
    Every run's buckets lie inside ``[lo, end)``; a bucket of level ``j`` starts at a multiple
    of ``2**j``, so none crosses a multiple of ``2**top``.

    Example:
        >>> cover(0, 64, 4)
        [(4, 0, 4)]
        >>> cover(5, 7, 4)
        [(0, 5, 7)]
    """
    runs: list[tuple[int, int, int]] = []
    p = lo
    while p < end:
        k = top
        while k > 0 and (p % (1 << k) or p + (1 << k) > end):
            k -= LEVEL_STRIDE
        n = (end - p) >> k if k == top else 1
        b = p >> k
        if runs and runs[-1][0] == k and runs[-1][2] == b:
            runs[-1] = (k, runs[-1][1], b + n)
        else:
            runs.append((k, b, b + n))
        p += n << k
    return runs


@dataclass(frozen=True)
class Plan:
    """How a query over steps ``[lo, hi]`` is bucketed.

    Attributes:
        lo: First step.
        hi: Last step (inclusive).
        width: Output bucket width in steps; output bucket of step s is ``s // width``
            (0 for all when ``width`` is 0: one bucket for the whole range).
        level: The coarsest level read (0: raw points).
    """

    lo: int
    hi: int
    width: int
    level: int

    def out_bucket(self, start: I64) -> I64:
        """The output bucket of level buckets starting at ``start``."""
        if self.width == 0:
            return np.zeros(len(start), np.int64)
        return np.asarray(start, np.int64) // self.width

    def runs(self, data: tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
        """:func:`cover` of the range.

        ``data``: the smallest and largest step of the points read (of every series). An end
        of the range at or beyond it is moved out to the edge of the ``level`` bucket holding
        it: no point lies in what is added, so the answer is the same, and the ragged end is
        one coarse bucket instead of finer buckets and raw points. (A finer level's row groups
        each hold whole series, so a few of its buckets of every series decode all of them.)

        Example:
            >>> p = plan(0, 4999, 100)
            >>> p.runs(), p.runs(data=(0, 4999))
            ([(4, 0, 312), (2, 1248, 1250)], [(4, 0, 313)])
        """
        lo, end, size = self.lo, self.hi + 1, 1 << self.level
        if data is not None:
            if data[0] >= lo:
                lo -= lo % size
            if data[1] <= self.hi:
                end = _round_up(end, size)
        return cover(lo, end, self.level)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def plan(lo: int, hi: int, buckets: int) -> Plan:
    """Choose output buckets (at most ``buckets``) aligned to a precomputed level.

    Example:
        >>> plan(0, 9999, 1000)
        Plan(lo=0, hi=9999, width=12, level=2)
        >>> plan(0, 9999, 10)
        Plan(lo=0, hi=9999, width=1024, level=8)
    """
    span = hi - lo + 1
    ideal = -(-span // buckets)
    level = 0
    for k in LEVELS:
        if (1 << k) <= ideal:
            level = k
    if buckets == 1:
        return Plan(lo, hi, 0, level)
    size = 1 << level
    width = _round_up(ideal, size)
    if hi // width - lo // width + 1 > buckets:
        width = _round_up(-(-span // (buckets - 1)), size)
    return Plan(lo, hi, width, level)
