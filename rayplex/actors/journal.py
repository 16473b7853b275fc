"""The hub's journal: what it wrote and acknowledged, so that a restarted hub neither loses
nor duplicates anything.

Every write the hub makes is a small transaction:

1. ``begin`` records the current size of each file it is about to append to;
2. the data is appended and flushed;
3. ``commit`` records which batches ``(sender, seq)`` and which node-buffer merge
   ``(node, seq)`` that was, with their ``store_metrics`` partials; only then is it acknowledged.

A hub that dies between 1 and 3 leaves a ``begin`` without ``commit``: on restart the files are
truncated back to the recorded sizes (no torn record, no half batch) and, since the batches were
never acknowledged, their senders resend them. A hub that dies after 3 drops the resends by
``(sender, seq)``. Records are length-prefixed and CRC-checked (:func:`encode_chunk`), so a torn
last record is ignored. At start, and whenever the journal grows past a bound, it is compacted
into one ``snapshot`` record.

Example:
    >>> import tempfile, os
    >>> j = Journal(os.path.join(tempfile.mkdtemp(), "journal"))
    >>> state = j.recover()
    >>> j.begin({}); j.commit([("worker-a", 1)], None, [])
    >>> Journal(j.path).recover().last_seq
    {'worker-a': 1}
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from rayplex.actors.summaries import SummaryBook
from rayplex.artifacts import decode_chunks, encode_chunk
from rayplex.records import Partial

log = logging.getLogger("rayplex.hub")


@dataclass
class HubState:
    """What a hub must remember across restarts."""

    last_seq: dict[str, int] = field(default_factory=dict)
    applied_node_calls: dict[str, int] = field(default_factory=dict)
    book: SummaryBook | None = None
    undone: dict[str, int] = field(default_factory=dict)
    """Files truncated back during recovery (path -> size), for the hub's log."""


class Journal:
    """An append-only, CRC-framed record of the hub's transactions."""

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._file: Any = None

    # --------------------------------------------------------------- recovery
    def recover(self, summary_delay_s: float = 0.0, now: float = 0.0) -> HubState:
        """Read the journal, undo an unfinished transaction, compact, and open for appending."""
        book = SummaryBook(summary_delay_s)
        state = HubState(book=book)
        pending: dict[str, int] | None = None
        data = b""
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                data = f.read()
        records, _, problem = decode_chunks(data)
        if problem:
            log.warning("journal %s: ignoring a torn last record (%s)", self.path, problem)
        for raw in records:
            record = cloudpickle.loads(raw)
            kind = record[0]
            if kind == "snapshot":
                _, state.last_seq, state.applied_node_calls, book = record
                book.delay_s = summary_delay_s
                state.book = book
            elif kind == "begin":
                pending = record[1]
            elif kind == "abort":
                pending = None
            elif kind == "commit":
                pending = None
                _, senders, node, partials = record
                for sender, seq in senders:
                    state.last_seq[sender] = max(seq, state.last_seq.get(sender, -1))
                if node is not None:
                    state.applied_node_calls[node[0]] = node[1]
                for partial in partials:
                    book.add(partial, now)
            elif kind == "written":
                pending = None
                book.mark_written(record[1])
        if pending:
            state.undone = truncate_to(pending)
        self.compact(state)
        return state

    def compact(self, state: HubState) -> None:
        """Replace the journal by one snapshot of ``state`` (atomically)."""
        self.close()
        directory = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".tmp-journal-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(encode_chunk(cloudpickle.dumps(
                    ("snapshot", state.last_seq, state.applied_node_calls, state.book))))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open

    def size(self) -> int:
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    # ---------------------------------------------------------- transactions
    def _append(self, record: tuple[Any, ...]) -> None:
        if self._file is None or self._file.closed:
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        self._file.write(encode_chunk(cloudpickle.dumps(record)))
        if self.fsync:
            os.fsync(self._file.fileno())

    def begin(self, offsets: dict[str, int]) -> None:
        """About to append to these files, whose sizes are now ``offsets``."""
        self._append(("begin", offsets))

    def commit(self, senders: list[tuple[str, int]], node: tuple[str, int] | None,
               partials: list[Partial]) -> None:
        """The data of the last ``begin`` is written; these batches may be acknowledged."""
        self._append(("commit", senders, node, partials))

    def written(self, keys: list[tuple[str, int]]) -> None:
        """The summaries of these (group, step) of the last ``begin`` are written."""
        self._append(("written", keys))

    def abort(self) -> None:
        """The last ``begin`` was undone by the running hub."""
        self._append(("abort",))

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


def file_sizes(paths: list[str]) -> dict[str, int]:
    """Current sizes (0 for a file that does not exist yet)."""
    return {p: os.path.getsize(p) if os.path.exists(p) else 0 for p in paths}


def truncate_to(offsets: dict[str, int]) -> dict[str, int]:
    """Cut files back to ``offsets``; returns the files that were longer."""
    undone = {}
    for path, size in offsets.items():
        try:
            if os.path.exists(path) and os.path.getsize(path) > size:
                os.truncate(path, size)
                undone[path] = size
        except OSError as exc:  # report, but let the hub come up
            log.error("could not truncate %s back to %d bytes: %s", path, size, exc)
    return undone
