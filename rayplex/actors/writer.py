"""The hub's transactional writer: validates a node call's batches, appends them and journals
the transaction; undoes it on any exception; quarantines what can never be written.

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
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from rayplex import rules
from rayplex.actors.claim import LogdirClaim, LogdirLost
from rayplex.actors.journal import Journal, file_sizes, undo_files
from rayplex.actors.logfiles import LogFiles
from rayplex.atomic import atomic_write_bytes
from rayplex.config import config
from rayplex.errors import LogdirConflictError
from rayplex.events import WriterPool
from rayplex.records import Batch, Partial
from rayplex.textlog import LogLine, parse_level

log = logging.getLogger("rayplex.hub")

STATE_DIR = ".rayplex"
QUARANTINE_DIR = "quarantine"
JOURNAL_MAX_BYTES = 64 * 2**20
"""The journal is compacted into one snapshot once it grows past this."""


class Unwritable(Exception):
    """A batch that no retry can write (malformed or refused by the rules)."""


class HubWriter:
    """Owns every file under ``logdir`` that the data path appends to, and the journal.

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
        self.tensorboard_dir = os.path.join(logdir, "tensorboard")
        self.state_dir = os.path.join(logdir, STATE_DIR)
        self.lock = threading.RLock()
        self.problem: str | None = None
        """The last disk problem (e.g. no space), until a write succeeds again."""
        self.counters = {"records_written": 0, "batches_written": 0, "lines_written": 0,
                         "duplicates_dropped": 0, "quarantined_batches": 0,
                         "quarantined_records": 0}
        self.clients: set[str] = set()
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
        self.journal = Journal(os.path.join(self.state_dir, "journal"), fsync=cfg.fsync,
                               root=logdir)
        self.state = self.journal.recover(cfg.effective_summary_delay_s, time.time(),
                                          cfg.effective_summary_silent_s,
                                          summary_hold_s=cfg.effective_summary_hold_s)
        self.last_seq: dict[str, int] = self.state.last_seq
        self.pending_undo: dict[str, int] = dict(self.state.pending_undo)

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
        return LogFiles(os.path.join(self.logdir, "logs"), max_bytes=config().log_max_bytes or None,
                        level=self.level)

    # ------------------------------------------------------------- validation
    def check(self, batch: Batch) -> None:
        """Raise :class:`Unwritable` if any part of ``batch`` breaks the rules the worker
        checks too (the same functions), so nothing poisons a transaction."""
        try:
            if not isinstance(batch.sender, str) or not isinstance(batch.seq, int):
                raise ValueError("batch without a sender id and sequence number")
            for chunk in batch.chunks:
                group, _ = rules.split_client_id(chunk.client_id)
                _check_run(chunk.run, group)
                if not isinstance(chunk.blob, bytes) or not isinstance(chunk.count, int):
                    raise ValueError(f"chunk of {chunk.client_id!r} is not bytes with a count")
            for line in batch.logs:
                rules.validate_log_line(line)
            for partial in batch.partials:
                _check_partial(partial)
        except (ValueError, TypeError, AttributeError) as exc:
            raise Unwritable(str(exc)) from exc

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
        path = os.path.join(self.state_dir, QUARANTINE_DIR,
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

    # ------------------------------------------------------------ transaction
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
            offsets = file_sizes(self._log_paths(lines))
            step = max(1, self.pool.max_open // 2)
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

    def write_summaries(self, planned: list[tuple[str, tuple[str, int], bytes]]) -> None:
        """Write summary points — ``(run, (group, step), framed records)`` each, routed and
        encoded by the hub's summary schedule — as one journalled transaction."""
        with self.lock:
            if not planned:
                return
            self.settle()
            runs = list(dict.fromkeys(run for run, _, _ in planned))
            writers = {run: self.pool.get(run) for run in runs}
            offsets = {w.path: w.bytes_written for w in writers.values()}
            with self._undone_on_error(offsets, runs):
                self.journal.begin(offsets, [])
                for run, _, blob in planned:
                    writers[run].write(blob)
                for writer in writers.values():
                    writer.flush()
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

    def _log_paths(self, lines: list[Any]) -> list[str]:
        if not lines:
            return []
        root = os.path.join(self.logdir, "logs")
        clients = {line[2] for line in lines}
        return [os.path.join(root, "all.log")] + [
            os.path.join(root, *client.split("/", 1)) + ".log" for client in clients]

    def hub_line(self, level: int, message: str) -> None:
        """A line from the hub itself, in ``logs/all.log`` as client ``rayplex/hub``."""
        log.log(level, message)
        line = LogLine(time.time(), level, rules.HUB_CLIENT_ID, "hub", os.getpid(), "rayplex.hub",
                       message, None)
        with self.lock:
            if not self.claim.held or self.lost() is not None:
                return  # never into deleted files, nor into a logdir this hub does not own
            if self.pending_undo:
                return  # the files are waiting for a cut: nothing may be appended meanwhile
            offsets = file_sizes(self._log_paths([line]))
            try:
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


def _check_run(run: object, group: str) -> None:
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
