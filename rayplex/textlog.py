"""The text-log line: levels, the record workers ship, and the one text format (build, parse).

Workers build a small :class:`LogLine` tuple with :func:`build_line` (the Logger's
``info()`` etc.) or :func:`line_from_record` (a stdlib :class:`logging.LogRecord`, through
``LogHandler``) and ship it to the hub, whose :class:`rayplex.actors.logfiles.LogFiles`
writes it with :func:`format_line` to ``<root>/all.log`` (every client) and
``<root>/<group>/<name>.log`` (one file per client ``"group/name"``). ``rayplex tail``
(:mod:`rayplex.tail`) reads the files back with :func:`parse_line`.

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
import sys
import time as _time
import traceback
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from types import TracebackType
from typing import Any, NamedTuple, Union

from rayplex import rules

__all__ = [
    "DEBUG1", "DEBUG2", "DEBUG3", "DEBUG4", "DEBUG5", "DEBUG6", "DEBUG7", "DEBUG8", "DEBUG9",
    "FINE_LEVELS",
    "INFO1", "INFO2", "INFO3", "INFO4", "INFO5", "INFO6", "INFO7", "INFO8", "INFO9",
    "CONTINUATION_PREFIX",
    "CONTINUATION_RE",
    "ExcInfo",
    "HEADER_RE",
    "LogLine",
    "ParsedLine",
    "WireLine",
    "build_line",
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

    Built on the worker by :func:`build_line` (a plain 8-tuple in this order: they pickle
    ~10x faster than any tuple subclass) or :func:`line_from_record`;
    :meth:`rayplex.actors.logfiles.LogFiles.write` accepts both.

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
_now = _time.time

#: What ``exc_info`` may be, as in :mod:`logging`: an exception, a ``sys.exc_info()`` tuple,
#: ``True`` for the exception being handled, or an already formatted traceback text.
ExcInfo = Union[
    BaseException,
    tuple[Union[type[BaseException], None], Union[BaseException, None], Union[TracebackType, None]],
    bool,
    str,
    None,
]


def build_line(
    level: int,
    msg: Any,
    args: tuple[Any, ...] | Mapping[str, Any],
    client: str,
    node: str,
    pid: int,
    logger_name: Any,
    exc_info: ExcInfo = None,
    stack_info: bool | str = False,
    created: float | None = None,
    *,
    stacklevel: int = 1,
) -> WireLine:
    """Build the wire form of one text-log record: the one builder of every line a worker ships.

    The message is ``str(msg) % args`` (just ``str(msg)`` without args), as :mod:`logging`
    does; if that fails the raw ``msg`` and ``args`` are kept instead of raising (a bad format
    string must not kill the worker). ``exc_info`` and ``stack_info`` are formatted like
    :class:`logging.Formatter` does, the stack after the traceback. The result always passes
    :func:`rayplex.rules.validate_log_line`: a logger name that would not (a line break, too
    long, not a str) is written escaped and cut.

    Args:
        level: The numeric level.
        msg: The message, %-formatted with ``args``.
        args: The %-arguments (a tuple, or a mapping for ``%(name)s``).
        client: Client id ``"group/name"``.
        node: Short node id.
        pid: The worker's process id.
        logger_name: The logger's name (``"rayplex"`` for the Logger's own lines).
        exc_info: An exception, a ``sys.exc_info()`` tuple, ``True`` (the exception being
            handled) or an already formatted traceback text; falsy for none.
        stack_info: ``True`` to add the current stack (ending ``stacklevel`` frames above
            this call), or an already formatted stack text.
        created: ``time.time()`` when the record was created; ``None`` for now.
        stacklevel: With ``stack_info=True``: 1 ends the stack at the caller, 2 at its
            caller, and so on.

    Returns:
        A plain 8-tuple in :class:`LogLine` order (plain tuples pickle fastest).

    Examples:
        >>> build_line(20, "x=%d", (1,), "agent/3", "1a2b3c4d", 42, "my_lib", created=0.5)
        (0.5, 20, 'agent/3', '1a2b3c4d', 42, 'my_lib', 'x=1', None)
        >>> build_line(20, "%d", ("x",), "a/b", "n", 1, "l", created=0.0)[6]  # doctest: +ELLIPSIS
        "'%d' % ('x',) (formatting failed: TypeError(...))"
    """
    try:
        message = str(msg) % args if args else str(msg)
    except Exception as exc:  # a bad format string must not kill the worker
        message = f"{msg!r} % {args!r} (formatting failed: {exc!r})"
    exc_text = _exception_text(exc_info) if exc_info else None
    if stack_info:
        if isinstance(stack_info, str):
            stack = stack_info
        else:
            frames = traceback.format_stack(sys._getframe(stacklevel))
            stack = ("Stack (most recent call last):\n" + "".join(frames)).rstrip("\n")
        exc_text = f"{exc_text}\n{stack}" if exc_text else stack
    return (
        _now() if created is None else float(created),
        level if type(level) is int else int(level),
        client,
        node,
        pid,
        _logger_field(logger_name) if type(logger_name) is str else _logger_field(repr(logger_name)),
        message,
        exc_text,
    )


def _exception_text(exc_info: ExcInfo) -> str | None:
    """The traceback text of ``exc_info`` (see :func:`build_line`), or ``None``."""
    if isinstance(exc_info, str):
        return exc_info
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    kind, value, tb = exc_info
    if kind is None or value is None:
        return None
    return _FORMATTER.formatException((kind, value, tb))


def line_from_record(record: logging.LogRecord, client: str, node: str) -> LogLine:
    """Build a :class:`LogLine` from a stdlib record (call on the worker): :func:`build_line`.

    Uses ``record.created`` as the time, ``record.msg % record.args`` as the message and the
    record's exception and stack; the exception text is cached in ``record.exc_text`` for
    other handlers, as :class:`logging.Formatter` does.

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
    exc: ExcInfo = record.exc_text
    if exc:
        exc = str(exc)
    elif record.exc_info:
        exc = record.exc_text = _exception_text(record.exc_info)
    pid = record.process if type(record.process) is int else os.getpid()
    return _tuple_new(LogLine, build_line(
        record.levelno, record.msg, record.args or (), client, node, pid, record.name, exc,
        record.stack_info or False, record.created,
    ))


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


#: A header line (without its newline), with named groups time, level, client, node, pid,
#: logger and message.
HEADER_RE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:[+-]\d\d:\d\d|Z)?)"
    r" (?P<level>\S+) +(?P<client>\S+) \[node (?P<node>\S+) pid (?P<pid>-?\d+)\]"
    r" (?P<logger>\S+?):(?: (?P<message>.*))?"
)
#: A continuation line (without its newline), with named groups client and message.
CONTINUATION_RE = re.compile(r" {4}\| (?P<client>\S+) \|(?: (?P<message>.*))?")


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
        match = CONTINUATION_RE.fullmatch(text)
        if match is None:
            return None
        return ParsedLine(
            None, None, None, match["client"], None, None, None, match["message"] or "", True
        )
    match = HEADER_RE.fullmatch(text)
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
