"""What crosses process boundaries: worker batches, hub acknowledgements.

A worker ships one :class:`Batch` at a time and keeps it until it is acknowledged; the pair
``(sender, seq)`` lets the hub drop a batch it has already written (a resend after a timeout,
or a call replayed by Ray after an actor restart).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Chunk:
    """The framed events of one client, routed with the registry the worker knew (or, when
    ``fixed``, bound to ``run`` whatever the groups say, e.g. hyper-parameter sessions).

    ``tag_names[tag_index[i]]`` is the user's tag of the i-th event, so that the hub can
    re-route the chunk if the groups were registered anew after the worker encoded it (an
    index array, not a list of strings: it unpickles as one buffer, not one object per event).
    """

    client_id: str
    run: str
    prefix: str
    suffix: str
    blob: bytes
    tag_names: list[str | None]
    """Distinct user tags; ``None`` for events whose tag must not be routed."""
    tag_index: bytes
    """uint32 (native order) index into ``tag_names`` per event."""
    fixed: bool = False

    @property
    def count(self) -> int:
        return len(self.tag_index) // 4

    def tags(self) -> list[str | None]:
        """The user's tag of each event, in order."""
        names = self.tag_names
        return [names[i] for i in array("I", self.tag_index)]


@dataclass
class Batch:
    """Everything one worker process sends in one go."""

    sender: str
    seq: int
    registry_stamp: tuple[str, int]
    chunks: list[Chunk] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    """Text-log lines as :data:`rayplex.textlog.WireLine` tuples, in the worker's order."""
    partials: list[Partial] = field(default_factory=list)
    attempt: int = 1
    """1 on the first send; a node buffer merges only first sends (see :class:`NodeCall`)."""

    def record_count(self) -> int:
        return sum(c.count for c in self.chunks) + len(self.logs) + len(self.partials)


@dataclass
class Partial:
    """One window of ``store_metrics`` statistics: ``{key: PartialStats}`` for (group, step).

    ``clients`` are the client ids whose windows are merged in (the hub's per-group watermark,
    :class:`rayplex.actors.summaries.SummaryBook`); ``contributors`` the ``(sender, seq)`` of
    every batch whose partials are merged in, so that the hub applies each batch's statistics
    exactly once (:func:`rayplex.actors.partials.select_partials`). A worker fills ``clients``
    only; the node buffer fills ``contributors``.
    """

    group: str
    step: int
    stats: tuple[str, ...]
    metrics: dict[str, Any]
    clients: tuple[str, ...] = ()
    contributors: tuple[tuple[str, int], ...] = ()


@dataclass
class NodeCall:
    """What a node buffer sends the hub in one call.

    ``partials`` merges the statistics of the first sends among ``batches`` (whose own
    ``partials`` were emptied); ``(node, seq)`` lets the hub apply them once. A resent batch
    keeps its partials, so the hub de-duplicates it by its own ``(sender, seq)``.
    """

    node: str
    seq: int
    batches: list[Batch]
    partials: list[Partial] = field(default_factory=list)


@dataclass
class Ack:
    """The hub's answer to one batch."""

    sender: str
    seq: int
    duplicate: bool = False
    registry_stamp: tuple[str, int] = ("", 0)
    registry: Any = None  # a GroupRegistry when the sender's version was stale
    error: str | None = None  # set when the hub could not write (the sender retries)
    results: list[Any] = field(default_factory=list)  # answers to ``ops``, in order
