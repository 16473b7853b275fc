"""The hub's journal: what it wrote and acknowledged, so that a restarted hub neither loses
nor duplicates anything.

Every write the hub makes is a small transaction:

1. ``begin`` records the current size of each file it is about to append to, and the batches
   ``(sender, seq)`` it is about to write;
2. the data is appended and flushed;
3. ``commit`` records which batches were written (and which were quarantined), the
   ``store_metrics`` partials applied and the ids of applied artifact/params requests; only
   then is anything acknowledged.

A hub that dies between 1 and 3 leaves a ``begin`` without ``commit``: on restart the files are
truncated back to the recorded sizes (no torn record, no half batch) and, since the batches were
never acknowledged, their senders resend them. A hub that dies after 3 drops the resends by
``(sender, seq)``. If a truncation fails (read-only or failing disk), the sizes stay *pending
undo*: they survive restarts and compaction until :meth:`Journal.retry_undo` succeeds, and the
hub must not append to those files meanwhile (the truncation would cut the new data too).

Records are JSON objects (data, never pickles: a logdir from elsewhere cannot run code in
the hub), each length-prefixed and CRC-checked (:func:`encode_chunk`), so a torn last record is
ignored. A journal written by an older rayplex (cloudpickle records) or anything else that is
not ours is not interpreted: it is reported, moved aside to ``journal.unreadable`` and
replaced. At start, and whenever the journal grows past a bound, it is compacted into one
``snapshot`` record; a compaction that fails (full or read-only disk) leaves the journal as it
is and is retried later (:meth:`Journal.compaction_due`): the hub always comes up.

Example:
    >>> import tempfile, os
    >>> j = Journal(os.path.join(tempfile.mkdtemp(), "journal"))
    >>> state = j.recover()
    >>> j.begin({}, [("worker-a", 1)]); j.commit([("worker-a", 1)], [], ["req-1"])
    >>> state = Journal(j.path).recover()
    >>> state.last_seq, "req-1" in state.applied_requests
    ({'worker-a': 1}, True)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rayplex.actors.state import partial_from_json, partial_to_json
from rayplex.actors.summaries import SummaryBook
from rayplex.artifacts import decode_chunks, encode_chunk
from rayplex.atomic import atomic_write_bytes as atomic_write
from rayplex.config import COMPACTION_RETRY_S, MAX_APPLIED_REQUESTS, MAX_INTENTS
from rayplex.records import Partial

log = logging.getLogger("rayplex.hub")

JOURNAL_FORMAT = "rayplex-journal"
_VERSION = 1

BatchId = tuple[str, int]


class RecentIds:
    """An insertion-ordered set that keeps only the ``maxlen`` most recent ids.

    Example:
        >>> ids = RecentIds(maxlen=2)
        >>> for i in ("a", "b", "c"):
        ...     ids.add(i)
        >>> "a" in ids, list(ids)
        (False, ['b', 'c'])
    """

    def __init__(self, ids: Iterable[str] = (), maxlen: int = MAX_APPLIED_REQUESTS) -> None:
        self.maxlen = maxlen
        self._ids: dict[str, None] = {}
        for request_id in ids:
            self.add(request_id)

    def add(self, request_id: str) -> None:
        self._ids.pop(request_id, None)
        self._ids[request_id] = None
        while len(self._ids) > self.maxlen:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)


@dataclass
class HubState:
    """What a hub must remember across restarts."""

    last_seq: dict[str, int] = field(default_factory=dict)
    """Highest committed (written or quarantined) ``seq`` per sender."""
    book: SummaryBook | None = None
    applied_requests: RecentIds = field(default_factory=RecentIds)
    """Ids of applied artifact/params requests (the most recent :data:`MAX_APPLIED_REQUESTS`)."""
    pending_undo: dict[str, int] = field(default_factory=dict)
    """Files that must still be cut back to these sizes (truncation failed): path -> size.
    The hub must not append to them until :meth:`Journal.retry_undo` succeeds."""
    undone: dict[str, int] = field(default_factory=dict)
    """Files truncated back during recovery (path -> size), for the hub's log."""
    unfinished: list[BatchId] = field(default_factory=list)
    """Batches of the transaction found unfinished at recovery (their senders resend them)."""
    intents: dict[str, str] = field(default_factory=dict)
    """Requests begun but not recorded as applied: request id -> the path they write (the
    most recent :data:`MAX_INTENTS`). A replay of one whose path is in place was applied."""

    def intend(self, request_id: str, path: str) -> None:
        self.intents.pop(request_id, None)
        self.intents[request_id] = path
        while len(self.intents) > MAX_INTENTS:
            del self.intents[next(iter(self.intents))]


class Journal:
    """An append-only, CRC-framed record of the hub's transactions (JSON records).

    File paths are journalled relative to ``root`` (the logdir; by default the parent of the
    journal's directory, as in ``logdir/.rayplex/journal``), so a logdir can be moved; a
    recorded path that resolves outside ``root`` is never truncated (a hostile journal must not
    cut files elsewhere). Paths handed back in :class:`HubState` are ``root``-joined.
    """

    def __init__(self, path: str, fsync: bool = False, root: str | None = None) -> None:
        self.path = path
        self.fsync = fsync
        self.root = root if root is not None else os.path.dirname(
            os.path.dirname(os.path.abspath(path)))
        self._fd: int | None = None
        self._end = 0
        """Bytes of good records; the next record is written here (over any failed one)."""
        self._preamble: list[dict[str, Any]] = []
        """Records owed to the journal (could not be written), prepended to the next append."""
        self._compact_failed_at: float | None = None

    # --------------------------------------------------------------- recovery
    def recover(self, summary_delay_s: float = 0.0, now: float = 0.0,
                summary_silent_s: float = 10.0, keep_written: int = 1024,
                summary_hold_s: float = 0.0) -> HubState:
        """Read the journal, undo an unfinished transaction, compact, and prepare to append.

        Never raises for a bad journal or a full or read-only disk: what cannot be read is
        reported and ignored, an undo that fails stays in :attr:`HubState.pending_undo`, a
        compaction that fails is retried later, and the file is opened for appending lazily.
        A journal with records means a restart: the book is :meth:`~SummaryBook.disturbed`
        at ``now``, since senders resend what the previous incarnation never answered.
        """
        self.close()
        self._preamble = []
        book = SummaryBook(summary_delay_s, summary_silent_s, keep_written, summary_hold_s)
        state = HubState(book=book)
        replay = _Replay(state, now, self._paths_from_journal)
        self._end = 0
        data = b""
        unusable = False
        try:
            if os.path.exists(self.path):
                with open(self.path, "rb") as f:
                    data = f.read()
        except OSError as exc:
            log.warning("journal %s cannot be read (%s): starting without its state",
                        self.path, exc)
            unusable = True
        records, _, problem = decode_chunks(data)
        if problem:
            log.warning("journal %s: ignoring a torn last record (%s)", self.path, problem)
        for index, raw in enumerate(records):
            try:
                replay.apply(json.loads(raw))
            except Exception as exc:  # data from disk: report, never crash, never execute
                log.warning(
                    "journal %s: record %d is not a rayplex %s record (%s); ignoring it and "
                    "everything after it%s", self.path, index, JOURNAL_FORMAT, str(exc)[:200],
                    " (a journal of an older rayplex is never unpickled)" if index == 0 else "")
                unusable = True
                break
            self._end += len(raw) + 12
        if unusable:
            self._set_aside()
        pending = dict(state.pending_undo)
        if replay.open_begin is not None:
            state.unfinished = replay.open_batches
            for path, size in replay.open_begin.items():
                pending[path] = min(size, pending.get(path, size))
        state.undone, state.pending_undo = undo_files(pending)
        if pending:
            # If compaction fails, these records say what recovery did before anything else.
            self._preamble.append({"k": "pending",
                                   "undo": self._paths_to_journal(state.pending_undo)})
        if records:
            assert state.book is not None
            state.book.disturbed(now)
        self.compact(state)
        return state

    def _set_aside(self) -> None:
        try:
            os.replace(self.path, self.path + ".unreadable")
            log.warning("journal %s moved aside to %s.unreadable", self.path, self.path)
            self._end = 0
        except OSError as exc:
            log.warning("could not move journal %s aside (%s)", self.path, exc)

    def compact(self, state: HubState) -> bool:
        """Replace the journal by one snapshot of ``state`` (atomically).

        Returns:
            ``False`` if it could not (full or read-only disk: warned, the journal is kept as
            it is and appended to; :meth:`compaction_due` says when to try again).
        """
        assert state.book is not None
        snapshot = {
            "k": "snapshot", "format": JOURNAL_FORMAT, "v": _VERSION,
            "last_seq": state.last_seq,
            "book": state.book.to_json(),
            "pending_undo": self._paths_to_journal(state.pending_undo),
            "requests": list(state.applied_requests),
            "intents": {request: self._path_to_journal(path)
                        for request, path in state.intents.items()},
        }
        blob = encode_chunk(_dumps(snapshot))
        try:
            atomic_write(self.path, blob)
        except OSError as exc:
            self._compact_failed_at = time.monotonic()
            log.warning("journal %s: compaction failed (%s); keeping the journal as it is and "
                        "retrying in %.0f s", self.path, exc, COMPACTION_RETRY_S)
            return False
        self.close()
        self._end = len(blob)
        self._preamble.clear()
        self._compact_failed_at = None
        return True

    def compaction_due(self, max_bytes: int) -> bool:
        """Whether the hub should call :meth:`compact` now: the journal passed ``max_bytes``,
        or a failed compaction's retry time has come."""
        if self._compact_failed_at is not None:
            return time.monotonic() - self._compact_failed_at >= COMPACTION_RETRY_S
        return self._end > max_bytes

    def size(self) -> int:
        """Bytes of good records in the journal."""
        return self._end

    # ---------------------------------------------------------- transactions
    def _append(self, record: dict[str, Any]) -> None:
        blob = b"".join(encode_chunk(_dumps(r)) for r in (*self._preamble, record))
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        written = 0
        try:
            while written < len(blob):  # pwrite at the good end: overwrites a failed record
                written += os.pwrite(self._fd, blob[written:], self._end + written)
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # else the next record is written over it
                os.ftruncate(self._fd, self._end)
            raise
        self._end += len(blob)
        self._preamble.clear()

    def begin(self, offsets: dict[str, int], batches: Sequence[BatchId] = ()) -> None:
        """About to append to these files, whose sizes are now ``offsets``, the data of
        ``batches``.

        Raises:
            OSError: if it cannot be journalled (then write nothing).
        """
        self._append({"k": "begin", "offsets": self._paths_to_journal(offsets),
                      "batches": [list(b) for b in batches]})

    def commit(self, senders: Sequence[BatchId], partials: Sequence[Partial] = (),
               requests: Sequence[str] = (), quarantined: Sequence[BatchId] = ()) -> None:
        """The data of the last ``begin`` is written: these batches may be acknowledged.

        Args:
            senders: ``(sender, seq)`` of the batches written.
            partials: The ``store_metrics`` partials applied.
            requests: Ids of the artifact/params requests applied.
            quarantined: ``(sender, seq)`` of batches quarantined (never to be retried: they
                count as committed for de-duplication).

        Raises:
            OSError: if it cannot be journalled (then undo the transaction; ack nothing).
        """
        self._append({
            "k": "commit",
            "senders": [list(b) for b in senders],
            "partials": [partial_to_json(p) for p in partials],
            "requests": list(requests),
            "quarantined": [list(b) for b in quarantined],
        })

    def intend(self, request_id: str, path: str) -> None:
        """Request ``request_id`` is about to change ``path`` in a way a replay cannot simply
        apply again (a move, a directory copy): if the hub dies before :meth:`commit`, the
        restarted hub finds the intent (:attr:`HubState.intents`) and answers the replay.

        Raises:
            OSError: if it cannot be journalled (then do not apply the request).
        """
        self._append({"k": "intent", "request": request_id, "path": self._path_to_journal(path)})

    def written(self, keys: Sequence[tuple[str, int]]) -> None:
        """The summaries of these (group, step) of the last ``begin`` are written.

        Raises:
            OSError: if it cannot be journalled.
        """
        self._append({"k": "written", "keys": [list(k) for k in keys]})

    def abort(self, pending: dict[str, int] | None = None) -> None:
        """The last ``begin`` was undone by the running hub, except the files in ``pending``
        (path -> size) whose truncation failed: they stay pending undo.

        Never raises: a record that cannot be written now is written before the next one.
        """
        record = {"k": "abort", "pending": self._paths_to_journal(pending or {})}
        try:
            self._append(record)
        except OSError as exc:
            log.error("journal %s: could not journal an abort (%s); journalled with the next "
                      "record", self.path, exc)
            self._preamble.append(record)

    def retry_undo(self, pending: dict[str, int]) -> dict[str, int]:
        """Try the pending truncations again; return what is still pending.

        Pass the hub's whole pending set: the journal records the result as the new set. If
        that record cannot be written, everything stays pending (truncating again later is
        harmless as long as the hub does not append to those files).
        """
        undone, still = undo_files(pending)
        if not undone:
            return still
        try:
            self._append({"k": "pending", "undo": self._paths_to_journal(still)})
        except OSError as exc:
            log.warning("journal %s: could not record a finished undo (%s)", self.path, exc)
            return dict(pending)
        return still

    def _paths_to_journal(self, sizes: dict[str, int]) -> dict[str, int]:
        root = os.path.abspath(self.root)
        out = {}
        for path, size in sizes.items():
            full = os.path.abspath(path)
            inside = os.path.commonpath([full, root]) == root
            out[os.path.relpath(full, root) if inside else full] = size
        return out

    def _path_to_journal(self, path: str) -> str:
        return next(iter(self._paths_to_journal({path: 0})))

    def _paths_from_journal(self, sizes: dict[str, int]) -> dict[str, int]:
        real_root = os.path.realpath(self.root)
        out = {}
        for recorded, size in sizes.items():
            path = os.path.normpath(os.path.join(self.root, recorded))
            real = os.path.realpath(path)
            if real == real_root or os.path.commonpath([real, real_root]) != real_root:
                log.warning("journal %s: ignoring file %r outside the logdir %s", self.path,
                            recorded[:300], self.root)
                continue
            out[path] = size
        return out

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None


class _Replay:
    """Applies journal records to a :class:`HubState`, checking each before changing anything."""

    def __init__(self, state: HubState, now: float,
                 paths: Callable[[dict[str, int]], dict[str, int]]) -> None:
        self.state = state
        self.now = now
        self.paths = paths
        self.open_begin: dict[str, int] | None = None
        self.open_batches: list[BatchId] = []
        self.written: list[tuple[str, int]] = []

    def apply(self, record: Any) -> None:
        if not isinstance(record, dict):
            raise ValueError("a record must be a JSON object")
        kind = record.get("k")
        state = self.state
        if kind == "snapshot":
            if record.get("format") != JOURNAL_FORMAT or record.get("v") != _VERSION:
                raise ValueError("snapshot of an unknown format or version")
            assert state.book is not None
            book = SummaryBook.from_json(record["book"], state.book.delay_s,
                                         state.book.silent_s, state.book.keep_written, self.now,
                                         state.book.hold_s)
            last_seq = _seqs(record["last_seq"])
            pending = self.paths(_sizes(record["pending_undo"]))
            requests = _strings(record["requests"])
            state.book, state.last_seq, state.pending_undo = book, last_seq, pending
            state.applied_requests = RecentIds(requests)
            state.intents = {}
            for request, path in _intents(record.get("intents", {})).items():
                self._intend(request, path)
            self.open_begin = None
        elif kind == "begin":
            offsets = self.paths(_sizes(record["offsets"]))
            if self.open_begin is not None:  # a transaction in several steps: the first size wins
                offsets = {**offsets, **self.open_begin}
                self.open_batches = self.open_batches + _batch_ids(record["batches"])
            else:
                self.open_batches = _batch_ids(record["batches"])
            self.open_begin = offsets
        elif kind == "commit":
            senders = _batch_ids(record["senders"]) + _batch_ids(record["quarantined"])
            partials = [partial_from_json(p) for p in _list(record["partials"])]
            requests = _strings(record["requests"])
            for sender, seq in senders:
                state.last_seq[sender] = max(seq, state.last_seq.get(sender, -1))
            assert state.book is not None
            for partial in partials:
                state.book.add(partial, self.now)
            for request_id in requests:
                state.applied_requests.add(request_id)
                state.intents.pop(request_id, None)
            self.open_begin = None
        elif kind == "intent":
            self._intend(_str(record["request"]), _str(record["path"]))
        elif kind == "written":
            keys = [(_str(g), _int(s)) for g, s in _list(record["keys"])]
            assert state.book is not None
            state.book.mark_written(keys)
            self.open_begin = None
        elif kind == "abort":
            for path, size in self.paths(_sizes(record["pending"])).items():
                state.pending_undo[path] = min(size, state.pending_undo.get(path, size))
            self.open_begin = None
        elif kind == "pending":
            state.pending_undo = self.paths(_sizes(record["undo"]))
            self.open_begin = None
        else:
            raise ValueError(f"unknown record kind {kind!r:.40}")

    def _intend(self, request_id: str, recorded: str) -> None:
        for path in self.paths({recorded: 0}):  # nothing outside the logdir
            self.state.intend(request_id, path)


def undo_files(offsets: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Cut files back to ``offsets``.

    Returns:
        ``(undone, pending)``: the files that were longer and were cut, and those whose
        truncation failed (logged).
    """
    undone, pending = {}, {}
    for path, size in offsets.items():
        try:
            if os.path.exists(path) and os.path.getsize(path) > size:
                os.truncate(path, size)
                undone[path] = size
        except OSError as exc:
            log.error("could not truncate %s back to %d bytes (%s); will retry", path, size,
                      os.strerror(exc.errno) if exc.errno else exc)
            pending[path] = size
    return undone, pending


def truncate_to(offsets: dict[str, int]) -> dict[str, int]:
    """Cut files back to ``offsets``; returns the files that were longer (see :func:`undo_files`
    for the ones that could not be cut)."""
    return undo_files(offsets)[0]


def file_sizes(paths: list[str]) -> dict[str, int]:
    """Current sizes (0 for a file that does not exist yet)."""
    return {p: os.path.getsize(p) if os.path.exists(p) else 0 for p in paths}


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an int, got {type(value).__name__}")
    return value


def _strings(value: Any) -> list[str]:
    return [_str(v) for v in _list(value)]


def _batch_ids(value: Any) -> list[BatchId]:
    out = []
    for item in _list(value):
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("a batch id must be [sender, seq]")
        out.append((_str(item[0]), _int(item[1])))
    return out


def _intents(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("expected an object of request id -> path")
    return {_str(k): _str(v) for k, v in value.items()}


def _seqs(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("expected an object of sender -> seq")
    return {_str(k): _int(v) for k, v in value.items()}


def _sizes(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("expected an object of path -> size")
    out = {_str(k): _int(v) for k, v in value.items()}
    if any(size < 0 for size in out.values()):
        raise ValueError("a file size must not be negative")
    return out

