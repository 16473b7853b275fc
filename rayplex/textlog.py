"""Pure (Ray-free) parts of Loggerplex: levels, wire records, text format, files, tail.

Workers turn stdlib :class:`logging.LogRecord` objects into small :class:`LogLine`
tuples (:func:`line_from_record`) and ship them in batches to a hub process, which
appends them with :class:`LogFiles` to ``<root>/all.log`` (every client) and
``<root>/<group>/<name>.log`` (one file per client ``"group/name"``). The CLI
``rayplex tail`` reads those files back with :func:`parse_line`,
:func:`filter_lines`, :func:`follow` and :func:`colorize`.

Levels
------
The standard levels plus finer ones, registered with :func:`logging.addLevelName`::

    CRITICAL 50, ERROR 40, WARNING 30,
    INFO 20, INFO1 19, INFO2 18, ..., INFO9 11,
    DEBUG 10, DEBUG1 9, DEBUG2 8, ..., DEBUG9 1,
    NOTSET 0

``INFOn`` is ``INFO - n`` and ``DEBUGn`` is ``DEBUG - n``: the higher ``n``, the
chattier. A logger set to ``INFO5`` (15) shows ``INFO1``..``INFO5`` but hides
``INFO6``..``INFO9`` and all ``DEBUG*``.

Line format
-----------
Each record is written as one *header line* followed by zero or more
*continuation lines*, each terminated by ``"\\n"``. The header line is::

    {time} {level:<8} {client} [node {node} pid {pid}] {logger}: {first_line}

for example::

    2026-11-22T23:10:05.123456+00:00 WARNING  agent/3 [node 1a2b3c4d pid 4242] my_lib: message text

* ``time``: the *worker's* ``time.time()`` when the record was created (never the
  time the hub wrote it), as ISO-8601 in UTC with microseconds and the offset
  ``+00:00``. UTC keeps lines from machines in different time zones comparable.
* ``level``: the level name (``CRITICAL`` .. ``DEBUG9``; ``LEVEL<n>`` for numbers
  without a name) left-aligned and padded to 8 characters, then one space.
* ``client``, ``node``, ``logger``: whitespace inside is replaced by ``_`` and an
  empty value is written as ``-``, so each is a single word.
* ``first_line``: the first line of the already %-formatted message.

Every further line of the message, then every line of the traceback / stack
(``exc_text``), becomes a continuation line::

    "    | {client} | {text}"

i.e. four spaces, ``|``, a space, the client id, a space, ``|``, a space, the text
(verbatim, including its own indentation). For example::

    2026-11-22T23:10:05.123456+00:00 ERROR    agent/3 [node 1a2b3c4d pid 4242] rayplex: step failed
        | agent/3 | Traceback (most recent call last):
        | agent/3 |   File "train.py", line 3, in <module>
        | agent/3 | ZeroDivisionError: division by zero

Both kinds of line contain the client id surrounded by single spaces, so
``grep -F ' agent/3 ' all.log`` finds every line of every record of that client
(and nothing of ``agent/30``).

Line breaks inside a message are any of those recognised by :meth:`str.splitlines`
(``\\n``, ``\\r\\n``, ``\\r``, ...), so a message can never forge a header line.
Files are UTF-8; characters that cannot be encoded (lone surrogates) are written
with backslash escapes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, NamedTuple, Union

from rayplex import rules

__all__ = [
    "DEBUG1", "DEBUG2", "DEBUG3", "DEBUG4", "DEBUG5", "DEBUG6", "DEBUG7", "DEBUG8", "DEBUG9",
    "FINE_LEVELS",
    "INFO1", "INFO2", "INFO3", "INFO4", "INFO5", "INFO6", "INFO7", "INFO8", "INFO9",
    "CONTINUATION_PREFIX",
    "LogFiles",
    "LogLine",
    "ParsedLine",
    "WireLine",
    "colorize",
    "filter_lines",
    "follow",
    "format_line",
    "level_name",
    "line_from_record",
    "parse_level",
    "parse_line",
]

# --------------------------------------------------------------------------- levels

INFO1 = 19
INFO2 = 18
INFO3 = 17
INFO4 = 16
INFO5 = 15
INFO6 = 14
INFO7 = 13
INFO8 = 12
INFO9 = 11
DEBUG1 = 9
DEBUG2 = 8
DEBUG3 = 7
DEBUG4 = 6
DEBUG5 = 5
DEBUG6 = 4
DEBUG7 = 3
DEBUG8 = 2
DEBUG9 = 1

#: The finer levels, name -> number (``INFOn = 20 - n``, ``DEBUGn = 10 - n``).
FINE_LEVELS: dict[str, int] = {
    **{f"INFO{i}": logging.INFO - i for i in range(1, 10)},
    **{f"DEBUG{i}": logging.DEBUG - i for i in range(1, 10)},
}

for _name, _value in FINE_LEVELS.items():
    logging.addLevelName(_value, _name)

_LEVEL_WORD = re.compile(r"LEVEL ?(\d+)")


def _level_names() -> dict[str, int]:
    """All registered level names, upper-cased, -> number."""
    get_mapping = getattr(logging, "getLevelNamesMapping", None)  # Python >= 3.11
    mapping = get_mapping() if get_mapping is not None else dict(logging._nameToLevel)
    return {name.upper(): value for name, value in mapping.items()}


def parse_level(level: str | int) -> int:
    """Convert a level name or number to a level number.

    Names are matched case-insensitively against every name registered with
    :func:`logging.addLevelName` (which includes ``INFO1``..``INFO9`` and
    ``DEBUG1``..``DEBUG9``); decimal strings and ``LEVEL<n>`` (how
    :func:`format_line` writes unnamed numbers) are accepted too.

    Args:
        level: A name such as ``"debug"`` or ``"INFO5"``, or a non-negative int.

    Returns:
        The numeric level.

    Raises:
        ValueError: If the name is unknown (the message lists the valid names)
            or the number is negative.

    Examples:
        >>> parse_level("debug"), parse_level("INFO5"), parse_level(30)
        (10, 15, 30)
    """
    if isinstance(level, bool) or not isinstance(level, (int, str)):
        raise ValueError(f"log level must be a name or an int, not {level!r}")
    if isinstance(level, int):
        if level < 0:
            raise ValueError(f"log level must be >= 0, not {level}")
        return int(level)  # a plain int, also for an IntEnum: it travels to the hub
    text = level.strip().upper()
    if text.isascii() and text.isdigit():
        return int(text)
    match = _LEVEL_WORD.fullmatch(text)
    if match:
        return int(match.group(1))
    names = _level_names()
    try:
        return names[text]
    except KeyError:
        valid = ", ".join(sorted(names, key=lambda n: (-names[n], n)))
        raise ValueError(
            f"unknown log level {level!r}; expected an int >= 0 or one of: {valid}"
        ) from None


def level_name(levelno: int) -> str:
    """Return the single-word name :func:`format_line` writes for a level number.

    Args:
        levelno: A level number.

    Returns:
        The registered name, or ``LEVEL<n>`` when the number has no name.

    Examples:
        >>> level_name(15), level_name(30), level_name(25)
        ('INFO5', 'WARNING', 'LEVEL25')
    """
    name = logging.getLevelName(levelno)
    if type(name) is not str or name.startswith("Level ") or not name or " " in name:
        return f"LEVEL{levelno}"
    return name


# --------------------------------------------------------------------------- records


class LogLine(NamedTuple):
    """One log record as shipped from a worker to the hub.

    Built on the worker by :func:`line_from_record`. Plain picklable tuple; for big
    batches send plain 8-tuples (they pickle ~10x faster than any tuple subclass);
    :meth:`LogFiles.write` accepts both.

    Examples:
        >>> line = LogLine(1.5, 30, "agent/3", "1a2b3c4d", 4242, "my_lib", "hi", None)
        >>> line.client, line.level
        ('agent/3', 30)
    """

    time: float
    """``time.time()`` on the worker when the record was created."""
    level: int
    """Numeric level."""
    client: str
    """Client id ``"group/name"``."""
    node: str
    """Short node id (first 8 hex characters of the Ray node id)."""
    pid: int
    """Worker process id."""
    logger: str
    """Stdlib logger name (``"rayplex"`` for the Logger's own ``info()`` etc.)."""
    message: str
    """The already %-formatted message."""
    exc_text: str | None = None
    """Formatted traceback and/or stack, if any."""


#: The wire form of a :class:`LogLine`: a plain tuple with the same 8 fields.
WireLine = tuple[float, int, str, str, int, str, str, Union[str, None]]

_tuple_new = tuple.__new__
_FORMATTER = logging.Formatter()


def line_from_record(record: logging.LogRecord, client: str, node: str) -> LogLine:
    """Build a :class:`LogLine` from a stdlib record (call on the worker).

    Uses ``record.created`` as the time, ``record.getMessage()`` as the message
    (if %-formatting fails, the raw ``msg`` and ``args`` are kept instead of
    raising) and formats ``exc_info`` / ``stack_info`` like
    :class:`logging.Formatter` does (the exception text is cached in
    ``record.exc_text`` for other handlers). The result always passes
    :func:`rayplex.rules.validate_log_line`: a logger name that would not (a line
    break, too long) is written escaped and cut.

    Args:
        record: The record, e.g. received by a :class:`logging.Handler`.
        client: Client id ``"group/name"``.
        node: Short node id.

    Returns:
        The line.

    Examples:
        >>> rec = logging.makeLogRecord(
        ...     {"name": "my_lib", "levelno": 30, "msg": "x=%d", "args": (1,)})
        >>> line_from_record(rec, "agent/3", "1a2b3c4d").message
        'x=1'
    """
    try:
        message = record.getMessage()
    except Exception as exc:  # a bad format string must not kill the worker
        message = f"{record.msg!r} % {record.args!r} (formatting failed: {exc!r})"
    exc_text = record.exc_text
    if not exc_text:
        exc_info = record.exc_info
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if isinstance(exc_info, tuple) and exc_info[0] is not None:
            exc_text = record.exc_text = _FORMATTER.formatException(exc_info)
    if record.stack_info:
        stack = _FORMATTER.formatStack(record.stack_info)
        exc_text = f"{exc_text}\n{stack}" if exc_text else stack
    if exc_text is not None and not isinstance(exc_text, str):
        exc_text = str(exc_text)
    pid = record.process if type(record.process) is int else os.getpid()
    name = record.name
    logger = _logger_field(name) if type(name) is str else _logger_field(repr(name))
    return _tuple_new(
        LogLine,
        (float(record.created), int(record.levelno), client, node, pid, logger, message,
         exc_text or None),
    )


@lru_cache(maxsize=4096)
def _logger_field(name: str) -> str:
    """``name`` if it is a valid logger name, else a printable stand-in that is one.

    The stdlib accepts any logger name (``logging.getLogger("a\\nb")``); a handler must not
    fail on it, so the name is escaped (``repr``) and cut to the limit instead.
    """
    try:
        return rules.validate_logger_name(name[: rules.MAX_LOGGER_NAME_LENGTH])
    except ValueError:
        return repr(name)[: rules.MAX_LOGGER_NAME_LENGTH]


# --------------------------------------------------------------------------- format

#: Start of every continuation line (followed by ``"{client} | {text}"``).
CONTINUATION_PREFIX = "    | "
_UTC = timezone.utc
_WHITESPACE = re.compile(r"\s")


@lru_cache(maxsize=4096)
def _word(value: str) -> str:
    """Make ``value`` a single non-empty word (client, node and logger fields)."""
    if not value:
        return "-"
    return _WHITESPACE.sub("_", value) if _WHITESPACE.search(value) else value


_iso_last: tuple[int, str] = (0, "1970-01-01T00:00:00")  # (second, its ISO text); one object
# so that threads never see a second paired with another second's text.


def _iso(timestamp: float) -> str:
    """``datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")``, faster.

    The date and time of day are cached per second (consecutive records share it); the
    microseconds are rounded half-to-even like :meth:`datetime.fromtimestamp` does.
    """
    global _iso_last
    try:
        second = math.floor(timestamp)
        micro = round((timestamp - second) * 1e6)
        if micro >= 1_000_000:
            second += 1
            micro -= 1_000_000
        cached_second, text = _iso_last
        if second != cached_second:
            text = datetime.fromtimestamp(second, _UTC).replace(tzinfo=None).isoformat()
            _iso_last = (second, text)
    except (OverflowError, OSError, ValueError):  # nan, inf, out of range: use the epoch
        return "1970-01-01T00:00:00.000000+00:00"
    return f"{text}.{micro:06d}+00:00"


def format_line(line: LogLine | WireLine) -> str:
    """Format one record as text (see the module docstring for the exact format).

    Args:
        line: A :class:`LogLine` or an equivalent plain 8-tuple.

    Returns:
        The header line plus any continuation lines, each ending with ``"\\n"``.

    Examples:
        >>> line = LogLine(0.5, 30, "agent/3", "1a2b3c4d", 42, "my_lib", "a\\nb")
        >>> print(format_line(line), end="")
        1970-01-01T00:00:00.500000+00:00 WARNING  agent/3 [node 1a2b3c4d pid 42] my_lib: a
            | agent/3 | b
    """
    timestamp, levelno, client, node, pid, logger, message, exc_text = line
    client = _word(client)
    parts = message.splitlines()
    head = (
        f"{_iso(timestamp)} {level_name(levelno):<8} {client} "
        f"[node {_word(node)} pid {pid}] {_word(logger)}: {parts[0] if parts else ''}\n"
    )
    if len(parts) < 2 and not exc_text:
        return head
    rest = parts[1:]
    if exc_text:
        rest.extend(exc_text.splitlines())
    prefix = f"{CONTINUATION_PREFIX}{client} | "
    separator = "\n" + prefix
    return f"{head}{prefix}{separator.join(rest)}\n"


class ParsedLine(NamedTuple):
    """One line of a log file, as understood by :func:`parse_line`.

    For continuation lines only ``client`` and ``message`` are set (the other
    fields are ``None``) and ``is_continuation`` is true.
    """

    time: float | None
    """Epoch seconds parsed from the ISO timestamp."""
    level: str | None
    """Level name as written, e.g. ``"INFO5"``."""
    levelno: int | None
    """Numeric level, or ``None`` if the name is not registered in this process."""
    client: str
    node: str | None
    pid: int | None
    logger: str | None
    message: str
    """Rest of the line (the first message line, or a continuation's text)."""
    is_continuation: bool


_HEADER_RE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:[+-]\d\d:\d\d|Z)?)"
    r" (?P<level>\S+) +(?P<client>\S+) \[node (?P<node>\S+) pid (?P<pid>-?\d+)\]"
    r" (?P<logger>\S+?):(?: (?P<message>.*))?"
)
_CONTINUATION_RE = re.compile(r" {4}\| (?P<client>\S+) \|(?: (?P<message>.*))?")


def _parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def parse_line(text_line: str) -> ParsedLine | None:
    """Parse one line written by :func:`format_line`.

    Args:
        text_line: One line, with or without its trailing newline.

    Returns:
        The parsed line, or ``None`` if it is neither a header nor a
        continuation line.

    Examples:
        >>> p = parse_line(
        ...     "1970-01-01T00:00:00.500000+00:00 INFO5    agent/3 [node ab pid 7] x: hi\\n")
        >>> p.levelno, p.client, p.pid, p.message, p.is_continuation
        (15, 'agent/3', 7, 'hi', False)
        >>> parse_line("    | agent/3 | Traceback (most recent call last):").is_continuation
        True
    """
    text = text_line.rstrip("\r\n")
    if text.startswith(CONTINUATION_PREFIX):
        match = _CONTINUATION_RE.fullmatch(text)
        if match is None:
            return None
        return ParsedLine(
            None, None, None, match["client"], None, None, None, match["message"] or "", True
        )
    match = _HEADER_RE.fullmatch(text)
    if match is None:
        return None
    level = match["level"]
    try:
        levelno: int | None = parse_level(level)
    except ValueError:
        levelno = None
    return ParsedLine(
        _parse_time(match["time"]),
        level,
        levelno,
        match["client"],
        match["node"],
        int(match["pid"]),
        match["logger"],
        match["message"] or "",
        False,
    )


# --------------------------------------------------------------------------- files

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

    Args:
        root: Directory of the logs (created if missing), e.g. ``logdir/logs``.
        max_bytes: Rotate a file before it would exceed this many bytes;
            ``None`` never rotates.
        backup_count: Number of rotated files kept per log file.
        level: Drop lines below this level (name or number).
        max_open_files: Maximum number of per-client files kept open.
        autoflush: Flush the files touched by :meth:`write` at its end, so that
            ``tail -f`` sees whole batches promptly.

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
        self._lock = threading.Lock()
        self._all: _Sink | None = None
        self._clients: OrderedDict[str, _Sink] = OrderedDict()
        self._known: set[tuple[str, str]] = set()
        """(client, logger) pairs of lines that passed the full check."""
        self._closed = False
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
            max_bytes = self.max_bytes
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
            if self.autoflush:
                all_sink.file.flush()  # type: ignore[union-attr]
                for sink in touched:
                    if sink.file is not None:  # may have been closed by the LRU
                        sink.file.flush()

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
            for sink in sinks:
                sink.close()

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


# --------------------------------------------------------------------------- tail


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
                    file = open(path, "rb")  # noqa: SIM115 - closed in finally
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
        match = _CONTINUATION_RE.fullmatch(body)
        if match is None:
            return text_line
        cut = match.end("client") + 2
        return f"{_DIM}{body[:cut]}{_RESET}{body[cut:]}{newline}"
    match = _HEADER_RE.fullmatch(body)
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
