"""What the hub can see of a fault from the node calls it gets: the signal that senders are
resending, so that the summary book waits for them (:meth:`SummaryBook.disturbed`).

A plain object (no Ray, explicit clocks). A node call reveals a fault when

* it carries a resend (a batch's ``attempt`` above 1), or some of its batches are answered
  "send again" (a write error, a deferred partial, an old registry);
* it comes from a new node-buffer incarnation on a Ray node heard from before, or from one
  that Ray restarted: the node's senders resend what the previous incarnation held;
* it waited long before the hub ran it (the hub was busy or stalled: calls queued behind it),
  measured against the sender node's clock: exactly on the hub's own node, and on another
  node against the smallest delay seen from it (so that clock skew is not a stall);
* or it took long itself (calls queued behind it).

Example:
    >>> from rayplex.records import NodeCall
    >>> watch = FaultWatch(own_node="n0")
    >>> watch.before(NodeCall("buffer-a", 1, [], ray_node="n0", sent_at=100.0), now=100.1)
    False
    >>> watch.before(NodeCall("buffer-a", 2, [], ray_node="n0", sent_at=100.2), now=104.0)
    True
    >>> watch.before(NodeCall("buffer-b", 1, [], ray_node="n0", sent_at=105.0), now=105.0)
    True
"""

from __future__ import annotations

from collections.abc import Iterable

from rayplex.config import STALL_S
from rayplex.records import Ack, NodeCall


class FaultWatch:
    """Decides, call by call, whether senders may now be resending."""

    def __init__(self, own_node: str = "") -> None:
        self.own_node = own_node
        self._buffers: dict[str, str] = {}  # Ray node -> the node buffer heard from last
        self._offsets: dict[str, float] = {}  # Ray node -> smallest (hub clock - sent_at)

    def before(self, call: NodeCall, now: float) -> bool:
        """Before the hub applies ``call`` (at ``now`` by its clock): a fault?"""
        restarted = False
        if call.ray_node:
            previous = self._buffers.get(call.ray_node)
            self._buffers[call.ray_node] = call.node
            restarted = previous != call.node and (previous is not None or call.restarted)
        return restarted or self._waited(call, now) or any(b.attempt > 1 for b in call.batches)

    @staticmethod
    def after(answers: Iterable[Ack], took_s: float) -> bool:
        """After the hub answered a call that took ``took_s``: a fault?"""
        return took_s > STALL_S or any(a.error or a.retry or a.stale for a in answers)

    def _waited(self, call: NodeCall, now: float) -> bool:
        if not call.sent_at:
            return False
        offset = now - call.sent_at
        if call.ray_node == self.own_node:
            return offset > STALL_S
        base = min(self._offsets.get(call.ray_node, offset), offset)
        self._offsets[call.ray_node] = base
        return offset - base > STALL_S
