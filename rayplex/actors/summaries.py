"""The hub's book of ``store_metrics`` statistics: merged per (group, step), written when quiet.

A step's summary is written once no new partial statistics for it arrived for ``delay_s``
seconds (or at once on ``flush``). A partial that arrives after its step was written is merged
into what was already there and the step is written again: a second point at the same step,
over all values, flagged so that the hub can warn about it.

Example:
    >>> from rayplex.records import Partial
    >>> from rayplex.stats import PartialStats
    >>> book = SummaryBook(delay_s=0.0)
    >>> book.add(Partial("agent", 3, ("mean",), {"reward": PartialStats([1.0, 3.0])}), now=0.0)
    >>> book.due(now=1.0)
    [('agent', 3, {'reward/mean': 2.0}, False)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayplex.records import Partial


@dataclass
class _Entry:
    metrics: dict[str, Any] = field(default_factory=dict)
    stats: tuple[str, ...] = ()
    last: float = 0.0
    dirty: bool = False
    written: bool = False
    late: bool = False


class SummaryBook:
    """Cluster-wide statistics per (group, step), merged from node and worker partials."""

    def __init__(self, delay_s: float, keep_written: int = 1024) -> None:
        self.delay_s = delay_s
        self.keep_written = keep_written
        self._entries: dict[tuple[str, int], _Entry] = {}

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.dirty)

    def add(self, partial: Partial, now: float) -> None:
        """Merge one partial in; a step already written will be written again."""
        entry = self._entries.get((partial.group, partial.step))
        if entry is None:
            entry = self._entries[(partial.group, partial.step)] = _Entry()
        for key, stats in partial.metrics.items():
            if key in entry.metrics:
                entry.metrics[key].merge(stats)
            else:
                entry.metrics[key] = stats.copy()
        entry.stats = tuple(dict.fromkeys(entry.stats + tuple(partial.stats)))
        entry.last = now
        entry.dirty = True
        if entry.written:
            entry.late = True

    def due(self, now: float | None) -> list[tuple[str, int, dict[str, float], bool]]:
        """Take the summaries to write: quiet for ``delay_s`` at ``now``, or all if ``None``.

        Returns:
            ``(group, step, {"<key>/<stat>": value}, written_before)`` in (group, step) order.
        """
        out = []
        for (group, step), entry in sorted(self._entries.items()):
            if not entry.dirty or (now is not None and now - entry.last < self.delay_s):
                continue
            values: dict[str, float] = {}
            for key in sorted(entry.metrics):
                for stat, value in entry.metrics[key].summary(entry.stats).items():
                    values[f"{key}/{stat}"] = value
            out.append((group, step, values, entry.late))
            entry.dirty = False
            entry.written = True
            entry.late = False
        self._prune()
        return out

    def mark_written(self, keys: list[tuple[str, int]]) -> None:
        """Record that these steps' summaries are on disk (journal replay)."""
        for key in keys:
            entry = self._entries.get(tuple(key))  # type: ignore[arg-type]
            if entry is not None:
                entry.dirty, entry.written, entry.late = False, True, False

    def mark_dirty(self, keys: list[tuple[str, int]]) -> None:
        """These steps' summaries could not be written: write them again later."""
        for key in keys:
            entry = self._entries.get(tuple(key))  # type: ignore[arg-type]
            if entry is not None:
                entry.dirty = True

    def _prune(self) -> None:
        written = [k for k, e in self._entries.items() if e.written and not e.dirty]
        if len(written) > self.keep_written:
            written.sort(key=lambda k: self._entries[k].last)
            for key in written[: len(written) - self.keep_written]:
                del self._entries[key]
