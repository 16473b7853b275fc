"""Pure, mergeable summary statistics for distributed metric logging.

Workers call ``store_metrics(reward=1.3, length=200)`` many times per step. Instead
of shipping raw values, each worker keeps one :class:`PartialStats` per
``(key, step window)``; partials are merged per node and then at the hub, and only
the final merged partial is turned into summary tags (``<key>/mean``, ``std`` ...).

Design choices:

* **Exact moments.** ``count``, ``mean``, ``std`` (population, ``ddof=0`` like
  numpy's default), ``min`` and ``max`` merge exactly, whatever the split: moments
  are kept as ``(n, mean, M2)`` and combined with the parallel algorithm of Chan,
  Golub & LeVeque (never as a sum of squares), so merged results equal numpy over
  the union of the values up to floating-point rounding.
* **Cheap** :meth:`PartialStats.add`. A call only appends a float to a staging list
  of at most :attr:`PartialStats.BUFFER_SIZE` (256) values; full buffers are folded
  in vectorised with numpy (moments of the chunk by two-pass mean/M2, then a Chan
  combination; sketch buckets by ``np.bincount``). The buffer is always folded
  before merging, summarising, copying or pickling, so it never leaks out.
* **NaN** values are counted in ``nan_count`` and otherwise ignored (they are not
  part of ``count``). :meth:`PartialStats.summary` reports ``nan_count`` whenever
  it is positive, whether or not it was requested, and never when it is zero.
* **±inf** values are counted, take part in ``min``/``max`` and quantiles, and make
  the moments behave like numpy: the mean becomes ``inf`` (``-inf``; ``nan`` if both
  signs are present) and the std becomes ``nan``. Internally the moments of the
  finite values are kept separately, so an infinity never poisons merging.
* **Quantile sketch.** A small DDSketch-style logarithmic-bucket sketch written
  with numpy (chosen over the pure-Python ``ddsketch`` package, which is much slower
  per value). A value ``x > 0`` goes to bucket ``ceil(log(x) / log(gamma))`` with
  ``gamma = (1 + a) / (1 - a)``; negative values go to a mirror store by magnitude;
  zeros are counted apart. Merging adds bucket counts, so merged sketches are
  identical to the sketch of the union. With ``a =`` :attr:`PartialStats.RELATIVE_ACCURACY`
  ``= 0.01``, :meth:`PartialStats.quantile` returns a value within 1% (relative) of
  the *lower* order statistic ``sorted(x)[floor(q * (count - 1))]`` (numpy's
  ``method="lower"``), clamped into ``[min, max]``; ``q=0``/``q=1`` give exactly
  ``min``/``max``.
* **Bounded size.** Each store keeps at most :attr:`PartialStats.MAX_BUCKETS`
  (2048) contiguous buckets, which covers about 17.8 decades of magnitude per sign.
  Wider data collapses its *lowest-magnitude* buckets into one, so only quantiles
  falling among the smallest magnitudes lose the relative-error guarantee. Pickles
  hold the bucket counts in the narrowest unsigned dtype, zlib-compressed: a
  partial that saw 1e6 values pickles to a few KB.
* **Stat names.** :data:`SUPPORTED_STATS` lists the named statistics; in addition any
  percentile ``"pNN"`` with ``0 < NN < 100`` is accepted, decimals allowed
  (``"p5"``, ``"p99.9"``).

Domain: the moments are accurate for finite values with ``|x|`` below about 1e150
(beyond that squared deviations overflow); the quantile guarantee holds for normal
floats (about ``1e-300 < |x| < 1e300``). ``bool`` values are accepted as 0/1, so
their mean is a rate.
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rayplex.config import KEY_CACHE_MAX
from rayplex.rules import to_float, validate_metric_key

__all__ = [
    "DEFAULT_STATS",
    "SUPPORTED_STATS",
    "MetricsWindow",
    "PartialStats",
]

SUPPORTED_STATS: tuple[str, ...] = (
    "mean",
    "std",
    "min",
    "max",
    "count",
    "p50",
    "p90",
    "p99",
    "nan_count",
)
"""Named statistics accepted by :meth:`PartialStats.summary` (plus any ``"pNN"``)."""

DEFAULT_STATS: tuple[str, ...] = ("mean", "std", "min", "max", "count")
"""Statistics reported by :meth:`PartialStats.summary` when none are requested."""

_BUFFER_SIZE = 256
_PERCENTILE_RE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")
_NUMERIC_KINDS = frozenset("biuf")
_STATE_VERSION = 1
_IntArray = npt.NDArray[np.int64]


def _parse_stat(name: object) -> float | None:
    """Validate one stat name; return its quantile in (0, 1) for ``pNN``, else None."""
    if isinstance(name, str):
        if name in SUPPORTED_STATS and not name.startswith("p"):
            return None
        match = _PERCENTILE_RE.fullmatch(name)
        if match is not None:
            pct = float(match.group(1))
            if 0.0 < pct < 100.0:
                return pct / 100.0
    raise ValueError(
        f"unknown statistic {name!r}; valid statistics are "
        f"{', '.join(SUPPORTED_STATS)}, or any percentile 'pNN' with 0 < NN < 100 "
        "(e.g. 'p5', 'p99.9')"
    )


def _as_array(values: object) -> npt.NDArray[np.float64]:
    """Convert an array-like of real numbers to a flat float64 array (TypeError otherwise)."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:  # e.g. ragged nested lists
        raise TypeError(f"expected an array-like of real numbers ({exc})") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"expected an array-like of real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False).reshape(-1)


class _LogStore:
    """Contiguous bucket counts for the magnitudes of one sign (dense, offset-based)."""

    __slots__ = ("counts", "offset")

    def __init__(self) -> None:
        self.offset = 0
        self.counts: _IntArray = np.zeros(0, dtype=np.int64)

    def copy(self) -> _LogStore:
        new = _LogStore()
        new.offset = self.offset
        new.counts = self.counts.copy()
        return new

    def total(self) -> int:
        return int(self.counts.sum())

    def _reserve(self, lo: int, hi: int, max_buckets: int) -> None:
        """Make [lo, hi] addressable, collapsing the lowest buckets beyond max_buckets."""
        size = self.counts.size
        if size:
            new_lo = min(lo, self.offset)
            new_hi = max(hi, self.offset + size - 1)
        else:
            new_lo, new_hi = lo, hi
        new_lo = max(new_lo, new_hi - max_buckets + 1)
        if size and new_lo == self.offset and new_hi == self.offset + size - 1:
            return
        new = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
        if size:
            start = self.offset - new_lo
            if start >= 0:
                new[start : start + size] = self.counts
            else:  # collapse old buckets below new_lo into the lowest kept bucket
                cut = -start
                new[0] += self.counts[:cut].sum()
                if cut < size:
                    new[: size - cut] += self.counts[cut:]
        self.offset = new_lo
        self.counts = new

    def add_indices(self, idx: _IntArray, max_buckets: int) -> None:
        lo = int(idx.min())
        hi = int(idx.max())
        self._reserve(lo, hi, max_buckets)
        rel = idx - self.offset
        if lo < self.offset:
            np.maximum(rel, 0, out=rel)
        binned = np.bincount(rel)
        self.counts[: binned.size] += binned

    def merge(self, other: _LogStore, max_buckets: int) -> None:
        size = other.counts.size
        if not size:
            return
        self._reserve(other.offset, other.offset + size - 1, max_buckets)
        start = other.offset - self.offset
        if start >= 0:
            self.counts[start : start + size] += other.counts
        else:  # other's lowest buckets fall below our (collapsed) range
            cut = -start
            self.counts[0] += other.counts[:cut].sum()
            if cut < size:
                self.counts[: size - cut] += other.counts[cut:]

    def key_at_rank(self, rank: int, *, descending: bool) -> int:
        """Bucket key holding the element of 0-based ``rank`` in ascending/descending key order."""
        counts = self.counts[::-1] if descending else self.counts
        pos = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
        pos = min(pos, counts.size - 1)
        if descending:
            return self.offset + self.counts.size - 1 - pos
        return self.offset + pos

    def encode(self) -> tuple[int, str, bytes] | None:
        """Compact form: offset, narrowest little-endian unsigned dtype, zlib'd counts."""
        if not self.counts.size:
            return None
        biggest = int(self.counts.max())
        for dtype in ("<u1", "<u2", "<u4", "<u8"):
            if biggest <= np.iinfo(dtype).max:
                break
        return self.offset, dtype, zlib.compress(self.counts.astype(dtype).tobytes(), 6)

    @classmethod
    def decode(cls, state: tuple[int, str, bytes] | None) -> _LogStore:
        store = cls()
        if state is not None:
            offset, dtype, blob = state
            store.offset = int(offset)
            store.counts = np.frombuffer(zlib.decompress(blob), dtype=dtype).astype(np.int64)
        return store


class PartialStats:
    """Mergeable statistics of a stream of floats.

    Keeps count, mean and M2 (Welford/Chan), min, max, the NaN count and a
    DDSketch-style quantile sketch with relative accuracy :attr:`RELATIVE_ACCURACY`.
    Partials built on different workers merge exactly (for count, mean, std, min and
    max, up to float rounding) into the statistics of the union of their values.
    See the module docstring for the NaN/inf conventions and the quantile definition.

    Example:
        >>> a, b = PartialStats(), PartialStats()
        >>> for v in (1.0, 2.0, 3.0):
        ...     a.add(v)
        >>> b.add_many([4.0, float("nan")])
        >>> s = PartialStats.merged([a, b]).summary(("mean", "count", "max"))
        >>> s == {"mean": 2.5, "count": 4.0, "max": 4.0, "nan_count": 1.0}
        True

    Attributes:
        RELATIVE_ACCURACY: Relative-error bound of :meth:`quantile` (0.01 = 1%).
        MAX_BUCKETS: Maximum number of sketch buckets per sign.
        BUFFER_SIZE: Maximum number of raw values staged before they are folded in.
    """

    RELATIVE_ACCURACY: float = 0.01
    MAX_BUCKETS: int = 2048
    BUFFER_SIZE: int = _BUFFER_SIZE

    __slots__ = (
        "_buf",
        "_m2",
        "_max",
        "_mean",
        "_min",
        "_n",
        "_nan",
        "_neg",
        "_ninf",
        "_pinf",
        "_pos",
        "_zero",
    )

    def __init__(self, values: Iterable[float] | npt.ArrayLike | None = None) -> None:
        """Create an empty partial, optionally filled with ``values`` (see :meth:`add_many`)."""
        self._buf: list[float] = []
        self._n = 0  # number of finite values
        self._mean = 0.0  # mean of the finite values
        self._m2 = 0.0  # sum of squared deviations of the finite values
        self._min = math.inf
        self._max = -math.inf
        self._nan = 0
        self._pinf = 0
        self._ninf = 0
        self._zero = 0
        self._pos = _LogStore()
        self._neg = _LogStore()
        if values is not None:
            self.add_many(values)

    # ------------------------------------------------------------------ ingestion

    def add(self, value: float) -> None:
        """Add one value (hot path: an append, plus a vectorised fold every 256 calls).

        Args:
            value: A real number (Python or numpy scalar, 0-d array, bool, or any
                object with ``__float__`` such as a scalar tensor). NaN is counted in
                ``nan_count`` only.

        Raises:
            TypeError: If ``value`` is not a real number.
        """
        if type(value) is not float:
            value = to_float(value, "PartialStats.add value")
        buf = self._buf
        buf.append(value)
        if len(buf) >= _BUFFER_SIZE:
            self._fold()

    def add_many(self, values: Iterable[float] | npt.ArrayLike) -> None:
        """Add every element of an array-like of real numbers (any shape, flattened).

        Raises:
            TypeError: If ``values`` is not an array-like of real numbers.
        """
        if isinstance(values, Iterable) and not isinstance(values, (np.ndarray, Sequence)):
            self._add_array(_as_array(list(values)))  # generators, iterators, sets
        else:
            self._add_array(_as_array(values))

    def _fold(self) -> None:
        buf = self._buf
        if buf:
            arr = np.array(buf, dtype=np.float64)
            buf.clear()
            self._add_array(arr)

    def _add_array(self, arr: npt.NDArray[np.float64]) -> None:
        if not arr.size:
            return
        nan_mask = np.isnan(arr)
        n_nan = int(np.count_nonzero(nan_mask))
        if n_nan:
            self._nan += n_nan
            arr = arr[~nan_mask]
            if not arr.size:
                return
        lo = float(arr.min())
        hi = float(arr.max())
        if lo < self._min:
            self._min = lo
        if hi > self._max:
            self._max = hi
        if math.isinf(lo) or math.isinf(hi):
            inf_mask = np.isinf(arr)
            n_pinf = int(np.count_nonzero(arr[inf_mask] > 0))
            self._pinf += n_pinf
            self._ninf += int(np.count_nonzero(inf_mask)) - n_pinf
            arr = arr[~inf_mask]
            if not arr.size:
                return
        # Moments of the chunk (two-pass), then Chan et al. combination.
        n_b = int(arr.size)
        mean_b = float(arr.mean())
        dev = arr - mean_b
        m2_b = float(dev @ dev)
        self._combine_moments(n_b, mean_b, m2_b)
        # Sketch buckets.
        scale = 1.0 / math.log(self._gamma())
        pos = arr[arr > 0]
        neg = arr[arr < 0]
        self._zero += n_b - pos.size - neg.size
        if pos.size:
            self._pos.add_indices(np.ceil(np.log(pos) * scale).astype(np.int64), self.MAX_BUCKETS)
        if neg.size:
            self._neg.add_indices(np.ceil(np.log(-neg) * scale).astype(np.int64), self.MAX_BUCKETS)

    def _combine_moments(self, n_b: int, mean_b: float, m2_b: float) -> None:
        n_a = self._n
        if n_a == 0:
            self._n, self._mean, self._m2 = n_b, mean_b, m2_b
            return
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean += delta * (n_b / n)
        self._m2 += m2_b + delta * delta * (n_a * n_b / n)
        self._n = n

    @classmethod
    def _gamma(cls) -> float:
        a = cls.RELATIVE_ACCURACY
        return (1.0 + a) / (1.0 - a)

    # -------------------------------------------------------------------- merging

    def merge(self, other: PartialStats) -> PartialStats:
        """Merge ``other`` into this partial in place and return ``self``.

        ``other`` is left logically unchanged (its staging buffer may be folded).

        Raises:
            TypeError: If ``other`` is not a :class:`PartialStats`.
            ValueError: If the two sketches have different accuracy or bucket bounds.
        """
        if not isinstance(other, PartialStats):
            raise TypeError(f"can only merge PartialStats, got {type(other).__name__}")
        if (
            other.RELATIVE_ACCURACY != self.RELATIVE_ACCURACY
            or other.MAX_BUCKETS != self.MAX_BUCKETS
        ):
            raise ValueError(
                "cannot merge sketches with different RELATIVE_ACCURACY/MAX_BUCKETS: "
                f"{self.RELATIVE_ACCURACY}/{self.MAX_BUCKETS} vs "
                f"{other.RELATIVE_ACCURACY}/{other.MAX_BUCKETS}"
            )
        self._fold()
        if other is self:
            other = self.copy()
        else:
            other._fold()
        if other._n:
            self._combine_moments(other._n, other._mean, other._m2)
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._nan += other._nan
        self._pinf += other._pinf
        self._ninf += other._ninf
        self._zero += other._zero
        self._pos.merge(other._pos, self.MAX_BUCKETS)
        self._neg.merge(other._neg, self.MAX_BUCKETS)
        return self

    @classmethod
    def merged(cls, parts: Iterable[PartialStats]) -> PartialStats:
        """Return a new partial equal to the merge of ``parts`` (which are not modified)."""
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    def copy(self) -> PartialStats:
        """Return an independent copy."""
        self._fold()
        new = type(self)()
        new._n, new._mean, new._m2 = self._n, self._mean, self._m2
        new._min, new._max = self._min, self._max
        new._nan, new._pinf, new._ninf, new._zero = self._nan, self._pinf, self._ninf, self._zero
        new._pos = self._pos.copy()
        new._neg = self._neg.copy()
        return new

    # ------------------------------------------------------------------- results

    @property
    def count(self) -> int:
        """Number of non-NaN values (infinities included)."""
        self._fold()
        return self._n + self._pinf + self._ninf

    @property
    def nan_count(self) -> int:
        """Number of NaN values seen."""
        self._fold()
        return self._nan

    @property
    def mean(self) -> float:
        """Mean of the non-NaN values (``inf``/``-inf``/``nan`` with infinities, like numpy)."""
        self._fold()
        if self._pinf or self._ninf:
            if self._pinf and self._ninf:
                return math.nan
            return math.inf if self._pinf else -math.inf
        return self._mean if self._n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation (``ddof=0``); ``nan`` if empty or with infinities."""
        self._fold()
        if self._pinf or self._ninf or not self._n:
            return math.nan
        return math.sqrt(max(self._m2, 0.0) / self._n)

    @property
    def min(self) -> float:
        """Smallest non-NaN value (``nan`` if none)."""
        return self._min if self.count else math.nan

    @property
    def max(self) -> float:
        """Largest non-NaN value (``nan`` if none)."""
        return self._max if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Estimate the ``q``-quantile of the non-NaN values.

        The target is the lower order statistic ``x_r = sorted(values)[floor(q * (count - 1))]``
        (numpy ``method="lower"``); the result ``y`` satisfies
        ``|y - x_r| <= RELATIVE_ACCURACY * |x_r|`` (outside collapsed buckets), and lies
        in ``[min, max]``. ``q == 0`` and ``q == 1`` return ``min`` and ``max`` exactly.

        Args:
            q: Quantile in ``[0, 1]``.

        Returns:
            The estimate, or ``nan`` if there are no non-NaN values.

        Raises:
            ValueError: If ``q`` is not in ``[0, 1]``.
        """
        q = float(q)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        count = self.count  # folds
        if not count:
            return math.nan
        if q == 0.0:
            return self._min
        if q == 1.0:
            return self._max
        rank = min(math.floor(q * (count - 1)), count - 1)
        if rank < self._ninf:
            return -math.inf
        rank -= self._ninf
        n_neg = self._neg.total()
        if rank < n_neg:
            key = self._neg.key_at_rank(rank, descending=True)
            value = -self._bucket_value(key)
        else:
            rank -= n_neg
            if rank < self._zero:
                return 0.0
            rank -= self._zero
            n_pos = self._pos.total()
            if rank >= n_pos:
                return math.inf
            value = self._bucket_value(self._pos.key_at_rank(rank, descending=False))
        return min(max(value, self._min), self._max)

    def _bucket_value(self, key: int) -> float:
        """Representative of bucket ``(gamma**(key-1), gamma**key]``: within a relative ``a``."""
        exponent = key * math.log(self._gamma()) + math.log1p(-self.RELATIVE_ACCURACY)
        try:
            return math.exp(exponent)
        except OverflowError:
            return math.inf

    def summary(self, stats: Sequence[str] | str = DEFAULT_STATS) -> dict[str, float]:
        """Return the requested statistics as floats, keyed by stat name.

        ``nan_count`` is included whenever NaNs were seen (requested or not) and never
        when there were none. With no non-NaN values, every stat except ``count`` is
        ``nan``.

        Args:
            stats: Names from :data:`SUPPORTED_STATS` or percentiles ``"pNN"``
                (``0 < NN < 100``). A single name may be given as a plain string.

        Raises:
            ValueError: For an unknown stat name (the message lists the valid ones).
        """
        if isinstance(stats, str):
            stats = (stats,)
        parsed = [(name, _parse_stat(name)) for name in stats]
        self._fold()
        out: dict[str, float] = {}
        for name, q in parsed:
            if q is not None:
                out[name] = self.quantile(q)
            elif name == "nan_count":
                if self._nan:
                    out[name] = float(self._nan)
            else:
                out[name] = float(getattr(self, name))
        if self._nan:
            out["nan_count"] = float(self._nan)
        return out

    # ----------------------------------------------------------- serialisation

    def __getstate__(self) -> tuple[Any, ...]:
        self._fold()
        return (
            _STATE_VERSION,
            self._n,
            self._mean,
            self._m2,
            self._min,
            self._max,
            self._nan,
            self._pinf,
            self._ninf,
            self._zero,
            self._pos.encode(),
            self._neg.encode(),
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if state[0] != _STATE_VERSION:
            raise ValueError(f"unsupported PartialStats state version {state[0]!r}")
        (
            _,
            self._n,
            self._mean,
            self._m2,
            self._min,
            self._max,
            self._nan,
            self._pinf,
            self._ninf,
            self._zero,
            pos,
            neg,
        ) = state
        self._buf = []
        self._pos = _LogStore.decode(pos)
        self._neg = _LogStore.decode(neg)

    def to_json(self) -> dict[str, Any]:
        """Return a strict-JSON form (no ``NaN``/``Infinity`` tokens) that round-trips exactly.

        It keeps the sketch stores as they are (offset and counts,
        narrowest dtype, zlib, base64), so a partial that saw a million values stays a few KB,
        and ``from_json(to_json())`` has the same state bit for bit. This is what the hub
        journals: data, never a pickle.

        Example:
            >>> import json
            >>> part = PartialStats([1.0, 2.0, float("inf")])
            >>> clone = PartialStats.from_json(json.loads(json.dumps(part.to_json())))
            >>> clone.summary(("count", "max")) == part.summary(("count", "max"))
            True
        """
        self._fold()
        return {
            "v": _STATE_VERSION,
            "a": self.RELATIVE_ACCURACY,
            "n": self._n,
            "mean": _float_to_json(self._mean),
            "m2": _float_to_json(self._m2),
            "min": _float_to_json(self._min),
            "max": _float_to_json(self._max),
            "nan": self._nan,
            "pinf": self._pinf,
            "ninf": self._ninf,
            "zero": self._zero,
            "pos": _store_to_json(self._pos),
            "neg": _store_to_json(self._neg),
        }

    @classmethod
    def from_json(cls, data: object) -> PartialStats:
        """Rebuild a partial from :meth:`to_json` output, checking every field.

        Raises:
            ValueError: If ``data`` is not a well-formed :meth:`to_json` object of this
                version and accuracy (whatever is wrong with it: foreign or hostile input
                never gets further than this).
        """
        if not isinstance(data, dict):
            raise ValueError(f"PartialStats JSON must be an object, got {type(data).__name__}")
        if data.get("v") != _STATE_VERSION:
            raise ValueError(f"unsupported PartialStats JSON version {data.get('v')!r}")
        if _float_from_json(data.get("a"), "a") != cls.RELATIVE_ACCURACY:
            raise ValueError(
                f"PartialStats JSON: relative accuracy {data.get('a')!r} does not match "
                f"{cls.__name__}.RELATIVE_ACCURACY={cls.RELATIVE_ACCURACY}"
            )
        new = cls()
        new._n = _count_from_json(data.get("n"), "n")
        new._mean = _float_from_json(data.get("mean"), "mean")
        new._m2 = _float_from_json(data.get("m2"), "m2")
        new._min = _float_from_json(data.get("min"), "min")
        new._max = _float_from_json(data.get("max"), "max")
        new._nan = _count_from_json(data.get("nan"), "nan")
        new._pinf = _count_from_json(data.get("pinf"), "pinf")
        new._ninf = _count_from_json(data.get("ninf"), "ninf")
        new._zero = _count_from_json(data.get("zero"), "zero")
        new._pos = _store_from_json(data.get("pos"), cls.MAX_BUCKETS)
        new._neg = _store_from_json(data.get("neg"), cls.MAX_BUCKETS)
        if new._zero + new._pos.total() + new._neg.total() != new._n:
            raise ValueError("PartialStats JSON: sketch bucket counts do not add up to n")
        return new

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(count={self.count}, mean={self.mean:.6g}, "
            f"std={self.std:.6g}, min={self.min:.6g}, max={self.max:.6g}, "
            f"nan_count={self._nan})"
        )


_JSON_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_STORE_DTYPES = ("<u1", "<u2", "<u4", "<u8")


def _float_to_json(value: float) -> float | str:
    # Finite floats round-trip exactly through json (repr); the others become strings.
    return value if math.isfinite(value) else repr(value)


def _float_from_json(value: object, what: str) -> float:
    if isinstance(value, str) and value in _JSON_NON_FINITE:
        return _JSON_NON_FINITE[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"PartialStats JSON: {what} must be a number, got {value!r:.60}")


def _count_from_json(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"PartialStats JSON: {what} must be a non-negative int, got {value!r:.60}")


def _store_to_json(store: _LogStore) -> list[Any] | None:
    encoded = store.encode()
    if encoded is None:
        return None
    offset, dtype, blob = encoded
    return [offset, dtype, base64.b64encode(blob).decode("ascii")]


def _store_from_json(value: object, max_buckets: int) -> _LogStore:
    store = _LogStore()
    if value is None:
        return store
    if not (isinstance(value, list) and len(value) == 3):
        raise ValueError("PartialStats JSON: a sketch store must be [offset, dtype, base64]")
    offset, dtype, text = value
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 2**40:
        raise ValueError(f"PartialStats JSON: bad sketch offset {offset!r:.60}")
    if dtype not in _STORE_DTYPES or not isinstance(text, str):
        raise ValueError(f"PartialStats JSON: bad sketch dtype {dtype!r:.20}")
    itemsize = np.dtype(dtype).itemsize
    try:
        blob = base64.b64decode(text, validate=True)
        inflate = zlib.decompressobj()
        raw = inflate.decompress(blob, max_buckets * itemsize + 1)  # bounded: no zip bomb
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"PartialStats JSON: unreadable sketch store ({exc})") from None
    if len(raw) > max_buckets * itemsize or inflate.unconsumed_tail or len(raw) % itemsize:
        raise ValueError("PartialStats JSON: sketch store too large or misaligned")
    store.offset = offset
    store.counts = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    return store


def _flatten(value: Any) -> list[float]:
    """Every number in nested lists, tuples and arrays of any shapes, in order; None is NaN
    (ML-Logger's rule). TypeError for anything else."""
    if value is None:
        return [math.nan]
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim):
        out: list[float] = []
        for item in value:
            out.extend(_flatten(item))
        return out
    return [to_float(value, "a metric element")]


_KEYS_OK: set[str] = set()
"""Keys that passed :func:`_check_key` (a log call must stay cheap: check each key once)."""


def _check_key(key: object) -> None:
    try:
        validate_metric_key(key)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"store_metrics key {key!r:.80}: {exc}") from None
    if len(_KEYS_OK) < KEY_CACHE_MAX:
        _KEYS_OK.add(key)  # type: ignore[arg-type]


class MetricsWindow:
    """Partial stats per key for the current (not yet summarized) window on one worker.

    Values are validated eagerly, so a bad call raises at the call site and stores
    nothing. Scalars (int, float, bool, numpy scalars, 0-d arrays, objects with
    ``__float__`` such as scalar tensors) add one value; lists, tuples and numpy
    arrays of numbers add each element (arrays of any shape are flattened; empty
    ones are a no-op). As in ML-Logger, nested lists may be ragged (``[[0], [1, 2]]``
    adds 0, 1, 2) and ``None`` stands for NaN (counted in ``nan_count``).

    Example:
        >>> window = MetricsWindow()
        >>> window.store(reward=1.0, length=200)
        >>> window.store({"reward": [2.0, 3.0]})
        >>> parts = window.take()
        >>> parts["reward"].summary(("mean", "count"))
        {'mean': 2.0, 'count': 3.0}
        >>> len(window)
        0
    """

    __slots__ = ("_stats",)

    def __init__(self) -> None:
        self._stats: dict[str, PartialStats] = {}

    def store(self, metrics: Mapping[str, Any] | None = None, /, **kw: Any) -> None:
        """Add metric values to the window.

        Args:
            metrics: Mapping from key to value(s); may be combined with keyword arguments.
            **kw: More key/value pairs.

        Raises:
            TypeError: If a key is not a string or a value is not a number (or array-like
                of numbers); the message names the key and the type.
            ValueError: If a key breaks the tag rules (empty, longer than 1,024 characters,
                NUL or a line break: :func:`rayplex.rules.validate_metric_key`, since the key
                becomes a tag), or is given both in ``metrics`` and as a keyword.
        """
        if metrics is None:
            items: Mapping[Any, Any] = kw
        else:
            if not isinstance(metrics, Mapping):
                raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
            dup = kw.keys() & metrics.keys()
            if dup:
                raise ValueError(
                    f"metric(s) {sorted(dup)} given both in the mapping and as keywords"
                )
            items = {**metrics, **kw} if kw else metrics
        # Validate everything first so that a bad call stores nothing.
        checked: list[tuple[str, float | npt.NDArray[np.float64]]] = []
        checked_keys = _KEYS_OK
        for key, value in items.items():
            if key not in checked_keys:
                _check_key(key)
            kind = type(value)
            if kind is float:
                checked.append((key, value))
            elif kind is int:
                checked.append((key, float(value)))
            else:
                checked.append((key, self._check_value(key, value)))
        stats = self._stats
        for key, value in checked:
            part = stats.get(key)
            if isinstance(value, float):
                if part is None:
                    part = stats[key] = PartialStats()
                part.add(value)
            elif value.size:
                if part is None:
                    part = stats[key] = PartialStats()
                part._add_array(value)

    @staticmethod
    def _check_value(key: str, value: Any) -> float | npt.NDArray[np.float64]:
        if type(value) is float:
            return value
        if value is None:
            return math.nan
        if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim):
            try:
                return _as_array(value)
            except TypeError:
                pass  # nested ragged lists, or None among the numbers: the slow path
            try:
                return np.array(_flatten(value), dtype=np.float64)
            except TypeError:
                raise TypeError(
                    f"metric {key!r} must be a real number or a list/array of real numbers, "
                    f"got {type(value).__name__} with non-numeric elements"
                ) from None
        return to_float(value, f"metric {key!r}")

    def pop(self, key: str, default: Any = None) -> PartialStats | Any:
        """Remove ``key`` from the window and return its statistics (``default`` if absent).

        Example:
            >>> window = MetricsWindow()
            >>> window.store(reward=[1.0, 3.0])
            >>> window.pop("reward").mean, "reward" in window
            (2.0, False)
        """
        return self._stats.pop(key, default)

    def take(self) -> dict[str, PartialStats]:
        """Return the partials of the window and start a new, empty window."""
        stats, self._stats = self._stats, {}
        return stats

    def __len__(self) -> int:
        return len(self._stats)

    def __contains__(self, key: object) -> bool:
        return key in self._stats

    def table(self) -> str:
        """Return a plain-text table (key, count, mean, std, min, max) of the window.

        A ``nans`` column is added when some key has seen NaN values.
        """
        if not self._stats:
            return "(no metrics stored)"
        with_nans = any(part.nan_count for part in self._stats.values())
        header = ["key", "count", "mean", "std", "min", "max"] + (["nans"] if with_nans else [])
        rows = [header]
        for key in sorted(self._stats):
            part = self._stats[key]
            row = [key, str(part.count)] + [
                f"{v:.6g}" for v in (part.mean, part.std, part.min, part.max)
            ]
            if with_nans:
                row.append(str(part.nan_count))
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)
