"""The hub: one per experiment, the only process that writes under ``logdir``.

It keeps the node buffers' write path (:meth:`Hub.write_node`), the summary ticker, the group
registry and the dispatch of requests; everything else is delegated: the transactional writer,
the only client of the journal (:mod:`rayplex.actors.writer`), the summary schedule
(:mod:`rayplex.actors.summaries`), the registry kept as data (:mod:`rayplex.actors.state`), the
request/response operations applied once per request id (:mod:`rayplex.actors.requests`) and
the heartbeats and signals (:mod:`rayplex.actors.control`). It never routes: workers route and
encode with the registry stamped on their batches, and a batch with an old stamp is answered
with the current registry for its sender to encode again.

This is a plain class; :func:`rayplex.actors.get_or_create_hub` makes it a Ray actor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from rayplex.actors.admission import UnregisteredGroups, admit
from rayplex.actors.control import ControlBook
from rayplex.actors.faults import FaultWatch
from rayplex.actors.names import QUERY_GROUP, ray_context
from rayplex.actors.requests import QUERIES, REQUESTS, RequestContext, answer
from rayplex.actors.summaries import SummaryBook
from rayplex.actors.watching import HubWatch
from rayplex.actors.writer import HubWriter
from rayplex.artifacts import ArtifactStore
from rayplex.config import STALL_S, config
from rayplex.errors import HubWriteError
from rayplex.groups import GroupRegistry, GroupSpec
from rayplex.layout import artifacts_dir, control_path
from rayplex.records import Ack, NodeCall
from rayplex.rules import check_client_id, check_signal

__all__ = ["QUERIES", "QUERY_GROUP", "Hub"]

log = logging.getLogger("rayplex.hub")


class Hub:
    """One experiment's hub: the node buffers' writes, the summary ticker, the group registry
    and the requests, over one :class:`~rayplex.actors.writer.HubWriter`."""

    def __init__(self, name: str, logdir: str, log_level: str = "INFO") -> None:
        self.name = name
        self.logdir = logdir
        self.log_level = log_level
        self.experiment = ray_context("get_actor_id")
        self.started = time.time()
        # claims the logdir (or raises LogdirConflictError) before it reads the journal
        self.writer = HubWriter(logdir, self.experiment, log_level, name)
        self.experiment_started = self.writer.experiment_started(self.started)
        self.lock = self.writer.lock
        self.registry = self.writer.load_registry() or GroupRegistry(epoch=os.urandom(8).hex())
        assert self.writer.state.book is not None
        self.summaries: SummaryBook = self.writer.state.book
        self.artifacts = ArtifactStore(artifacts_dir(logdir))
        self.control = ControlBook(control_path(logdir))
        self.context = RequestContext(self.writer, self.artifacts, self.control,
                                      lambda: self.registry, self._senders)
        self.watching = HubWatch(name, logdir, self.writer, self.control)
        self.calls = 0
        self.unregistered = UnregisteredGroups()  # named once each in logs/all.log
        self.faults = FaultWatch(ray_context("get_node_id"))
        undone = self.writer.state.undone
        if undone:
            self.writer.hub_line(logging.WARNING, f"restarted: undid an unfinished write in "
                                 f"{len(undone)} files; their senders resend it")
        self._stop = threading.Event()  # set by close(): the ticker ends
        self._ticker = threading.Thread(target=self._tick, name="rayplex-summaries", daemon=True)
        self._ticker.start()

    # ----------------------------------------------------------------- summaries
    def _tick(self) -> None:
        """Write the summaries that are ready (every live worker moved past the step)."""
        period = max(0.05, min(0.2, config().flush_interval_s / 4))
        last = time.monotonic()
        while not self._stop.wait(period):
            last = self._tick_once(last, period)

    def _tick_once(self, last: float, period: float) -> float:
        """One tick; ``last`` is when the previous one ended. A tick much later than its period
        means this process was stalled (stopped, swapping): calls queued meanwhile may hold
        first partials, so the book is disturbed before anything is written."""
        try:
            with self.lock:
                self._hold_if(time.monotonic() - last > period + STALL_S)
                self._write_summaries(force=False)
                self.watching.tick()
        except OSError:
            pass  # noted by the writer; retried next tick
        except Exception:
            log.exception("hub %s: writing summaries failed", self.name)
        return time.monotonic()

    def _hold_if(self, fault: bool) -> None:
        """A fault seen now: senders may be resending, so summaries wait for them."""
        if fault:
            self.summaries.disturbed(time.time())

    def _write_summaries(self, force: bool, quiet: bool = True) -> None:
        with self.lock:
            due = self.summaries.due(time.time(), force=force, quiet=quiet)
            self.writer.write_summaries(due, self.registry)

    # ----------------------------------------------------------------- control
    def info(self) -> dict[str, Any]:
        """What ``rayplex.status()`` shows."""
        return {"name": self.name, "logdir": self.logdir, "experiment": self.experiment,
                "pid": os.getpid(), "started": self.started,
                "experiment_started": self.experiment_started, "clients": len(self.writer.clients),
                "calls": self.calls, "log_level": self.log_level, "runs": self.writer.pool.runs(),
                "problem": self.writer.problem, "summaries_refused": self.summaries.refused,
                "watch": self.watching.info(),
                **self.writer.counters}

    def hello(self) -> tuple[GroupRegistry, str]:
        """What a new session needs: the groups and the text-log level."""
        return self.registry, self.log_level

    def register_group(self, spec: GroupSpec) -> GroupRegistry:
        """Add or replace a group; returns the new registry."""
        with self.lock:
            self.registry = self.registry.with_group(spec)
            self.writer.save_registry(self.registry)
        return self.registry

    def watch(self, rule: dict[str, Any]) -> list[str]:
        """Add (or replace, by name) a watch rule given as :func:`rayplex.watch.rule_to_json`
        data, kept in ``.rayplex/watch.json`` for the next incarnation; returns the names of
        the rules watched.

        Raises:
            ValueError: if ``rule`` is not a valid rule.
        """
        with self.lock:
            return self.watching.add_rule(rule)

    def client_states(self) -> dict[str, str]:
        """``{client: running | finished | silent | crashed}`` as the watch rules see them."""
        with self.lock:
            return self.watching.book.states()

    def _senders(self, node: str, new: dict[str, int], closed: list[str],
                 gone: dict[str, int]) -> None:
        """A node buffer's report on the processes logging through it (the writer lock is
        held: it comes through :meth:`request`)."""
        self.watching.senders(node, new, closed, gone)

    def flush(self) -> None:
        """Write every summary whose step every live worker summarised, and flush every file
        (an explicit flush does not wait for the quiet time).

        Raises:
            HubWriteError: the logdir was deleted or replaced under this hub.
        """
        lost = self.writer.lost()
        if lost is not None:
            raise HubWriteError(lost)
        self._write_summaries(force=False, quiet=False)
        self.writer.flush()

    def close(self) -> None:
        """Write every pending summary, flush and close every file, and give the logdir up."""
        self._stop.set()
        self.watching.close()
        with self.lock:
            if self.writer.lost() is None:
                self._write_summaries(force=True)
                self.writer.compact()
            self.writer.close()

    # -------------------------------------------------------------------- data
    def write_node(self, call: NodeCall) -> list[Ack]:
        """A node buffer's call: write its new batches (and the partials merged from them)
        as one journalled transaction; answer every batch."""
        with self.lock:
            lost = self.writer.lost()
            if lost is not None:
                return [Ack(b.sender, b.seq, error=lost) for b in call.batches]
            started = time.monotonic()
            self._hold_if(self.faults.before(call, time.time()))  # before any of it applies
            self.calls += 1
            admitted = admit(call, self.writer, self.registry, self.experiment)
            answers, writable = admitted.answers, admitted.writable
            # before the write: a replay of the call finds its alerts journalled
            self.watching.observe(writable, call.ray_node, call.pids)
            for batch, ack in self.writer.write_or_quarantine(writable, admitted.partials,
                                                              self.registry.stamp):
                answers[(batch.sender, batch.seq)] = ack
            for group in self.unregistered.new(writable, self.registry.groups):
                self.writer.hub_line(logging.WARNING, f"group {group!r} is not registered; its "
                                     "clients are routed as a normal group (register it with "
                                     "hub.register_*_group in the driver)")
            self._hold_if(self.faults.after(answers.values(), time.monotonic() - started))
            lost = self.writer.lost()
            if lost is not None:  # deleted meanwhile: acknowledge nothing written into it
                return [Ack(b.sender, b.seq, error=lost) for b in call.batches]
            return [answers[(b.sender, b.seq)] for b in call.batches]

    # ---------------------------------------------------------------- requests
    def request(self, request_id: str, method: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """Apply one request/response operation (:data:`~rayplex.actors.requests.REQUESTS`)
        once per ``request_id`` (a replay answers without applying it again). Returns
        ``(True, result)`` or ``(False, (kind, text))``.

        A query (:data:`~rayplex.actors.requests.QUERIES`) only reads: it runs without the
        writer lock, on the hub's :data:`~rayplex.actors.requests.QUERY_GROUP` threads when
        sent there, and is bounded in entries and seconds.
        """
        entry = REQUESTS.get(method)
        if entry is None:
            return False, ("ValueError", f"unknown hub request {method!r}")
        if entry.query:
            return answer(entry, self.context, request_id, args)
        with self.lock:
            lost = self.writer.lost()
            if lost is not None:
                return False, ("OSError", lost)
            if self.writer.applied(request_id):
                return True, entry.replay(self.context, *args) if entry.replay else None
            started = time.monotonic()
            try:
                answered = answer(entry, self.context, request_id, args)
            finally:  # calls queued behind a long request
                self._hold_if(self.faults.after((), time.monotonic() - started))
            lost = self.writer.lost()
            if lost is not None:  # deleted meanwhile: what it wrote is gone
                return False, ("OSError", lost)
            return answered

    def signal(self, client: str, sig: str) -> list[str]:
        """Queue signal ``sig`` (``"stop"``, ``"pause"``, ...) for the next ``ping`` of
        ``client``; returns the signals pending for it."""
        check_client_id(client)
        check_signal(sig)
        with self.lock:
            lost = self.writer.lost()
            if lost is not None:
                raise HubWriteError(lost)
            return self.control.signal(client, sig)

    # ------------------------------------------------------------- forwarding
    def committed_sizes(self) -> dict[str, int]:
        """What a forwarder may read: :meth:`HubWriter.committed_sizes
        <rayplex.actors.writer.HubWriter.committed_sizes>`."""
        return self.writer.committed_sizes()

    def committed_files(self) -> dict[str, int]:
        """What the uploader may ship: :meth:`HubWriter.committed_files
        <rayplex.actors.writer.HubWriter.committed_files>`."""
        return self.writer.committed_files()

    def open_event_files(self) -> list[str]:
        """The event files open now: :meth:`HubWriter.open_event_files
        <rayplex.actors.writer.HubWriter.open_event_files>`."""
        return self.writer.open_event_files()

    def forwarder_line(self, level: int, message: str) -> None:
        """A forwarder's warning, in ``logs/all.log`` as the hub's own line."""
        self.writer.hub_line(level, str(message)[:2000])

