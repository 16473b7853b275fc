"""ML-Logger's timers and counters as plain objects: :class:`Timers`, :class:`Counters` and
:class:`TimedBlocks` (the state behind ``Logger.start/split/since``, ``Logger.every/count`` and
``with Logger.time(...)``).

They hold only local state (no Ray, no I/O), so a :class:`rayplex.Logger` keeps one of each per
process and the semantics are tested without a cluster. Times are :func:`time.perf_counter`
seconds; the clock is a parameter so that tests can drive it.

Example:
    >>> ticks = iter([10.0, 10.5, 11.25])
    >>> timers = Timers(clock=lambda: next(ticks))
    >>> timers.split("step") is None    # the first split only starts the timer
    True
    >>> timers.split("step")            # seconds since the previous split
    0.5
    >>> timers.since("step")            # since does not restart the timer
    0.75
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from typing import Any

from rayplex.stats import PartialStats

__all__ = ["Counters", "TimedBlocks", "Timers"]

Clock = Callable[[], float]


def _keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"timer and counter keys must be str, got {type(key).__name__}")
    return keys or ("default",)


def _one_or_list(keys: tuple[str, ...], results: dict[str, Any]) -> Any:
    return results[keys[0]] if len(keys) == 1 else [results[key] for key in keys]


class Timers:
    """Named timers: ``start`` sets, ``split`` reads and restarts, ``since`` reads.

    Every method takes any number of keys (``"default"`` when none is given) and returns one
    value for one key, else a list in the order of the keys; a key given twice gets the same
    value twice, as in ML-Logger.

    Example:
        >>> ticks = iter([0.0, 2.0, 3.0])
        >>> timers = Timers(clock=lambda: next(ticks))
        >>> timers.start("loop", "iter")
        [0.0, 0.0]
        >>> timers.split("iter")
        2.0
        >>> timers.since("loop", "iter")
        [3.0, 1.0]
    """

    __slots__ = ("_clock", "_ticks")

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._ticks: dict[str, float] = {}

    def start(self, *keys: str) -> Any:
        """(Re)start the timers; returns the clock reading (only differences mean anything).

        Raises:
            TypeError: if a key is not a str.
        """
        keys = _keys(keys)
        now = self._clock()
        for key in keys:
            self._ticks[key] = now
        return _one_or_list(keys, dict.fromkeys(keys, now))

    def split(self, *keys: str) -> Any:
        """Seconds since each timer's last ``start``/``split`` (None for a timer never started),
        and restart those timers.

        Raises:
            TypeError: if a key is not a str.
        """
        keys = _keys(keys)
        now = self._clock()
        results: dict[str, float | None] = {}
        for key in keys:
            if key not in results:
                last = self._ticks.get(key)
                results[key] = None if last is None else now - last
            self._ticks[key] = now
        return _one_or_list(keys, results)

    def since(self, *keys: str) -> Any:
        """Seconds since each timer's last ``start``/``split``, without restarting it; a timer
        never started is started now and reads None (ML-Logger's behaviour).

        Raises:
            TypeError: if a key is not a str.
        """
        keys = _keys(keys)
        now = self._clock()
        results: dict[str, float | None] = {}
        for key in keys:
            last = self._ticks.get(key)
            if last is None:
                self._ticks[key] = now
                results[key] = None
            else:
                results[key] = now - last
        return _one_or_list(keys, results)


def _check_n(n: Any) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"every(n) needs an int n >= 1 (or None for never), got {n!r}")
    return int(n)


class Counters:
    """Named call counters: ``every(n, key)`` is True on every n-th call with that key.

    Example:
        >>> counters = Counters()
        >>> [i for i in range(10) if counters.every(3)]      # the 3rd, 6th, 9th call
        [2, 5, 8]
        >>> [i for i in range(10) if counters.every(3, "head", start_on=1)]  # 1st, 4th, ...
        [0, 3, 6, 9]
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def count(self, key: str = "default") -> int:
        """Count one call with ``key``; returns how many there were (1 for the first)."""
        _keys((key,))
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        return n

    def every(self, n: int | None = 1, key: str = "default", start_on: int = 0) -> bool:
        """Count one call with ``key``; True when the count minus ``start_on`` is a multiple of
        ``n`` and at least ``start_on`` calls were made. ``start_on=1`` fires on the 1st,
        (n+1)-th, ... call; ``n=None`` counts but never fires.

        Raises:
            ValueError: if ``n`` is not an int >= 1 or None, or ``start_on`` not an int >= 0.
        """
        every_n = _check_n(n)
        if isinstance(start_on, bool) or not isinstance(start_on, numbers.Integral) or start_on < 0:
            raise ValueError(f"start_on must be an int >= 0, got {start_on!r}")
        count = self.count(key)
        if every_n is None:
            return False
        return count >= start_on and (count - start_on) % every_n == 0

    def clear(self, key: str = "default") -> None:
        """Forget the count of ``key`` (the next call counts 1 again)."""
        self._counts.pop(key, None)


class TimedBlocks:
    """The durations of ``with logger.time(key, interval)`` blocks, reported every ``interval``
    blocks of a key: :meth:`record` returns the statistics of every duration of the key so far
    on every ``interval``-th block, else None -- ML-Logger's ``time`` line, which shows the
    mean (± std) of all the key's blocks in its summary cache.

    Example:
        >>> blocks = TimedBlocks()
        >>> blocks.record("io", 0.5, interval=2) is None
        True
        >>> n, stats = blocks.record("io", 1.5, interval=2)
        >>> n, stats.mean, stats.count
        (2, 1.0, 2)
        >>> n, stats = blocks.record("io", 4.0)  # every block so far, not just the last one
        >>> n, stats.mean
        (3, 2.0)
    """

    __slots__ = ("_counts", "_stats")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._stats: dict[str, PartialStats] = {}

    def record(self, key: str, seconds: float, interval: int = 1) -> tuple[int, PartialStats] | None:
        """Add one duration; ``(blocks timed so far, their stats)`` when a report is due.

        Raises:
            ValueError: if ``interval`` is not an int >= 1 or ``seconds`` not finite.
        """
        every_n = _check_n(interval)
        if every_n is None:
            raise ValueError("time(interval=None) is not supported: pass an int >= 1")
        if not math.isfinite(seconds):
            raise ValueError(f"a duration must be finite, got {seconds}")
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = PartialStats()
        stats.add(seconds)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        if count % every_n:
            return None
        return count, stats.copy()
