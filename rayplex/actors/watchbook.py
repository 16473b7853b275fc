"""The hub's watch rules at work: what each client did last, and the alerts it raises.

The hub hands :class:`WatchBook` every batch it is about to write (:meth:`WatchBook.observe`),
its heartbeats once in a while (:meth:`WatchBook.tick`) and the node buffers' reports on the
processes that log through them (:meth:`WatchBook.senders`). Each returns the alerts raised, as
``(key, Alert)``: ``key`` names the occurrence (the batch that held the NaN, the process that
vanished), so that the hub appends each alert once through its journal, whatever Ray replays.

Cheap on the write path: a batch is read through its chunks' digests (one entry per tag and
flush, computed by the worker, :data:`rayplex.watch.Digest`), never its bytes; the rules that
apply to a tag are found once per new tag (``fnmatch``), then by a dict lookup, with the bounds
all of them accept: an entry within those bounds, with no NaN, of a client with no condition
holding (the common case, and the costly one when each scalar is its own entry) is skipped
after four comparisons, whatever the number of rules; the others go through the rules one by
one. With no rule declared, :meth:`observe`
only notes each client's last record and step.

Alerts are edge-triggered per rule and client (per tag for ``nan`` and ``threshold``): one
alert when the condition starts; the next once it cleared and holds again.

A plain object, no Ray, no I/O (tests/test_watch.py).

Example:
    >>> from rayplex.records import Batch, Chunk
    >>> from rayplex import watch
    >>> book = WatchBook([watch.nan("loss")])
    >>> bad = (("loss", 2, 7, float("nan"), 0.5, 0.5, 1, 7, float("nan")),)
    >>> found = book.observe([Batch("s1", 3, ("e", 1), [Chunk("agent/0", "agent/0", b"", 2, bad)])],
    ...                      node="n1", now=100.0)
    >>> [(key, a.rule, a.client, a.step) for key, a in found]
    [('nan(loss)|agent/0|loss|s1:3', 'nan(loss)', 'agent/0', 7)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayplex.records import Batch
from rayplex.rules import TELEMETRY_SENDER
from rayplex.watch import Alert, Rule, lagging, outliers, tag_matches

__all__ = ["ClientState", "WatchBook"]

_TAG_RULES = ("nan", "threshold")
ENDED = frozenset({"finished", "completed", "done", "stopped", "errored"})
"""A client whose last ``ping`` status is one of these is not watched by ``silent``."""


@dataclass
class ClientState:
    """What the hub knows of one client."""

    sender: str = ""
    node: str = ""
    last_seen: float = 0.0
    last_step: int | None = None
    state: str = "running"
    """``running``, ``finished`` (its process closed its session), ``silent`` or ``crashed``."""
    latest: dict[str, float] = field(default_factory=dict)
    """Latest value per tag (what ``outlier`` rules compare)."""
    held: set[str] = field(default_factory=set)
    """Tags with a ``nan``/``threshold`` condition holding or a run under way for this client
    (a superset: cleared when the rules find nothing left)."""


_TagRules = tuple[float, float, list[tuple[Rule, str]]]
"""The ``nan`` and ``threshold`` rules of one tag with their group prefixes (empty if none),
after the bounds within which all of them are quiet for a finite entry: the highest ``below``
(-inf if none) and the lowest ``above`` (inf if none). A plain tuple: read per digest entry."""


class WatchBook:
    """The rules, the clients' last records and steps, and which conditions hold now."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: dict[str, Rule] = {}
        self.clients: dict[str, ClientState] = {}
        self.pids: dict[str, tuple[str, int]] = {}
        """``{sender: (node, pid)}`` as the node buffers reported them."""
        self.closed: set[str] = set()
        self.gone: set[str] = set()
        self._by_tag: dict[str, _TagRules] = {}
        self._watching = False
        """Whether any ``nan`` or ``threshold`` rule is declared."""
        self._active: set[tuple[str, str, str]] = set()  # (rule, client, tag) holding now
        self._streaks: dict[tuple[str, str, str], int] = {}
        self.errors = 0
        """Digests that could not be read (malformed): counted, never fatal."""
        for rule in rules:
            self.set_rule(rule)

    # ------------------------------------------------------------------ rules
    def set_rule(self, rule: Rule) -> None:
        """Add ``rule``, or replace the one of the same name."""
        self.rules[rule.name] = rule
        self._by_tag.clear()
        self._watching = any(r.kind in _TAG_RULES for r in self.rules.values())

    def _rules_for(self, tag: str) -> _TagRules:
        rules = [(r, r.group + "/" if r.group else "") for r in self.rules.values()
                 if r.kind in _TAG_RULES and tag_matches(r.tag, tag)]
        belows = [r.below for r, _ in rules if r.kind == "threshold" and r.below is not None]
        aboves = [r.above for r, _ in rules if r.kind == "threshold" and r.above is not None]
        found = (max(belows, default=-math.inf), min(aboves, default=math.inf), rules)
        self._by_tag[tag] = found
        return found

    # ------------------------------------------------------------- write path
    def observe(self, batches: Iterable[Batch], node: str, now: float,
                pids: Mapping[str, int] | None = None) -> list[tuple[str, Alert]]:
        """Read the digests of ``batches`` (about to be written; ``pids``: their senders'
        processes, when new); return the alerts raised. Each client's last record and step are
        kept with no rule declared too, so that a rule declared later knows them. A node
        buffer's telemetry batch is not its clients' sign of life: it is skipped."""
        for sender, pid in (pids or {}).items():
            self.pids[str(sender)] = (node, int(pid))
        found: list[tuple[str, Alert]] = []
        clients = self.clients
        by_tag, watching = self._by_tag, self._watching
        for batch in batches:
            if batch.sender.startswith(TELEMETRY_SENDER):  # a node buffer's, not the client's
                continue
            for chunk in batch.chunks:
                client = clients.get(chunk.client_id)
                if client is None:
                    client = clients[chunk.client_id] = ClientState()
                client.sender, client.node, client.last_seen = batch.sender, node, now
                if client.state == "silent":
                    client.state = "running"
                name, held, latest = chunk.client_id, client.held, client.latest
                last = client.last_step
                try:
                    for entry in chunk.digest:
                        tag, _, step, value, low, high, bad, _, _ = entry
                        if last is None or step > last:
                            last = step
                        latest[tag] = value
                        if not watching:
                            continue
                        try:
                            spec = by_tag[tag]
                        except KeyError:
                            spec = self._rules_for(tag)
                        # quiet for every rule of the tag (no NaN, within all their bounds)
                        # and nothing holding for the client: nothing to do; else the rules
                        # one by one
                        if (bad or low < spec[0] or high > spec[1] or held) and spec[2]:
                            self._apply(spec[2], name, client, entry, batch, now, found)
                except (TypeError, ValueError, IndexError):
                    self.errors += 1
                client.last_step = last
            for line in batch.logs:
                client = clients.get(line[2])
                if client is not None:
                    client.last_seen = now
        return found

    def _apply(self, rules: list[tuple[Rule, str]], name: str, client: ClientState, entry: Any,
               batch: Batch, now: float, found: list[tuple[str, Alert]]) -> None:
        """The ``nan`` and ``threshold`` rules of one digest entry that is not quiet for all of
        them (:meth:`observe` skips those); notes in ``client.held`` whether a condition still
        holds or a run goes on for its tag."""
        tag, count, step, value, low, high, bad = entry[:7]
        client.held.add(tag)
        for rule, prefix in rules:
            if prefix and not name.startswith(prefix):
                continue
            if rule.kind == "nan":
                if bad:
                    key = (rule.name, name, tag)
                    if key not in self._active:
                        self._active.add(key)
                        found.append(self._alert(
                            f"{rule.name}|{name}|{tag}|{batch.sender}:{batch.seq}", rule, name,
                            client, now, entry[7], entry[8], None,
                            f"{tag} = {entry[8]} at step {entry[7]}"))
                elif self._active:
                    self._active.discard((rule.name, name, tag))
                continue
            below, above = rule.below, rule.above
            if (below is None or (low >= below and value >= below)) and (
                    above is None or (high <= above and value <= above)):
                if self._streaks:  # within bounds (or no finite value): any run ends
                    key = (rule.name, name, tag)
                    if self._streaks.pop(key, None) is not None:
                        self._active.discard(key)
                continue
            self._threshold(rule, (rule.name, name, tag), name, client, entry,
                            f"{batch.sender}:{batch.seq}", now, found)
        if not any((rule.name, name, tag) in self._active or (rule.name, name, tag) in
                   self._streaks for rule, _ in rules):
            client.held.discard(tag)

    def _threshold(self, rule: Rule, key: tuple[str, str, str], name: str, client: ClientState,
                   entry: Any, where: str, now: float, found: list[tuple[str, Alert]]) -> None:
        tag, count, step, value, low, high = entry[:6]

        def beyond(v: float) -> bool:
            return ((rule.below is not None and v < rule.below)
                    or (rule.above is not None and v > rule.above))

        # every point of this flush beyond one bound: the run goes on through all of them
        whole = entry[6] == 0 and not math.isnan(low) and (
            (rule.below is not None and high < rule.below)
            or (rule.above is not None and low > rule.above))
        if whole:
            streak = self._streaks.get(key, 0) + count
        elif beyond(value):  # the run starts inside this flush: counted from its last point
            streak = 1
        else:
            streak = 0
        self._streaks[key] = streak
        if streak >= rule.for_steps:
            if key not in self._active:
                self._active.add(key)
                side = (f"below {rule.below:g}" if rule.below is not None and value < rule.below
                        else f"above {rule.above:g}")
                found.append(self._alert(
                    f"{rule.name}|{name}|{tag}|{where}", rule, name, client, now, step, value,
                    None, f"{tag} = {value:g} at step {step}, {side} for {streak} points"))
        else:
            self._active.discard(key)

    # -------------------------------------------------------------- the ticker
    def tick(self, now: float, heartbeats: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Alert]]:
        """Evaluate ``silent``, ``step_lag`` and ``outlier`` over what the clients did last
        (``heartbeats``: the hub's :class:`~rayplex.actors.control.ControlBook` ones)."""
        found: list[tuple[str, Alert]] = []
        for rule in self.rules.values():
            if rule.kind == "silent":
                self._silent(rule, now, heartbeats, found)
            elif rule.kind == "step_lag":
                self._step_lag(rule, now, found)
            elif rule.kind == "outlier":
                self._outlier(rule, now, found)
        return found

    def _step_lag(self, rule: Rule, now: float, found: list[tuple[str, Alert]]) -> None:
        members = self._members(rule)
        steps = {c: s.last_step for c, s in members.items() if s.last_step is not None}
        late = lagging(steps, rule.max_lag)
        for name, step in steps.items():
            median = late.get(name)
            if self._starts((rule.name, name, ""), median is not None) and median is not None:
                found.append(self._alert(
                    f"{rule.name}|{name}|{step}", rule, name, members[name], now, step, None,
                    median, f"at step {step}, {median - step:g} behind the group's median "
                    f"{median:g}"))

    def _outlier(self, rule: Rule, now: float, found: list[tuple[str, Alert]]) -> None:
        members = self._members(rule)
        tags = {t for s in members.values() for t in s.latest if tag_matches(rule.tag, t)}
        for tag in sorted(tags):
            values = {c: s.latest[tag] for c, s in members.items() if tag in s.latest}
            far = outliers(values, rule.z)
            for name, value in values.items():
                hit = far.get(name)
                if self._starts((rule.name, name, tag), hit is not None) and hit is not None:
                    median, score = hit
                    state = members[name]
                    found.append(self._alert(
                        f"{rule.name}|{name}|{tag}|{value!r}|{state.last_step}", rule, name,
                        state, now, state.last_step, value, median,
                        f"{tag} = {value:g}, {score:.1f} robust SDs from the group's median "
                        f"{median:g}"))

    def _silent(self, rule: Rule, now: float, heartbeats: Mapping[str, Mapping[str, Any]],
                found: list[tuple[str, Alert]]) -> None:
        for name, state in self.clients.items():
            if not rule.applies_to(name) or state.state in ("finished", "crashed"):
                continue
            if state.sender in self.closed or state.sender in self.gone:
                continue
            beat = heartbeats.get(name, {})
            if beat.get("status") in ENDED:
                continue
            last = max(state.last_seen, float(beat.get("time", 0.0) or 0.0))
            quiet = now - last > rule.seconds
            if quiet:
                state.state = "silent"
            if self._starts((rule.name, name, ""), quiet):
                found.append(self._alert(
                    f"{rule.name}|{name}|{last!r}", rule, name, state, now, state.last_step,
                    None, None, f"no record and no heartbeat for {now - last:.1f} s"))

    def _starts(self, key: tuple[str, str, str], holds: bool) -> bool:
        """Whether the condition ``key`` starts holding now (edge-triggered)."""
        if not holds:
            self._active.discard(key)
            return False
        if key in self._active:
            return False
        self._active.add(key)
        return True

    def _members(self, rule: Rule) -> dict[str, ClientState]:
        return {name: state for name, state in self.clients.items()
                if rule.applies_to(name) and state.state not in ("finished", "crashed")}

    # ------------------------------------------------------------ node reports
    def senders(self, node: str, new: Mapping[str, int], closed: Iterable[str],
                gone: Mapping[str, int], now: float) -> list[tuple[str, Alert]]:
        """A node buffer's report: processes that started logging (``{sender: pid}``), that
        closed their session, and that vanished without closing it (``crashed``)."""
        for sender, pid in new.items():
            self.pids[str(sender)] = (node, int(pid))
        finished = set(closed)
        self.closed |= finished
        found: list[tuple[str, Alert]] = []
        for sender, pid in gone.items():
            self.pids.setdefault(str(sender), (node, int(pid)))
            self.gone.add(str(sender))
        for name, state in self.clients.items():
            if state.sender in finished:
                state.state = "finished"
            elif state.sender in gone and state.state != "crashed":
                state.state = "crashed"
                for rule in self.rules.values():
                    if rule.kind == "crashed" and rule.applies_to(name):
                        found.append(self._alert(
                            f"{rule.name}|{name}|{state.sender}", rule, name, state, now,
                            state.last_step, None, None,
                            f"process {gone[state.sender]} died without closing its session"))
        return found

    def states(self) -> dict[str, str]:
        """``{client: running | finished | silent | crashed}``."""
        return {name: state.state for name, state in self.clients.items()}

    def counts(self) -> dict[str, int]:
        """How many clients are in each state."""
        out: dict[str, int] = {}
        for state in self.clients.values():
            out[state.state] = out.get(state.state, 0) + 1
        return out

    # ------------------------------------------------------------------ alerts
    def _alert(self, key: str, rule: Rule, name: str, state: ClientState, now: float,
               step: int | None, value: float | None, median: float | None,
               what: str) -> tuple[str, Alert]:
        node, pid = self.pids.get(state.sender, (state.node, None))
        node = node or state.node
        where = f" on node {node[:12]}" + (f" pid {pid}" if pid is not None else "") if node else ""
        message = f"{rule.name}: {name}{where}: {what}"
        return key, Alert(rule.name, name.partition("/")[0], name, node, pid,
                          None if step is None or step < 0 else int(step), value, median, now,
                          message)
