"""The hub's text-log files: ``<root>/all.log`` and ``<root>/<group>/<name>.log``.

:class:`LogFiles` appends the :class:`~rayplex.textlog.LogLine` records the workers ship,
each formatted by :func:`rayplex.textlog.format_line` (the one text-line format), in worker
time order, with size-based rotation and a bound on the number of open files. Only the hub's
writer (:mod:`rayplex.actors.writer`) uses it; the CLI reads the files back with
:mod:`rayplex.tail`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from rayplex import rules
from rayplex.files import apply_to_all
from rayplex.textlog import LogLine, WireLine, format_line, parse_level

__all__ = ["ALL_LOG", "LogFiles"]

ALL_LOG = rules.ALL_LOG


class _Sink:
    """An open append-mode file and its current size."""

    __slots__ = ("file", "path", "size")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.size = 0
        self.open()

    def open(self) -> None:
        self.file = open(self.path, "ab")  # noqa: SIM115 - kept open on purpose
        self.size = os.fstat(self.file.fileno()).st_size

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            file.close()


_LINE_TYPES = (tuple, LogLine)


class LogFiles:
    """Hub-side writer of ``<root>/all.log`` and ``<root>/<group>/<name>.log``.

    Files are opened in append mode (restarting never truncates) and kept open;
    at most ``max_open_files`` per-client files are open at once (least recently
    used ones are closed and reopened on demand). Thread-safe.

    With ``max_bytes`` set, each file is rotated like
    :class:`logging.handlers.RotatingFileHandler`: before a record is appended,
    if the file is not empty and the record would make it exceed ``max_bytes``,
    ``f.log`` is renamed to ``f.log.1`` (``f.log.1`` to ``f.log.2``, ... up to
    ``f.log.<backup_count>``, the oldest being dropped) and a new ``f.log`` is
    started. Records are never split, so a single record larger than
    ``max_bytes`` gets a file of its own. Unlike the stdlib, ``backup_count=0``
    still rotates: the full file is simply deleted.

    With ``between_writes``, :meth:`write` never rotates: a file that a write took to
    ``max_bytes`` or past it is rotated by the next :meth:`rotate_due` (so a file holds at most
    one write past ``max_bytes``). A caller that undoes a failed write by cutting files back to
    their sizes before it (the hub's journal) calls :meth:`rotate_due` before it records those
    sizes: an undone write then never straddles a rotation, whose moved lines no cut reaches.

    Args:
        root: Directory of the logs (created if missing), e.g. ``logdir/logs``.
        max_bytes: Rotate a file before it would exceed this many bytes;
            ``None`` never rotates.
        backup_count: Number of rotated files kept per log file.
        level: Drop lines below this level (name or number).
        max_open_files: Maximum number of per-client files kept open.
        autoflush: Flush the files touched by :meth:`write` at its end, so that
            ``tail -f`` sees whole batches promptly.
        between_writes: Rotate only in :meth:`rotate_due`, never inside a write.

    Examples:
        >>> import tempfile
        >>> with LogFiles(tempfile.mkdtemp(), level="INFO") as files:
        ...     files.write([LogLine(0.5, 20, "agent/3", "1a2b3c4d", 42, "my_lib", "hello")])
        ...     print((files.root / "agent" / "3.log").read_text(), end="")
        1970-01-01T00:00:00.500000+00:00 INFO     agent/3 [node 1a2b3c4d pid 42] my_lib: hello
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        max_bytes: int | None = None,
        backup_count: int = 5,
        *,
        level: int | str = logging.NOTSET,
        max_open_files: int = 256,
        autoflush: bool = True,
        between_writes: bool = False,
    ) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0 or None, not {max_bytes}")
        if backup_count < 0:
            raise ValueError(f"backup_count must be >= 0, not {backup_count}")
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be >= 1, not {max_open_files}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.level = parse_level(level)
        self.max_open_files = max_open_files
        self.autoflush = autoflush
        self.between_writes = between_writes
        self._due: set[Path] = set()
        """Files a write took to ``max_bytes`` (``between_writes``): :meth:`rotate_due`."""
        self._lock = threading.Lock()
        self._all: _Sink | None = None
        self._clients: OrderedDict[str, _Sink] = OrderedDict()
        self._known: set[tuple[str, str]] = set()
        """(client, logger) pairs of lines that passed the full check."""
        self._closed = False
        self.written = 0
        """Bytes appended to the files so far (every file: ``all.log`` and the clients')."""
        self.root.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LogFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, lines: Sequence[LogLine | WireLine]) -> None:
        """Append a batch of records to ``all.log`` and the per-client files.

        Lines below :attr:`level` are dropped. The rest are ordered by worker
        timestamp with a stable sort, except that the lines of one worker
        (same client, node and pid) are never reordered among themselves, even if
        its clock stepped backwards: callers must pass each worker's lines in the
        order they were logged. Every line is checked with
        :func:`rayplex.rules.validate_log_line` (client id, logger name and the
        type of every field: the rule the workers' builders follow) before
        anything is written.

        Args:
            lines: :class:`LogLine` objects or equivalent plain 8-tuples.

        Raises:
            ValueError: If a line is invalid (nothing of the batch is written; the
                message names the field) or the files were closed.

        Examples:
            >>> import tempfile
            >>> files = LogFiles(tempfile.mkdtemp())
            >>> files.write([LogLine(2.0, 20, "a/b", "n", 1, "l", "late"),
            ...              LogLine(1.0, 20, "a/c", "n", 2, "l", "early")])
            >>> [l.split(": ")[1] for l in (files.root / "all.log").read_text().splitlines()]
            ['early', 'late']
            >>> files.close()
        """
        if not lines:
            return
        with self._lock:
            if self._closed:
                raise ValueError("write() on closed LogFiles")
            self.check(lines)
            level = self.level
            batch = [ln for ln in lines if ln[1] >= level] if level > 0 else list(lines)
            if not batch:
                return
            all_sink = self._all
            if all_sink is None:
                all_sink = self._all = _Sink(self.root / ALL_LOG)
            touched: set[_Sink] = set()
            max_bytes = None if self.between_writes else self.max_bytes
            for line in _in_time_order(batch):
                data = format_line(line).encode("utf-8", "backslashreplace")
                sink = self._client_sink(line[2])
                touched.add(sink)
                for target in (all_sink, sink):
                    if (
                        max_bytes is not None
                        and target.size
                        and target.size + len(data) > max_bytes
                    ):
                        self._rotate(target)
                    target.file.write(data)  # type: ignore[union-attr]
                    target.size += len(data)
                    self.written += len(data)
            if self.between_writes and self.max_bytes is not None:
                self._due.update(sink.path for sink in (all_sink, *touched)
                                 if sink.size >= self.max_bytes)
            if self.autoflush:
                all_sink.file.flush()  # type: ignore[union-attr]
                for sink in touched:
                    if sink.file is not None:  # may have been closed by the LRU
                        sink.file.flush()

    def size_of(self, lines: Sequence[LogLine | WireLine]) -> int:
        """The bytes :meth:`write` would append for ``lines`` (each kept line goes to
        ``all.log`` and to its client's file), without writing anything."""
        level = self.level
        return 2 * sum(len(format_line(ln).encode("utf-8", "backslashreplace"))
                       for ln in lines if level <= 0 or ln[1] >= level)

    def check(self, lines: Sequence[LogLine | WireLine]) -> None:
        """Raise what :meth:`write` would raise for a bad line, without writing anything.

        :func:`rayplex.rules.validate_log_line` on every line (the usual ones take a fast
        path). A caller that writes other files in the same transaction calls this first, so
        a bad line is refused before anything at all is written.

        Raises:
            ValueError: naming the bad field of the first bad line.
        """
        known = self._known
        for line in lines:
            if (
                type(line) in _LINE_TYPES
                and len(line) == 8
                and type(line[0]) is float
                and type(line[1]) is int
                and type(line[3]) is str
                and type(line[4]) is int
                and type(line[6]) is str
                and (line[7] is None or type(line[7]) is str)
                and type(line[2]) is str
                and type(line[5]) is str
                and (line[2], line[5]) in known
            ):
                continue
            rules.validate_log_line(line)
            if len(known) > 100_000:
                known.clear()
            known.add((line[2], line[5]))

    def _client_sink(self, client: str) -> _Sink:
        clients = self._clients
        sink = clients.get(client)
        if sink is not None:
            clients.move_to_end(client)
            return sink
        group, name = client.split("/")  # checked by _check
        while len(clients) >= self.max_open_files:
            clients.popitem(last=False)[1].close()
        directory = self.root / group
        directory.mkdir(exist_ok=True)
        sink = clients[client] = _Sink(directory / f"{name}.log")
        return sink

    def _rotate(self, sink: _Sink) -> None:
        sink.close()
        base = str(sink.path)
        try:
            if self.backup_count > 0:
                for i in range(self.backup_count - 1, 0, -1):
                    if os.path.exists(f"{base}.{i}"):
                        os.replace(f"{base}.{i}", f"{base}.{i + 1}")
                os.replace(base, f"{base}.1")
            else:
                os.remove(base)
        except FileNotFoundError:  # removed behind our back: just start afresh
            pass
        sink.open()

    def rotate_due(self) -> None:
        """Rotate the files a write took to ``max_bytes`` or past it (``between_writes``).

        Raises:
            OSError: if a file cannot be renamed or opened (the rest stay due).
        """
        with self._lock:
            if not self._due:
                return
            open_sinks = {sink.path: sink for sink in self._sinks()}
            for path in sorted(self._due):
                sink = open_sinks.get(path)
                if sink is not None:
                    self._rotate(sink)
                elif path.exists():  # closed by the LRU since: rotate it as it is on disk
                    closed = _Sink(path)
                    self._rotate(closed)
                    closed.close()
                self._due.discard(path)

    def rotate_all(self) -> None:
        """Rotate every text log on disk that is not empty (open or not), as :meth:`write`
        rotates one past ``max_bytes``: the next line starts a new file. A staging directory
        at its bound does this, so that every byte already uploaded can leave it."""
        with self._lock:
            sinks = self._sinks()
            self._all = None
            self._clients.clear()
            apply_to_all(lambda sink: sink.close(), sinks)
            for path in sorted(self.root.rglob("*.log")):
                if path.is_file() and path.stat().st_size:
                    sink = _Sink(path)
                    self._rotate(sink)  # the new file is there at once (empty): whoever
                    sink.close()        # follows the log sees the rotation now

    def flush(self) -> None:
        """Flush every open file. Safe to call at any time, also after :meth:`close`."""
        with self._lock:
            for sink in self._sinks():
                if sink.file is not None:
                    sink.file.flush()

    def close(self) -> None:
        """Flush and close every file. Safe to call twice; :meth:`write` then raises."""
        with self._lock:
            self._closed = True
            sinks = self._sinks()
            self._all = None
            self._clients.clear()
            apply_to_all(lambda sink: sink.close(), sinks)  # all, even if one fails (disk full)

    def _sinks(self) -> list[_Sink]:
        sinks = list(self._clients.values())
        if self._all is not None:
            sinks.append(self._all)
        return sinks


def _in_time_order(batch: list[LogLine | WireLine]) -> list[LogLine | WireLine]:
    """Stable sort by time, never reordering lines of one (client, node, pid)."""
    if len(batch) < 2:
        return batch
    keys: list[float] = []
    latest: dict[tuple[str, str, int], float] = {}
    for line in batch:
        timestamp = line[0]
        worker = (line[2], line[3], line[4])
        previous = latest.get(worker)
        if previous is not None and not timestamp >= previous:  # clock went back (or nan)
            timestamp = previous
        else:
            latest[worker] = timestamp
        keys.append(timestamp)
    order = sorted(range(len(batch)), key=keys.__getitem__)
    return [batch[i] for i in order]
