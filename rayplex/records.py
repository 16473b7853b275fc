"""What crosses process boundaries: worker batches, hub acknowledgements.

A worker ships one :class:`Batch` at a time and keeps it until it is acknowledged; the pair
``(sender, seq)`` lets the hub drop a batch it has already written (a resend after a timeout,
or a call replayed by Ray after an actor restart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rayplex.items import line_nbytes


@dataclass
class Chunk:
    """The framed events of one client for one run directory, routed and encoded by the worker
    with the registry stamped on its batch (the hub never routes)."""

    client_id: str
    run: str
    """Run directory relative to ``logdir/tensorboard``."""
    blob: bytes
    count: int
    """Number of events in ``blob``."""
    digest: tuple[Any, ...] = ()
    """Per tag of its scalars: count, last step and value, finite min/max, first NaN/inf
    (:data:`rayplex.watch.Digest`): what the hub's watch rules read, instead of the bytes."""


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
    """1 on the first send."""
    experiment: str = ""
    """The experiment (hub incarnation) the sender belongs to: a hub refuses another's batch."""

    def record_count(self) -> int:
        return sum(c.count for c in self.chunks) + len(self.logs) + len(self.partials)

    def nbytes(self) -> int:
        """Roughly what the batch holds in memory (for the node buffer's bound)."""
        lines = sum(line_nbytes(line) for line in self.logs)
        return sum(len(c.blob) for c in self.chunks) + lines + 2000 * len(self.partials) + 200


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

    ``partials`` merges the statistics of ``batches`` (whose own ``partials`` were emptied),
    naming every batch merged in, so that the hub applies them once
    (:mod:`rayplex.actors.partials`). ``node`` is this node buffer incarnation's id and
    ``ray_node`` the Ray node it serves; ``restarted`` says that Ray restarted this node
    buffer. Either (a new incarnation on a Ray node the hub heard from before, or a restarted
    one) means the node's senders are resending what the previous incarnation held.
    """

    node: str
    seq: int
    batches: list[Batch]
    partials: list[Partial] = field(default_factory=list)
    ray_node: str = ""
    restarted: bool = False
    sent_at: float = 0.0
    """The node buffer's ``time.time()`` when it sent the call (how long it waited at the hub)."""
    pids: dict[str, int] = field(default_factory=dict)
    """``{sender: pid}`` of the senders in this call the hub has not been told of yet (the
    watch rules name the process)."""


@dataclass
class Ack:
    """The hub's answer to one batch. Exactly one of these outcomes holds:

    written (all flags false), ``duplicate`` (written before), ``error`` (the hub could not
    write; resend), ``retry`` (not written this time; resend as is), ``stale`` (encoded with an
    old registry: re-encode with ``registry`` and resend), ``rejected`` (quarantined: never
    resend; that many records), ``wrong_experiment`` (the hub belongs to another experiment).
    """

    sender: str
    seq: int
    duplicate: bool = False
    registry_stamp: tuple[str, int] = ("", 0)
    registry: Any = None  # a GroupRegistry when the sender's version was stale
    error: str | None = None
    retry: bool = False
    stale: bool = False
    rejected: int = 0
    wrong_experiment: bool = False
