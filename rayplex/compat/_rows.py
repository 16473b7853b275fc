"""The ML-Logger compat logger's row files (``metrics.pkl``, ``*.jsonl``), appended off the
caller's thread: a row is queued, and one background thread appends what queued up for a file
in one hub request, in order. ``flush()`` waits until everything queued is appended.

A log call therefore never waits on the hub (as rayplex's own log calls); the queue is bounded
in bytes, under the worker's buffer bound: a quarter of ``RAYPLEX_MAX_BUFFER_MB`` (a full queue
makes ``put`` wait, so memory stays bounded while the hub is away). An
append that fails (the hub is unreachable or cannot write) is kept at the head of the queue and
retried with back-off; ``flush()`` raises the failure while it lasts.

Example:
    >>> written = []
    >>> class Target:  # stands in for a Logger's ArtifactClient (logger.artifacts)
    ...     def append_rows(self, path, rows, framed):
    ...         written.append((path, len(rows), framed))
    >>> rows = RowWriter()
    >>> t = Target()
    >>> for i in range(3):
    ...     rows.put(t, "metrics.pkl", b"row", framed=True)
    >>> rows.flush(timeout=10)
    >>> sum(n for _, n, _ in written)
    3
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rayplex.config import ROWS_QUEUE_SHARE, ROWS_REQUEST_BYTES, config
from rayplex.errors import FlushTimeoutError
from rayplex.nested import Backoff


def max_queued_bytes() -> int:
    """The queue's bound in bytes: ``RAYPLEX_MAX_BUFFER_MB`` / ``ROWS_QUEUE_SHARE``; a full
    queue makes the next row wait (the hub is away or slower than the rows)."""
    return config().max_buffer_bytes // ROWS_QUEUE_SHARE


class RowWriter:
    """Appends queued rows in order, per file, in batches, on a thread of its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[Any, str, bool, bytes]] = []
        self._queued_bytes = 0
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, target: Any, path: str, row: bytes, framed: bool) -> None:
        """Queue one row for ``target.append_rows(path, [...], framed)`` (``target`` is a Logger's
        :attr:`rayplex.Logger.artifacts`)."""
        with self._cond:
            bound = max_queued_bytes()
            while self._queued_bytes + len(row) > bound and self._queue:
                self._cond.wait(1.0)
            self._queue.append((target, path, framed, row))
            self._queued_bytes += len(row)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rayplex-compat-rows",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued row is appended.

        Raises:
            The last append failure (the rows stay queued and are retried), or
            FlushTimeoutError: after ``timeout`` seconds (default ``RAYPLEX_FLUSH_TIMEOUT_S``).
        """
        limit = config().flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            self._error = None
            while self._queue or self._busy:
                if self._error is not None:
                    raise self._error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FlushTimeoutError(f"ML-Logger rows not appended within {limit:.0f} s; "
                                            "they stay queued and are retried")
                self._cond.wait(min(left, 0.5))

    @property
    def queued_bytes(self) -> int:
        """The bytes of the rows queued (not yet being appended)."""
        with self._cond:
            return self._queued_bytes

    def _run(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch = self._take()
                self._busy = True
            try:
                for target, path, framed, rows in _group(batch):
                    target.append_rows(path, rows, framed)
                    batch = batch[len(rows):]
            except BaseException as exc:  # kept and retried: nothing already logged is lost
                with self._cond:
                    self._queue[:0] = batch
                    self._queued_bytes += sum(len(item[3]) for item in batch)
                    self._error = exc
                    self._busy = False
                    self._cond.notify_all()
                backoff.sleep()  # back-off between retries, not synchronisation
                continue
            backoff.reset()
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _take(self) -> list[tuple[Any, str, bool, bytes]]:
        size, n = 0, 0
        for _, _, _, row in self._queue:
            if n and size + len(row) > min(ROWS_REQUEST_BYTES, max_queued_bytes()):
                break
            size += len(row)
            n += 1
        batch, self._queue = self._queue[:n], self._queue[n:]
        self._queued_bytes -= size
        return batch


def _group(batch: list[tuple[Any, str, bool, bytes]]) -> list[tuple[Any, str, bool, list[bytes]]]:
    """Consecutive rows for the same target, file and framing, in order."""
    out: list[tuple[Any, str, bool, list[bytes]]] = []
    for target, path, framed, row in batch:
        if out and out[-1][0] is target and out[-1][1] == path and out[-1][2] == framed:
            out[-1][3].append(row)
        else:
            out.append((target, path, framed, [row]))
    return out
