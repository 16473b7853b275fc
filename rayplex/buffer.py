"""A worker's record buffer, bounded in bytes, that spills to disk and never loses data silently.

:class:`Buffer` sits under the transport: user threads :meth:`~Buffer.put` records (with the
caller's estimate of their size in memory), one drainer thread :meth:`~Buffer.drain` s them in
order, and :meth:`~Buffer.release` s their bytes once the hub has acknowledged them.

Design notes
------------

**What the bound covers.** ``max_bytes`` bounds the bytes *queued* in memory, the bytes read
back from spill files and not yet drained, and the bytes *in flight* (drained, not released).
A put may take it over by at most the item just put (so a single item larger than the bound
still goes through); then the overflow policy applies.

**Accounting without a lock on the fast path.** Two monotonic byte counters: ``_put_bytes``,
added to only by :meth:`Buffer.put`, and ``_out_bytes`` (bytes that left the queue: drained,
spilled or dropped), added to only under ``_lock``. Every queue entry carries its own byte
count, so whatever takes entries out knows exactly what it took, and queued bytes are
``_put_bytes - _out_bytes`` with no per-item bookkeeping shared between threads. ``put`` compares
``_put_bytes`` with ``_limit``, a precomputed threshold refreshed under the lock whenever room
changes, and takes the lock only past it. On CPython with the GIL, ``self._put_bytes += n`` with
ints is not interrupted between its read and its write (no eval-breaker check in between), so
concurrent puts lose no update; on a free-threaded build (``sys._is_gil_enabled() is False``)
``put`` takes the lock on every call instead.

**What the caller passes as ``nbytes``.** A realistic estimate of the record's Python memory,
not its wire size: about 200 for a scalar tuple, ``len(payload) + 200`` for a pre-encoded value
(image, histogram...), ``len(message) + len(traceback) + 300`` for a text line. It must be a
non-negative int (it is not checked on the hot path).

**Overflow policies.** ``spill`` writes the oldest queued items (until everything held in
memory is under half the bound) to a file; they count as spilled only once the file is written,
``fsync``-ed and closed -- ``fsync`` is not for crash safety (the index of spill files lives in
memory) but because a full disk may report ``ENOSPC`` only then. If the spill cannot be
written, the items stay queued, one warning is logged, and the buffer behaves as ``block`` until
a spill succeeds again (retried at most every ``SPILL_RETRY_S``). ``block`` makes the put wait, up
to ``block_timeout_s``, on a condition notified when room is freed (:meth:`Buffer.release`);
when that times out it drops the oldest items, and later overflows drop at once (no further
waits) until the drainer next releases something: a hub that is gone costs one timeout, not one
per log call. ``drop_oldest`` drops the oldest queued items, just enough to fit. Every dropped
or lost record is counted and warned about (warnings about drops are rate-limited).

**Flush markers** (:meth:`Buffer.put_marker`) are never spilled, dropped or counted in bytes.
A spill that crosses a marker keeps it in memory at its place in the spilled sequence, so
:meth:`Buffer.drain` returns each marker right after the last item put before it: a marker is
answered neither before those items nor later than needed.

**Spill files.** Each spill writes one file, a sequence of chunks of at most ``max_bytes // 8``
bytes; each chunk is a ``pickle`` (protocol 5) of a list of ``(item, nbytes)`` tuples. The
drainer reads one chunk at a time, and only when the chunk fits under the bound (or nothing is
in flight, so that it always makes progress). Items are rayplex's own plain records (tuples of
str/int/float/bytes/None, nested tuples, :class:`rayplex.records.Partial`), never user objects.
Unpickling is acceptable here, although rayplex never unpickles files on its own initiative
otherwise, because: the files are written by this very process into a private directory made
with :func:`tempfile.mkdtemp` (mode 0700) under ``spill_dir``; only files whose names this
process recorded when it wrote them are ever read; they are opened with ``O_NOFOLLOW`` and
read only if their device, inode and size are those recorded right after the write; and the
directory is removed by :meth:`Buffer.close`.

**A spill file that vanished or cannot be read** is skipped, never retried: a warning, the
``lost`` counter increased by the records it still held, and an error that the next
:meth:`Buffer.take_error` returns (once). Draining continues with what follows.

Example:
    >>> import tempfile
    >>> buf = Buffer(1 << 20, "spill", tempfile.gettempdir(), 1.0, "doc")
    >>> buf.put(("loss", 1, 0.5), 200)
    >>> buf.put_marker("flush-1")
    >>> buf.put(("loss", 2, 0.4), 200)
    >>> buf.drain(100)
    ([('loss', 1, 0.5)], ['flush-1'], 200)
    >>> buf.counters["in_flight_bytes"]
    200
    >>> buf.release(200)
    >>> buf.drain(100)
    ([('loss', 2, 0.4)], [], 200)
    >>> buf.close()
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from rayplex.config import BUFFER_WARN_EVERY_S, OVERFLOW_POLICIES, SPILL_RETRY_S

log = logging.getLogger("rayplex")


_GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()
_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class _SpillFile:
    """One spill file: where it is, what it looked like when written, how much is left."""

    __slots__ = ("path", "identity", "records_left", "chunks_left", "handle", "broken")

    def __init__(self, path: str, identity: tuple[int, int, int], records: int,
                 chunks: int) -> None:
        self.path = path
        self.identity = identity  # (st_dev, st_ino, st_size) right after the write
        self.records_left = records
        self.chunks_left = chunks
        self.handle: IO[bytes] | None = None
        self.broken = False


class _Chunk:
    """A run of spilled items, in order, stored as the next pickle in ``file``."""

    __slots__ = ("file", "count", "nbytes")

    def __init__(self, file: _SpillFile, count: int, nbytes: int) -> None:
        self.file = file
        self.count = count
        self.nbytes = nbytes


class Buffer:
    """A FIFO of records bounded in bytes, with an overflow policy and flush markers.

    Thread safety: any number of threads may call :meth:`put` and :meth:`put_marker`; a single
    thread calls :meth:`drain`; :meth:`release`, :meth:`take_error`, :attr:`counters` and
    :meth:`close` may be called from any thread.

    Args:
        max_bytes: the bound on queued + read-back + in-flight bytes.
        overflow: ``"spill"``, ``"drop_oldest"`` or ``"block"``.
        spill_dir: where the private spill directory is created; ``""`` means the system's
            temporary directory. It is not created if missing (the spill then fails, warns and
            the buffer blocks instead).
        block_timeout_s: how long a put waits for room under ``block`` before dropping.
        name: names this buffer in warnings and in the spill directory's name.
        wake: called (under the buffer's lock: it must be quick and must not call back into
            the buffer) when queued bytes first pass ``wake_bytes`` since the last drain, and
            before a put blocks; typically ``threading.Event.set`` of the drainer.
        wake_bytes: see ``wake``; ``None``: only before blocking.

    Raises:
        ValueError: if ``max_bytes`` is not a positive int, ``overflow`` is not a policy,
            ``block_timeout_s`` is negative or ``wake_bytes`` is not positive.
    """

    def __init__(self, max_bytes: int, overflow: str, spill_dir: str, block_timeout_s: float,
                 name: str, *, wake: Callable[[], object] | None = None,
                 wake_bytes: int | None = None, fixed_nbytes: int = 0) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"Buffer max_bytes must be a positive int, got {max_bytes!r}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"Buffer overflow={overflow!r}: use one of {OVERFLOW_POLICIES}")
        if not block_timeout_s >= 0:
            raise ValueError(f"Buffer block_timeout_s must be >= 0, got {block_timeout_s!r}")
        if wake_bytes is not None and wake_bytes <= 0:
            raise ValueError(f"Buffer wake_bytes must be positive, got {wake_bytes!r}")
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.spill_dir = spill_dir or tempfile.gettempdir()
        self.block_timeout_s = float(block_timeout_s)
        self.name = name
        self._wake = wake
        self._wake_bytes = wake_bytes if wake is not None else None
        self._chunk_bytes = max(1, max_bytes // 8)
        self._fixed = fixed_nbytes
        """The size of every item put with :meth:`put_fixed` (queued without a wrapper)."""

        # Entries are (item, nbytes) or, for a marker, (marker, None).
        # (item, nbytes), (marker, None), or an item of put_fixed as it is (a tuple, not a pair)
        self._queue: deque[tuple[object, ...]] = deque()
        self._put_bytes = 0  # written by put() only
        # Everything below is written under _lock only.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._out_bytes = 0
        self._in_flight = 0
        self._queue_markers = 0
        self._replay: deque[tuple[object, int]] = deque()  # read back from disk, not drained
        self._replay_bytes = 0
        self._backlog: deque[object] = deque()  # _Chunk on disk, or a marker, in order
        self._on_disk = 0  # records in the backlog's chunks
        self._limit = 0
        self._woken = False
        self._blocked_out = False  # a block timed out; drop at once until the next release
        self._spill_root: str | None = None
        self._spill_seq = 0
        self._spill_retry_at = 0.0
        self._spill_broken = False
        self._warned: dict[str, float] = {}
        self._loss_records = 0  # lost since the last take_error()
        self._loss_reasons: list[str] = []
        self._loss_cause: BaseException | None = None
        self._counts = {"spilled": 0, "replayed": 0, "dropped": 0, "lost": 0,
                        "spill_files": 0, "spill_failures": 0}
        self._closed = False
        self._set_limit()
        if not _GIL_ENABLED:  # pragma: no cover - free-threaded builds only
            self.put = self._put_locked  # type: ignore[method-assign]
            self.put_fixed = self._put_fixed_locked  # type: ignore[method-assign]

    # ------------------------------------------------------------------ producers
    def put(self, item: object, nbytes: int) -> None:
        """Append ``item``, which takes about ``nbytes`` of memory; apply the policy if full.

        Args:
            item: the record (a plain tuple).
            nbytes: its estimated size in memory (see the module docstring), an int >= 0.
        """
        self._put_bytes += nbytes
        self._queue.append((item, nbytes))
        if self._put_bytes > self._limit:
            self._overflow(nbytes)

    def put_fixed(self, item: tuple[object, ...]) -> None:
        """:meth:`put` of an item of the buffer's ``fixed_nbytes``, the hot path of
        ``add_scalar``: the item is queued as it is, with no ``(item, nbytes)`` wrapper. It
        must be a tuple whose length is not 2 (wrapped entries are pairs)."""
        self._put_bytes += self._fixed
        self._queue.append(item)
        if self._put_bytes > self._limit:
            self._overflow(self._fixed)

    def _put_fixed_locked(self, item: tuple[object, ...]) -> None:
        """:meth:`put_fixed` for interpreters without a GIL."""
        with self._lock:
            self._put_bytes += self._fixed
            self._queue.append(item)
            over = self._put_bytes > self._limit
        if over:
            self._overflow(self._fixed)

    def _entry(self, entry: Any) -> tuple[object, int | None]:
        """``(item, nbytes)`` of a queue entry (``nbytes`` None for a marker)."""
        return entry if len(entry) == 2 else (entry, self._fixed)

    def _put_locked(self, item: object, nbytes: int) -> None:
        """:meth:`put` for interpreters without a GIL, where ``+=`` may lose updates."""
        with self._lock:
            self._put_bytes += nbytes
            self._queue.append((item, nbytes))
            over = self._put_bytes > self._limit
        if over:
            self._overflow(nbytes)

    def put_marker(self, marker: object) -> None:
        """Append a flush marker: :meth:`drain` returns it after everything put before it.

        Markers are never spilled, dropped or counted against the bound.
        """
        with self._lock:
            self._queue.append((marker, None))
            self._queue_markers += 1

    # ------------------------------------------------------------------ drainer
    def drain(self, max_items: int) -> tuple[list[object], list[object], int]:
        """Take the oldest items, up to ``max_items``, for the single drainer thread.

        Spilled items come first (read back from disk, oldest first), then queued ones. The
        call stops at a flush marker and returns it (with any markers right behind it) after
        the items before it. The items' bytes count as in flight until :meth:`release`.

        An empty result while ``len(self) > 0`` means the next spilled chunk does not fit
        under the bound yet: release what is in flight first.

        Returns:
            ``(items, markers, nbytes)``: items in put order, the markers that follow them,
            and the items' total ``nbytes``.
        """
        items: list[object] = []
        markers: list[object] = []
        nbytes = 0
        with self._lock:
            backlog = self._backlog
            while len(items) < max_items:
                replay = self._replay
                if replay:
                    taken = 0
                    while replay and len(items) < max_items:
                        item, n = replay.popleft()
                        items.append(item)
                        taken += n
                    self._replay_bytes -= taken
                    self._in_flight += taken
                    nbytes += taken
                    continue
                if backlog:
                    head = backlog[0]
                    if not isinstance(head, _Chunk):
                        while backlog and not isinstance(backlog[0], _Chunk):
                            markers.append(backlog.popleft())
                        break
                    if self._in_flight and self._total() + head.nbytes > self.max_bytes:
                        break  # no room to read it back: wait for a release
                    backlog.popleft()
                    self._read_chunk(head)
                    continue
                nbytes += self._drain_queue(items, markers, max_items)
                break
            if self._woken:
                self._woken = False
            self._set_limit()
        return items, markers, nbytes

    def _drain_queue(self, items: list[object], markers: list[object], max_items: int) -> int:
        queue = self._queue
        popleft = queue.popleft
        append = items.append
        taken = 0
        while len(items) < max_items:
            try:
                entry = popleft()
            except IndexError:
                break
            item, n = self._entry(entry)
            if n is not None and taken and self._in_flight + taken + n > self.max_bytes:
                # Never more than the bound in flight: what stays queued can still be dropped
                # or spilled, so a put racing this drain cannot push the total past the bound.
                queue.appendleft(entry)
                break
            if len(entry) != 2:  # put_fixed
                append(entry)
                taken += self._fixed
                continue
            if n is None:
                markers.append(item)
                self._queue_markers -= 1
                while queue and len(queue[0]) == 2 and queue[0][1] is None:  # a safe peek
                    markers.append(popleft()[0])
                    self._queue_markers -= 1
                break
            append(item)
            taken += n
        self._out_bytes += taken
        self._in_flight += taken
        return taken

    def release(self, nbytes: int) -> None:
        """Give back the room of drained items, once the hub has acknowledged them.

        Raises:
            ValueError: if ``nbytes`` is negative or more than is in flight.
        """
        with self._lock:
            if nbytes < 0 or nbytes > self._in_flight:
                raise ValueError(f"Buffer.release({nbytes!r}): only {self._in_flight} bytes "
                                 "are in flight; release what drain() returned, once")
            self._in_flight -= nbytes
            self._blocked_out = False
            self._set_limit()
            self._room.notify_all()

    def take_error(self) -> OSError | None:
        """The loss of spilled records since the last call, as an error (once), or None."""
        with self._lock:
            if not self._loss_records:
                return None
            error = OSError(
                f"rayplex buffer {self.name!r}: {self._loss_records} spilled records were lost "
                f"({'; '.join(self._loss_reasons)}); keep spill_dir (RAYPLEX_SPILL_DIR) on a "
                "disk that nothing cleans while the process runs")
            error.__cause__ = self._loss_cause
            self._loss_records = 0
            self._loss_reasons = []
            self._loss_cause = None
            return error

    # ------------------------------------------------------------------ state
    def __len__(self) -> int:
        """Items not yet drained: queued in memory, read back, or spilled to disk."""
        return len(self._queue) - self._queue_markers + len(self._replay) + self._on_disk

    @property
    def counters(self) -> dict[str, int]:
        """A consistent snapshot of the buffer's figures.

        ``queued`` (items not yet drained, on disk included), ``queued_bytes`` (in memory),
        ``in_flight_bytes``, ``on_disk`` (records in spill files), ``markers``, and the totals
        ``spilled``, ``replayed``, ``dropped``, ``lost``, ``spill_files``, ``spill_failures``.
        """
        with self._lock:
            out = {"queued": len(self), "queued_bytes": self._queued_bytes(),
                   "in_flight_bytes": self._in_flight, "on_disk": self._on_disk,
                   "markers": self._queue_markers
                   + sum(1 for e in self._backlog if not isinstance(e, _Chunk))}
            out.update(self._counts)
            return out

    def close(self) -> None:
        """Remove the spill directory; records still on disk are counted as lost (and warned
        about). Items in memory stay drainable. Safe to call twice."""
        with self._lock:
            if self._on_disk:
                self._lose(self._on_disk, "the buffer was closed before they were replayed",
                           None)
                self._on_disk = 0
            for entry in self._backlog:
                if isinstance(entry, _Chunk):
                    self._close_file(entry.file)
            self._backlog = deque(e for e in self._backlog if not isinstance(e, _Chunk))
            if self._spill_root is not None:
                shutil.rmtree(self._spill_root, ignore_errors=True)
                self._spill_root = None
            self._closed = True

    # ------------------------------------------------------------------ internals (under _lock)
    def _queued_bytes(self) -> int:
        return self._put_bytes - self._out_bytes + self._replay_bytes

    def _total(self) -> int:
        return self._put_bytes - self._out_bytes + self._replay_bytes + self._in_flight

    def _set_limit(self) -> None:
        """Refresh the threshold of ``_put_bytes`` past which ``put`` takes the slow path."""
        limit = self._out_bytes + self.max_bytes - self._in_flight - self._replay_bytes
        if self._wake_bytes is not None and not self._woken:
            limit = min(limit, self._out_bytes + self._wake_bytes)
        self._limit = limit

    def _overflow(self, nbytes: int) -> None:
        with self._lock:
            if (self._wake_bytes is not None and not self._woken
                    and self._put_bytes - self._out_bytes >= self._wake_bytes):
                self._woken = True
                assert self._wake is not None
                self._wake()
            # Over by at most the item just put is within the bound's contract.
            if self._total() - nbytes > self.max_bytes:
                self._apply_policy(nbytes)
            self._set_limit()

    def _apply_policy(self, nbytes: int) -> None:
        policy = self.overflow
        if policy == "spill":
            if self._spill():
                return
            policy = "block"
        if policy == "block" and not self._blocked_out:
            if self._wait_for_room(nbytes):
                return
            self._blocked_out = True
        self._drop_oldest(nbytes)

    def _wait_for_room(self, nbytes: int) -> bool:
        self._warn_once("block", "rayplex buffer %r: full (%d bytes); log calls wait up to "
                        "%.1f s for the hub, then drop the oldest records", self.name,
                        self.max_bytes, self.block_timeout_s)
        if self._wake is not None:
            self._wake()
        deadline = time.monotonic() + self.block_timeout_s
        while self._total() - nbytes > self.max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._room.wait(remaining)
        return True

    def _drop_oldest(self, nbytes: int) -> None:
        queue = self._queue
        markers: list[tuple[object, ...]] = []
        count = freed = 0
        while self._total() - freed - nbytes > self.max_bytes:
            try:
                entry = queue.popleft()
            except IndexError:
                break
            n = self._entry(entry)[1]
            if n is None:
                markers.append(entry)
                continue
            count += 1
            freed += n
        # The markers go back in front: what they followed is gone, so they still follow it.
        queue.extendleft(reversed(markers))
        self._out_bytes += freed
        if count:
            self._counts["dropped"] += count
            self._warn_every("drop", "rayplex buffer %r: full (%d bytes, policy %s): dropped "
                             "the %d oldest records (%d dropped so far)", self.name,
                             self.max_bytes, self.overflow, count, self._counts["dropped"])
            self._room.notify_all()

    def _spill(self) -> bool:
        """Write the oldest queued items to a new spill file; False if it could not be."""
        if time.monotonic() < self._spill_retry_at:
            return False
        queue = self._queue
        target = self.max_bytes // 2
        total = self._total()
        taken: list[tuple[object, ...]] = []
        plan: list[object] = []  # lists of (item, nbytes) entries, and markers, in order
        chunk: list[tuple[object, int]] = []
        chunk_bytes = count = spilled_bytes = markers = 0
        while total - spilled_bytes > target:
            try:
                entry = queue.popleft()
            except IndexError:
                break
            taken.append(entry)
            item, n = self._entry(entry)
            if n is None:
                if chunk:
                    plan.append(chunk)
                    chunk, chunk_bytes = [], 0
                plan.append(item)
                markers += 1
                continue
            if chunk and chunk_bytes + n > self._chunk_bytes:
                plan.append(chunk)
                chunk, chunk_bytes = [], 0
            chunk.append((item, n))
            chunk_bytes += n
            count += 1
            spilled_bytes += n
        if chunk:
            plan.append(chunk)
        if not count:  # only markers (or nothing) to take: nothing to spill
            queue.extendleft(reversed(taken))
            return True
        try:
            spill_file, chunks = self._write(plan, count)
        except Exception as exc:  # OSError (no directory, no space, EIO), or an unpicklable item
            queue.extendleft(reversed(taken))
            self._counts["spill_failures"] += 1
            self._spill_retry_at = time.monotonic() + SPILL_RETRY_S
            if not self._spill_broken:
                self._spill_broken = True
                log.warning("rayplex buffer %r: cannot spill to %s (%s: %s); log calls now "
                            "wait up to %.1f s for the hub, then drop the oldest records "
                            "(spilling is retried every %.0f s)", self.name, self.spill_dir,
                            type(exc).__name__, exc, self.block_timeout_s, SPILL_RETRY_S)
            return False
        self._backlog.extend(chunks)
        self._out_bytes += spilled_bytes
        self._on_disk += count
        self._queue_markers -= markers
        self._counts["spilled"] += count
        self._counts["spill_files"] += 1
        if self._spill_broken:
            self._spill_broken = False
            log.warning("rayplex buffer %r: spilling to %s works again", self.name,
                        self.spill_dir)
        self._warn_once("spill", "rayplex buffer %r: full (%d bytes); spilling the oldest "
                        "records to %s until the hub catches up", self.name, self.max_bytes,
                        self._spill_root)
        self._room.notify_all()
        return True

    def _write(self, plan: list[object], count: int) -> tuple[_SpillFile, list[object]]:
        """Write ``plan``'s item lists as one file; return it and the backlog entries."""
        if self._closed:
            raise OSError("the buffer is closed")
        if self._spill_root is None or not os.path.isdir(self._spill_root):
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)[:40]
            self._spill_root = tempfile.mkdtemp(prefix=f"rayplex-spill-{safe}-{os.getpid()}-",
                                                dir=self.spill_dir)
        self._spill_seq += 1
        path = os.path.join(self._spill_root, f"{self._spill_seq:08d}.spill")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        sizes: list[tuple[int, int]] = []
        try:
            with os.fdopen(fd, "wb") as f:
                for part in plan:
                    if type(part) is list:
                        pickle.dump(part, f, protocol=5)
                        sizes.append((len(part), sum(n for _, n in part)))
                f.flush()
                os.fsync(f.fileno())
                st = os.fstat(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        spill_file = _SpillFile(path, (st.st_dev, st.st_ino, st.st_size), count, len(sizes))
        entries: list[object] = []
        sizes_iter = iter(sizes)
        for part in plan:
            if type(part) is list:
                n_items, n_bytes = next(sizes_iter)
                entries.append(_Chunk(spill_file, n_items, n_bytes))
            else:
                entries.append(part)
        return spill_file, entries

    def _read_chunk(self, chunk: _Chunk) -> None:
        """Move ``chunk``'s items from disk to the replay queue, or count them lost."""
        f = chunk.file
        if f.broken:
            return  # its records were counted lost when the file broke
        try:
            if f.handle is None:
                f.handle = _open_spill_file(f)
            entries = pickle.load(f.handle)
            if type(entries) is not list or len(entries) != chunk.count:
                raise ValueError(f"chunk holds {len(entries) if type(entries) is list else '?'}"
                                 f" records, {chunk.count} were written")
        except Exception as exc:
            f.broken = True
            self._on_disk -= f.records_left
            self._lose(f.records_left, f"spill file {f.path} is unreadable ({type(exc).__name__}:"
                       f" {exc})", exc)
            f.records_left = 0
            self._close_file(f)
            return
        self._replay.extend(entries)
        self._replay_bytes += chunk.nbytes
        self._on_disk -= chunk.count
        self._counts["replayed"] += chunk.count
        f.records_left -= chunk.count
        f.chunks_left -= 1
        if not f.chunks_left:
            self._close_file(f)

    def _close_file(self, f: _SpillFile) -> None:
        if f.handle is not None:
            f.handle.close()
            f.handle = None
        with contextlib.suppress(OSError):
            os.unlink(f.path)

    def _lose(self, records: int, reason: str, cause: BaseException | None) -> None:
        self._counts["lost"] += records
        self._loss_records += records
        self._loss_reasons.append(f"{records} records: {reason}")
        if self._loss_cause is None:
            self._loss_cause = cause
        log.warning("rayplex buffer %r: %d spilled records lost: %s", self.name, records, reason)

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned[key] = time.monotonic()
            log.warning(msg, *args)

    def _warn_every(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._warned.get(key)
        if last is None or now - last >= BUFFER_WARN_EVERY_S:
            self._warned[key] = now
            log.warning(msg, *args)


def _open_spill_file(f: _SpillFile) -> IO[bytes]:
    """Open a spill file for reading if it is still the file this process wrote."""
    fd = os.open(f.path, os.O_RDONLY | _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size) != f.identity:
            raise OSError(f"{f.path} is not the file written (replaced or changed since)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
