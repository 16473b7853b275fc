"""The sender: ships one batch to this node's buffer actor and returns the hub's answer,
retrying with back-off (:class:`rayplex.nested.Backoff`: 0.05 s doubling to
``RAYPLEX_RETRY_MAX_BACKOFF_S``) until an answer comes or the session is closed. It also
carries the session's other node-buffer calls (hello, flush requests, request/response
calls), so one module owns that conversation.

It is also how a process learns that its experiment was shut down elsewhere: the node buffer
it talks to restarts forever, and only ``rayplex.shutdown`` kills it for good. So once the
node buffer that answered it is gone and its name is free, or held by another actor (a new
experiment of the same name), the experiment is over: :attr:`Sender.ended` says why, and the
sender never makes or joins another node buffer. Every session keeps a call waiting at its
node buffer (:meth:`Sender.flush_requested`), so the flush thread sees that death within a
tick, busy or idle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from rayplex import actors
from rayplex.config import NAMESPACE, SENDER_WAIT_SLICE_S
from rayplex.errors import RayplexError
from rayplex.nested import Backoff
from rayplex.records import Ack, Batch

log = logging.getLogger("rayplex")



class Sender:
    """Talks to the node buffer of one experiment on this node."""

    def __init__(self, hub_name: str, sender_id: str, node_id: str,
                 stopped: Callable[[], bool]) -> None:
        self.hub_name = hub_name
        self.sender_id = sender_id
        self.node_id = node_id
        self.pid = os.getpid()
        self._stopped = stopped
        self._node_buffer: Any = None
        self._lock = threading.Lock()
        self.failing: str | None = None
        """The hub's last write error, until a batch is written again."""
        self.failures = 0
        self.counters = {"sent": 0, "retried": 0}
        self._flush_ref: Any = None
        self._flush_ref_id: str | None = None
        self.created_node_buffer = False
        """Whether this sender started its node's buffer (which then takes a moment to run)."""
        self._flush_round = 0
        self._node_buffer_id: str | None = None
        """The actor id behind ``_node_buffer`` (the same across restarts)."""
        self._known_id: str | None = None
        """The actor id of the node buffer that answered this sender: the experiment's, until
        it is stopped for good. (A handle that never answered may be the loser of two senders
        creating the node buffer at once: its actor dies and the look-up finds the winner.)"""
        self._unconfirmed: list[tuple[Any, str]] = []
        """``(ObjectRef, actor id)`` of a registration not answered yet."""
        self.ended: str | None = None
        """Why the experiment is over (its node buffer was stopped for good), once it is."""

    def node_buffer(self) -> Any:
        """The node buffer's handle (created on this node if needed; never blocks on the hub).

        Raises:
            RayplexError: if the experiment was shut down (see the module docstring).
        """
        with self._lock:
            if self.ended is not None:
                raise RayplexError(self.ended)
            if self._node_buffer is None:
                try:
                    handle = ray.get_actor(actors.node_buffer_name(self.hub_name, self.node_id),
                                           namespace=NAMESPACE)
                except ValueError:
                    if self._known_id is not None:
                        raise self._end() from None
                    self.created_node_buffer = True
                    handle = actors.get_or_create_node_buffer(self.hub_name, self.node_id)
                identity = actors.actor_identity(handle)
                if self._known_id not in (None, identity):
                    raise self._end()
                self._node_buffer, self._node_buffer_id = handle, identity
            return self._node_buffer

    def _answered(self, identity: str | None) -> None:
        """The node buffer ``identity`` answered a call: it is this experiment's."""
        if self._known_id is None and identity is not None:
            self._known_id = identity
            self._unconfirmed = []

    def _confirm(self) -> None:
        """Take a registration's answer, if it came, as the first sign of the node buffer."""
        for ref, identity in list(self._unconfirmed):
            if ray.wait([ref], timeout=0)[0]:
                self._unconfirmed.remove((ref, identity))
                with contextlib.suppress(Exception):
                    ray.get(ref)
                    self._answered(identity)

    def _end(self) -> RayplexError:
        self.ended = (f"experiment {self.hub_name!r} was shut down; call rayplex.get_logger "
                      "again after rayplex.init")
        self._node_buffer = self._flush_ref = None
        return RayplexError(self.ended)

    def _forget(self) -> None:
        with self._lock:
            self._node_buffer = None
            self._flush_ref = None

    def hello(self, hub: Any) -> Any:
        """An ``ObjectRef`` of ``(registry, log level name)``: a read-only query the caller
        waits for only briefly (the data path never waits on the hub)."""
        return hub.hello.remote()

    def register(self) -> Any:
        """An ``ObjectRef`` answered once the node buffer knows this sender."""
        handle = self.node_buffer()
        ref = handle.register.remote(self.sender_id, self.pid)
        self._unconfirmed.append((ref, actors.actor_identity(handle)))
        return ref

    def send(self, batch: Batch) -> Ack | None:
        """The hub's acknowledgement of ``batch``; ``None`` if the session stopped or the
        experiment ended (:attr:`ended`) first."""
        backoff = Backoff()
        attempts = 0
        pending: Any = None
        pending_id: str | None = None
        while not self._stopped() and self.ended is None:
            try:
                if pending is None:  # one submission at a time: a slow hub is waited for,
                    attempts += 1    # never answered with a pile of resends
                    batch.attempt = attempts
                    self.counters["sent"] += 1
                    pending = self.node_buffer().submit.remote(batch, self.pid)
                    pending_id = self._node_buffer_id
                ack: Ack = ray.get(pending, timeout=SENDER_WAIT_SLICE_S)
                pending = None
                self._answered(pending_id)
            except ray.exceptions.GetTimeoutError:
                continue  # still in flight: keep waiting (and notice a close)
            except Exception as exc:
                pending = None
                if isinstance(exc, ray.exceptions.RayActorError):
                    self._forget()  # dead for good, or restarting: the look-up tells
                with contextlib.suppress(RayplexError):
                    self.node_buffer()
                if self.ended is not None:
                    break
                self.counters["retried"] += 1
                if isinstance(exc, ray.exceptions.RayActorError) and attempts == 1:
                    log.info("rayplex: reconnecting to the node buffer after %s", exc)
                elif attempts == 2 or attempts % 20 == 0:
                    log.warning("rayplex: batch %d not acknowledged (%s); retrying", batch.seq, exc)
                if isinstance(exc, ValueError):
                    self._forget()
                backoff.sleep()  # back-off between resends, not synchronisation
                continue
            if ack.error is not None:
                self.failing = ack.error
                self.failures += 1
                self.counters["retried"] += 1
                backoff.sleep()
                continue
            if ack.retry:  # the hub asked for a resend (e.g. to apply partials exactly once)
                self.counters["retried"] += 1
                continue
            self.failing = None
            return ack
        return None

    def call(self, request_id: str, method: str, args: tuple[Any, ...], timeout: float) -> Any:
        """A request/response call to the hub through the node buffer, retried with the same
        ``request_id`` until answered (the hub applies each request once)."""
        deadline = time.monotonic() + timeout
        backoff = Backoff()
        while True:
            try:
                ref = self.node_buffer().call.remote(request_id, method, args)
                identity = self._node_buffer_id
                answer = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                self._answered(identity)
                return answer
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                self._forget()
                if time.monotonic() >= deadline:
                    from rayplex.errors import FlushTimeoutError

                    raise FlushTimeoutError(
                        f"rayplex hub {self.hub_name!r} did not answer {method} within "
                        f"{timeout:.0f} s") from exc
                backoff.sleep()

    def flush_requested(self) -> int | None:
        """The round of a flush request from ``rayplex.flush``/``shutdown`` elsewhere, if one
        came since the last call (checked without waiting)."""
        try:
            self._confirm()
            if self._flush_ref is None:
                nb = self.node_buffer()
                self._flush_ref = nb.wait_flush_request.remote(self.sender_id, self.pid,
                                                               self._flush_round)
                self._flush_ref_id = self._node_buffer_id
                return None
            ready, _ = ray.wait([self._flush_ref], timeout=0)
            if not ready:
                return None
            self._flush_round = int(ray.get(ready[0]))
            self._flush_ref = None
            self._answered(self._flush_ref_id)
            return self._flush_round
        except ray.exceptions.RayActorError:  # restarted, or stopped for good: look it up now
            self._forget()
            with contextlib.suppress(RayplexError):
                self.node_buffer()
            return None
        except Exception:  # ask again next time (the experiment's end is RayplexError here)
            self._flush_ref = None
            return None

    def flushed(self, round_: int) -> None:
        """Tell the node buffer that everything logged before flush round ``round_`` is acked."""
        try:
            self.node_buffer().flushed.remote(self.sender_id, round_)
        except Exception as exc:  # pragma: no cover - best effort
            log.info("rayplex: could not report flush round %d: %s", round_, exc)

    def bye(self) -> None:
        """Unregister from the node buffer (at close), so flushes stop waiting for us."""
        try:
            if self._node_buffer is not None:
                self._node_buffer.bye.remote(self.sender_id)
        except Exception:  # pragma: no cover - best effort at exit
            pass
