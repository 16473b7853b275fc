"""The worker side of the data path: one :class:`Transport` per process and experiment.

Loggers append small tuples to the transport's queue and return. A background thread drains
the queue every flush interval (or sooner when it fills), encodes the records into framed
TensorBoard events, and ships them as one :class:`~rayplex.records.Batch` to this node's
:class:`~rayplex.actors.node_buffer.NodeBuffer`. The batch is kept and resent with back-off
until the hub acknowledges it; ``(sender, seq)`` lets the hub drop duplicates.

``flush()`` puts a marker in the queue and waits until the batch holding everything before it
has been acknowledged: a barrier, not a hint.
"""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
import threading
import time
import uuid
from array import array
from collections import deque
from typing import Any

import cloudpickle
import numpy as np
import ray

from rayplex.config import config
from rayplex.encode import (
    ScalarTemplate,
    event_record,
    scalar_records,
    scalar_tail,
    tag_header,
)
from rayplex.errors import FlushTimeoutError, HubWriteError
from rayplex.groups import GroupRegistry, Route
from rayplex.records import Ack, Batch, Chunk

log = logging.getLogger("rayplex")

SCALAR = 0
VALUE = 1  # a pre-encoded Summary.Value without its tag
FIXED_VALUE = 2  # like VALUE, but written with the tag as given into a given run (not routed)
LOGLINE = 3  # a text-log line (a textlog.WireLine tuple)
PARTIAL = 4  # a records.Partial of store_metrics statistics


class _FlushMarker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Transport:
    """Buffers this process's records for one experiment and ships them in batches."""

    def __init__(self, hub_name: str) -> None:
        from rayplex.actors import get_hub

        self.hub_name = hub_name
        self.sender = uuid.uuid4().hex
        self._hub = get_hub(hub_name)  # raises HubNotFoundError early, at get_logger
        self.registry: GroupRegistry = ray.get(self._hub.get_registry.remote())
        self._registry_time = time.monotonic()
        self.log_level = _hub_log_level(self._hub)
        self.node_id = ray.get_runtime_context().get_node_id()
        self._node_buffer: Any = None
        self.queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._seq = 0
        self._routes: dict[str, Route] = {}
        self._tails: dict[tuple[str, str], bytes] = {}
        self._tag_fields: dict[tuple[str, str], bytes] = {}
        cfg = config()
        self._interval = cfg.flush_interval_s
        self.batch_records = cfg.batch_records
        self.max_buffer_records = cfg.max_buffer_records
        self.overflow = cfg.overflow
        self.counters = {"sent": 0, "acked": 0, "retried": 0, "records": 0, "batches": 0,
                         "spilled": 0, "dropped": 0, "replayed": 0}
        self.failing: str | None = None  # the hub's last write error, until a batch succeeds
        self.failures = 0  # write errors reported by the hub so far
        self._spills: deque[str] = deque()
        self._spill_dir = cfg.spill_dir or tempfile.gettempdir()
        self._queue_lock = threading.Lock()
        self._overflow_warned = False
        self._thread = threading.Thread(
            target=self._run, name=f"rayplex-flush-{hub_name}", daemon=True
        )
        self._thread.start()
        atexit.register(self._at_exit)

    # ------------------------------------------------------------ caller side
    def put(self, item: tuple[Any, ...]) -> None:
        queue = self.queue
        queue.append(item)
        if len(queue) >= self.batch_records:
            if not self._wake.is_set():  # Event.set() takes a lock: once per wake is enough
                self._wake.set()
            if len(queue) >= self.max_buffer_records:
                self._wait_for_room()

    def _wait_for_room(self) -> None:
        """The buffer is full (the hub is slow or away): apply the overflow policy."""
        if not self._overflow_warned:
            self._overflow_warned = True
            log.warning("rayplex: buffer of %d records full (hub %r slow or unreachable); "
                        "overflow policy %r", self.max_buffer_records, self.hub_name, self.overflow)
        if self.overflow == "block":
            deadline = time.monotonic() + config().flush_timeout_s
            while len(self.queue) >= self.max_buffer_records and time.monotonic() < deadline:
                self._wake.set()
                time.sleep(0.001)
        elif self.overflow == "drop_oldest":
            with self._queue_lock:
                self._take_front(len(self.queue) - self.max_buffer_records // 2, "dropped")
        else:
            with self._queue_lock:
                items = self._take_front(len(self.queue) - self.max_buffer_records // 2, "spilled")
                if items:
                    self._spill(items)

    def _take_front(self, count: int, counter: str) -> list[Any]:
        """Pop up to ``count`` of the oldest records, leaving flush markers queued."""
        items: list[Any] = []
        markers: list[Any] = []
        queue = self.queue
        while len(items) < count and queue:
            item = queue.popleft()
            (markers if type(item) is _FlushMarker else items).append(item)
        # Markers go back in front, in order: whatever was taken is sent (or dropped) before
        # any of them is answered, so each still follows everything logged before it.
        queue.extendleft(reversed(markers))
        self.counters[counter] += len(items)
        return items

    def _spill(self, items: list[Any]) -> None:
        fd, path = tempfile.mkstemp(prefix=f"rayplex-spill-{self.sender[:8]}-", suffix=".pkl",
                                    dir=self._spill_dir)
        with os.fdopen(fd, "wb") as f:
            cloudpickle.dump(items, f)
        self._spills.append(path)

    def route(self, client_id: str) -> Route:
        """The route of ``client_id`` under the registry this process knows."""
        route = self._routes.get(client_id)
        if route is None:
            route = self.registry.route(client_id)
            self._routes[client_id] = route
        return route

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything put before this call is written by the hub.

        Raises:
            FlushTimeoutError: if the hub did not acknowledge within ``timeout`` seconds.
        """
        if self._closed:
            return
        marker = _FlushMarker()
        self.queue.append(marker)
        self._wake.set()
        limit = config().flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        failures_before = self.failures
        while not marker.done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self.failing is not None and self.failures > failures_before:
                raise HubWriteError(
                    f"rayplex hub {self.hub_name!r} cannot write: {self.failing}; the data is "
                    "kept and resent until it can"
                )
            if time.monotonic() >= deadline:
                break
        if not marker.done.is_set():
            raise FlushTimeoutError(
                f"rayplex hub {self.hub_name!r} did not acknowledge within {limit:.0f} s; the "
                "data stays buffered and is resent when the hub is reachable"
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the background thread; safe to call twice."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._wake.set()

    def _at_exit(self) -> None:
        try:
            self.close(timeout=min(10.0, config().flush_timeout_s))
        except Exception as exc:  # never raise at interpreter exit
            log.warning("rayplex: could not flush at exit: %s", exc)

    # -------------------------------------------------------- flush thread
    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self._ship_pending()
            except Exception:  # keep the thread alive whatever happens
                log.exception("rayplex: unexpected error in the flush thread")

    def _ship_pending(self) -> None:
        while self._spills or self.queue:
            with self._queue_lock:  # decide under the lock: a spill may be under way
                spilled = bool(self._spills)
                if not spilled:
                    items, markers = self._drain()
            if spilled:  # spilled records are older than anything still queued
                self._replay_spill()
                continue
            if items:
                self._send(self._encode(items))
            for marker in markers:
                marker.done.set()

    def _replay_spill(self) -> None:
        path = self._spills[0]
        with open(path, "rb") as f:
            items = cloudpickle.load(f)
        for start in range(0, len(items), self.batch_records):
            self._send(self._encode(items[start:start + self.batch_records]))
        self.counters["replayed"] += len(items)
        self._spills.popleft()
        os.unlink(path)

    def _drain(self) -> tuple[list[Any], list[_FlushMarker]]:
        items: list[Any] = []
        markers: list[_FlushMarker] = []
        popleft = self.queue.popleft
        limit = self.batch_records
        while len(items) < limit:
            try:
                item = popleft()
            except IndexError:
                break
            if type(item) is _FlushMarker:
                markers.append(item)
                break  # everything before the marker is in this batch: answer it first
            items.append(item)
        return items, markers

    def _encode(self, items: list[Any]) -> Batch:
        chunks: dict[Any, _ChunkBuilder] = {}
        logs: list[Any] = []
        partials: list[Any] = []
        for item in items:
            kind = item[0]
            if kind == SCALAR:  # the hot path: only gather columns here, encode below at once
                _, key, tag, step, wall_time, value = item
                builder = chunks.get(key)
                if builder is None:
                    builder = chunks[key] = _ChunkBuilder()
                index = builder.tag_ids.get(tag)
                if index is None:
                    index = builder.add_tag(tag, tag, self._scalar_tail(key, tag))
                builder.scalar_tags.append(index)
                builder.wall_times.append(wall_time)
                builder.steps.append(step)
                builder.values.append(value)
            elif kind == LOGLINE:
                logs.append(item[1])
            elif kind == PARTIAL:
                partials.append(item[1])
            else:
                try:
                    key, tag, record = self._encode_value(item)
                except Exception as exc:  # one bad record must not cost the others
                    log.warning("rayplex: dropped a record that could not be encoded (%r): %s",
                                item[:3], exc)
                    continue
                builder = chunks.get(key)
                if builder is None:
                    builder = chunks[key] = _ChunkBuilder()
                index = builder.tag_ids.get((VALUE, tag))  # apart from scalars of that tag
                if index is None:
                    index = builder.add_tag((VALUE, tag), tag, b"")
                builder.records.append(record)
                builder.record_tags.append(index)
        return self._batch(chunks, logs, partials)

    def _scalar_tail(self, client_id: str, tag: str) -> bytes:
        tail = self._tails.get((client_id, tag))
        if tail is None:
            tail = self._tails[(client_id, tag)] = scalar_tail(self._tag_field(client_id, tag))
        return tail

    def _encode_value(self, item: Any) -> tuple[Any, str | None, bytes]:
        """``(chunk key, user tag, framed record)`` of a pre-encoded ``Summary.Value``."""
        if item[0] == VALUE:
            _, key, tag, step, wall_time, payload = item
            return key, tag, event_record(self._tag_field(key, tag), wall_time, step, payload)
        if item[0] == FIXED_VALUE:
            _, client_id, tag, step, wall_time, payload, run = item
            return (client_id, run), None, event_record(tag_header(tag), wall_time, step, payload)
        raise AssertionError(f"unknown record kind {item[0]!r}")  # pragma: no cover

    def _batch(self, builders: dict[Any, _ChunkBuilder], logs: list[Any],
               partials: list[Any]) -> Batch:
        chunks = []
        for key, builder in builders.items():
            blob, tag_index = builder.build()
            if isinstance(key, tuple):  # (client id, run): a fixed run
                chunks.append(Chunk(key[0], key[1], "", "", blob, builder.tag_names, tag_index,
                                    fixed=True))
                continue
            route = self._safe_route(key)
            chunks.append(Chunk(key, route.run, route.prefix, route.suffix, blob,
                                builder.tag_names, tag_index))
        self._seq += 1
        return Batch(self.sender, self._seq, self.registry.stamp, chunks, logs=logs,
                     partials=partials)

    def _safe_route(self, client_id: str) -> Route:
        try:
            return self.route(client_id)
        except ValueError as exc:  # e.g. a bin_fn that fails: a background path, so warn
            log.warning("rayplex: %s; routing %s as a normal group", exc, client_id)
            route = GroupRegistry().route(client_id)
            self._routes[client_id] = route
            return route

    def _tag_field(self, client_id: str, tag: str) -> bytes:
        key = (client_id, tag)
        field = self._tag_fields.get(key)
        if field is None:
            field = tag_header(self._safe_route(client_id).tag(tag))
            self._tag_fields[key] = field
        return field

    def _send(self, batch: Batch) -> None:
        from rayplex.actors import get_hub, get_or_create_node_buffer

        backoff = 0.05
        attempts = 0
        while True:
            attempts += 1
            batch.attempt = attempts
            try:
                if self._node_buffer is None:
                    self._hub = get_hub(self.hub_name)  # no hub: no orphan node buffer
                    self._node_buffer = get_or_create_node_buffer(self.hub_name, self.node_id)
                self.counters["sent"] += 1
                ack: Ack = ray.get(self._node_buffer.submit.remote(batch),
                                   timeout=config().flush_timeout_s)
                if ack.error is not None:
                    self.failing = ack.error
                    self.failures += 1
                    raise OSError(ack.error)
            except Exception as exc:
                self.counters["retried"] += 1
                stale_handle = attempts == 1 and isinstance(exc, ray.exceptions.RayActorError)
                if stale_handle:  # e.g. a node buffer of an experiment since shut down
                    log.info("rayplex: reconnecting to the node buffer after %s", exc)
                elif attempts == 2 or attempts % 20 == 0:
                    log.warning("rayplex: batch %d not acknowledged (%s); retrying", batch.seq,
                                exc)
                if isinstance(exc, (ray.exceptions.RayActorError, ValueError)):
                    self._node_buffer = None
                time.sleep(backoff)
                backoff = min(backoff * 2, config().retry_max_backoff_s)
                continue
            self.failing = None
            self.counters["acked"] += 1
            self.counters["batches"] += 1
            self.counters["records"] += batch.record_count()
            if ack.registry is not None and ack.registry.stamp != self.registry.stamp:
                self._adopt(ack.registry)
            return

    def _adopt(self, registry: GroupRegistry) -> None:
        self.registry = registry
        self._routes.clear()
        self._tails.clear()
        self._tag_fields.clear()

    def ensure_current_hub(self) -> bool:
        """Re-attach if the experiment's hub was replaced (shut down and started anew).

        Returns:
            True if the hub is a new one (the caller should forget per-hub state).
        """
        from rayplex.actors import get_hub

        handle = get_hub(self.hub_name)
        if handle._actor_id == self._hub._actor_id:
            return False
        self._hub = handle
        self._node_buffer = None
        self.refresh_registry()
        self.log_level = _hub_log_level(handle)
        return True

    def refresh_registry(self, max_age_s: float = 0.0) -> None:
        """Fetch the hub's current groups unless fetched less than ``max_age_s`` ago (the
        hub's acknowledgements carry newer groups anyway, and it re-routes stale chunks)."""
        if max_age_s and time.monotonic() - self._registry_time < max_age_s:
            return
        self._registry_time = time.monotonic()
        registry = ray.get(self._hub.get_registry.remote())
        if registry.stamp != self.registry.stamp:
            self._adopt(registry)


def _hub_log_level(hub: Any) -> int:
    from rayplex.textlog import parse_level

    return parse_level(ray.get(hub.info.remote())["log_level"])


class _ChunkBuilder:
    """The records of one chunk while a batch is encoded: scalars as columns (encoded together
    by :func:`rayplex.encode.scalar_records`), other values as ready records."""

    __slots__ = ("tag_ids", "tag_names", "tails", "scalar_tags", "wall_times", "steps", "values",
                 "records", "record_tags")

    def __init__(self) -> None:
        self.tag_ids: dict[Any, int] = {}
        self.tag_names: list[str | None] = []
        self.tails: list[bytes] = []
        self.scalar_tags: list[int] = []
        self.wall_times: list[float] = []
        self.steps: list[int] = []
        self.values: list[float] = []
        self.records: list[bytes] = []
        self.record_tags: list[int] = []

    def add_tag(self, key: Any, tag: str | None, tail: bytes) -> int:
        self.tag_ids[key] = len(self.tag_names)
        self.tag_names.append(tag)
        self.tails.append(tail)
        return len(self.tag_names) - 1

    def build(self) -> tuple[bytes, bytes]:
        """``(framed records, uint32 tag index per record)``: scalars first, then the rest
        (the order within each tag is kept, which is all TensorBoard relies on)."""
        scalars = b""
        if self.steps:
            try:
                scalars = scalar_records(self.tails, np.asarray(self.scalar_tags),
                                         np.asarray(self.wall_times, dtype=np.float64),
                                         np.asarray(self.steps, dtype=np.int64),
                                         np.asarray(self.values, dtype=np.float64))
            except OverflowError:  # a step beyond int64: one record at a time
                scalars = b"".join(
                    ScalarTemplate.from_tail(self.tails[t]).record(w, s, v) for t, w, s, v in
                    zip(self.scalar_tags, self.wall_times, self.steps, self.values, strict=True))
        index = array("I", self.scalar_tags)
        index.extend(self.record_tags)
        return scalars + b"".join(self.records), index.tobytes()


_transports: dict[str, Transport] = {}
_lock = threading.Lock()


def transport_for(hub_name: str) -> Transport:
    """This process's transport for experiment ``hub_name`` (created on first use)."""
    transport = _transports.get(hub_name)
    if transport is None or transport._closed:
        with _lock:
            transport = _transports.get(hub_name)
            if transport is None or transport._closed:
                transport = Transport(hub_name)
                _transports[hub_name] = transport
    return transport


def existing_transport(hub_name: str) -> Transport | None:
    return _transports.get(hub_name)


def drop_transport(hub_name: str) -> None:
    transport = _transports.pop(hub_name, None)
    if transport is not None:
        transport._closed = True
        transport._wake.set()
