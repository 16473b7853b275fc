"""The hub: one per experiment, the only process that writes under ``logdir``.

It routes each chunk of events to its run directory (one :class:`EventWriter` per run),
acknowledges batches by ``(sender, seq)`` and drops batches it has already written, and keeps
the registered client groups (persisted under ``logdir/.rayplex`` so that a restarted hub
routes exactly as before).

This is a plain class; :func:`rayplex.actors.get_or_create_hub` makes it a Ray actor.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import uuid
from typing import Any

import cloudpickle

from rayplex.actors.journal import HubState, Journal, file_sizes, truncate_to
from rayplex.actors.summaries import SummaryBook
from rayplex.artifacts import ArtifactStore
from rayplex.config import config
from rayplex.encode import ScalarTemplate, frame, iter_records, tag_header
from rayplex.events import EventWriter
from rayplex.groups import SUMMARY_RUN, GroupRegistry, GroupSpec, Route, split_client_id
from rayplex.records import Ack, Batch, Chunk, NodeCall, Partial
from rayplex.textlog import LogFiles, LogLine, parse_level

log = logging.getLogger("rayplex.hub")

STATE_DIR = ".rayplex"
JOURNAL_MAX_BYTES = 64 * 2**20
"""The journal is compacted into one snapshot once it grows past this."""


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
        self.lock = threading.RLock()
        self.logs = self._open_logs()
        self.artifacts = ArtifactStore(os.path.join(logdir, "artifacts"))
        self.journal = Journal(os.path.join(self.state_dir, "journal"), fsync=config().fsync)
        state = self.journal.recover(config().effective_summary_delay_s, time.time())
        assert state.book is not None
        self.summaries: SummaryBook = state.book
        self.applied_node_calls: dict[str, int] = state.applied_node_calls
        self.writers: dict[str, EventWriter] = {}
        self.last_seq: dict[str, int] = state.last_seq
        self.actor_senders: dict[str, Any] = {}
        self.clients: set[str] = set()
        self.records_written = 0
        self.calls = 0
        self.lines_written = 0
        self.batches_written = 0
        self.duplicates_dropped = 0
        self._warned_groups: set[str] = set()
        if state.undone:
            self.hub_log(logging.WARNING, f"restarted: undid an unfinished write in "
                         f"{len(state.undone)} files; their senders resend it")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="rayplex-summaries", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        """Write the summaries of steps that went quiet (``RAYPLEX_SUMMARY_DELAY_S``)."""
        period = min(0.2, self.summaries.delay_s / 4) if self.summaries.delay_s > 0 else 0.05
        while not self._stop.wait(period):
            try:
                with self.lock:
                    self._write_summaries(self.summaries.due(time.time()))
                    if self.journal.size() > JOURNAL_MAX_BYTES:
                        self.journal.compact(HubState(self.last_seq, self.applied_node_calls,
                                                      self.summaries))
            except Exception:  # the ticker must survive a bad disk moment; retried next tick
                log.exception("hub %s: writing summaries failed", self.name)

    def _write_summaries(self, due: list[tuple[str, int, dict[str, float], bool]]) -> None:
        if not due:
            return
        now = time.time()
        planned = []
        for group, step, values, _ in due:
            blob = b"".join(ScalarTemplate(tag_header(tag)).record(now, step, value)
                            for tag, value in values.items())
            planned.append((f"{group}/{SUMMARY_RUN}", blob))
        keys = [(group, step) for group, step, _, _ in due]
        writers = {run: self._writer(run) for run, _ in planned}
        offsets = {w.path: w.bytes_written for w in writers.values()}
        try:
            self.journal.begin(offsets)
            for run, blob in planned:
                writers[run].write(blob)
            for writer in writers.values():
                writer.flush()
            self.journal.written(keys)
        except OSError:
            self.summaries.mark_dirty(keys)
            self._undo(offsets, writers)
            raise
        for group, step, _, again in due:
            if again:
                self.hub_log(logging.WARNING,
                             f"late store_metrics partial for group {group!r} step {step}: "
                             "wrote a second summary point at that step over all values")

    def hub_log(self, level: int, message: str) -> None:
        """A line from the hub itself, in ``logs/all.log`` as client ``rayplex/hub``."""
        log.log(level, message)
        line = LogLine(time.time(), level, "rayplex/hub", "hub", os.getpid(), "rayplex.hub",
                       message, None)
        try:
            self.logs.write([line])
        except Exception:  # pragma: no cover - the hub log must never take the hub down
            log.exception("hub %s: could not write its own log line", self.name)

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
            "calls": self.calls,
            "duplicates_dropped": self.duplicates_dropped,
            "lines_written": self.lines_written,
            "log_level": self.log_level,
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
        """Write every pending summary now and flush every file."""
        with self.lock:
            self._write_summaries(self.summaries.due(None))
            for writer in self.writers.values():
                writer.flush()
            self.logs.flush()

    def close(self) -> None:
        """Flush and close every file; a later write reopens new files."""
        with self.lock:
            self.flush()
            for writer in self.writers.values():
                writer.close()
            self.writers.clear()
            self.logs.close()
            self.logs = self._open_logs()

    # -------------------------------------------------------------- artifacts
    def save_artifact(self, rel: str, data: bytes, append: bool = False) -> str:
        """Store ``data`` at ``artifacts/<rel>`` atomically (or append one chunk)."""
        with self.lock:
            path = self.artifacts.append_chunk(rel, data) if append else \
                self.artifacts.write_bytes(rel, data)
        return os.fspath(path)

    def load_artifact(self, rel: str) -> bytes:
        return self.artifacts.read_bytes(rel)

    def save_params(self, client_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Merge ``params`` into ``params/<group>/<name>.json``; return the merged object."""
        group, name = split_client_id(client_id)
        directory = os.path.join(self.logdir, "params", group)
        path = os.path.join(directory, f"{name}.json")
        with self.lock:
            os.makedirs(directory, exist_ok=True)
            merged: dict[str, Any] = {}
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    merged = json.load(f)
            _deep_merge(merged, params)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(merged, f, indent=2, sort_keys=True, default=repr)
                f.write("\n")
            os.replace(tmp, path)
        return merged

    # ------------------------------------------------------------------- data
    def write_node(self, call: NodeCall) -> list[Ack]:
        """A node buffer's call: write its new batches and merged statistics as one journalled
        transaction; acknowledge every batch (duplicates are acknowledged, not written)."""
        with self.lock:
            self.calls += 1
            fresh = [b for b in call.batches
                     if b.seq > self.last_seq.get(b.sender, -1)]
            node_new = bool(call.partials) and call.seq > self.applied_node_calls.get(call.node, 0)
            partials = (list(call.partials) if node_new else []) + [
                p for b in fresh for p in b.partials]
            error = None
            if fresh or partials:
                try:
                    self._write_transaction(fresh, (call.node, call.seq) if node_new else None,
                                            partials)
                except OSError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    self.hub_log(logging.ERROR, f"could not write {len(fresh)} batches "
                                 f"(data kept by the senders, who retry): {error}")
            fresh_ids = {id(b) for b in fresh}
            acks = []
            for batch in call.batches:
                if id(batch) not in fresh_ids:
                    self.duplicates_dropped += 1
                    acks.append(self._ack(batch, duplicate=True))
                else:
                    acks.append(self._ack(batch, error=error))
            return acks

    def _write_transaction(self, fresh: list[Batch], node: tuple[str, int] | None,
                           partials: list[Partial]) -> None:
        planned = [self._plan_chunk(chunk, batch.registry_stamp)
                   for batch in fresh for chunk in batch.chunks]
        lines = [line for batch in fresh for line in batch.logs]
        writers = {run: self._writer(run) for run, _, _ in planned}
        offsets = {w.path: w.bytes_written for w in writers.values()}
        offsets.update(file_sizes(self._log_paths(lines)))
        self.journal.begin(offsets)
        try:
            for run, blob, _ in planned:
                writers[run].write(blob)
            if lines:  # one sorted write per call: all.log is ordered by worker time per window
                self.logs.write(lines)
            for writer in writers.values():
                writer.flush()
            self.journal.commit([(b.sender, b.seq) for b in fresh], node, partials)
        except OSError:
            self._undo(offsets, writers)
            raise
        for batch in fresh:
            self.last_seq[batch.sender] = batch.seq
            self.clients.update(chunk.client_id for chunk in batch.chunks)
        if node is not None:
            self.applied_node_calls[node[0]] = node[1]
        self._add_partials(partials)
        self.batches_written += len(fresh)
        self.records_written += sum(n for _, _, n in planned)
        self.lines_written += len(lines)

    def _undo(self, offsets: dict[str, int], writers: dict[str, EventWriter]) -> None:
        """Cut what a failed transaction appended, so that the resend is not a duplicate."""
        for run, writer in writers.items():
            writer.close()
            self.writers.pop(run, None)
        self.logs.close()
        truncate_to(offsets)
        self.logs = self._open_logs()
        try:
            self.journal.abort()
        except OSError as exc:  # the next start truncates again: harmless
            log.error("hub %s: could not journal an abort: %s", self.name, exc)

    def _log_paths(self, lines: list[Any]) -> list[str]:
        if not lines:
            return []
        root = os.path.join(self.logdir, "logs")
        clients = {line[2] for line in lines}
        return [os.path.join(root, "all.log")] + [
            os.path.join(root, *client.split("/", 1)) + ".log" for client in clients]

    def _add_partials(self, partials: list[Partial]) -> None:
        now = time.time()
        for partial in partials:
            self.summaries.add(partial, now)

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

    def _open_logs(self) -> LogFiles:
        return LogFiles(os.path.join(self.logdir, "logs"), max_bytes=_log_max_bytes(),
                        level=parse_level(self.log_level))

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
            self.hub_log(logging.WARNING,
                         f"group {group!r} is not registered; its clients are routed as a normal group")
        return route

    def _plan_chunk(self, chunk: Chunk, stamp: tuple[str, int]) -> tuple[str, bytes, int]:
        """``(run, bytes, records)`` to write for ``chunk``, re-routed if the groups changed."""
        if chunk.fixed or stamp == self.registry.stamp:
            return chunk.run, chunk.blob, chunk.count
        route = self._route(chunk.client_id)
        if (route.run, route.prefix, route.suffix) == (chunk.run, chunk.prefix, chunk.suffix):
            return chunk.run, chunk.blob, chunk.count
        return route.run, self._rerouted(chunk, route), chunk.count

    def _rerouted(self, chunk: Chunk, route: Route) -> bytes:
        """The groups changed after the worker encoded this chunk: rewrite each event's tag."""
        from tensorboardX.proto.event_pb2 import Event

        out = []
        for payload, user_tag in zip(iter_records(chunk.blob), chunk.tags(), strict=False):
            if user_tag is None:
                out.append(frame(payload))
                continue
            event = Event.FromString(payload)
            for value in event.summary.value:
                value.tag = route.tag(user_tag)
            out.append(frame(event.SerializeToString()))
        return b"".join(out)

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


def _log_max_bytes() -> int | None:
    raw = os.environ.get("RAYPLEX_LOG_MAX_BYTES")
    return int(raw) if raw else None


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
