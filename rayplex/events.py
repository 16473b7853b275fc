"""Event files: one :class:`EventWriter` per open event file, and a :class:`WriterPool` that keeps
at most a bounded number of them open, one run directory at a time.

File names are ``events.out.tfevents.<unix time>.<host>.<pid>.<sequence>.<random>``: a restarted
hub (or a second experiment in the same directory) starts a new file and never overwrites one,
and the files one process opens in a run directory sort in the order they were opened (the
sequence number), which is the order TensorBoard reads them in.

Example:
    >>> import tempfile
    >>> from rayplex.event_bytes import ScalarTemplate, tag_header
    >>> w = EventWriter(tempfile.mkdtemp())
    >>> w.write(ScalarTemplate(tag_header("loss")).record(0.0, 1, 0.5))
    >>> w.close()
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator

from rayplex.event_bytes import file_version_record
from rayplex.files import apply_to_all

log = logging.getLogger(__name__)

_SEQUENCE = itertools.count()  # next() on a count is atomic under the GIL


def event_file_name(now: float | None = None) -> str:
    """A fresh, unique event file name; later calls in one process sort after earlier ones.

    Example:
        >>> a, b = event_file_name(1.0), event_file_name(1.0)
        >>> a.startswith("events.out.tfevents.0000000001."), a < b
        (True, True)
    """
    stamp = int(time.time() if now is None else now)
    host = socket.gethostname().replace("/", "_")
    return (f"events.out.tfevents.{stamp:010d}.{host}.{os.getpid()}.{next(_SEQUENCE):09d}."
            f"{secrets.token_hex(4)}")


class EventWriter:
    """Appends framed event records to a new event file in ``run_dir``.

    Attributes:
        run_dir: The run directory.
        path: The event file (a new name for every writer: never appended to by another).
        bytes_written: The file's size as written by this writer (the hub's journal records it
            before a write, to cut a failed write off again).
    """

    def __init__(self, run_dir: str | os.PathLike[str], fsync: bool = False) -> None:
        self.run_dir = os.fspath(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self.path = os.path.join(self.run_dir, event_file_name())
        # "xb": never open a file somebody else has; unbuffered appends keep records whole.
        self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115 - lives as long as self
        self._fsync = fsync
        self.bytes_written = 0
        self.opened = time.monotonic()
        """When the file was opened (:meth:`WriterPool.rotate` closes it past an age)."""
        self.pinned = False
        """Set by :class:`WriterPool` while a caller holds the writer; cleared by flush()."""
        try:
            self.write(file_version_record())
        except BaseException:
            self._file.close()
            raise

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._file.closed

    def write(self, data: bytes) -> None:
        """Append already framed records; a short write is completed before returning."""
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            if n is None:  # pragma: no cover - only for non-blocking files
                continue
            view = view[n:]
        self.bytes_written += len(data)

    def flush(self) -> None:
        """Make the data durable as configured (``os.fsync`` when ``fsync=True``).

        Also ends a :class:`WriterPool` pin: the writer may be closed by the pool afterwards.
        """
        if self._fsync and not self._file.closed:
            os.fsync(self._file.fileno())
        self.pinned = False

    def close(self) -> None:
        """Flush and close the file; safe to call twice. The file is closed even if the final
        ``fsync`` fails (which is then raised)."""
        if not self._file.closed:
            try:
                self.flush()
            finally:
                self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_max_open() -> int:
    """How many event files a :class:`WriterPool` keeps open by default: a quarter of this
    process's soft ``RLIMIT_NOFILE`` (the rest is for sockets, logs, artifacts), between 16 and
    4096.

    Example:
        >>> 16 <= default_max_open() <= 4096
        True
    """
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - no rlimits on this platform
        return 64
    if soft == resource.RLIM_INFINITY or soft < 0:
        return 4096
    return max(16, min(4096, soft // 4))


class WriterPool:
    """The event writers of one ``tensorboard/`` directory, at most ``max_open`` files open.

    Maps a run (``learner``, ``agent/3``) to its :class:`EventWriter`, opening it on first use.
    When ``max_open`` files are open, :meth:`get` closes the least recently used writer first;
    using that run again later opens a *new* event file in its directory (a new name per open),
    so no file is ever appended to after it was closed, nor overwritten. TensorBoard reads all
    files of a run directory, in name order, which is the order they were opened.

    Pinning, so that a transaction's writers stay open: a writer returned by :meth:`get` is
    pinned -- never closed by the pool -- until it is flushed (:meth:`EventWriter.flush`, which
    a hub transaction does to every writer it wrote), discarded (:meth:`discard`), or
    :meth:`release_all` is called. So a transaction may get all its writers first, write
    them, then flush them, whatever ``max_open`` is. While more than ``max_open`` writers are
    pinned the pool has more files open than ``max_open``; it shrinks back at the next
    :meth:`get` or :meth:`release_all`. If opening a file fails with ``EMFILE``/``ENFILE``
    (other code holds descriptors too), unpinned writers are closed until it succeeds.

    Not thread-safe: the hub calls it under its lock.

    Args:
        tensorboard_dir: The ``logdir/tensorboard`` directory; runs are relative to it.
        max_open: The most files kept open; ``None`` for :func:`default_max_open`.
        fsync: ``os.fsync`` on every flush (passed to each :class:`EventWriter`).

    Raises:
        ValueError: If ``max_open`` is less than 1.

    Example:
        >>> import tempfile
        >>> from rayplex.event_bytes import ScalarTemplate, tag_header
        >>> pool = WriterPool(tempfile.mkdtemp(), max_open=2)
        >>> record = ScalarTemplate(tag_header("loss")).record(0.0, 1, 0.5)
        >>> writers = {run: pool.get(run) for run in ("a", "b", "c")}  # all three stay open
        >>> for writer in writers.values():
        ...     writer.write(record)
        ...     writer.flush()  # ends the pin
        >>> len(pool.open_writers()), pool.runs()
        (3, ['a', 'b', 'c'])
        >>> _ = pool.get("a"); len(pool.open_writers())  # the LRU ones were closed to make room
        2
        >>> pool.close_all()
    """

    def __init__(self, tensorboard_dir: str | os.PathLike[str], max_open: int | None = None,
                 fsync: bool = False) -> None:
        if max_open is None:
            max_open = default_max_open()
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise ValueError(f"max_open must be an int >= 1, got {max_open!r}")
        self.tensorboard_dir = os.fspath(tensorboard_dir)
        self.max_open = max_open
        self.fsync = fsync
        self._open: OrderedDict[str, EventWriter] = OrderedDict()  # least recently used first
        self._runs: set[str] = set()
        self.files_opened = 0
        """Event files opened so far (first opens and reopens)."""
        self.evictions = 0
        """Writers closed to stay within ``max_open`` (or after ``EMFILE``)."""
        self.close_errors = 0
        """Evicted or discarded writers whose final flush or close failed (logged)."""
        self._closed_bytes = 0

    def get(self, run: str) -> EventWriter:
        """The open writer of ``run``, opening a new event file if it has none; pins it.

        Args:
            run: The run directory relative to ``tensorboard_dir`` (``agent/3``).

        Returns:
            The writer, pinned until flushed, discarded or :meth:`release_all`.

        Raises:
            ValueError: If ``run`` is empty, absolute or has ``.``/``..`` components.
            OSError: If the file cannot be created.
        """
        writer = self._open.get(run)
        if writer is None:
            self._check_run(run)
            self._shrink(self.max_open - 1)
            writer = self._new_writer(run)
            self._open[run] = writer
            self._runs.add(run)
            writer.pinned = True
        else:
            self._open.move_to_end(run)
            writer.pinned = True
            self._shrink(self.max_open)  # back within bounds once earlier pins have ended
        return writer

    @property
    def appended(self) -> int:
        """Bytes written to every event file this pool opened (closed ones included)."""
        return self._closed_bytes + sum(w.bytes_written for w in self._open.values())

    def runs(self) -> list[str]:
        """Every run a writer was ever opened for, sorted (open or not)."""
        return sorted(self._runs)

    def open_writers(self) -> list[EventWriter]:
        """The writers that are open now, least recently used first."""
        return list(self._open.values())

    def flush_all(self) -> None:
        """Flush every open writer (which also ends their pins).

        Raises:
            OSError: The first flush error, after trying every writer.
        """
        apply_to_all(lambda writer: writer.flush(), list(self._open.values()))

    def close_all(self) -> None:
        """Close every open writer; a later :meth:`get` opens new files. Safe to call twice.

        Raises:
            OSError: The first close error, after closing every writer.
        """
        apply_to_all(lambda writer: writer.close(), self._popped())

    def _popped(self) -> Iterator[EventWriter]:
        """Each open writer, least recently used first, removed as it is handed out."""
        while self._open:
            writer = self._open.popitem(last=False)[1]
            self._closed_bytes += writer.bytes_written
            yield writer

    def discard(self, run: str) -> None:
        """Close and forget the open writer of ``run`` (e.g. after a failed write, before its
        file is cut back); the next :meth:`get` opens a new file. Never raises for a close
        error (logged and counted: the caller is cleaning up already). No-op if not open."""
        writer = self._open.pop(run, None)
        if writer is not None:
            self._close_quietly(run, writer)

    def rotate(self, max_bytes: int, max_age_s: float) -> int:
        """Close every unpinned writer whose file holds ``max_bytes`` or more, or has been open
        ``max_age_s`` or longer (``0``: no such limit); the next :meth:`get` of its run opens
        the next file, whose name sorts after it. Returns how many were closed."""
        now = time.monotonic()
        due = [run for run, w in self._open.items() if not w.pinned and (
            (max_bytes > 0 and w.bytes_written >= max_bytes)
            or (max_age_s > 0 and now - w.opened >= max_age_s))]
        for run in due:
            self._close_quietly(run, self._open.pop(run))
        return len(due)

    def release_all(self) -> None:
        """Unpin every writer and close the least recently used ones beyond ``max_open``."""
        for writer in self._open.values():
            writer.pinned = False
        self._shrink(self.max_open)

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _check_run(run: str) -> None:
        if not isinstance(run, str) or not run:
            raise ValueError(f"run must be a non-empty str, got {run!r}")
        if os.path.isabs(run) or any(part in ("", ".", "..") for part in run.split("/")):
            raise ValueError(f"run {run!r} must be a relative path without '.', '..' or '//'")

    def _new_writer(self, run: str) -> EventWriter:
        path = os.path.join(self.tensorboard_dir, run)
        while True:
            try:
                writer = EventWriter(path, fsync=self.fsync)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._evict_one():
                    raise
                continue
            self.files_opened += 1
            return writer

    def _shrink(self, limit: int) -> None:
        """Close unpinned writers, least recently used first, until at most ``limit`` are open
        (or only pinned ones are left)."""
        while len(self._open) > limit and self._evict_one():
            pass

    def _evict_one(self) -> bool:
        """Close the least recently used unpinned writer; False if every open one is pinned."""
        for run, writer in self._open.items():
            if not writer.pinned:
                del self._open[run]
                self.evictions += 1
                self._close_quietly(run, writer)
                return True
        return False

    def _close_quietly(self, run: str, writer: EventWriter) -> None:
        self._closed_bytes += writer.bytes_written
        try:
            writer.close()
        except OSError as exc:
            self.close_errors += 1
            log.warning("closing the event file of run %r (%s) failed: %s", run, writer.path, exc)
