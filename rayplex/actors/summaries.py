"""The hub's book of ``store_metrics`` statistics: merged per (group, step), each written once.

A step's summary is written when the group's workers are done with it, which the book knows
from a watermark per group: for each client it tracks the first and the last step it
summarised and when it was last heard of. Step ``s`` of group ``g`` is *ready* when

* every client of ``g`` whose first summarised step is ``<= s`` and that is not *silent* has
  summarised ``s`` or a later step, and
* no new partial for ``s`` arrived in the last ``delay_s`` seconds (so that the first
  partials of a group, which have no watermark yet, can arrive from every node).

A client is silent once the book heard other clients of its group ``silent_s`` seconds after
its last partial (``RAYPLEX_SUMMARY_SILENT_S``), or once its whole group has been quiet for
``silent_s`` (a group of short-lived clients, a new one per round, ends that way); the others
go on without it. The group's quiet time counts from its last partial or the hub's latest
fault (:meth:`SummaryBook.disturbed`), whichever is later, so a hub that was stalled or
restarted declares nobody silent until its senders had ``silent_s`` to be heard again. A
partial that arrives for a step that was already written (only from a client that was
declared silent, or one that joined the group late) is merged with what was there and the
step is written again: a second point at the same step, over all values, flagged (``again``)
so that the hub warns about it.

A worker the book does not know yet has no watermark, so nothing waits for its first partial,
which may be late: sent after a back-off because a fault (a hub or node-buffer restart, a failed
write, a stall) lost or held up the first send. So for ``hold_s`` (the longest back-off and two
flush intervals) no step is written on the quiet time alone, after a client joined the group
(for that group) and after the hub saw a fault (:meth:`SummaryBook.disturbed`; for every
group); a group whose members are all known writes on the watermark and quiet time only. So
that joins or faults that never stop cannot hold a step for ever, no step is held longer than
``2 * hold_s`` after its first partial. An explicit flush and shutdown do not wait for the hold.

An explicit flush (``quiet=False``) is a barrier: every partial logged before it has arrived.
It writes what is complete: besides silent clients, a client that was *replaced* holds no step
back: one whose group has a client that joined after it was last heard, at a step after its
last one (a new client per round, as plain tasks make). A long-lived client that is behind
holds its group's next steps back at a flush as on the quiet time.

Written steps are kept (for such late partials) up to ``keep_written`` per group; a partial
for a step below a group's pruned floor is refused and counted (``refused``), never started
afresh with partial counts.

Example:
    >>> from rayplex.records import Partial
    >>> from rayplex.stats import PartialStats
    >>> book = SummaryBook(delay_s=1.0, silent_s=10.0)
    >>> def partial(client, step, *values):
    ...     return Partial("agent", step, ("mean",), {"r": PartialStats(values)}, (client,))
    >>> book.add(partial("agent/0", 0, 1.0), now=0.0)
    True
    >>> book.add(partial("agent/1", 0, 3.0), now=0.0)
    True
    >>> book.add(partial("agent/0", 1, 5.0), now=0.5)
    True
    >>> book.due(now=2.0)  # step 1 waits for agent/1, which summarised step 0
    [Summary(group='agent', step=0, values={'r/mean': 2.0}, again=False)]
    >>> book.add(partial("agent/0", 2, 7.0), now=11.0)  # agent/0 goes on, agent/1 does not
    True
    >>> book.due(now=11.5)  # agent/1 went silent: step 1 is written without it
    [Summary(group='agent', step=1, values={'r/mean': 5.0}, again=False)]
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple

from rayplex.records import Partial
from rayplex.rules import check_step, split_client_id, validate_group_name, validate_metric_key
from rayplex.stats import PartialStats

_JSON_VERSION = 1


class Summary(NamedTuple):
    """One step's summary to write: ``{"<key>/<stat>": value}``; ``again`` for a second point."""

    group: str
    step: int
    values: dict[str, float]
    again: bool


@dataclass
class _Entry:
    metrics: dict[str, PartialStats] = field(default_factory=dict)
    stats: tuple[str, ...] = ()
    last: float = 0.0
    created: float = 0.0
    dirty: bool = False
    written: bool = False
    late: bool = False


@dataclass
class _Client:
    first: int
    last: int
    seen: float
    joined: float


@dataclass
class _Group:
    clients: dict[str, _Client] = field(default_factory=dict)
    floor: int | None = None
    """Highest step pruned from this group; partials at or below it are refused."""
    heard: float = 0.0
    """When the latest partial of this group arrived: silence is measured against it, so a
    hub that hears nobody (stalled, restarting, senders backing off) declares nobody silent."""
    joined: float = float("-inf")
    """When a client last joined this group (its first partial): the group's steps are held."""


class SummaryBook:
    """Cluster-wide statistics per (group, step), merged from node and worker partials.

    Args:
        delay_s: Quiet time after the last partial of a step before it may be written.
        silent_s: Time without a partial after which a client no longer holds steps back.
        keep_written: Written steps kept per group for late partials.
        hold_s: After :meth:`disturbed`, how long no step is written on the quiet time alone.
    """

    def __init__(self, delay_s: float, silent_s: float = 10.0, keep_written: int = 1024,
                 hold_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.silent_s = silent_s
        self.keep_written = keep_written
        self.hold_s = hold_s
        self.held_until = 0.0
        """Until when steps wait for resends after the latest disturbance (``time.time()``)."""
        self.disturbed_at = float("-inf")
        """When the latest disturbance was seen: a group's quiet time counts from it too."""
        self.refused = 0
        """Partials refused because their step was below the group's pruned floor."""
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._groups: dict[str, _Group] = {}

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.dirty)

    def add(self, partial: Partial, now: float) -> bool:
        """Merge one partial in; a step already written will be written again (flagged).

        Returns:
            ``False`` if the partial was refused (its step is below the group's pruned floor:
            counted in :attr:`refused`, for the hub to warn), else ``True``.
        """
        group = self._groups.setdefault(partial.group, _Group())
        group.heard = max(group.heard, now)
        for client_id in partial.clients:
            client = group.clients.get(client_id)
            if client is None:
                group.clients[client_id] = _Client(partial.step, partial.step, now, now)
                group.joined = max(group.joined, now)
            else:
                client.first = min(client.first, partial.step)
                client.last = max(client.last, partial.step)
                client.seen = now
        key = (partial.group, partial.step)
        entry = self._entries.get(key)
        if entry is None:
            if group.floor is not None and partial.step <= group.floor:
                self.refused += 1
                return False
            entry = self._entries[key] = _Entry(created=now)
        for name, stats in partial.metrics.items():
            if name in entry.metrics:
                entry.metrics[name].merge(stats)
            else:
                entry.metrics[name] = stats.copy()
        entry.stats = tuple(dict.fromkeys(entry.stats + tuple(partial.stats)))
        entry.last = now
        entry.dirty = True
        if entry.written:
            entry.late = True
        return True

    def disturbed(self, now: float) -> None:
        """A fault happened at ``now``: senders may resend partials until ``now + hold_s``, so
        write nothing on the quiet time alone until then."""
        self.held_until = max(self.held_until, now + self.hold_s)
        self.disturbed_at = max(self.disturbed_at, now)

    def due(self, now: float, force: bool = False, quiet: bool = True) -> list[Summary]:
        """Take the summaries to write: the ready steps at ``now``, or every dirty one if
        ``force`` (shutdown). ``quiet=False`` (an explicit flush) skips the quiet time and the
        hold after a disturbance but still waits for the watermark.

        Taken steps count as written; if writing them fails, hand them back with
        :meth:`mark_dirty`.

        Returns:
            :class:`Summary` tuples in (group, step) order.
        """
        self._prune()
        waiting: dict[str, list[tuple[int, int]]] = {}
        out = []
        for (group, step), entry in sorted(self._entries.items()):
            if not entry.dirty:
                continue
            if not force:
                if quiet and (now - entry.last < self.delay_s or now < self._held(group, entry)):
                    continue
                if group not in waiting:
                    waiting[group] = self._live_watermarks(group, now, flush=not quiet)
                if any(first <= step and last < step for first, last in waiting[group]):
                    continue
            values: dict[str, float] = {}
            for key in sorted(entry.metrics):
                for stat, value in entry.metrics[key].summary(entry.stats).items():
                    values[f"{key}/{stat}"] = value
            out.append(Summary(group, step, values, entry.late))
            entry.dirty = False
            entry.written = True
            entry.late = False
        return out

    def silent_clients(self, now: float) -> list[str]:
        """Clients that no longer hold their group's steps back (for ``info()``)."""
        return sorted(client_id for group in self._groups.values()
                      for client_id, client in group.clients.items()
                      if self._silent(group, client, now))

    def _silent(self, group: _Group, client: _Client, now: float) -> bool:
        """Others of the group were heard ``silent_s`` after this client's last partial, or
        the whole group has been quiet for ``silent_s`` since its last partial and the latest
        fault."""
        return (group.heard - client.seen >= self.silent_s
                or now - max(group.heard, self.disturbed_at) >= self.silent_s)

    def mark_written(self, keys: list[tuple[str, int]]) -> None:
        """Record that these steps' summaries are on disk (journal replay)."""
        for group, step in keys:
            entry = self._entries.get((group, step))
            if entry is not None:
                entry.dirty, entry.written, entry.late = False, True, False
        self._prune()

    def mark_dirty(self, keys: list[tuple[str, int]]) -> None:
        """These steps' summaries could not be written: write them again later."""
        for group, step in keys:
            entry = self._entries.get((group, step))
            if entry is not None:
                entry.dirty = True

    def _held(self, group: str, entry: _Entry) -> float:
        """Until when ``entry`` waits for resends: the latest fault or join in its group plus
        ``hold_s``, but never past ``2 * hold_s`` after its first partial."""
        spec = self._groups.get(group)
        joined = spec.joined if spec is not None else float("-inf")
        return min(max(self.held_until, joined + self.hold_s), entry.created + 2 * self.hold_s)

    def _live_watermarks(self, group: str, now: float,
                         flush: bool = False) -> list[tuple[int, int]]:
        """``(first, last)`` of the clients that hold ``group``'s steps back: not silent and,
        at an explicit ``flush``, not replaced (see the module docstring)."""
        spec = self._groups.get(group)
        if spec is None:
            return []
        live = [c for c in spec.clients.values() if not self._silent(spec, c, now)]
        if flush and live:
            by_first = sorted(spec.clients.values(), key=lambda c: c.first)
            firsts = [c.first for c in by_first]
            latest_join = list(accumulate(reversed([c.joined for c in by_first]), max))[::-1]
            live = [c for c in live if (i := bisect_right(firsts, c.last)) == len(firsts)
                    or latest_join[i] < c.seen]
        return [(c.first, c.last) for c in live]

    def _prune(self) -> None:
        written: dict[str, list[int]] = {}
        for (group, step), entry in self._entries.items():
            if entry.written and not entry.dirty:
                written.setdefault(group, []).append(step)
        for group, steps in written.items():
            if len(steps) <= self.keep_written:
                continue
            steps.sort()
            drop = steps[: len(steps) - self.keep_written]
            for step in drop:
                del self._entries[(group, step)]
            spec = self._groups.setdefault(group, _Group())
            spec.floor = drop[-1] if spec.floor is None else max(spec.floor, drop[-1])

    # ----------------------------------------------------------- serialisation
    def to_json(self) -> dict[str, Any]:
        """Everything the book knows, as strict JSON (the hub journal's snapshot).

        Times are not kept: :meth:`from_json` restarts every clock at its ``now``, so that the
        clients of a restarted hub are not declared silent for the time it was down.
        """
        return {
            "v": _JSON_VERSION,
            "refused": self.refused,
            "entries": [
                {"group": group, "step": step, "stats": list(entry.stats),
                 "metrics": {key: stats.to_json() for key, stats in entry.metrics.items()},
                 "dirty": entry.dirty, "written": entry.written, "late": entry.late}
                for (group, step), entry in self._entries.items()
            ],
            "groups": {
                name: {"floor": group.floor,
                       "clients": {c: [client.first, client.last]
                                   for c, client in group.clients.items()}}
                for name, group in self._groups.items()
            },
        }

    @classmethod
    def from_json(cls, data: object, delay_s: float, silent_s: float = 10.0,
                  keep_written: int = 1024, now: float = 0.0,
                  hold_s: float = 0.0) -> SummaryBook:
        """Rebuild a book from :meth:`to_json` output, checking every field.

        Raises:
            ValueError: if ``data`` is not a well-formed book of this version.
        """
        try:
            return cls._from_json(data, delay_s, silent_s, keep_written, now, hold_s)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"SummaryBook JSON: malformed ({exc!r:.200})") from None

    @classmethod
    def _from_json(cls, data: Any, delay_s: float, silent_s: float, keep_written: int,
                   now: float, hold_s: float) -> SummaryBook:
        _expect(isinstance(data, dict) and data.get("v") == _JSON_VERSION, "unknown version")
        book = cls(delay_s, silent_s, keep_written, hold_s)
        book.refused = _int(data["refused"])
        for item in data["entries"]:
            entry = _Entry(last=now, created=now)
            group = validate_group_name(item["group"], internal=True)
            step = check_step(_int(item["step"]))
            entry.stats = tuple(item["stats"])
            _expect(all(isinstance(s, str) for s in entry.stats), "stats must be strings")
            PartialStats().summary(entry.stats)  # ValueError for unknown stat names
            _expect(isinstance(item["metrics"], dict), "metrics must be an object")
            entry.metrics = {validate_metric_key(key): PartialStats.from_json(stats)
                             for key, stats in item["metrics"].items()}
            entry.dirty, entry.written, entry.late = (
                _bool(item["dirty"]), _bool(item["written"]), _bool(item["late"]))
            book._entries[(group, step)] = entry
        _expect(isinstance(data["groups"], dict), "groups must be an object")
        for name, item in data["groups"].items():
            group_spec = book._groups[validate_group_name(name, internal=True)] = _Group(heard=now)
            floor = item["floor"]
            group_spec.floor = None if floor is None else check_step(_int(floor))
            _expect(isinstance(item["clients"], dict), "clients must be an object")
            for client_id, (first, last) in item["clients"].items():
                split_client_id(client_id, internal=True)
                group_spec.clients[client_id] = _Client(
                    check_step(_int(first)), check_step(_int(last)), now, now)
        return book


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(f"SummaryBook JSON: {what}")


def _int(value: Any) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool), f"{value!r:.40} is not an int")
    return int(value)


def _bool(value: Any) -> bool:
    _expect(isinstance(value, bool), f"{value!r:.40} is not a bool")
    return bool(value)

