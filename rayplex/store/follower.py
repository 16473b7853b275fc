"""The live store feed: follow the event files the hub has committed into ``logdir/store/``.

A :class:`StoreFollower` asks the hub what it has committed (``Hub.committed_sizes``: each
event file's size up to its last committed byte, which no undo will cut) and calls
:func:`rayplex.store.index` with those sizes as limits. The store's manifest is the durable
cursor: the indexer commits new segments and advanced cursors in one atomic rename, so a
follower killed at any point resumes where the last commit left off and loses or duplicates
nothing. It never reads past a committed size, so a transaction the hub undoes never reaches
the store.

It runs in the store feed actor (:mod:`rayplex.store.feed`), a process of its own next
to the hub: the Parquet encoding never competes with the hub's write thread. Its rounds never
compact: :meth:`StoreFollower.compact`, on a thread of its own, merges the small segments the
rounds leave, holding the store's lock only to reserve an id and to commit, so a round never
waits for a merge (:func:`rayplex.store.compact`).

Example:
    >>> follower = StoreFollower("/tmp/exp1", lambda: {})  # doctest: +SKIP
    >>> follower.round()  # doctest: +SKIP
    False
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from rayplex.config import (
    COMPACT_BELOW,
    COMPACT_MIN,
    STORE_BACKOFF_MAX_S,
    STORE_IDLE_POLL_S,
    STORE_MIN_ROUND_S,
)
from rayplex.layout import TENSORBOARD
from rayplex.nested import drain

__all__ = ["StoreFollower", "event_limits", "store_available"]

EVENT_ROOT = TENSORBOARD + "/"
"""Where a rayplex logdir keeps its event files: the store's cursors are relative to it."""

Say = Callable[[int, str], None]


def store_available() -> bool:
    """True if pyarrow, duckdb and pandas are installed (``pip install "rayplex[store]"``);
    looks them up without importing them."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in ("pyarrow", "duckdb", "pandas"))


def event_limits(committed: Mapping[str, int]) -> dict[str, int]:
    """The hub's committed sizes (paths relative to the logdir) as the indexer's limits (paths
    relative to the event root ``tensorboard/``).

    Example:
        >>> event_limits({"tensorboard/a/events.out.tfevents.1": 40, "logs/x.log": 9})
        {'a/events.out.tfevents.1': 40}
    """
    return {key[len(EVENT_ROOT):]: int(size) for key, size in committed.items()
            if key.startswith(EVENT_ROOT)}


class StoreFollower:
    """Feeds the store of ``logdir`` with what ``committed()`` says the hub has committed.

    ``round`` and ``drain`` are serialised by :attr:`lock`; :meth:`compact` runs beside them.
    :attr:`counters` tells rounds, points, segments, segments compacted, failures, the last
    problem and the time of the last commit.
    """

    def __init__(self, logdir: str, committed: Callable[[], Mapping[str, int]],
                 say: Say | None = None) -> None:
        self.logdir = os.path.abspath(logdir)
        self.committed = committed
        self.say = say or (lambda level, message: logging.getLogger("rayplex.store").log(
            level, message))
        self.lock = threading.Lock()
        self.grown = threading.Event()
        """Set by a round that committed a segment: :meth:`run_compaction` looks then."""
        self.backoff_s = 0.0
        self._done: dict[str, int] | None = None
        self.counters: dict[str, Any] = {"rounds": 0, "points": 0, "segments": 0,
                                         "compacted": 0, "failures": 0, "problem": None,
                                         "last_commit": None, "cursor_bytes": 0}

    def round(self) -> bool:
        """Index what the hub committed since the last round; False if it committed nothing
        new (then the store holds every committed scalar)."""
        from rayplex.store.indexer import index

        with self.lock:
            if not os.path.isdir(os.path.join(self.logdir, EVENT_ROOT)):
                return False  # the hub has not made its logdir yet
            limits = event_limits(self.committed())
            if limits == self._done:
                return False
            report = index(self.logdir, limits=limits, compaction=False)
            self._done = limits
            if report.segments:
                self.grown.set()
            counters = self.counters
            counters["rounds"] += 1
            counters["points"] += report.points
            counters["segments"] += report.segments
            counters["cursor_bytes"] = sum(limits.values())
            counters["last_commit"] = time.time()
            return True

    def compact(self) -> int:
        """Merge the small segments the rounds left (:func:`rayplex.store.compact` with
        :data:`COMPACT_BELOW` and :data:`COMPACT_MIN`); how many were merged. Rounds go on
        meanwhile."""
        from rayplex.store.indexer import compact

        merged = compact(self.logdir, below=COMPACT_BELOW, min_segments=COMPACT_MIN)
        self.counters["compacted"] += merged
        return merged

    def run_compaction(self, stop: threading.Event) -> None:
        """Compactions until ``stop`` is set, each after a round committed a segment; a
        failed one is said once (as a failed round) and retried after a back-off."""
        backoff = 0.0
        while not stop.is_set():
            if not self.grown.wait(STORE_IDLE_POLL_S):
                continue
            self.grown.clear()
            try:
                self.compact()
                backoff = 0.0
            except Exception as exc:
                self._failed(exc, "a compaction")
                backoff = min(STORE_BACKOFF_MAX_S, max(0.1, backoff * 2))
                self.grown.set()  # try again
                stop.wait(backoff)

    def _failed(self, exc: Exception, what: str) -> None:
        self.counters["failures"] += 1
        problem = f"{type(exc).__name__}: {str(exc)[:300]}"
        if self.counters["problem"] is None:
            self.say(logging.WARNING, f"store feed: {what} failed ({problem}); the store "
                     "falls behind, nothing is lost; retrying with back-off")
        self.counters["problem"] = problem

    def attempt(self) -> bool | None:
        """One round with error handling: whether it found something new, ``None`` if it
        failed (the next waits ``backoff_s``, doubling up to :data:`STORE_BACKOFF_MAX_S`)."""
        try:
            busy = self.round()
        except Exception as exc:
            self._failed(exc, "a round")
            self.backoff_s = min(STORE_BACKOFF_MAX_S, max(0.1, self.backoff_s * 2))
            return None
        if self.counters["problem"] is not None:
            self.say(logging.WARNING, "store feed: rounds succeed again")
            self.counters["problem"] = None
        self.backoff_s = 0.0
        return busy

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set: one every :data:`STORE_MIN_ROUND_S` (or back to back when
        a round takes longer) while the hub commits, every :data:`STORE_IDLE_POLL_S` when it does
        not."""
        while not stop.is_set():
            started = time.monotonic()
            busy = self.attempt()
            if busy is None:
                wait = self.backoff_s
            elif busy:
                wait = STORE_MIN_ROUND_S - (time.monotonic() - started)
            else:
                wait = STORE_IDLE_POLL_S
            if wait > 0:
                stop.wait(wait)

    def drain(self, timeout: float) -> bool:
        """Index everything committed so far, here and now; True when done, False if
        ``timeout`` passed first (the manifest keeps its place for the next start)."""
        return drain(self.attempt, lambda: self.backoff_s, timeout)
