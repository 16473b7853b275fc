"""The node buffer: one per Ray node and experiment, between that node's workers and the hub.

Workers on a node send their batches here; while one call to the hub is in flight, the
batches that arrive meanwhile are gathered and forwarded together in the next call, so the
hub sees one call per node per round trip instead of one per worker. Each worker's call
returns the hub's acknowledgement of its own batch.

``store_metrics`` statistics of the gathered batches are merged here per (group, step, key),
so the hub receives one partial summary per node and round trip instead of one per worker.
Calls to the hub are not replayed by Ray (the senders own the retries): a merged partial is
applied once, and a resent batch travels unmerged so that the hub can drop it if it already
has it.

This is a plain class; :func:`rayplex.actors.get_or_create_node_buffer` makes it an actor.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from rayplex.records import Ack, Batch, NodeCall, Partial

log = logging.getLogger("rayplex.node_buffer")


class NodeBuffer:
    """Gathers the batches of one node's workers into few calls to the hub."""

    def __init__(self, hub_name: str, node_id: str) -> None:
        self.hub_name = hub_name
        self.node_id = node_id
        self._hub: Any = None
        self._id = uuid.uuid4().hex
        self._seq = 0
        self._pending: list[tuple[Batch, asyncio.Future[Ack]]] = []
        self._pump: asyncio.Task[None] | None = None
        self.forwarded_calls = 0
        self.forwarded_batches = 0

    def info(self) -> dict[str, Any]:
        return {
            "hub": self.hub_name,
            "node_id": self.node_id,
            "forwarded_calls": self.forwarded_calls,
            "forwarded_batches": self.forwarded_batches,
        }

    async def submit(self, batch: Batch) -> Ack:
        """Forward ``batch`` to the hub (merged with others); return the hub's acknowledgement."""
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._forward_all())
        return await future

    async def flush(self) -> None:
        """Return once everything submitted before this call has been answered by the hub."""
        while self._pending or (self._pump is not None and not self._pump.done()):
            if self._pump is not None:
                await asyncio.shield(self._pump)
            else:  # pragma: no cover - defensive
                await asyncio.sleep(0.001)

    def _hub_handle(self) -> Any:
        if self._hub is None:
            from rayplex.actors import get_hub

            self._hub = get_hub(self.hub_name)
        return self._hub

    async def _forward_all(self) -> None:
        while self._pending:
            items, self._pending = self._pending, []
            self._seq += 1
            call = merge_batches(self._id, self._seq, [batch for batch, _ in items])
            try:
                write = self._hub_handle().write_node.options(max_task_retries=0)
                acks = await write.remote(call)
            except Exception as exc:  # the senders keep their batches and retry
                self._hub = None
                log.warning("node buffer %s: hub %r unreachable: %r", self.node_id[:8],
                            self.hub_name, exc)
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.forwarded_calls += 1
            self.forwarded_batches += len(items)
            for (_, future), ack in zip(items, acks, strict=False):
                if not future.done():
                    future.set_result(ack)


def merge_batches(node: str, seq: int, batches: list[Batch]) -> NodeCall:
    """Gather ``batches`` into one call, merging the partial statistics of first sends."""
    merged: dict[tuple[str, int], Partial] = {}
    out = []
    for batch in batches:
        if batch.attempt == 1 and batch.partials:
            for partial in batch.partials:
                into = merged.get((partial.group, partial.step))
                if into is None:
                    into = Partial(partial.group, partial.step, partial.stats, {})
                    merged[(partial.group, partial.step)] = into
                into.stats = tuple(dict.fromkeys(into.stats + partial.stats))
                for key, stats in partial.metrics.items():
                    if key in into.metrics:
                        into.metrics[key].merge(stats)
                    else:
                        into.metrics[key] = stats
            batch = Batch(batch.sender, batch.seq, batch.registry_stamp, batch.chunks, batch.logs,
                          [], batch.attempt)
        out.append(batch)
    return NodeCall(node, seq, out, list(merged.values()))
