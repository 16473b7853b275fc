"""The hub: one per experiment, the only process that writes under ``logdir``.

It routes each chunk of events to its run directory (one :class:`EventWriter` per run),
acknowledges batches by ``(sender, seq)`` and drops batches it has already written, and keeps
the registered client groups (persisted under ``logdir/.rayplex`` so that a restarted hub
routes exactly as before).

This is a plain class; :func:`rayplex.actors.get_or_create_hub` makes it a Ray actor.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from typing import Any

import cloudpickle

from rayplex.config import config
from rayplex.encode import frame, iter_records
from rayplex.events import EventWriter
from rayplex.groups import GroupRegistry, GroupSpec, Route
from rayplex.records import Ack, Batch, Chunk

log = logging.getLogger("rayplex.hub")

STATE_DIR = ".rayplex"


def _atomic_pickle(path: str, obj: Any) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            cloudpickle.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Hub:
    """Owns the event writers, text logs and artifact store of one experiment."""

    def __init__(self, name: str, logdir: str, log_level: str = "INFO") -> None:
        self.name = name
        self.logdir = logdir
        self.log_level = log_level
        self.started = time.time()
        self.tensorboard_dir = os.path.join(logdir, "tensorboard")
        self.state_dir = os.path.join(logdir, STATE_DIR)
        os.makedirs(self.tensorboard_dir, exist_ok=True)
        os.makedirs(self.state_dir, exist_ok=True)
        self.registry = self._load_registry()
        self.writers: dict[str, EventWriter] = {}
        self.last_seq: dict[str, int] = {}
        self.actor_senders: dict[str, Any] = {}
        self.clients: set[str] = set()
        self.records_written = 0
        self.batches_written = 0
        self.duplicates_dropped = 0
        self._warned_groups: set[str] = set()

    # ----------------------------------------------------------------- control
    def info(self) -> dict[str, Any]:
        """What ``rayplex.status()`` shows."""
        return {
            "name": self.name,
            "logdir": self.logdir,
            "pid": os.getpid(),
            "started": self.started,
            "clients": len(self.clients),
            "records_written": self.records_written,
            "batches_written": self.batches_written,
            "duplicates_dropped": self.duplicates_dropped,
            "runs": sorted(self.writers),
        }

    def get_registry(self) -> GroupRegistry:
        return self.registry

    def register_group(self, spec: GroupSpec) -> tuple[str, int]:
        """Add or replace a group; returns the new registry stamp."""
        self.registry = self.registry.with_group(spec)
        _atomic_pickle(os.path.join(self.state_dir, "registry.pkl"), self.registry)
        return self.registry.stamp

    def hello(self, sender: str, actor_handle: Any) -> None:
        """A ``@rayplex.logged`` actor announces itself so that a global flush can reach it."""
        self.actor_senders[sender] = actor_handle

    def get_actor_senders(self) -> dict[str, Any]:
        return dict(self.actor_senders)

    def forget_sender(self, sender: str) -> None:
        self.actor_senders.pop(sender, None)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        """Flush and close every file; a later write reopens new files."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    # ------------------------------------------------------------------- data
    def write(self, batches: list[Batch]) -> list[Ack]:
        """Write batches in order; acknowledge each (duplicates are acknowledged, not written)."""
        acks = []
        touched: set[str] = set()
        for batch in batches:
            if batch.seq <= self.last_seq.get(batch.sender, -1):
                self.duplicates_dropped += 1
                acks.append(self._ack(batch, duplicate=True))
                continue
            try:
                for chunk in batch.chunks:
                    self._write_chunk(chunk, batch.registry_stamp, touched)
            except OSError as exc:
                log.error("hub %s could not write batch %s/%s: %s", self.name, batch.sender,
                          batch.seq, exc)
                acks.append(self._ack(batch, error=f"{type(exc).__name__}: {exc}"))
                continue
            self.last_seq[batch.sender] = batch.seq
            self.batches_written += 1
            acks.append(self._ack(batch))
        for run in touched:
            self.writers[run].flush()
        return acks

    def _ack(self, batch: Batch, duplicate: bool = False, error: str | None = None) -> Ack:
        stale = batch.registry_stamp != self.registry.stamp
        return Ack(
            batch.sender,
            batch.seq,
            duplicate=duplicate,
            registry_stamp=self.registry.stamp,
            registry=self.registry if stale else None,
            error=error,
        )

    def _writer(self, run: str) -> EventWriter:
        writer = self.writers.get(run)
        if writer is None:
            writer = EventWriter(os.path.join(self.tensorboard_dir, run), fsync=config().fsync)
            self.writers[run] = writer
        return writer

    def _route(self, client_id: str) -> Route:
        try:
            route = self.registry.route(client_id)
        except ValueError as exc:
            log.warning("%s; routing %s as a normal group", exc, client_id)
            route = GroupRegistry().route(client_id)
        group = client_id.split("/", 1)[0]
        if not route.registered and group not in self._warned_groups:
            self._warned_groups.add(group)
            log.warning("group %r is not registered; its clients are routed as a normal group",
                        group)
        return route

    def _write_chunk(self, chunk: Chunk, stamp: tuple[str, int], touched: set[str]) -> None:
        self.clients.add(chunk.client_id)
        if stamp != self.registry.stamp:
            route = self._route(chunk.client_id)
            if (route.run, route.prefix, route.suffix) != (chunk.run, chunk.prefix, chunk.suffix):
                self._write_rerouted(chunk, route, touched)
                return
        self._writer(chunk.run).write(chunk.blob)
        touched.add(chunk.run)
        self.records_written += len(chunk.tags)

    def _write_rerouted(self, chunk: Chunk, route: Route, touched: set[str]) -> None:
        """The groups changed after the worker encoded this chunk: rewrite each event's tag."""
        from tensorboardX.proto.event_pb2 import Event

        out = []
        for payload, user_tag in zip(iter_records(chunk.blob), chunk.tags, strict=False):
            if user_tag is None:
                out.append(frame(payload))
                continue
            event = Event.FromString(payload)
            for value in event.summary.value:
                value.tag = route.tag(user_tag)
            out.append(frame(event.SerializeToString()))
        self._writer(route.run).write(b"".join(out))
        touched.add(route.run)
        self.records_written += len(chunk.tags)

    def _load_registry(self) -> GroupRegistry:
        path = os.path.join(self.state_dir, "registry.pkl")
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    registry = cloudpickle.load(f)
                if isinstance(registry, GroupRegistry):
                    return registry
            except Exception as exc:  # a torn or foreign file must not keep the hub down
                log.warning("could not read %s (%s); starting with no registered groups", path, exc)
        return GroupRegistry(epoch=uuid.uuid4().hex)
