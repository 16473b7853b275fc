"""The hub's transactional writer: validates a node call's batches, appends them and journals
the transaction; undoes it on any exception; quarantines what can never be written. It is the
only client of the journal: the summaries' transactions, the requests' appends, intents and
records of applied request ids (:mod:`rayplex.actors.requests`) and the files requests replace
(params, projector files, JSON exports) all go through it.

A plain object (no Ray): ``HubWriter(logdir)`` is all a test needs.

Example:
    >>> import tempfile
    >>> w = HubWriter(tempfile.mkdtemp(), experiment="exp")
    >>> w.write_batches([], [])
    {}
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rayplex import layout, rules
from rayplex.actors.claim import LogdirClaim, LogdirLost
from rayplex.actors.journal import Journal, file_sizes, undo_files
from rayplex.actors.logfiles import LogFiles
from rayplex.actors.state import load_registry, save_registry
from rayplex.actors.summaries import Summary
from rayplex.atomic import atomic_write_bytes
from rayplex.config import JOURNAL_MAX_BYTES, config
from rayplex.errors import LogdirConflictError
from rayplex.event_bytes import ScalarTemplate, tag_header
from rayplex.events import WriterPool
from rayplex.groups import GroupRegistry
from rayplex.layout import STATE_DIR as STATE_DIR  # kept importable: tests use it
from rayplex.records import Ack, Batch, Partial
from rayplex.remote import COUNTED_TREES, counted_bytes, staged, staging_full, tree_sizes
from rayplex.textlog import LogLine, parse_level

log = logging.getLogger("rayplex.hub")


T = TypeVar("T")


class _StagingFull(OSError):
    """A write that would pass its staging directory's bound (``ENOSPC``)."""


class Unwritable(Exception):
    """A batch that no retry can write (malformed or refused by the rules)."""


class HubWriter:
    """Owns every file under ``logdir`` that the data path appends to, the journal, and the
    transactions of the hub's requests.

    It claims the logdir (:mod:`rayplex.actors.claim`) before it opens anything or reads the
    journal, and checks the claim before every write: a logdir deleted or replaced under it
    makes every later write raise :class:`~rayplex.actors.claim.LogdirLost`.

    Raises:
        LogdirConflictError: another live hub owns ``logdir``.
    """

    def __init__(self, logdir: str, experiment: str = "", log_level: str = "INFO",
                 name: str = "") -> None:
        self.logdir = logdir
        self.experiment = experiment
        self.level = parse_level(log_level)
        self.tensorboard_dir = layout.tensorboard_dir(logdir)
        self.state_dir = layout.state_dir(logdir)
        self.lock = threading.RLock()
        self.problem: str | None = None
        """The last disk problem (e.g. no space), until a write succeeds again."""
        self.counters = {"records_written": 0, "batches_written": 0, "lines_written": 0,
                         "duplicates_dropped": 0, "quarantined_batches": 0,
                         "quarantined_records": 0, "staging_refused": 0,
                         "staging_oversize": 0}
        self.clients: set[str] = set()
        self.staged = staged(logdir)
        """A staging directory's bound and rotation (a logdir on object storage), else None."""
        self._prepare_dirs()
        self.claim = LogdirClaim(logdir, self.state_dir, name, experiment)
        try:
            self.claim.take()
        except OSError as exc:  # e.g. a read-only disk: taken before the first write
            self._note_problem(exc)
        self.pool = WriterPool(self.tensorboard_dir, max_open=config().max_open_files or None,
                               fsync=config().fsync)
        self.logs = self._open_logs()
        cfg = config()
        self.journal = Journal(layout.journal_path(logdir), fsync=cfg.fsync,
                               root=logdir)
        self.state = self.journal.recover(cfg.effective_summary_delay_s, time.time(),
                                          cfg.effective_summary_silent_s,
                                          summary_hold_s=cfg.effective_summary_hold_s)
        self.last_seq: dict[str, int] = self.state.last_seq
        self.pending_undo: dict[str, int] = dict(self.state.pending_undo)
        self._committed_cache: dict[str, int] = {}  # committed_sizes' last answer, absolute paths
        self.full = False
        """A staging directory at its bound: writes are refused until a measure finds it below
        90 % of it (:meth:`_charge`)."""
        self._measured = 0  # the bound's bytes at the last measure ...
        self._since = 0  # ... and appended since
        with self.lock:
            self._measure()

    def _prepare_dirs(self) -> bool:
        try:
            os.makedirs(self.tensorboard_dir, exist_ok=True)
            os.makedirs(self.state_dir, exist_ok=True)
        except OSError as exc:
            self._note_problem(exc)
            return False
        return True

    def _note_problem(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self.problem is None:
            log.error("hub: cannot write under %s: %s", self.logdir, text)
        self.problem = text

    def _open_logs(self) -> LogFiles:
        max_bytes, backups = config().log_max_bytes or None, 5
        if self.staged is not None and self.staged.rotate_bytes > 0:
            # staged: rotate so that uploaded bytes can leave, and keep the backups the bound
            # can hold (the bound stops writes before a backup not yet up would be dropped)
            max_bytes = min(max_bytes or self.staged.rotate_bytes, self.staged.rotate_bytes)
            backups = max(backups, self.staged.max_bytes // max_bytes + 2)
        return LogFiles(layout.logs_dir(self.logdir), max_bytes=max_bytes, backup_count=backups,
                        level=self.level, between_writes=True)

    # ------------------------------------------------------------ staging bound
    def _measure(self, sizes: dict[str, int] | None = None) -> None:
        """Under the lock (no transaction in flight): measure the bytes the staging bound counts
        (:func:`rayplex.remote.counted_bytes`, of ``sizes`` if the caller walked the logdir)
        and lift the refusal below 90 % of the bound."""
        if self.staged is None or self.staged.max_bytes <= 0:
            return
        self._measured, self._since = counted_bytes(self.logdir, sizes), 0
        if self.full and self._measured < self.staged.max_bytes * 0.9:
            self.full = False
            log.warning("hub: the staging directory is below 90 %% of its bound again (%d "
                        "bytes); writes resume", self._measured)

    def _charge(self, grew: int, hold: bool = True) -> None:
        """Count ``grew`` bytes a transaction just appended (before it commits). Past the staging
        bound it raises ``ENOSPC`` instead (the caller undoes the transaction, the senders keep
        the data and retry) and, with ``hold``, writes are refused until the uploader made
        room: so the bound holds to the byte, checked on every write, not only at the
        uploader's measures."""
        if self.staged is None or self.staged.max_bytes <= 0:
            return
        if not self.full and self._measured + self._since + grew <= self.staged.max_bytes:
            self._since += grew
            return
        if not self.full and self._measured + self._since <= self.staged.max_bytes // 10 \
                and grew > self.staged.max_bytes and hold:
            # one batch larger than the whole bound: written once the staging directory was
            # emptied (at most a tenth of the bound left: the hub's own lines), or never (a wedge)
            self._since += grew
            self.counters["staging_oversize"] += 1
            log.warning("hub: a batch of %d bytes, more than the whole staging bound %d, is "
                        "written into the emptied staging directory", grew,
                        self.staged.max_bytes)
            return
        self.full = self.full or hold
        self.counters["staging_refused"] += 1
        raise _StagingFull(errno.ENOSPC, self._full_reason())

    def _full_reason(self) -> str:
        assert self.staged is not None
        return (f"the staging directory holds {self._measured + self._since} bytes of event "
                f"files, text logs and store segments and the bound is {self.staged.max_bytes} "
                "(RAYPLEX_STAGING_MAX_MB); writes resume as the uploader ships and deletes them")

    def _appended(self) -> int:
        """Bytes appended to event files and text logs so far (grows; a transaction's growth is
        the difference of two calls)."""
        return self.pool.appended + self.logs.written

    def _make_room(self) -> None:
        """At the bound: close every event file and rotate the text logs, so that everything
        the uploader ships can leave the staging directory."""
        try:
            self.pool.close_all()
            self.logs.rotate_all()
        except OSError as exc:
            log.warning("hub: closing files at the staging bound: %s", exc)

    # ------------------------------------------------------------- validation
    def check(self, batch: Batch) -> None:
        """Raise :class:`Unwritable` if any part of ``batch`` breaks the rules the worker
        checks too (the same functions), so nothing poisons a transaction."""
        try:
            if not isinstance(batch.sender, str) or not isinstance(batch.seq, int):
                raise ValueError("batch without a sender id and sequence number")
            telemetry = batch.sender.startswith(rules.TELEMETRY_SENDER)
            for chunk in batch.chunks:
                system = telemetry and chunk.client_id.startswith(rules.SYSTEM_GROUP + "/")
                group, _ = rules.split_client_id(chunk.client_id, internal=system)
                check_run(chunk.run, group)
                if not isinstance(chunk.blob, bytes) or not isinstance(chunk.count, int):
                    raise ValueError(f"chunk of {chunk.client_id!r} is not bytes with a count")
            for line in batch.logs:
                rules.validate_log_line(line)
            for partial in batch.partials:
                _check_partial(partial)
        except (ValueError, TypeError, AttributeError) as exc:
            raise Unwritable(str(exc)) from exc

    def refuse(self, batch: Batch, registry: GroupRegistry, experiment: str) -> Ack | None:
        """The answer to a batch of a node call that is not to be written, or ``None`` for one
        to write: a batch of another experiment than ``experiment`` (the hub's actor id: a
        batch for an earlier hub of the same name), a duplicate
        (committed before: dropped), one encoded with another registry than ``registry`` (the
        sender encodes again with the registry answered: the hub never routes), and one that
        breaks the rules (:meth:`check`: quarantined and journalled as done)."""
        if batch.experiment and experiment and batch.experiment != experiment:
            return Ack(batch.sender, batch.seq, wrong_experiment=True)
        stale = batch.registry_stamp != registry.stamp
        if batch.seq <= self.last_seq.get(batch.sender, -1):
            self.counters["duplicates_dropped"] += 1
            return Ack(batch.sender, batch.seq, duplicate=True, registry_stamp=registry.stamp,
                       registry=registry if stale else None)
        if stale:
            return Ack(batch.sender, batch.seq, stale=True, registry_stamp=registry.stamp,
                       registry=registry)
        try:
            self.check(batch)
        except Unwritable as exc:
            return self.quarantine_and_commit(batch, str(exc))
        return None

    def quarantine(self, batch: Batch, reason: str) -> None:
        """Keep ``batch`` whole under ``.rayplex/quarantine/`` (as JSON data), never to be
        written or retried; report it in ``logs/all.log``."""
        record = {
            "sender": str(batch.sender), "seq": batch.seq, "reason": reason,
            "time": time.time(),
            "chunks": [{"client_id": repr(c.client_id), "run": repr(c.run),
                        "count": repr(getattr(c, "count", None)),
                        "blob": base64.b64encode(c.blob).decode() if isinstance(c.blob, bytes)
                        else repr(c.blob)} for c in batch.chunks],
            "logs": [repr(line) for line in batch.logs],
            "partials": [repr(p) for p in batch.partials],
        }
        path = os.path.join(layout.quarantine_dir(self.logdir),
                            f"{_safe_name(str(batch.sender))}-{int(batch.seq)}.json")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, json.dumps(record).encode())
        except OSError as exc:
            log.error("hub: could not keep a quarantined batch at %s: %s", path, exc)
        self.counters["quarantined_batches"] += 1
        self.counters["quarantined_records"] += batch.record_count()
        self.hub_line(logging.ERROR, f"quarantined batch {batch.seq} of sender "
                      f"{str(batch.sender)[:8]} ({batch.record_count()} records): {reason}; kept "
                      f"at {os.path.relpath(path, self.logdir)}, never retried")

    def quarantine_and_commit(self, batch: Batch, reason: str) -> Ack:
        """:meth:`quarantine` ``batch`` and journal it as done, like a committed batch: it is
        never retried, and its resends are dropped as duplicates. Returns its answer."""
        self.quarantine(batch, reason)
        try:
            self.journal.commit([(batch.sender, batch.seq)], [], [])
            self.last_seq[batch.sender] = max(batch.seq, self.last_seq.get(batch.sender, -1))
        except OSError as exc:
            log.error("hub: could not journal a quarantined batch: %s", exc)
        return Ack(batch.sender, batch.seq, rejected=max(1, batch.record_count()))

    # ------------------------------------------------------------ transaction
    def write_or_quarantine(self, batches: list[Batch], partials: list[Partial],
                            stamp: tuple[str, int]) -> list[tuple[Batch, Ack]]:
        """Write ``batches`` (encoded with the registry ``stamp``) with ``partials`` and their
        own as one transaction (:meth:`write_batches`), then add the partials to the summary
        book; if that fails for a reason other than the disk, write one batch at a time so
        that only the batch that cannot be written is quarantined, and so too when the batches
        together would pass a staging directory's bound (as many are written as fit, the
        rest are resent). Answers every batch."""
        if not batches and not partials:
            return []
        own = [p for b in batches for p in b.partials]
        try:
            self.write_batches(batches, partials + own)
        except OSError as exc:
            if isinstance(exc, _StagingFull) and len(batches) > 1:
                return self._one_at_a_time(batches, partials, stamp)
            if isinstance(exc, _StagingFull):
                with self.lock:  # at once: the uploader's next round can empty the directory
                    self._make_room()
            error = f"{type(exc).__name__}: {exc}"
            self.hub_line(logging.ERROR, f"could not write {len(batches)} batches (data kept "
                          f"by the senders, who retry): {error}")
            return [(b, Ack(b.sender, b.seq, registry_stamp=stamp, error=error)) for b in batches]
        except Exception as exc:
            if len(batches) == 1 and not partials:
                return [(batches[0], self.quarantine_and_commit(
                    batches[0], f"{type(exc).__name__}: {exc}"))]
            if not batches:  # the merged partials alone cannot be written: a bug, say so
                log.exception("hub %s: dropped merged summary partials", self.claim.name)
                return []
            return self._one_at_a_time(batches, partials, stamp)
        self._add_partials(partials + own)
        return [(b, Ack(b.sender, b.seq, registry_stamp=stamp)) for b in batches]

    def _one_at_a_time(self, batches: list[Batch], partials: list[Partial],
                       stamp: tuple[str, int]) -> list[tuple[Batch, Ack]]:
        results = self.write_or_quarantine([], partials, stamp)
        for batch in batches:
            results += self.write_or_quarantine([batch], [], stamp)
        return results

    def _add_partials(self, partials: list[Partial]) -> None:
        assert self.state.book is not None
        now = time.time()
        for partial in partials:
            if not self.state.book.add(partial, now):
                self.hub_line(
                    logging.WARNING, f"refused a store_metrics partial of group "
                    f"{partial.group!r} step {partial.step}: that step's summary was pruned "
                    "long ago (counted in info()['summaries_refused'])")

    def write_batches(self, batches: list[Batch], partials: list[Partial]) -> dict[str, int]:
        """Write ``batches`` and commit them with ``partials`` as one journalled transaction.

        Runs are written in steps of at most half the open-file bound (each step journals the
        sizes of its files before it appends), so one transaction may touch any number of run
        directories. Returns the file sizes before the write. Raises what the write raised
        after undoing everything it appended (an :class:`OSError` means: retry later).
        """
        with self.lock:
            if not batches and not partials:
                return {}
            self.settle()
            lines = [line for batch in batches for line in batch.logs]
            by_run: dict[str, list[bytes]] = {}
            for batch in batches:
                for chunk in batch.chunks:
                    by_run.setdefault(chunk.run, []).append(chunk.blob)
            runs = list(by_run)
            ids = [(b.sender, b.seq) for b in batches]
            offsets = self._log_offsets(lines)
            step = max(1, self.pool.max_open // 2)
            before = self._appended()
            with self._undone_on_error(offsets, runs):
                self.journal.begin(offsets, ids)
                for start in range(0, len(runs), step):
                    part = runs[start:start + step]
                    writers = [self.pool.get(run) for run in part]
                    sizes = {w.path: w.bytes_written for w in writers}
                    self.journal.begin(sizes, [])
                    for path, size in sizes.items():
                        offsets.setdefault(path, size)
                    for run, writer in zip(part, writers, strict=True):
                        for blob in by_run[run]:
                            writer.write(blob)
                    for writer in writers:
                        writer.flush()  # also unpins it: the pool may close it now
                # before the lines: a refusal never undoes a text log's rotation
                self._charge(self._appended() - before + self.logs.size_of(lines),
                             hold=len(batches) <= 1)
                if lines:  # one sorted write per call: all.log is ordered by worker time
                    self.logs.write(lines)
                self.journal.commit(ids, partials, [])
            self._written()
            for batch in batches:
                self.last_seq[batch.sender] = batch.seq
                self.clients.update(chunk.client_id for chunk in batch.chunks)
            self.counters["batches_written"] += len(batches)
            self.counters["records_written"] += sum(c.count for b in batches for c in b.chunks)
            self.counters["lines_written"] += len(lines)
            return offsets

    def write_summaries(self, due: list[Summary], registry: GroupRegistry) -> None:
        """Write the summary points ``due`` (taken from the summary book), routed and encoded
        with ``registry``, as one journalled transaction; on failure hand them back to the
        book (:meth:`~rayplex.actors.summaries.SummaryBook.mark_dirty`) and raise."""
        with self.lock:
            if not due:
                return
            now = time.time()
            planned = []
            for group, step, values, _ in due:
                route = registry.summary_route(group)
                blob = b"".join(ScalarTemplate(tag_header(route.tag(tag))).record(now, step, value)
                                for tag, value in values.items())
                planned.append((route.run, (group, step), blob))
            # a second point at a written step comes with its WARNING in the same transaction:
            # never the point without the line (a full disk, a kill between two writes)
            warnings = [self._hub_log_line(
                logging.WARNING, f"late store_metrics partial for group {group!r} step {step} "
                "(from a worker declared silent, or one that joined late): wrote a second point "
                "at that step over all values") for group, step, _, flagged in due if flagged]
            try:
                self._write_planned(planned, warnings)
            except BaseException:
                assert self.state.book is not None
                self.state.book.mark_dirty([(g, s) for g, s, _, _ in due])
                raise
            for line in warnings:
                log.warning("%s", line.message)

    def _write_planned(self, planned: list[tuple[str, tuple[str, int], bytes]],
                       lines: list[LogLine] | None = None) -> None:
        """Append ``planned`` blobs (and the hub's own ``lines``) as one journalled
        transaction of keyed writes."""
        self.settle()
        lines = lines or []
        runs = list(dict.fromkeys(run for run, _, _ in planned))
        before = self._appended()
        writers = {run: self.pool.get(run) for run in runs}
        offsets = self._log_offsets(lines)
        offsets.update({w.path: w.bytes_written for w in writers.values()})
        with self._undone_on_error(offsets, runs):
            self.journal.begin(offsets, [])
            for run, _, blob in planned:
                writers[run].write(blob)
            for writer in writers.values():
                writer.flush()
            self._charge(self._appended() - before + self.logs.size_of(lines))
            if lines:
                self.logs.write(lines)
            self.journal.written([key for _, key, _ in planned])
        self._written()

    @contextlib.contextmanager
    def _undone_on_error(self, offsets: dict[str, int], runs: list[str]) -> Iterator[None]:
        """Undo the transaction (cut every file back to ``offsets``) on any exception, and
        unpin its writers whatever happens. ``offsets`` may grow inside the block."""
        try:
            yield
        except BaseException as exc:
            self._undo(offsets, runs)
            if isinstance(exc, OSError):
                self._note_problem(exc)
            raise
        finally:
            self.pool.release_all()

    # --------------------------------------------------------------- registry
    def load_registry(self) -> GroupRegistry | None:
        """The group registry this logdir's hub saved last (``None`` if none or unreadable)."""
        return load_registry(layout.registry_path(self.logdir))

    def save_registry(self, registry: GroupRegistry) -> None:
        """Save the group registry for the next incarnation (a disk problem is noted, not
        raised: the registry in memory stays the one answered)."""
        if self.lost() is not None:
            return
        try:
            save_registry(layout.registry_path(self.logdir), registry)
        except OSError as exc:
            self._note_problem(exc)

    def experiment_started(self, now: float) -> float:
        """When this logdir's first hub started (``time.time()``): read back, or ``now`` saved
        as such (a disk problem is noted; ``now`` is answered)."""
        path = layout.started_path(self.logdir)
        try:
            with open(path, encoding="utf-8") as f:
                started = json.load(f)["started"]
            if isinstance(started, (int, float)) and not isinstance(started, bool):
                return float(started)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if self.lost() is None:
            try:
                atomic_write_bytes(path, json.dumps({"started": now}).encode())
            except OSError as exc:
                self._note_problem(exc)
        return now

    # --------------------------------------------------------------- requests
    def applied(self, request_id: str) -> bool:
        """Whether request ``request_id`` was applied (and journalled as such)."""
        return request_id in self.state.applied_requests

    def commit_request(self, request_id: str) -> None:
        """Journal an applied request, so that Ray's replay of it is answered, not applied.

        Raises:
            OSError: if it cannot be journalled.
        """
        with self.lock:
            self.journal.commit([], [], [request_id])
            self.state.applied_requests.add(request_id)
            self.state.intents.pop(request_id, None)

    def append_request(self, request_id: str, path: str, append: Callable[[], T]) -> T:
        """``append()``, which appends to the one file ``path``, as one journalled transaction
        that records ``request_id`` as applied when it commits; on any exception the file is
        cut back to its size before (or kept pending undo if the cut fails)."""
        with self.lock:
            self.settle()
            offsets = {path: os.path.getsize(path) if os.path.isfile(path) else 0}
            self.journal.begin(offsets, [])
            try:
                result = append()
                self.journal.commit([], [], [request_id])
            except BaseException:
                _, failed = undo_files(offsets)
                self.journal.abort(failed or None)
                self.pending_undo.update(failed)
                raise
            self.state.applied_requests.add(request_id)
            return result

    def intent(self, request_id: str) -> str | None:
        """The path request ``request_id`` intended to change, if it began and never
        committed (:meth:`intend`)."""
        return self.state.intents.get(request_id)

    def intend(self, request_id: str, path: str) -> None:
        """Journal that request ``request_id`` is about to change ``path`` in a way its replay
        cannot simply apply again (a move, a copy refusing an existing target).

        Raises:
            OSError: if it cannot be journalled (then do not apply the request).
        """
        with self.lock:
            self.journal.intend(request_id, path)
            self.state.intend(request_id, path)

    def forget_intent(self, request_id: str) -> None:
        """The intended change was refused (nothing to answer on a replay)."""
        self.state.intents.pop(request_id, None)

    def replace_file(self, path: str, data: bytes) -> None:
        """Replace ``path`` (a params file, a projector file, a JSON export) with ``data``
        atomically, making its directory if needed, once this writer may write.

        Raises:
            LogdirLost: the logdir was deleted, replaced or taken.
            OSError: the file cannot be written.
        """
        self.own()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, data)

    def ensure_event_file(self, run: str) -> None:
        """Open an event file in ``run`` if it has none (TensorBoard lists only runs with one)."""
        with self.lock:
            run_dir = os.path.join(self.tensorboard_dir, run)
            if not any("tfevents" in name for name in os.listdir(run_dir)):
                self.pool.get(run).flush()

    # ------------------------------------------------------------- forwarding
    def committed_sizes(self) -> dict[str, int]:
        """``{path relative to the logdir: size}`` of every event file, each size ending on
        committed data, which no undo will cut (a file waiting for an undo counts only up to
        it). What a forwarder may read.

        The directory walk and a first ``stat`` run outside the lock, so a large logdir never
        holds up a write. Under the lock, only files whose size differs from the last answer
        are measured again: a file the size it had when last committed holds no uncommitted
        byte (a transaction only appends, and an undo only cuts back to a committed size).
        """
        seen: dict[str, int] = {}
        for dirpath, _, filenames in os.walk(self.tensorboard_dir):
            for name in filenames:
                if "tfevents" in name:
                    path = os.path.join(dirpath, name)
                    try:
                        seen[path] = os.path.getsize(path)
                    except OSError:
                        continue
        known = self._committed_cache
        with self.lock:
            pending = {os.path.abspath(p): s for p, s in self.pending_undo.items()}
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

    def committed_files(self) -> dict[str, int]:
        """:meth:`committed_sizes` and, measured under the lock (so between transactions),
        the size of every text log and artifact file, capped by a pending undo: what the
        uploader (:mod:`rayplex.upload`) may ship of the files that only grow.

        In a staging directory (the uploader calls this every round) it first closes the event
        files due for rotation, and measures the bytes the staging bound counts in the same
        walk of the logdir."""
        if self.staged is not None:
            with self.lock:
                self.pool.rotate(self.staged.rotate_bytes, self.staged.rotate_s)
        sizes = self.committed_sizes()
        with self.lock:
            tops = (layout.LOGS, layout.ARTIFACTS)
            walk = tree_sizes(self.logdir, tops if self.staged is None
                              else tuple(dict.fromkeys(tops + COUNTED_TREES)))
            self._measure(walk)
            pending = {os.path.abspath(p): s for p, s in self.pending_undo.items()}
            for rel, size in walk.items():
                if rel.split("/", 1)[0] in tops:
                    cap = pending.get(os.path.abspath(os.path.join(self.logdir, rel)), size)
                    sizes[rel] = min(size, cap)
        return sizes

    def open_event_files(self) -> list[str]:
        """The event files open for writing now (paths relative to the logdir): every other one
        is closed for good (a writer never reopens a file), which the uploader may delete from
        a staging directory once it is in the bucket and read."""
        with self.lock:
            return [os.path.relpath(w.path, self.logdir).replace(os.sep, "/")
                    for w in self.pool.open_writers()]

    # ------------------------------------------------------------------ claim
    def lost(self) -> str | None:
        """Why this writer may no longer write under its logdir (deleted, replaced, closed),
        else ``None``. Two stats: checked before each write and before an acknowledgement."""
        with self.lock:
            was = self.claim.lost
            reason = self.claim.check()
            if reason is not None and was is None:
                self.problem = reason
                log.error("hub: %s", reason)
            return reason

    def own(self) -> None:
        """Raise unless this writer may write under its logdir now (taking the claim first if
        the disk did not let it at start).

        Raises:
            LogdirLost: the logdir was deleted, replaced or taken, or the hub closed.
            OSError: the lock file still cannot be created.
        """
        if self.claim.lost is None and not self.claim.held:
            try:
                self.claim.take()
            except LogdirConflictError as exc:  # taken meanwhile by another hub
                self.problem = str(exc)
                log.error("hub: %s", exc)
                self.claim.release(str(exc))
        reason = self.lost()
        if reason is not None:
            raise LogdirLost(reason)

    def settle(self) -> None:
        """Before a write: check the claim, finish an undo that failed earlier (else refuse to
        write), and make the directories if the disk came back."""
        self.own()
        full = staging_full(self.logdir)  # a logdir on object storage, its bucket far behind
        if full is not None:
            raise OSError(errno.ENOSPC, full)
        if self.full:  # at its bound (_charge)
            self._make_room()
            raise OSError(errno.ENOSPC, self._full_reason())
        if self.pending_undo:
            self.pending_undo = self.journal.retry_undo(self.pending_undo)
            if self.pending_undo:
                raise OSError(f"cannot undo an earlier failed write yet ({self.problem}); "
                              "refusing new writes until it can")
        if self.problem is not None and not self._prepare_dirs():
            raise OSError(self.problem)

    def _written(self) -> None:
        if self.problem is not None:
            was, self.problem = self.problem, None
            self.hub_line(logging.WARNING, f"the logdir is writable again (earlier: {was})")
        if self.journal.compaction_due(JOURNAL_MAX_BYTES):
            self.compact()

    def _undo(self, offsets: dict[str, int], runs: list[str]) -> None:
        """Cut what a failed transaction appended, so that the resend is not a duplicate. If
        the cut itself fails, keep it pending: nothing is written until it succeeds."""
        for run in runs:
            self.pool.discard(run)
        try:
            self.logs.close()  # flushing buffered lines may fail on a full disk: cut below
        except OSError as exc:
            log.info("hub: closing the text logs during an undo: %s", exc)
        _, failed = undo_files(offsets)
        self.logs = self._open_logs()
        self.journal.abort(failed or None)
        if failed:
            self.pending_undo.update(failed)
            log.error("hub: could not undo a failed write in %d files; new writes wait",
                      len(failed))

    def compact(self) -> None:
        if self.lost() is not None:
            return
        if not self.journal.compact(self.snapshot()):
            log.warning("hub: journal compaction failed; retried later")

    def snapshot(self) -> Any:
        self.state.last_seq = self.last_seq
        self.state.pending_undo = self.pending_undo
        return self.state

    def _log_offsets(self, lines: list[Any]) -> dict[str, int]:
        """The sizes a transaction writing ``lines`` may be cut back to, taken after the text
        logs due for rotation were rotated: an undo never straddles a rotation.

        Raises:
            OSError: if a due rotation fails (nothing is written).
        """
        self.logs.rotate_due()
        return file_sizes(self._log_paths(lines))

    def _log_paths(self, lines: list[Any]) -> list[str]:
        if not lines:
            return []
        root = layout.logs_dir(self.logdir)
        clients = {line[2] for line in lines}
        return [layout.all_log_path(self.logdir)] + [
            os.path.join(root, *client.split("/", 1)) + ".log" for client in clients]

    @staticmethod
    def _hub_log_line(level: int, message: str) -> LogLine:
        return LogLine(time.time(), level, rules.HUB_CLIENT_ID, "hub", os.getpid(), "rayplex.hub",
                       message, None)

    def hub_line(self, level: int, message: str) -> None:
        """A line from the hub itself, in ``logs/all.log`` as client ``rayplex/hub``."""
        log.log(level, message)
        line = self._hub_log_line(level, message)
        with self.lock:
            if not self.claim.held or self.lost() is not None:
                return  # never into deleted files, nor into a logdir this hub does not own
            if self.pending_undo:
                return  # the files are waiting for a cut: nothing may be appended meanwhile
            if staging_full(self.logdir) is not None or self.full:
                return  # its bucket is far behind: the process log only
            try:
                offsets = self._log_offsets([line])
            except OSError as exc:
                log.warning("hub: could not rotate its text logs (%s): %s", exc, message)
                return
            try:
                self._charge(self.logs.size_of([line]), hold=False)  # before: see write_batches
                self.logs.write([line])
                self.logs.flush()
            except Exception as exc:  # never a torn line that the next write would glue onto
                log.warning("hub: could not write its own log line (%s): %s", exc, message)
                with contextlib.suppress(OSError):
                    self.logs.close()
                _, failed = undo_files(offsets)
                self.pending_undo.update(failed)
                self.logs = self._open_logs()

    def flush(self) -> None:
        with self.lock:
            self.pool.flush_all()
            self.logs.flush()

    def close(self) -> None:
        """Close every file and give the logdir up (nothing is written after this)."""
        with self.lock:
            try:
                self.pool.close_all()
                self.logs.close()
            finally:
                self.claim.release()


def check_run(run: object, group: str) -> None:
    """Raise ``ValueError`` unless ``run`` is a run of ``group`` (``<group>[/...]`` or
    ``hparams/<group>/<name>``) made of valid parts."""
    if not isinstance(run, str):
        raise ValueError(f"run must be a str, got {type(run).__name__}")
    parts = run.split("/")
    for part in parts:
        rules.validate_part(part, f"part of run {run!r}")
    if parts[0] != group and not (parts[0] == "hparams" and len(parts) == 3 and parts[1] == group):
        raise ValueError(f"run {run!r} is outside group {group!r}")


def _check_partial(partial: Any) -> None:
    if not isinstance(partial, Partial):
        raise ValueError(f"not a store_metrics partial: {partial!r:.80}")
    rules.validate_part(partial.group, "summary group")
    rules.check_step(partial.step)
    for key in partial.metrics:
        rules.validate_metric_key(key)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:64] or "sender"
