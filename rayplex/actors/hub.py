"""The hub: one per experiment, the only process that writes under ``logdir``.

It does four jobs, each delegated: the data path's transactional writer
(:mod:`rayplex.actors.writer`), the summary schedule (:mod:`rayplex.actors.summaries`), the
group registry kept as data (:mod:`rayplex.actors.state`), and request/response operations
(artifacts, params) applied once per request id. It never routes: workers route and encode
with the registry stamped on their batches, and a batch with an old stamp is answered with the
current registry for its sender to encode again.

This is a plain class; :func:`rayplex.actors.get_or_create_hub` makes it a Ray actor.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from rayplex.actors.faults import STALL_S, FaultWatch
from rayplex.actors.journal import undo_files
from rayplex.actors.partials import select_partials
from rayplex.actors.state import load_registry, save_registry
from rayplex.actors.summaries import SummaryBook
from rayplex.actors.writer import HubWriter, Unwritable
from rayplex.artifacts import ArtifactStore
from rayplex.atomic import atomic_write_bytes
from rayplex.config import config
from rayplex.encode import ScalarTemplate, tag_header
from rayplex.errors import CALLER_ERRORS, HubWriteError
from rayplex.groups import GroupRegistry, GroupSpec
from rayplex.logger_runs import CONTROL_FILE, ControlBook, check_client, check_signal
from rayplex.records import Ack, Batch, NodeCall
from rayplex.rules import split_client_id

log = logging.getLogger("rayplex.hub")


def _own_node() -> str:
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # pragma: no cover - a plain object outside Ray
        pass
    return ""


def _own_identity() -> str:
    try:
        import ray

        if ray.is_initialized():
            actor_id = ray.get_runtime_context().get_actor_id()
            if actor_id:
                return str(actor_id)
    except Exception:  # pragma: no cover - a plain object outside Ray
        pass
    return ""


class Hub:
    """Owns the event writers, text logs and artifact store of one experiment."""

    def __init__(self, name: str, logdir: str, log_level: str = "INFO") -> None:
        self.name = name
        self.logdir = logdir
        self.log_level = log_level
        self.experiment = _own_identity()
        self.started = time.time()
        # claims the logdir (or raises LogdirConflictError) before it reads the journal
        self.writer = HubWriter(logdir, self.experiment, log_level, name)
        self.lock = self.writer.lock
        self.registry = load_registry(os.path.join(self.writer.state_dir, "registry.json")) or \
            GroupRegistry(epoch=os.urandom(8).hex())
        assert self.writer.state.book is not None
        self.summaries: SummaryBook = self.writer.state.book
        self.artifacts = ArtifactStore(os.path.join(logdir, "artifacts"))
        self.applied_requests = self.writer.state.applied_requests
        self.calls = 0
        self._unregistered_seen: set[str] = set()
        self._committed_cache: dict[str, int] = {}  # committed_sizes' last answer, absolute paths
        self.faults = FaultWatch(_own_node())
        undone = self.writer.state.undone
        if undone:
            self.writer.hub_line(logging.WARNING, f"restarted: undid an unfinished write in "
                                 f"{len(undone)} files; their senders resend it")
        self._stop = threading.Event()
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
            if not due:
                return
            now = time.time()
            planned = []
            for group, step, values, _ in due:
                route = self.registry.summary_route(group)
                blob = b"".join(ScalarTemplate(tag_header(route.tag(tag))).record(now, step, value)
                                for tag, value in values.items())
                planned.append((route.run, (group, step), blob))
            try:
                self.writer.write_summaries(planned)
            except BaseException:
                self.summaries.mark_dirty([(g, s) for g, s, _, _ in due])
                raise
            for group, step, _, flagged in due:
                if flagged:
                    self.writer.hub_line(
                        logging.WARNING, f"late store_metrics partial for group {group!r} step "
                        f"{step} (from a worker declared silent, or one that joined late): wrote "
                        "a second point at that step over all values")

    # ----------------------------------------------------------------- control
    def info(self) -> dict[str, Any]:
        """What ``rayplex.status()`` shows."""
        counters = self.writer.counters
        return {
            "name": self.name,
            "logdir": self.logdir,
            "experiment": self.experiment,
            "pid": os.getpid(),
            "started": self.started,
            "clients": len(self.writer.clients),
            "calls": self.calls,
            "log_level": self.log_level,
            "runs": self.writer.pool.runs(),
            "problem": self.writer.problem,
            "summaries_refused": self.summaries.refused,
            **counters,
        }

    def hello(self) -> tuple[GroupRegistry, str]:
        """What a new session needs: the groups and the text-log level."""
        return self.registry, self.log_level

    def register_group(self, spec: GroupSpec) -> GroupRegistry:
        """Add or replace a group; returns the new registry."""
        with self.lock:
            self.registry = self.registry.with_group(spec)
            if self.writer.lost() is not None:
                return self.registry
            try:
                save_registry(os.path.join(self.writer.state_dir, "registry.json"), self.registry)
            except OSError as exc:
                self.writer._note_problem(exc)
        return self.registry

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
            answers: dict[int, Ack] = {}
            fresh: list[Batch] = []
            first: dict[tuple[str, int], Batch] = {}
            for batch in call.batches:
                key = (batch.sender, batch.seq)
                if key in first:  # the same batch twice in one call (a resend): answered once
                    continue
                first[key] = batch
                if batch.experiment and self.experiment and batch.experiment != self.experiment:
                    answers[id(batch)] = Ack(batch.sender, batch.seq, wrong_experiment=True)
                elif batch.seq <= self.writer.last_seq.get(batch.sender, -1):
                    self.writer.counters["duplicates_dropped"] += 1
                    answers[id(batch)] = self._ack(batch, duplicate=True)
                elif batch.registry_stamp != self.registry.stamp:
                    answers[id(batch)] = Ack(batch.sender, batch.seq, stale=True,
                                             registry_stamp=self.registry.stamp,
                                             registry=self.registry)
                else:
                    try:
                        self.writer.check(batch)
                    except Unwritable as exc:
                        self._quarantine(batch, str(exc))
                        answers[id(batch)] = Ack(batch.sender, batch.seq,
                                                 rejected=max(1, batch.record_count()))
                        continue
                    fresh.append(batch)
            fresh_ids = {(b.sender, b.seq) for b in fresh}
            partials, defer = select_partials(list(call.partials), fresh_ids)
            for batch in fresh:
                if (batch.sender, batch.seq) in defer:
                    answers[id(batch)] = Ack(batch.sender, batch.seq, retry=True)
            writable = [b for b in fresh if (b.sender, b.seq) not in defer]
            for batch, ack in self._write(writable, partials):
                answers[id(batch)] = ack
            self._report_unregistered(writable)
            self._hold_if(self.faults.after(answers.values(), time.monotonic() - started))
            lost = self.writer.lost()
            if lost is not None:  # deleted meanwhile: acknowledge nothing written into it
                return [Ack(b.sender, b.seq, error=lost) for b in call.batches]
            return [answers[id(first[(b.sender, b.seq)])] for b in call.batches]

    def _write(self, batches: list[Batch], partials: list[Any]) -> list[tuple[Batch, Ack]]:
        """Write all at once; if that fails for a reason other than the disk, write one batch
        at a time so that only the batch that cannot be written is quarantined."""
        if not batches and not partials:
            return []
        own = [p for b in batches for p in b.partials]
        try:
            self.writer.write_batches(batches, partials + own)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.writer.hub_line(logging.ERROR, f"could not write {len(batches)} batches (data "
                                 f"kept by the senders, who retry): {error}")
            return [(b, self._ack(b, error=error)) for b in batches]
        except Exception as exc:
            if len(batches) == 1 and not partials:
                batch = batches[0]
                self._quarantine(batch, f"{type(exc).__name__}: {exc}")
                return [(batch, Ack(batch.sender, batch.seq, rejected=max(1, batch.record_count())))]
            if not batches:  # the merged partials alone cannot be written: a bug, say so
                log.exception("hub %s: dropped merged summary partials", self.name)
                return []
            results = self._write([], partials)
            for batch in batches:
                results += self._write([batch], [])
            return results
        self._add_partials(partials + own)
        return [(b, self._ack(b)) for b in batches]

    def _report_unregistered(self, batches: list[Batch]) -> None:
        """Say once per experiment and group that a group is not registered (in
        ``logs/all.log`` and, through Ray's log forwarding, the driver's terminal)."""
        for batch in batches:
            for chunk in batch.chunks:
                group = chunk.client_id.partition("/")[0]
                if group in self._unregistered_seen or group in self.registry.groups:
                    continue
                self._unregistered_seen.add(group)
                self.writer.hub_line(logging.WARNING, f"group {group!r} is not registered; its "
                                     "clients are routed as a normal group (register it with "
                                     "hub.register_*_group in the driver)")

    def _quarantine(self, batch: Batch, reason: str) -> None:
        self.writer.quarantine(batch, reason)
        try:  # never retried: journal it as done, like a committed batch
            self.writer.journal.commit([(batch.sender, batch.seq)], [], [])
            self.writer.last_seq[batch.sender] = max(batch.seq,
                                                     self.writer.last_seq.get(batch.sender, -1))
        except OSError as exc:
            log.error("hub %s: could not journal a quarantined batch: %s", self.name, exc)

    def _add_partials(self, partials: list[Any]) -> None:
        now = time.time()
        for partial in partials:
            if not self.summaries.add(partial, now):
                self.writer.hub_line(
                    logging.WARNING, f"refused a store_metrics partial of group "
                    f"{partial.group!r} step {partial.step}: that step's summary was pruned "
                    "long ago (counted in info()['summaries_refused'])")

    def _ack(self, batch: Batch, duplicate: bool = False, error: str | None = None) -> Ack:
        stale = batch.registry_stamp != self.registry.stamp
        return Ack(batch.sender, batch.seq, duplicate=duplicate,
                   registry_stamp=self.registry.stamp,
                   registry=self.registry if stale else None, error=error)

    # ---------------------------------------------------------------- requests
    def request(self, request_id: str, method: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """Apply one request/response operation once per ``request_id`` (a replay answers
        without applying it again). Returns ``(True, result)`` or ``(False, (kind, text))``.

        A query (:data:`QUERIES`) only reads: it runs without the writer lock, on the hub's
        :data:`QUERY_GROUP` threads when sent there, and is bounded in entries and seconds.
        """
        handler = _REQUESTS.get(method)
        if handler is None:
            return False, ("ValueError", f"unknown hub request {method!r}")
        if method in QUERIES:
            return _answer(handler, self, request_id, args)
        with self.lock:
            lost = self.writer.lost()
            if lost is not None:
                return False, ("OSError", lost)
            if request_id in self.applied_requests:
                replay = _REPLAYS.get(method)
                return (True, replay(self, *args)) if replay else (True, None)
            started = time.monotonic()
            try:
                answer = _answer(handler, self, request_id, args)
            finally:  # calls queued behind a long request
                self._hold_if(self.faults.after((), time.monotonic() - started))
            lost = self.writer.lost()
            if lost is not None:  # deleted meanwhile: what it wrote is gone
                return False, ("OSError", lost)
            return answer

    def _applied(self, request_id: str) -> None:
        self.applied_requests.add(request_id)

    def _save_artifact(self, request_id: str, rel: str, data: bytes, append: bool = False) -> str:
        if not append:
            path = self.artifacts.write_bytes(rel, data)  # atomic replace
            self._commit_request(request_id)
            return os.fspath(path)
        return self._journalled_append(request_id, rel, data, self.artifacts.append_chunk)

    def _journalled_append(self, request_id: str, rel: str, data: Any,
                           append: Callable[[str, Any], os.PathLike[str]]) -> str:
        """``append(rel, data)`` as one journalled transaction: cut back on any exception, and
        remembered with ``request_id`` when it commits."""
        self.writer.settle()
        target = os.fspath(self.artifacts.resolve(rel))
        offsets = {target: os.path.getsize(target) if os.path.isfile(target) else 0}
        self.writer.journal.begin(offsets, [])
        try:
            path = append(rel, data)
            self.writer.journal.commit([], [], [request_id])
        except BaseException:
            _, failed = undo_files(offsets)
            self.writer.journal.abort(failed or None)
            self.writer.pending_undo.update(failed)
            raise
        self._applied(request_id)
        return os.fspath(path)

    def _commit_request(self, request_id: str) -> None:
        """Remember an applied request (journalled), so that Ray's replay of it is a no-op."""
        self.writer.journal.commit([], [], [request_id])
        self._applied(request_id)
        self.writer.state.intents.pop(request_id, None)

    def _load_artifact(self, request_id: str, rel: str) -> bytes:
        return self.artifacts.read_bytes(rel)

    def _save_params(self, request_id: str, client_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Merge ``params`` into ``params/<group>/<name>.json`` (a replay merges the same
        values again: idempotent); return the merged object."""
        path = self._params_path(client_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        merged = self._read_params(client_id)
        _deep_merge(merged, params)
        atomic_write_bytes(path, (json.dumps(merged, indent=2, sort_keys=True, default=repr)
                                  + "\n").encode("utf-8"))
        self._commit_request(request_id)
        return merged

    def _params_path(self, client_id: str) -> str:
        group, name = split_client_id(client_id)
        return os.path.join(self.logdir, "params", group, f"{name}.json")

    def _read_params(self, client_id: str) -> dict[str, Any]:
        """What ``params/<group>/<name>.json`` holds (empty if nothing was stored)."""
        path = self._params_path(client_id)
        if not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))

    # ------------------------------------------------------------- forwarding
    def committed_sizes(self) -> dict[str, int]:
        """``{path relative to the logdir: size}`` of every event file, each size ending on
        committed data, which no undo will cut (a file waiting for an undo counts only up to
        it). What a forwarder may read.

        The directory walk and a first ``stat`` run outside the writer lock, so a large logdir
        never holds up a write. Under the lock, only files whose size differs from the last
        answer are measured again: a file the size it had when last committed holds no
        uncommitted byte (a transaction only appends, and an undo only cuts back to a committed
        size).
        """
        root = self.writer.tensorboard_dir
        seen: dict[str, int] = {}
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                if "tfevents" in name:
                    path = os.path.join(dirpath, name)
                    try:
                        seen[path] = os.path.getsize(path)
                    except OSError:
                        continue
        known = self._committed_cache
        with self.lock:
            pending = {os.path.abspath(p): s for p, s in self.writer.pending_undo.items()}
            sizes: dict[str, int] = {}
            for path, size in seen.items():
                if known.get(path) != size:
                    try:
                        size = os.path.getsize(path)
                    except OSError:
                        continue
                sizes[path] = size
            self._committed_cache = dict(sizes)
            for path, cap in pending.items():
                if path in sizes:
                    sizes[path] = min(sizes[path], cap)
        return {os.path.relpath(p, self.logdir).replace(os.sep, "/"): n for p, n in sizes.items()}

    def forwarder_line(self, level: int, message: str) -> None:
        """A forwarder's warning, in ``logs/all.log`` as the hub's own line."""
        self.writer.hub_line(level, str(message)[:2000])

    # ------------------------------------------------- files, runs (ML-Logger)
    def _append_artifact(self, request_id: str, rel: str, data: bytes) -> str:
        """Append raw bytes (JSON lines, ``error.log``) as one journalled transaction."""
        return self._journalled_append(request_id, rel, data, self.artifacts.append_bytes)

    def _append_chunks(self, request_id: str, rel: str, chunks: list[bytes]) -> str:
        """Append several framed chunks (rows of a pickle file) as one journalled
        transaction."""
        if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
            raise TypeError("chunks must be a list of bytes")
        return self._journalled_append(request_id, rel, chunks, self.artifacts.append_chunks)

    def _remove_artifacts(self, request_id: str, base: str, paths: list[str]) -> list[str]:
        """Remove files or directories below the client directory ``base``: ``""`` is all of
        it, a path with ``*`` a glob. Returns the paths removed, relative to ``base``."""
        targets: list[str] = []
        for path in paths:
            if path in ("", "."):
                targets.append("")
            elif "*" in path:
                targets.extend(self.artifacts.glob(path, wd=base))
            else:
                targets.append(path)
        removed = [t for t in dict.fromkeys(targets)
                   if self.artifacts.remove(f"{base}/{t}" if t else base)]
        self._commit_request(request_id)
        return removed

    def _move_artifact(self, request_id: str, src: str, to: str) -> str:
        """A move, journalled as an intent first: a replay after the hub died between the
        rename and recording the request finds the source gone and the target in place, and
        is answered as applied (not ``FileNotFoundError``)."""
        state = self.writer.state
        done = state.intents.get(request_id)
        if (done is None or os.path.lexists(self.artifacts.resolve(src))
                or not os.path.lexists(done)):
            self._intend(request_id, os.fspath(self.artifacts.move_target(src, to)))
            done = os.fspath(self._undo_intent_on_error(request_id, self.artifacts.move, src, to))
        self._commit_request(request_id)
        return done

    def _duplicate_artifact(self, request_id: str, src: str, to: str, exists_ok: bool) -> str:
        """A copy; one that refuses an existing directory is journalled as an intent first,
        so that its replay after the hub died is answered as applied (a copy that may replace
        or merge is simply made again)."""
        target = os.fspath(self.artifacts.resolve(to))
        replayed = (not exists_ok and self.writer.state.intents.get(request_id) == target
                    and os.path.lexists(target))
        if not replayed:
            if not exists_ok:
                self._intend(request_id, target)
            self._undo_intent_on_error(request_id, self.artifacts.duplicate, src, to, exists_ok)
        self._commit_request(request_id)
        return target

    def _intend(self, request_id: str, path: str) -> None:
        self.writer.journal.intend(request_id, path)
        self.writer.state.intend(request_id, path)

    def _undo_intent_on_error(self, request_id: str, op: Callable[..., os.PathLike[str]],
                              *args: Any) -> os.PathLike[str]:
        try:
            return op(*args)
        except Exception:  # refused (the user's error): nothing to answer on a replay
            self.writer.state.intents.pop(request_id, None)
            raise

    def _glob_artifacts(self, request_id: str, pattern: str, wd: str) -> list[str]:
        return self.artifacts.glob(pattern, wd)

    def _read_experiments(self, request_id: str, patterns: list[str]
                          ) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
        """``{client: (params, last heartbeat)}`` of the clients matching a pattern."""
        from rayplex.logger_runs import match_clients
        from rayplex.read import read_params

        params = read_params(self.logdir)
        beats = self.control.heartbeats
        return {c: (params.get(c, {}), beats.get(c))
                for c in match_clients(sorted(set(params) | set(beats)), list(patterns))}

    def _ping(self, request_id: str, client: str, status: str, token: str,
              info: dict[str, Any]) -> list[str]:
        """A heartbeat: remember it, answer the client's pending signals (once per token)."""
        return self.control.ping(check_client(client), status, token, info, time.time())

    @property
    def control(self) -> ControlBook:
        """Heartbeats and pending signals (``.rayplex/control.json``), loaded on first use."""
        book: ControlBook | None = getattr(self, "_control_book", None)
        if book is None:
            book = ControlBook(os.path.join(self.writer.state_dir, CONTROL_FILE))
            self._control_book = book
        return book

    def signal(self, client: str, sig: str) -> list[str]:
        """Queue signal ``sig`` (``"stop"``, ``"pause"``, ...) for the next ``ping`` of
        ``client``; returns the signals pending for it."""
        check_client(client)
        check_signal(sig)
        with self.lock:
            lost = self.writer.lost()
            if lost is not None:
                raise HubWriteError(lost)
            return self.control.signal(client, sig)

    # ------------------------------------------------ projector embeddings, JSON export
    def _stale_route(self, client_id: str, stamp: Any, run: str) -> GroupRegistry | None:
        """The current registry if the sender routed ``client_id`` with another one (it routes
        again and resends: the hub never routes); else check that ``run`` is in its group."""
        from rayplex.actors.writer import _check_run

        if tuple(stamp) != self.registry.stamp:
            return self.registry
        _check_run(run, split_client_id(client_id)[0])
        return None

    def _confined(self, root: str, *parts: str) -> str:
        """``root/parts...`` resolved, refused if it leaves ``root`` (also through a link)."""
        base = os.path.realpath(root)
        path = os.path.realpath(os.path.join(base, *parts))
        if path != base and not path.startswith(base + os.sep):
            raise ValueError(f"{'/'.join(parts)!r} resolves outside {root!r}")
        return path

    def _save_embedding(self, request_id: str, client_id: str, stamp: Any, run: str,
                        embedding: Any) -> dict[str, Any]:
        """Write one embedding's files into ``tensorboard/<run>/<step>/<tag>/`` and its entry
        into the run's ``projector_config.pbtxt`` (each file replaced atomically)."""
        from rayplex import projector

        stale = self._stale_route(client_id, stamp, run)
        if stale is not None:
            return {"stale": stale}
        emb = projector.check_embedding(embedding)
        root = self.writer.tensorboard_dir
        run_dir = self._confined(root, run)
        target = self._confined(root, run, emb.subdir)
        os.makedirs(target, exist_ok=True)
        self._confined(root, run, emb.subdir)  # again, now that it exists
        for name, data in emb.files.items():
            atomic_write_bytes(os.path.join(target, name), data)
        config_path = os.path.join(run_dir, projector.CONFIG_FILE)
        existing = ""
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                existing = f.read()
        atomic_write_bytes(config_path, projector.merge_config(existing, emb).encode("utf-8"))
        if not any("tfevents" in name for name in os.listdir(run_dir)):
            self.writer.pool.get(run).flush()  # TensorBoard lists only runs with an event file
        self._commit_request(request_id)
        return {"path": target}

    def _scalar_rows(self, run: str | None = None) -> dict[str, dict[str, list[list[float]]]]:
        """``{run: {tag: [[wall_time, step, value], ...]}}`` as written so far."""
        from rayplex.read import read_scalars

        self.writer.flush()
        out: dict[str, dict[str, list[list[float]]]] = {}
        for row in read_scalars(self.logdir, run=run):
            out.setdefault(row.run, {}).setdefault(row.tag, []).append(
                [row.wall_time, row.step, row.value])
        return out

    def _client_scalars(self, request_id: str, client_id: str, stamp: Any, run: str,
                        prefix: str | None) -> dict[str, Any]:
        """One client's scalars (read only): its run, and in a shared run only the tags under
        its ``prefix``."""
        stale = self._stale_route(client_id, stamp, run)
        if stale is not None:
            return {"stale": stale}
        tags = self._scalar_rows(run).get(run, {})
        if prefix is not None:
            tags = {t: v for t, v in tags.items() if t.startswith((prefix + "/", prefix + "."))}
        return {"scalars": tags}

    def _export_json(self, request_id: str, json_dir: str) -> list[str]:
        """Tensorplex's ``export_json``: every run's scalars as ``<json_dir>/<run with / as
        .>.json`` under the logdir."""
        from rayplex.rules import validate_part

        if not isinstance(json_dir, str) or not json_dir.rstrip("/") or json_dir[0] in "/\\":
            raise ValueError(f"json_dir must be a relative directory name, got {json_dir!r}")
        parts = [validate_part(p, f"part of json_dir {json_dir!r}") for p in
                 json_dir.rstrip("/").split("/")]
        if parts[0] in ("tensorboard", "logs", "artifacts", "params"):
            raise ValueError(f"json_dir {json_dir!r} is inside rayplex's own {parts[0]}/ tree")
        target = self._confined(self.logdir, *parts)
        os.makedirs(target, exist_ok=True)
        paths = []
        for run, tags in sorted(self._scalar_rows().items()):
            path = os.path.join(target, run.replace("/", ".") + ".json")
            atomic_write_bytes(path, json.dumps(tags).encode("utf-8"))
            paths.append(path)
        self._commit_request(request_id)
        return paths


def _answer(handler: Any, hub: Hub, request_id: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
    """``(True, result)`` of one request, or ``(False, (kind, text))`` for an error the caller
    made (or an OSError), raised again at the call site."""
    try:
        return True, handler(hub, request_id, *args)
    except CALLER_ERRORS as exc:  # raised again as itself at the call site (request_error)
        return False, (type(exc).__name__, str(exc))
    except OSError as exc:
        return False, ("OSError", f"{type(exc).__name__}: {exc}")


QUERY_GROUP = "queries"
"""The hub's concurrency group (threads of their own, :func:`rayplex.actors.get_or_create_hub`)
on which the node buffers send :data:`QUERIES`, so that a query never waits for a write nor a
write for a query."""
QUERIES = frozenset({"glob_artifacts"})
"""Requests that only read the artifact store: no writer lock, no request id to remember."""

_REQUESTS: dict[str, Any] = {
    "save_artifact": Hub._save_artifact,
    "load_artifact": Hub._load_artifact,
    "save_params": Hub._save_params,
    "append_artifact": Hub._append_artifact,
    "append_chunks": Hub._append_chunks,
    "remove_artifacts": Hub._remove_artifacts,
    "move_artifact": Hub._move_artifact,
    "duplicate_artifact": Hub._duplicate_artifact,
    "glob_artifacts": Hub._glob_artifacts,
    "read_experiments": Hub._read_experiments,
    "ping": Hub._ping,
    "save_embedding": Hub._save_embedding,
    "client_scalars": Hub._client_scalars,
    "export_json": Hub._export_json,
}
_REPLAYS: dict[str, Any] = {
    "save_artifact": lambda hub, rel, data, append=False: os.fspath(hub.artifacts.resolve(rel)),
    "save_params": lambda hub, client_id, params: hub._read_params(client_id),
    "load_artifact": lambda hub, rel: hub.artifacts.read_bytes(rel),
    "append_artifact": lambda hub, rel, data: os.fspath(hub.artifacts.resolve(rel)),
    "append_chunks": lambda hub, rel, chunks: os.fspath(hub.artifacts.resolve(rel)),
    "remove_artifacts": lambda hub, base, paths: [],
    "move_artifact": lambda hub, src, to: os.fspath(hub.artifacts.resolve(to)),
    "duplicate_artifact": lambda hub, src, to, exists_ok: os.fspath(hub.artifacts.resolve(to)),
    "save_embedding": lambda hub, client_id, stamp, run, embedding: {
        "path": os.path.join(hub.writer.tensorboard_dir, run, embedding.subdir)},
    "export_json": lambda hub, json_dir: [],
}


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
