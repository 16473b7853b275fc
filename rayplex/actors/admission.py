"""Which batches of a node buffer's call the hub writes now, and what it answers the others.

A call may carry the same batch twice (a resend): it is answered once, from its first copy.
A batch the writer refuses (:meth:`HubWriter.refuse
<rayplex.actors.writer.HubWriter.refuse>`: another experiment's, a duplicate, a stale
registry, one that breaks the rules) is answered without being written. Of the fresh ones, a
batch whose ``store_metrics`` partial was merged with an already committed batch is deferred
(:func:`~rayplex.actors.partials.select_partials`): its sender resends it. The rest is written.
This is a pure step of :meth:`Hub.write_node <rayplex.actors.hub.Hub.write_node>`, testable
with a plain :class:`~rayplex.actors.writer.HubWriter`.

Example:
    >>> from rayplex.records import Batch, NodeCall
    >>> class Writer:  # a stand-in for HubWriter.refuse: everything is fresh
    ...     def refuse(self, batch, registry, experiment):
    ...         return None
    >>> batch = Batch("a", 1, ("", 0))
    >>> admitted = admit(NodeCall("node", 1, [batch, batch], []), Writer(), None, "")
    >>> [(b.sender, b.seq) for b in admitted.writable], admitted.answers
    ([('a', 1)], {})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable
from typing import Any, Protocol

from rayplex.actors.partials import BatchId, select_partials
from rayplex.groups import GroupRegistry
from rayplex.records import Ack, Batch, NodeCall, Partial
from rayplex.rules import SYSTEM_GROUP

__all__ = ["Admitted", "UnregisteredGroups", "admit"]


class _Refuser(Protocol):
    def refuse(self, batch: Batch, registry: Any, experiment: str) -> Ack | None: ...


@dataclasses.dataclass
class Admitted:
    """A node call sorted: ``writable`` batches (and the ``partials`` to apply with them), the
    ``answers`` already known for the others (by ``(sender, seq)``)."""

    writable: list[Batch]
    partials: list[Partial]
    answers: dict[BatchId, Ack]


def admit(call: NodeCall, writer: _Refuser, registry: GroupRegistry | None,
          experiment: str) -> Admitted:
    """Sort ``call``'s batches into those to write now and those answered without a write."""
    answers: dict[BatchId, Ack] = {}
    fresh: list[Batch] = []
    seen: set[BatchId] = set()
    for batch in call.batches:
        key = (batch.sender, batch.seq)
        if key in seen:  # the same batch twice in one call (a resend): answered once
            continue
        seen.add(key)
        refused = writer.refuse(batch, registry, experiment)
        if refused is None:
            fresh.append(batch)
        else:
            answers[key] = refused
    partials, defer = select_partials(list(call.partials), {(b.sender, b.seq) for b in fresh})
    for key in defer:
        answers[key] = Ack(key[0], key[1], retry=True)
    writable = [b for b in fresh if (b.sender, b.seq) not in defer]
    return Admitted(writable, partials, answers)


class UnregisteredGroups:
    """The groups written to without being registered, each named once per hub."""

    def __init__(self) -> None:
        self._seen: set[str] = {SYSTEM_GROUP}  # telemetry's group: never registered

    def new(self, batches: Iterable[Batch], registered: Container[str]) -> list[str]:
        """The groups of ``batches``' clients not in ``registered`` and not named before."""
        found: list[str] = []
        for batch in batches:
            for chunk in batch.chunks:
                group = chunk.client_id.partition("/")[0]
                if group in self._seen or group in registered:
                    continue
                self._seen.add(group)
                found.append(group)
        return found
