"""The worker side of one experiment: one :class:`Session` per process and experiment.

A session owns what a process needs to log into one experiment: the experiment's identity
(hub name and hub incarnation), the group registry, the byte-bounded buffer
(:mod:`rayplex.buffer`), the encoder (:mod:`rayplex.encoder`), the sender
(:mod:`rayplex.sender`), the flush thread, and the cache of Loggers. A Logger validates,
builds one item and calls :attr:`Session.put` (a scalar: :attr:`Session.put_scalar`);
request/response operations (artifacts, params) go through :meth:`Session.call`, which carries
a request id the hub applies once. What must reach the buffer before a flush (a Logger's
pending ``log()`` row) is registered with :meth:`Session.before_flush`: the session never
knows what a Logger is.

A session belongs to one experiment. Once that experiment is shut down (here; elsewhere, seen
within a tick of the flush thread when its node buffer is stopped for good, see
:mod:`rayplex.sender`; or through the hub's answer), every log call and ``flush()`` raises
:class:`~rayplex.errors.ExperimentClosedError`, and what is still queued is counted as dropped with one
warning; a new ``get_logger`` after ``rayplex.init`` makes a new session.
"""

from __future__ import annotations

import atexit
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import ray

from rayplex import actors
from rayplex.buffer import Buffer
from rayplex.config import FLUSH_REQUEST_POLL_S, NODE_BUFFER_START_S, VERIFY_EVERY_S, config
from rayplex.encoder import Encoder
from rayplex.errors import (
    ExperimentClosedError,
    FlushTimeoutError,
    HubWriteError,
    RayplexError,
    request_error,
)
from rayplex.groups import GroupRegistry
from rayplex.items import SCALAR_NBYTES
from rayplex.records import Ack
from rayplex.sender import Sender

log = logging.getLogger("rayplex")




class _FlushMarker:
    """A place in the buffer: set ``done`` once everything put before it is acknowledged, and
    answer flush round ``round`` (a ``rayplex.flush`` from elsewhere) then too."""

    __slots__ = ("done", "round")

    def __init__(self, round_: int | None = None) -> None:
        self.done = threading.Event()
        self.round = round_


class Session:
    """Buffers this process's records for one experiment and ships them in batches."""

    def __init__(self, hub_name: str) -> None:
        self.hub_name = hub_name
        self.hub = actors.get_hub(hub_name)  # a cluster look-up, not a call to the hub
        self.experiment = actors.actor_identity(self.hub)
        self.sender_id = uuid.uuid4().hex
        self.node_id = ray.get_runtime_context().get_node_id()
        cfg = config()
        self.batch_records = cfg.batch_records
        self._interval = cfg.flush_interval_s
        self._wake = threading.Event()
        self.buffer = Buffer(cfg.max_buffer_bytes, cfg.overflow,
                             cfg.spill_dir or tempfile.gettempdir(), cfg.flush_timeout_s,
                             f"{hub_name}:{self.sender_id[:8]}", wake=self._wake.set,
                             wake_bytes=max(1, min(cfg.batch_records * SCALAR_NBYTES,
                                                   cfg.max_buffer_bytes // 4)),
                             fixed_nbytes=SCALAR_NBYTES)
        known = _known_registries.get(hub_name)
        self.encoder = Encoder(known[1] if known is not None and known[0] == self.experiment
                               else GroupRegistry())
        self.log_level = logging.INFO
        self.loggers: dict[str, object] = {}
        """The Loggers made for this session, by client id (kept by :func:`rayplex.get_logger`)."""
        self._before_flush: list[Callable[[], None]] = []
        self.put: Callable[[Any, int], None] = self.buffer.put
        """Queue one item of ``nbytes`` (``put(item, nbytes)``); raises
        :class:`~rayplex.errors.ExperimentClosedError` once the experiment is gone."""
        self.put_scalar: Callable[[Any], None] = self.buffer.put_fixed
        """Queue one scalar (a plain tuple of a Scalar's fields, at ``SCALAR_NBYTES``)."""
        self.warned_groups: set[str] = set()
        self.verified_at = time.monotonic()
        self.closed: str | None = None
        """Why log calls now raise, once the experiment is gone."""
        self.counters = {"acked": 0, "records": 0, "batches": 0, "rejected": 0,
                         "wrong_experiment": 0, "dropped_at_close": 0}
        self._seq = 0
        self._stopping = False
        self._warned: set[str] = set()
        self.sender = Sender(hub_name, self.sender_id, self.node_id, lambda: self._stopping)
        self._hello_ref: Any = self.sender.hello(self.hub)
        # Wait briefly (never past the bound) for the groups and for the node buffer to know us,
        # so that a rayplex.flush()/shutdown() right after reaches this process too.
        registered = self.sender.register()
        ray.wait([self._hello_ref, registered], num_returns=2, timeout=cfg.get_logger_timeout_s)
        if self.sender.created_node_buffer:  # a new actor process: give it time to start
            ray.wait([registered], timeout=NODE_BUFFER_START_S)
        self.sender.flush_requested()
        self._learn(0)
        self._thread = threading.Thread(target=self._run, name=f"rayplex-flush-{hub_name}",
                                        daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    # ------------------------------------------------------------ caller side
    def _route_puts(self) -> None:
        """Point :attr:`put` and :attr:`put_scalar` where they go now: straight into the
        buffer while the session is open (no call of ours on the hot path; scalars with
        ``Buffer.put_fixed``), to :meth:`_closed_put` once it is closed. Called again after
        the buffer is replaced."""
        if self.closed is not None:
            self.put = self.put_scalar = self._closed_put
        else:
            self.put, self.put_scalar = self.buffer.put, self.buffer.put_fixed

    def _closed_put(self, *_: Any) -> None:
        raise ExperimentClosedError(self.closed or "the rayplex session is closed")

    def _seal(self) -> None:
        """From now on every put of this session raises: each Logger's next log call."""
        self._route_puts()

    def before_flush(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at the start of every :meth:`flush`, before the flush marker is
        queued (a Logger puts its pending ``log()`` row there)."""
        self._before_flush.append(callback)

    def check_open(self) -> None:
        """Raise :class:`~rayplex.errors.ExperimentClosedError` if the experiment is gone."""
        if self.closed is not None:
            raise ExperimentClosedError(self.closed)

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything put before this call is written by the hub.

        Raises:
            ExperimentClosedError: if the experiment was shut down.
            RayplexError: if a spill file was lost.
            HubWriteError: if the hub reports it cannot write (the data is kept and resent).
            FlushTimeoutError: if the hub did not acknowledge within ``timeout`` seconds.
        """
        self.check_open()
        for callback in list(self._before_flush):
            callback()
        marker = _FlushMarker()
        self.buffer.put_marker(marker)
        self._wake.set()
        limit = config().flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        failures_before = self.sender.failures
        while not marker.done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self.closed is not None:
                raise ExperimentClosedError(self.closed)
            if self.sender.failing is not None and self.sender.failures > failures_before:
                raise HubWriteError(
                    f"rayplex hub {self.hub_name!r} cannot write: {self.sender.failing}; the "
                    "data is kept and resent until it can")
            if time.monotonic() >= deadline:
                raise FlushTimeoutError(
                    f"rayplex hub {self.hub_name!r} did not acknowledge within {limit:.0f} s; "
                    "the data stays buffered and is resent when the hub is reachable")
        if self.closed is not None:  # e.g. the hub answered that the experiment is gone
            raise ExperimentClosedError(self.closed)
        error = self.buffer.take_error()
        if error is not None:
            raise RayplexError(f"rayplex: {error}")

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """A request/response operation at the hub (artifacts, params), applied once.

        Raises:
            ValueError, FileNotFoundError, ...: what the hub reports for this request.
        """
        self.check_open()
        request_id = f"{self.sender_id}:{uuid.uuid4().hex}"
        limit = config().flush_timeout_s if timeout is None else timeout
        ok, result = self.sender.call(request_id, method, args, limit)
        if ok:
            return result
        kind, message = result
        raise request_error(kind, message)

    def close(self, reason: str | None = None, timeout: float | None = None) -> None:
        """Flush (unless ``reason`` says the experiment is gone), then stop; safe twice."""
        if self._stopping:
            return
        try:
            if reason is None and self.closed is None:
                self.flush(timeout)
        finally:
            if self.closed is None:
                self.closed = reason or (
                    f"the rayplex session of experiment {self.hub_name!r} is closed; call "
                    "rayplex.get_logger again")
            self._seal()
            self._stopping = True
            self._wake.set()
            self.sender.bye()
            self.buffer.close()

    def stats(self) -> dict[str, int]:
        counters = dict(self.counters)
        counters.update(self.sender.counters)
        counters.update(self.buffer.counters)
        counters["dropped"] = (counters.get("dropped", 0) + counters["wrong_experiment"]
                               + counters["dropped_at_close"])
        return counters

    def _at_exit(self) -> None:
        try:
            self.close(timeout=min(10.0, config().flush_timeout_s))
        except Exception as exc:  # never raise at interpreter exit
            log.warning("rayplex: could not flush at exit: %s", exc)

    # -------------------------------------------------------- flush thread
    def _learn(self, timeout: float) -> None:
        """Adopt the registry and log level from the hub's answer to hello, waiting at
        most ``timeout`` (0: only if it is there already)."""
        if self._hello_ref is None:
            return
        try:
            ready, _ = ray.wait([self._hello_ref], timeout=timeout)
            if not ready:
                return
            registry, level = ray.get(ready[0])
        except Exception as exc:  # the node buffer restarted: ask again later
            log.info("rayplex: could not learn the groups yet: %s", exc)
            self._hello_ref = None
            return
        self._hello_ref = None
        from rayplex.textlog import parse_level

        self.log_level = parse_level(level)
        if registry.stamp != self.encoder.registry.stamp:
            self.encoder.adopt(registry)

    def _run(self) -> None:
        # Ticks often enough to answer a flush request from elsewhere within ~0.1 s (a local
        # check, no call), ships every flush interval, or at once when woken.
        tick = min(self._interval, FLUSH_REQUEST_POLL_S)
        last_ship = time.monotonic()
        while not self._stopping:
            woken = self._wake.wait(tick)
            self._wake.clear()
            try:
                asked = self._take_flush_request()
                if self.sender.ended is not None:
                    self._end(self.sender.ended, 0)
                    return
                if not (woken or asked or time.monotonic() - last_ship >= self._interval):
                    continue
                last_ship = time.monotonic()
                self._learn(0)
                self._ship_pending()
            except Exception:  # keep the thread alive whatever happens
                log.exception("rayplex: unexpected error in the flush thread")

    def _take_flush_request(self) -> bool:
        """Mark the buffer's end for a flush round asked from elsewhere, if one came: the round
        is answered once what was logged before it is acknowledged, not when the buffer is
        empty (which a process that logs all the time never is)."""
        round_ = self.sender.flush_requested()
        if round_ is None:
            return False
        self.buffer.put_marker(_FlushMarker(round_))
        return True

    def _ship_pending(self) -> None:
        while not self._stopping:
            buffer = self.buffer  # release into the buffer the items came from
            items, markers, nbytes = buffer.drain(self.batch_records)
            if not items and not markers:
                return
            if items:
                try:
                    self._ship(items)
                finally:
                    buffer.release(nbytes)
            for marker in markers:
                assert isinstance(marker, _FlushMarker)
                marker.done.set()
                if marker.round is not None:
                    self.sender.flushed(marker.round)
            self._take_flush_request()  # a round asked meanwhile is answered at its own place

    def _ship(self, items: list[Any]) -> None:
        self._seq += 1
        batch = self.encoder.encode(items, self.sender_id, self._seq, self.experiment)
        while True:
            ack = self.sender.send(batch)
            if ack is None and self.sender.ended is not None:
                self._end(self.sender.ended, len(items))
                return
            if ack is None:  # closed while the hub was away: counted, never silent
                self.counters["dropped_at_close"] += len(items)
                self._warn_once("close", f"rayplex: {len(items)} records of experiment "
                                f"{self.hub_name!r} were not delivered before it closed")
                return
            if ack.stale:
                self.encoder.adopt(ack.registry)
                batch = self.encoder.encode(items, self.sender_id, self._seq, self.experiment)
                continue
            break
        self._handle(ack, batch.record_count())

    def _handle(self, ack: Ack, records: int) -> None:
        if ack.wrong_experiment:  # refused by the hub that now has that name
            self.counters["wrong_experiment"] += records
            self._end(f"experiment {self.hub_name!r} was shut down; call rayplex.get_logger "
                      "again", 0)
            return
        if ack.rejected:
            self.counters["rejected"] += ack.rejected
            log.error("rayplex: the hub quarantined a batch of %d records it cannot write "
                      "(see logs/all.log and .rayplex/quarantine/)", ack.rejected)
            return
        self.counters["acked"] += 1
        self.counters["batches"] += 1
        self.counters["records"] += records
        if ack.registry is not None and ack.registry.stamp != self.encoder.registry.stamp:
            self.encoder.adopt(ack.registry)

    def _end(self, reason: str, undelivered: int) -> None:
        """The experiment was shut down elsewhere: log calls and ``flush()`` raise from now on,
        and what is still queued here (with the ``undelivered`` records of the batch in hand)
        can never be delivered: counted as dropped, with one warning. Runs in the flush
        thread, which then stops."""
        self.closed = self.closed or reason
        self._seal()
        self._stopping = True
        lost = undelivered
        while True:
            items, markers, nbytes = self.buffer.drain(1 << 30)
            if not items and not markers:
                break
            lost += len(items)
            self.buffer.release(nbytes)
            for marker in markers:
                assert isinstance(marker, _FlushMarker)
                marker.done.set()  # its flush() raises: the session is closed
        self.counters["dropped_at_close"] += lost
        dropped = self.stats()["dropped"]
        if dropped:
            self._warn_once("ended", f"rayplex: {reason}; {dropped} records logged to it were "
                            "not delivered (stats()['dropped'])")
        else:  # everything was delivered: an ordinary end, nothing to warn about
            log.info("rayplex: %s", reason)
        self.buffer.close()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


_sessions: dict[str, Session] = {}
_lock = threading.Lock()
_used: set[str] = set()
"""Experiments this process initialised or logged to: what ``rayplex.shutdown()`` stops."""




def session_for(hub_name: str, verify: bool = True) -> Session:
    """This process's session for experiment ``hub_name``, made anew if the old one was closed
    or the experiment's hub was replaced since (worker processes outlive experiments; checked
    with a cluster look-up at most every 0.2 s, unless ``verify`` is false)."""
    session = _sessions.get(hub_name)
    if session is not None and session.closed is None:
        if not verify or time.monotonic() - session.verified_at < VERIFY_EVERY_S:
            return session
        if not _replaced(session):
            session.verified_at = time.monotonic()
            return session
    with _lock:
        session = _sessions.get(hub_name)
        if session is None or session.closed is not None or _replaced(session):
            if session is not None:
                session.close(reason=f"experiment {hub_name!r} was shut down; call "
                              "rayplex.get_logger again")
            session = Session(hub_name)
            _sessions[hub_name] = session
            _used.add(hub_name)
        return session


def _replaced(session: Session) -> bool:
    """Whether the named hub is now another actor than the one the session belongs to
    (a cluster look-up, not a call to the hub)."""
    try:
        return actors.actor_identity(actors.get_hub(session.hub_name)) != session.experiment
    except Exception:
        return True


_known_registries: dict[str, tuple[str, GroupRegistry]] = {}


def remember_registry(hub_name: str, registry: GroupRegistry) -> None:
    """The driver registered groups: use them in this process's session (now or when made)."""
    try:
        experiment = actors.actor_identity(actors.get_hub(hub_name))
    except Exception:
        return
    _known_registries[hub_name] = (experiment, registry)
    session = _sessions.get(hub_name)
    if session is not None and session.experiment == experiment:
        session.encoder.adopt(registry)


def existing_session(hub_name: str) -> Session | None:
    return _sessions.get(hub_name)


def mark_used(hub_name: str) -> None:
    _used.add(hub_name)


def used_experiments() -> list[str]:
    return sorted(_used)


def end_session(hub_name: str, reason: str) -> None:
    """Close this process's session of ``hub_name`` for good: its Loggers raise from now on."""
    _used.discard(hub_name)
    session = _sessions.pop(hub_name, None)
    if session is not None:
        session.close(reason=reason)
