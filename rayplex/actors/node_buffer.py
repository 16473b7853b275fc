"""The node buffer: one per Ray node and experiment, between that node's workers and the hub.

Workers on a node talk only to it. While one call to the hub is in flight, the batches that
arrive meanwhile are gathered and forwarded together in the next call, so the hub sees one
call per node per round trip instead of one per worker; each worker's call returns the hub's
acknowledgement of its own batch. ``store_metrics`` partials of the gathered batches are merged
per (group, step); each merged partial names the batches it came from, so the hub applies it
only if none of them was applied before (:func:`rayplex.actors.partials.select_partials`).

It also keeps the list of this node's senders (they register on their first call), so that
``rayplex.flush()`` / ``shutdown()`` can ask every live sender to ship what it holds
(:meth:`NodeBuffer.flush_senders`), and bounds what it holds in bytes
(``RAYPLEX_NODE_BUFFER_MB``): beyond it, senders wait. Every ``WATCH_POLL_S`` it checks that
their processes live, and tells the hub which closed their session or vanished without
closing it (twice in a row: the ``crashed`` watch rule), in one ``node_senders`` request, only
when one did; the pids of new senders travel with their data (``NodeCall.pids``).

Every ``RAYPLEX_TELEMETRY_S`` seconds it samples those senders' processes and its node
(:mod:`rayplex.telemetry`) and sends the figures to the hub as a batch of its own, routed like
the workers' (so the hub's exactly-once applies): each client's process metrics as tags
``sys/<name>`` of its run, the node's in run ``system/<node>``; the step is whole seconds since
the experiment started. A sample the hub does not acknowledge is dropped (counted), not resent.

This is a plain class; :func:`rayplex.actors.get_or_create_node_buffer` makes it an actor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
import warnings
from typing import Any

from rayplex.actors.partials import merge_partials
from rayplex.config import WATCH_POLL_S, config
from rayplex.records import Ack, Batch, NodeCall
from rayplex.rules import TELEMETRY_SENDER
from rayplex.telemetry import NODE_GROUP, TelemetrySampler, telemetry_batch

log = logging.getLogger("rayplex.node_buffer")


class NodeBuffer:
    """Gathers the batches of one node's workers into few calls to the hub."""

    def __init__(self, hub_name: str, node_id: str) -> None:
        self.hub_name = hub_name
        self.node_id = node_id
        self._hub: Any = None
        self._id = uuid.uuid4().hex
        self._restarted = _was_restarted()
        self._seq = 0
        self._pending: list[tuple[Batch, asyncio.Future[Ack]]] = []
        self._pending_bytes = 0
        self._in_flight_bytes = 0
        self._room: asyncio.Event | None = None
        self._pump: asyncio.Task[None] | None = None
        self._max_bytes = config().node_buffer_bytes
        self._senders: dict[str, int] = {}  # sender -> pid
        self._flush_round = 0
        self._flushed: dict[str, int] = {}
        self._flush_event: asyncio.Event | None = None
        self._clients: dict[str, set[str]] = {}  # sender -> the client ids it logged for
        self._telemetry: asyncio.Task[None] | None = None
        self._telemetry_seq = 0
        self.telemetry_samples = 0
        self.telemetry_dropped = 0
        self.forwarded_calls = 0
        self.forwarded_batches = 0
        self.peak_bytes = 0
        self._told: dict[str, int] = {}  # senders the hub heard of, with their pids
        self._closed: list[str] = []  # said bye since the last report
        self._missing: set[str] = set()  # pid not alive at the last check
        self._gone: dict[str, int] = {}  # vanished without bye, not reported yet
        self._reports = 0
        self._watcher: asyncio.Task[None] | None = None

    def info(self) -> dict[str, Any]:
        return {
            "hub": self.hub_name,
            "node_id": self.node_id,
            "forwarded_calls": self.forwarded_calls,
            "forwarded_batches": self.forwarded_batches,
            "senders": len(self._senders),
            "held_bytes": self._pending_bytes + self._in_flight_bytes,
            "peak_bytes": self.peak_bytes,
            "max_bytes": self._max_bytes,
            "telemetry_samples": self.telemetry_samples,
            "telemetry_dropped": self.telemetry_dropped,
        }

    # ----------------------------------------------------------------- senders
    def register(self, sender: str, pid: int) -> None:
        """A new sender on this node (so that flushes ask it too)."""
        self._senders[sender] = pid

    def bye(self, sender: str) -> None:
        if self._senders.pop(sender, None) is not None:
            self._closed.append(sender)
        self._flushed.pop(sender, None)
        self._clients.pop(sender, None)
        self._missing.discard(sender)

    def _vanished(self, sender: str) -> None:
        """A sender whose process died without saying bye."""
        pid = self._senders.pop(sender, None)
        self._flushed.pop(sender, None)
        self._clients.pop(sender, None)
        self._missing.discard(sender)
        if pid is not None:
            self._gone[sender] = pid

    def _watch(self) -> None:
        """Start the sender check (from a coroutine: it needs the running loop)."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_senders())

    async def _watch_senders(self) -> None:
        while True:
            await asyncio.sleep(WATCH_POLL_S)
            try:
                await self.report_senders()
            except Exception as exc:  # the hub restarts: told again next round
                self._hub = None
                log.info("node buffer %s: could not report its senders: %r", self.node_id[:8],
                         exc)

    async def report_senders(self) -> None:
        """Check the senders' processes; tell the hub what changed since the last report."""
        for sender, pid in list(self._senders.items()):
            if _pid_alive(pid):
                self._missing.discard(sender)
            elif sender in self._missing:  # twice: a bye sent just before exit has had time
                self._vanished(sender)
            else:
                self._missing.add(sender)
        if not (self._closed or self._gone):  # pids travel with the data (NodeCall.pids)
            return
        closed, gone = list(self._closed), dict(self._gone)
        self._reports += 1
        request = self._hub_handle().request.options(max_task_retries=0)
        await request.remote(f"{self._id}:senders:{self._reports}", "node_senders",
                             (self.node_id, {}, closed, gone))
        for sender in gone:
            self._told.pop(sender, None)
            self._gone.pop(sender, None)
        for sender in closed:
            self._told.pop(sender, None)
        self._closed = self._closed[len(closed):]

    async def wait_flush_request(self, sender: str, pid: int, after_round: int) -> int:
        """Return when a flush round newer than ``after_round`` is requested."""
        self._senders[sender] = pid
        self._watch()
        while self._flush_round <= after_round:
            if self._flush_event is None or self._flush_event.is_set():
                self._flush_event = asyncio.Event()
            await self._flush_event.wait()
        return self._flush_round

    def flushed(self, sender: str, round_: int) -> None:
        self._flushed[sender] = max(round_, self._flushed.get(sender, 0))

    async def flush_senders(self, timeout: float) -> list[str]:
        """Ask every live sender on this node to ship what it holds; wait up to ``timeout``
        seconds for all of them. Returns the senders (``pid:<pid>``) that did not answer."""
        self._flush_round += 1
        round_ = self._flush_round
        if self._flush_event is not None:
            self._flush_event.set()
        deadline = time.monotonic() + timeout
        while True:
            waiting = [s for s, pid in self._senders.items()
                       if self._flushed.get(s, 0) < round_ and _pid_alive(pid)]
            if not waiting or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)  # polling the senders' answers, bounded by the deadline
        for sender, pid in list(self._senders.items()):
            if not _pid_alive(pid):
                self._vanished(sender)
        await self.flush()
        return [f"pid:{self._senders[s]}" for s in waiting if s in self._senders]

    # -------------------------------------------------------------------- data
    async def submit(self, batch: Batch, pid: int = 0) -> Ack:
        """Forward ``batch`` to the hub (merged with others); return the hub's acknowledgement."""
        if pid:
            self._senders.setdefault(batch.sender, pid)
            clients = self._clients.setdefault(batch.sender, set())
            clients.update(chunk.client_id for chunk in batch.chunks)
            clients.update(line[2] for line in batch.logs)
            self._watch()
        self._start_telemetry()
        size = batch.nbytes()
        while self._pending_bytes + self._in_flight_bytes + size > self._max_bytes and (
                self._pending or self._in_flight_bytes):
            if self._room is None or self._room.is_set():
                self._room = asyncio.Event()
            await self._room.wait()
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        self._pending_bytes += size
        self.peak_bytes = max(self.peak_bytes, self._pending_bytes + self._in_flight_bytes)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._forward_all())
        return await future

    async def call(self, request_id: str, method: str, args: tuple[Any, ...]) -> Any:
        """A worker's request/response call (artifacts, params), forwarded to the hub; a query
        (``glob``) on the hub's query threads, beside its writes."""
        from rayplex.actors.names import QUERY_GROUP
        from rayplex.actors.requests import QUERIES

        group = {"concurrency_group": QUERY_GROUP} if method in QUERIES else {}
        request = self._hub_handle().request.options(max_task_retries=0, **group)
        try:
            return await request.remote(request_id, method, args)
        except Exception:
            self._hub = None
            raise

    async def flush(self) -> None:
        """Return once everything submitted before this call has been answered by the hub."""
        while self._pending or (self._pump is not None and not self._pump.done()):
            if self._pump is not None:
                await asyncio.shield(self._pump)
            else:  # pragma: no cover - defensive
                await asyncio.sleep(0.001)

    def _hub_handle(self) -> Any:
        if self._hub is None:
            from rayplex.actors.names import get_hub

            self._hub = get_hub(self.hub_name)
        return self._hub

    async def _forward_all(self) -> None:
        while self._pending:
            items, self._pending = self._pending, []
            size = sum(batch.nbytes() for batch, _ in items)
            self._pending_bytes -= size
            self._in_flight_bytes += size
            self._seq += 1
            partials, batches = merge_partials([batch for batch, _ in items])
            pids = {b.sender: self._senders[b.sender] for b, _ in items
                    if self._told.get(b.sender) != self._senders.get(b.sender, 0)
                    and b.sender in self._senders}
            call = NodeCall(self._id, self._seq, batches, partials, ray_node=self.node_id,
                            restarted=self._restarted, sent_at=time.time(), pids=pids)
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
            finally:
                self._in_flight_bytes -= size
                if self._room is not None:
                    self._room.set()
            self._told.update(pids)
            self.forwarded_calls += 1
            self.forwarded_batches += len(items)
            for (_, future), ack in zip(items, acks, strict=True):
                if not future.done():
                    future.set_result(ack)


    # --------------------------------------------------------------- telemetry
    def _start_telemetry(self) -> None:
        if self._telemetry is None and config().telemetry_s > 0:
            self._telemetry = asyncio.get_running_loop().create_task(self._telemetry_loop())

    async def _telemetry_loop(self) -> None:
        interval = config().telemetry_s
        while True:
            await asyncio.sleep(interval)  # the sampling period
            try:
                hub = await self._hub_handle().info.remote()
                registry = (await self._hub_handle().hello.remote())[0]
                break
            except Exception as exc:  # the hub is restarting: ask again next period
                self._hub = None
                log.info("node buffer %s: telemetry waits for the hub: %r", self.node_id[:8], exc)
        sampler = TelemetrySampler(hub["logdir"] if os.path.isdir(hub["logdir"]) else None)
        node_run = f"{NODE_GROUP}/{_node_label(self.node_id)}"
        while True:
            await asyncio.sleep(interval)  # the sampling period
            now = time.time()
            by_pid = sampler.processes(sorted(set(self._senders.values())))
            processes = {client: by_pid[pid] for sender, pid in self._senders.items()
                         if pid in by_pid for client in sorted(self._clients.get(sender, ()))}
            node = sampler.node()
            step = int(now - hub["experiment_started"])
            self._telemetry_seq += 1
            try:
                ack = None
                for _ in range(2):  # once more if the groups changed meanwhile
                    batch = telemetry_batch(registry, processes, node_run, node, step, now,
                                            f"{TELEMETRY_SENDER}{self._id}", self._telemetry_seq,
                                            hub["experiment"])
                    ack = await self.submit(batch)
                    if not (ack.stale and ack.registry is not None):
                        break
                    registry = ack.registry
            except Exception as exc:  # the hub is restarting: this sample is not resent
                log.info("node buffer %s: telemetry sample dropped: %r", self.node_id[:8], exc)
                self.telemetry_dropped += 1
                continue
            assert ack is not None
            if ack.error or ack.retry or ack.stale or ack.rejected or ack.wrong_experiment:
                self.telemetry_dropped += 1
            else:
                self.telemetry_samples += 1


def _node_label(node_id: str) -> str:
    """``<ip>-<node id's first 8 hex digits>``: readable, and distinct for several Ray nodes
    on one machine."""
    try:
        import ray

        ip = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    except Exception:  # a plain object outside Ray
        ip = "local"
    return f"{ip}-{node_id[:8]}"


def _pid_alive(pid: int) -> bool:
    """Whether a process of this machine is alive (senders on this node are local)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _was_restarted() -> bool:
    """Whether Ray restarted this node buffer (its senders resend what it held)."""
    try:
        import ray

        with warnings.catch_warnings():  # Ray 2.60 reads a deprecated property inside it
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # a plain object outside an actor
        return False
