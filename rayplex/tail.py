"""``rayplex tail``: read the text logs back: filter records, follow a file, add colours.

The lines are those :func:`rayplex.textlog.format_line` writes (the hub writes them with
:class:`rayplex.actors.logfiles.LogFiles`); they are understood with
:func:`rayplex.textlog.parse_line`, so the reader and the writer share one format.
"""

from __future__ import annotations

import logging
import os
import threading
import time as _time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from rayplex.textlog import CONTINUATION_PREFIX, CONTINUATION_RE, HEADER_RE, parse_level, parse_line
from rayplex.tfrecord import open_regular

__all__ = ["colorize", "filter_lines", "follow"]


def filter_lines(
    lines: Iterable[str], client: str | None = None, level: int | str | None = None
) -> Iterator[str]:
    """Keep the records of one client and/or at or above a level.

    Continuation lines go with their header line. Continuation lines met before
    any header (when starting in the middle of a record) are judged by their
    client alone; foreign lines that do not parse follow the previous decision
    (and are dropped before the first header when filtering).

    Args:
        lines: Text lines, e.g. an open file or :func:`follow`.
        client: ``"group/name"`` for one client, or ``"group"`` for all
            clients of a group; ``None`` for all.
        level: Minimum level (number or name); ``None`` for all. Lines whose
            level name is not registered in this process are kept.

    Yields:
        The kept lines, unchanged.

    Examples:
        >>> from rayplex.textlog import LogLine, format_line
        >>> text = format_line(LogLine(0.0, 40, "a/1", "n", 1, "l", "boom\\nmore"))
        >>> text += format_line(LogLine(0.0, 20, "a/1", "n", 1, "l", "fine"))
        >>> for kept in filter_lines(text.splitlines(), level="WARNING"):
        ...     print(kept)
        1970-01-01T00:00:00.000000+00:00 ERROR    a/1 [node n pid 1] l: boom
            | a/1 | more
    """
    min_level = parse_level(level) if level is not None else 0
    if client is None and min_level <= 0:
        yield from lines
        return
    group_prefix = client + "/" if client is not None and "/" not in client else None

    def client_ok(name: str) -> bool:
        return client is None or name == client or (
            group_prefix is not None and name.startswith(group_prefix)
        )

    keep: bool | None = None  # None: no header seen yet
    for text in lines:
        parsed = parse_line(text)
        if parsed is None:
            if keep:
                yield text
        elif parsed.is_continuation:
            if keep is None:
                if client_ok(parsed.client):
                    yield text
            elif keep:
                yield text
        else:
            keep = client_ok(parsed.client) and (
                parsed.levelno is None or parsed.levelno >= min_level
            )
            if keep:
                yield text


def follow(
    path: str | os.PathLike[str],
    poll_s: float = 0.2,
    stop: threading.Event | None = None,
    *,
    from_start: bool = True,
) -> Iterator[str]:
    """Yield the lines of a file as they are appended, like ``tail -F``.

    Waits for the file if it does not exist yet. When the file is replaced
    (rotation: a different inode at ``path``, or ``path`` removed) the rest of
    the old file is read first, then the new file is read from its start. When
    the file shrinks (truncation) it is read again from its start. A line is
    only yielded once its newline has been written, except at the end of a
    replaced file.

    Args:
        path: The file, e.g. ``logdir/logs/all.log``.
        poll_s: Seconds between checks for new data.
        stop: When set, the generator returns (within ``poll_s``).
        from_start: Yield the existing content first; if false start at the
            current end of the file (files appearing later are always read
            whole).

    Yields:
        Lines including their trailing ``"\\n"`` (UTF-8, undecodable bytes
        replaced).

    Raises:
        rayplex.tfrecord.NotRegularFileError: If something other than a regular file (a FIFO,
            a device, a directory) is at ``path``: it is refused instead of blocking the reader.

    Examples:
        >>> stop = threading.Event()
        >>> for line in follow("logs/all.log", poll_s=0.1, stop=stop):  # doctest: +SKIP
        ...     print(colorize(line), end="")
    """
    path = os.fspath(path)
    file: BinaryIO | None = None
    identity: tuple[int, int] | None = None
    pending = b""
    seek_end = not from_start

    def wait() -> bool:
        """Sleep ``poll_s``; return True if we must stop."""
        if stop is None:
            _time.sleep(poll_s)
            return False
        return stop.wait(poll_s)

    try:
        while stop is None or not stop.is_set():
            if file is None:
                try:
                    # Never a blocking open: a FIFO swapped in at ``path`` is refused at once.
                    file = open_regular(path)
                except FileNotFoundError:
                    seek_end = False  # a file created later is new: read it all
                    if wait():
                        return
                    continue
                info = os.fstat(file.fileno())
                identity = (info.st_dev, info.st_ino)
                if seek_end:
                    file.seek(0, os.SEEK_END)
                    seek_end = False
                pending = b""
            chunk = file.readline()
            if chunk:
                if chunk.endswith(b"\n"):
                    yield (pending + chunk).decode("utf-8", "replace")
                    pending = b""
                else:
                    pending += chunk
                continue
            # At the end of the file: has it been replaced or truncated?
            current: os.stat_result | None
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_dev, current.st_ino) != identity:
                rest = pending + file.read()  # written before the switch
                file.close()
                file = None
                pending = b""
                *complete, last = rest.split(b"\n")
                for raw in complete:
                    yield (raw + b"\n").decode("utf-8", "replace")
                if last:  # the old file ended without a newline
                    yield (last + b"\n").decode("utf-8", "replace")
                continue
            if current.st_size < file.tell():
                file.seek(0)
                pending = b""
                continue
            if wait():
                return
    finally:
        if file is not None:
            file.close()


_RESET = "\x1b[0m"
_DIM = "\x1b[2m"


def _level_color(levelno: int | None) -> str:
    if levelno is None:
        return ""
    if levelno >= logging.CRITICAL:
        return "\x1b[1;31m"  # bold red
    if levelno >= logging.ERROR:
        return "\x1b[31m"  # red
    if levelno >= logging.WARNING:
        return "\x1b[33m"  # yellow
    if levelno >= logging.INFO:
        return "\x1b[32m"  # green
    if levelno > logging.DEBUG:
        return "\x1b[36m"  # cyan: INFO1..INFO9
    return "\x1b[34m"  # blue: DEBUG and finer


def colorize(text_line: str) -> str:
    """Add ANSI colours to one line (use only when the output is a terminal).

    Header lines get a dim timestamp and a level-coloured level name (the whole
    message too for ``ERROR`` and above); continuation lines get a dim prefix.
    Other lines are returned unchanged.

    Args:
        text_line: One line, with or without its trailing newline.

    Returns:
        The coloured line, with the same trailing newline.

    Examples:
        >>> colorize("    | agent/3 | Traceback:\\n")  # doctest: +SKIP
        '\\x1b[2m    | agent/3 |\\x1b[0m Traceback:\\n'
    """
    body = text_line.rstrip("\r\n")
    newline = text_line[len(body):]
    if body.startswith(CONTINUATION_PREFIX):
        match = CONTINUATION_RE.fullmatch(body)
        if match is None:
            return text_line
        cut = match.end("client") + 2
        return f"{_DIM}{body[:cut]}{_RESET}{body[cut:]}{newline}"
    match = HEADER_RE.fullmatch(body)
    if match is None:
        return text_line
    try:
        levelno: int | None = parse_level(match["level"])
    except ValueError:
        levelno = None
    color = _level_color(levelno)
    time_end = match.end("time")
    start, end = match.span("level")
    if levelno is not None and levelno >= logging.ERROR:
        return (
            f"{_DIM}{body[:time_end]}{_RESET}{body[time_end:start]}"
            f"{color}{body[start:]}{_RESET}{newline}"
        )
    return (
        f"{_DIM}{body[:time_end]}{_RESET}{body[time_end:start]}"
        f"{color}{body[start:end]}{_RESET}{body[end:]}{newline}"
    )
