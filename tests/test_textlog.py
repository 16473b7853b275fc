"""Loggerplex's pure parts: levels, wire records, text format, log files and tail helpers.

No Ray here: records are built from stdlib ``LogRecord`` objects and written with
``LogFiles`` into ``tmp_path``.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayplex.actors.logfiles import LogFiles
from rayplex.rules import HUB_CLIENT_ID, validate_log_line
from rayplex.tail import colorize, filter_lines, follow
from rayplex.textlog import (
    CONTINUATION_PREFIX,
    DEBUG3,
    DEBUG4,
    FINE_LEVELS,
    INFO1,
    INFO5,
    INFO6,
    INFO9,
    LogLine,
    ParsedLine,
    build_line,
    format_line,
    level_name,
    line_from_record,
    parse_level,
    parse_line,
)
from rayplex.tfrecord import NotRegularFileError

T0 = 1_795_000_000.25  # 2026-11-18T..., a fixed worker time well in the past of any test run


def make_line(
    t: float = T0,
    message: str = "hello",
    client: str = "agent/3",
    level: int = logging.INFO,
    pid: int = 4242,
    node: str = "1a2b3c4d",
    logger: str = "my_lib",
    exc_text: str | None = None,
) -> LogLine:
    return LogLine(t, level, client, node, pid, logger, message, exc_text)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def must_parse(text: str) -> ParsedLine:
    parsed = parse_line(text)
    assert parsed is not None, text
    return parsed


def messages(path: Path) -> list[str]:
    """The message of every header line of a log file."""
    parsed = [parse_line(text) for text in read_lines(path)]
    return [p.message for p in parsed if p is not None and not p.is_continuation]


def record_with_traceback(logger_name: str = "my_lib") -> logging.LogRecord:
    """A real record of ``logger.exception()`` with a multi-line message."""
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = logging.getLogger(logger_name)
    handler = Capture()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("step %d failed\nsecond line of the message", 7)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert len(captured) == 1
    return captured[0]


# ------------------------------------------------------------------------------ levels


def test_fine_levels_sit_between_the_standard_levels_and_have_registered_names() -> None:
    assert [FINE_LEVELS[f"INFO{i}"] for i in range(1, 10)] == list(range(19, 10, -1))
    assert [FINE_LEVELS[f"DEBUG{i}"] for i in range(1, 10)] == list(range(9, 0, -1))
    assert logging.DEBUG < INFO9 < INFO5 < INFO1 < logging.INFO
    assert logging.NOTSET < DEBUG4 < DEBUG3 < logging.DEBUG
    assert logging.getLevelName(INFO5) == "INFO5"
    assert logging.getLevelName("DEBUG3") == DEBUG3


def test_parse_level_accepts_names_in_any_case_numbers_and_numeric_strings() -> None:
    assert parse_level("debug") == logging.DEBUG
    assert parse_level("INFO5") == INFO5
    assert parse_level(" info5 ") == INFO5
    assert parse_level("Warning") == logging.WARNING
    assert parse_level(30) == 30
    assert parse_level("30") == 30
    assert parse_level("LEVEL25") == 25
    assert parse_level("debug3") == DEBUG3


@pytest.mark.parametrize("bad", ["verbose", "INFO10", "", "-5", -1, True, 2.5, None])
def test_parse_level_rejects_anything_else_listing_the_valid_names(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_level(bad)  # type: ignore[arg-type]
    if isinstance(bad, str):
        assert "INFO5" in str(info.value) and "DEBUG9" in str(info.value)


def test_levels_without_a_name_are_written_as_one_word_and_parse_back() -> None:
    assert level_name(25) == "LEVEL25"
    parsed = parse_line(format_line(make_line(level=25)))
    assert parsed is not None and parsed.level == "LEVEL25" and parsed.levelno == 25


# ------------------------------------------------------------------------------ records


def test_line_from_record_keeps_the_records_time_message_and_traceback() -> None:
    record = record_with_traceback()
    line = line_from_record(record, "agent/3", "1a2b3c4d")
    assert line.time == record.created
    assert line.level == logging.ERROR
    assert line.client == "agent/3" and line.node == "1a2b3c4d"
    assert line.pid == os.getpid()
    assert line.logger == "my_lib"
    assert line.message == "step 7 failed\nsecond line of the message"
    assert line.exc_text is not None
    assert line.exc_text.startswith("Traceback (most recent call last):")
    assert line.exc_text.rstrip().endswith("ZeroDivisionError: division by zero")


def test_line_from_record_includes_stack_info() -> None:
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "msg", None, None,
                               sinfo="Stack (most recent call last):\n  File x")
    line = line_from_record(record, "a/b", "n")
    assert line.exc_text == "Stack (most recent call last):\n  File x"


def test_a_bad_format_string_does_not_raise_on_the_worker() -> None:
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "%d items", ("x",), None)
    line = line_from_record(record, "a/b", "n")
    assert "%d items" in line.message and "formatting failed" in line.message


def test_build_line_and_line_from_record_build_the_same_line_from_the_same_record() -> None:
    record = record_with_traceback()
    assert record.exc_info is not None
    from_record = line_from_record(record, "agent/3", "1a2b3c4d")
    built = build_line(record.levelno, record.msg, record.args or (), "agent/3", "1a2b3c4d",
                       os.getpid(), record.name, record.exc_info, created=record.created)
    assert type(built) is tuple and type(from_record) is LogLine
    assert built == tuple(from_record)
    validate_log_line(built)


def test_build_line_formats_the_exception_being_handled_when_exc_info_is_true() -> None:
    try:
        {}["missing"]
    except KeyError:
        line = build_line(40, "lookup %s", ("failed",), "a/b", "n", 1, "rayplex", True)
    assert line[6] == "lookup failed"
    assert line[7] is not None and line[7].startswith("Traceback (most recent call last):")
    assert line[7].endswith("KeyError: 'missing'")
    assert build_line(40, "no exception", (), "a/b", "n", 1, "rayplex", True)[7] is None


def test_build_line_ends_the_stack_at_the_frame_stacklevel_names() -> None:
    def log_call() -> tuple[object, ...]:  # plays the Logger's info(): one frame to skip
        return build_line(20, "m", (), "a/b", "n", 1, "rayplex", stack_info=True, stacklevel=2)

    stack = log_call()[7]
    assert isinstance(stack, str) and stack.startswith("Stack (most recent call last):")
    assert stack.splitlines()[-2].endswith("in test_build_line_ends_the_stack_at_the_frame_stacklevel_names")
    assert "in log_call" not in stack


def test_build_line_puts_the_stack_after_the_traceback() -> None:
    error = ValueError("bad")
    line = build_line(40, "m", (), "a/b", "n", 1, "rayplex", error, "Stack (most recent call last):\n  x")
    assert line[7] == "ValueError: bad\nStack (most recent call last):\n  x"


def test_build_line_keeps_a_bad_format_string_and_an_unprintable_logger_name() -> None:
    line = build_line(20, "%d items", ("x",), "a/b", "n", 1, "two\nlines")
    assert line[6].startswith("'%d items' % ('x',) (formatting failed: TypeError(")
    assert line[5] == repr("two\nlines")
    validate_log_line(line)


def test_log_lines_survive_pickling_and_the_wire_form_is_plain_tuples() -> None:
    line = line_from_record(record_with_traceback(), "agent/3", "1a2b3c4d")
    assert pickle.loads(pickle.dumps([line], protocol=5)) == [line]
    wire = [tuple(line)]
    assert type(wire[0]) is tuple
    assert [LogLine(*w) for w in pickle.loads(pickle.dumps(wire, protocol=5))] == [line]


# ------------------------------------------------------------------------------ format


def test_the_header_line_has_the_documented_format() -> None:
    text = format_line(make_line(t=1795389005.123456, level=logging.WARNING,
                                 message="message text"))
    assert text == (
        "2026-11-22T23:10:05.123456+00:00 WARNING  agent/3 [node 1a2b3c4d pid 4242] "
        "my_lib: message text\n"
    )


def test_format_then_parse_round_trips_every_field() -> None:
    line = make_line(t=T0 + 0.000123, level=INFO5, logger="pkg.mod:sub", message="a: b [c]")
    parsed = parse_line(format_line(line))
    assert parsed is not None
    assert parsed.time == pytest.approx(line.time, abs=1e-6)
    assert (parsed.level, parsed.levelno) == ("INFO5", INFO5)
    assert (parsed.client, parsed.node, parsed.pid) == ("agent/3", "1a2b3c4d", 4242)
    assert parsed.logger == "pkg.mod:sub"
    assert parsed.message == "a: b [c]"
    assert parsed.is_continuation is False


def test_an_empty_message_still_formats_and_parses() -> None:
    parsed = parse_line(format_line(make_line(message="", node="", logger="")))
    assert parsed is not None
    assert (parsed.message, parsed.node, parsed.logger) == ("", "-", "-")


def test_every_continuation_line_of_a_traceback_carries_the_client_id() -> None:
    line = line_from_record(record_with_traceback(), "agent/3", "1a2b3c4d")
    lines = format_line(line).splitlines()
    assert len(lines) > 4
    # What `grep -F ' agent/3 '` would print is the whole record.
    assert [text for text in lines if " agent/3 " in text] == lines
    assert all(text.startswith(f"{CONTINUATION_PREFIX}agent/3 | ") for text in lines[1:])
    parsed = [must_parse(text) for text in lines]
    assert all(p.client == "agent/3" for p in parsed)
    assert [p.is_continuation for p in parsed] == [False] + [True] * (len(lines) - 1)
    assert parsed[1].message == "second line of the message"
    assert parsed[2].message == "Traceback (most recent call last):"
    assert parsed[-1].message == "ZeroDivisionError: division by zero"


def test_carriage_returns_in_a_message_cannot_forge_a_header_line() -> None:
    forged = "2026-01-01T00:00:00.000000+00:00 ERROR    admin/0 [node x pid 1] l: pwned"
    text = format_line(make_line(message=f"ok\r{forged}\r\nlast"))
    lines = text.splitlines()
    assert len(lines) == 3
    assert all(" agent/3 " in part for part in lines)
    assert [must_parse(part).is_continuation for part in lines] == [False, True, True]


def test_whitespace_in_client_node_or_logger_becomes_underscores() -> None:
    parsed = parse_line(format_line(make_line(client="a b/c", node="n 1", logger="my lib")))
    assert parsed is not None
    assert (parsed.client, parsed.node, parsed.logger) == ("a_b/c", "n_1", "my_lib")


def test_lines_that_are_not_ours_do_not_parse() -> None:
    assert parse_line("hello world") is None
    assert parse_line("") is None
    assert parse_line("    | no closing bar") is None


# ------------------------------------------------------------------------------ LogFiles


def test_lines_go_to_the_client_file_and_to_all_log(tmp_path: Path) -> None:
    with LogFiles(tmp_path) as files:
        files.write([make_line(message="from a3", client="agent/3"),
                     make_line(message="from learner", client="learner/main", t=T0 + 1)])
    assert messages(tmp_path / "all.log") == ["from a3", "from learner"]
    assert messages(tmp_path / "agent" / "3.log") == ["from a3"]
    assert messages(tmp_path / "learner" / "main.log") == ["from learner"]


def test_the_workers_timestamp_is_written_not_the_write_time(tmp_path: Path) -> None:
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "old news", None, None)
    record.created = T0
    with LogFiles(tmp_path) as files:
        files.write([line_from_record(record, "agent/3", "1a2b3c4d")])
    (text,) = read_lines(tmp_path / "agent" / "3.log")
    assert text.startswith("2026-11-18T")
    written = must_parse(text).time
    assert written is not None and written == pytest.approx(T0, abs=1e-6)
    assert abs(written - time.time()) > 3600


def test_a_batch_is_written_in_timestamp_order(tmp_path: Path) -> None:
    batch = [
        make_line(t=T0 + 2, message="a@2", client="agent/1", pid=1),
        make_line(t=T0 + 4, message="a@4", client="agent/1", pid=1),
        make_line(t=T0 + 1, message="b@1", client="agent/2", pid=2),
        make_line(t=T0 + 3, message="b@3", client="agent/2", pid=2),
    ]
    with LogFiles(tmp_path) as files:
        files.write(batch)
    assert messages(tmp_path / "all.log") == ["b@1", "a@2", "b@3", "a@4"]


def test_equal_timestamps_keep_each_workers_order(tmp_path: Path) -> None:
    batch = [make_line(message=f"a{i}", client="agent/1", pid=1) for i in range(5)]
    batch += [make_line(message=f"b{i}", client="agent/2", pid=2) for i in range(5)]
    with LogFiles(tmp_path) as files:
        files.write(batch)
    assert messages(tmp_path / "agent" / "1.log") == [f"a{i}" for i in range(5)]
    assert messages(tmp_path / "agent" / "2.log") == [f"b{i}" for i in range(5)]
    assert messages(tmp_path / "all.log") == [m.message for m in batch]


def test_a_worker_whose_clock_stepped_back_is_not_reordered(tmp_path: Path) -> None:
    batch = [
        make_line(t=T0 + 5, message="before the step", client="agent/1", pid=1),
        make_line(t=T0 + 1, message="after the step", client="agent/1", pid=1),
        make_line(t=T0 + 3, message="other worker", client="agent/2", pid=2),
    ]
    with LogFiles(tmp_path) as files:
        files.write(batch)
    assert messages(tmp_path / "agent" / "1.log") == ["before the step", "after the step"]
    assert messages(tmp_path / "all.log") == ["other worker", "before the step", "after the step"]


def test_plain_wire_tuples_are_written_like_log_lines(tmp_path: Path) -> None:
    with LogFiles(tmp_path) as files:
        files.write([tuple(make_line(message="wired"))])
    assert messages(tmp_path / "agent" / "3.log") == ["wired"]


def test_lines_below_the_level_are_dropped_including_fine_levels(tmp_path: Path) -> None:
    levels = [logging.WARNING, logging.INFO, INFO1, INFO5, INFO6, logging.DEBUG, DEBUG3, DEBUG4]
    batch = [make_line(t=T0 + i, level=lv, message=level_name(lv)) for i, lv in enumerate(levels)]
    with LogFiles(tmp_path / "info5", level="INFO5") as files:
        files.write(batch)
    with LogFiles(tmp_path / "debug3", level=DEBUG3) as files:
        files.write(batch)
    assert messages(tmp_path / "info5" / "all.log") == ["WARNING", "INFO", "INFO1", "INFO5"]
    assert messages(tmp_path / "debug3" / "all.log") == [
        "WARNING", "INFO", "INFO1", "INFO5", "INFO6", "DEBUG", "DEBUG3",
    ]


def test_a_restarted_writer_appends_without_truncating(tmp_path: Path) -> None:
    with LogFiles(tmp_path) as first:
        first.write([make_line(message="before restart")])
    with LogFiles(tmp_path) as second:
        second.write([make_line(message="after restart", t=T0 + 1)])
    assert messages(tmp_path / "all.log") == ["before restart", "after restart"]
    assert messages(tmp_path / "agent" / "3.log") == ["before restart", "after restart"]


def test_files_rotate_by_size_keeping_backup_count_backups(tmp_path: Path) -> None:
    record_size = len(format_line(make_line(message="m00")).encode())
    max_bytes = 2 * record_size  # exactly two records per file
    with LogFiles(tmp_path, max_bytes=max_bytes, backup_count=2) as files:
        for i in range(9):
            files.write([make_line(t=T0 + i, message=f"m{i:02d}")])
    for base in (tmp_path / "all.log", tmp_path / "agent" / "3.log"):
        names = sorted(p.name for p in base.parent.glob(base.name + "*"))
        assert names == [base.name, base.name + ".1", base.name + ".2"]
        assert messages(Path(f"{base}.2")) == ["m04", "m05"]
        assert messages(Path(f"{base}.1")) == ["m06", "m07"]
        assert messages(base) == ["m08"]
        for path in base.parent.glob(base.name + "*"):
            assert path.stat().st_size <= max_bytes


def test_rotation_continues_from_the_existing_size_after_a_restart(tmp_path: Path) -> None:
    record_size = len(format_line(make_line(message="m0")).encode())
    with LogFiles(tmp_path, max_bytes=2 * record_size) as files:
        files.write([make_line(message="m0"), make_line(message="m1")])
    with LogFiles(tmp_path, max_bytes=2 * record_size) as files:
        files.write([make_line(message="m2")])
    assert messages(tmp_path / "all.log.1") == ["m0", "m1"]
    assert messages(tmp_path / "all.log") == ["m2"]


def test_a_record_larger_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    with LogFiles(tmp_path, max_bytes=100, backup_count=3) as files:
        files.write([make_line(message="small", t=T0),
                     make_line(message="x" * 500, t=T0 + 1),
                     make_line(message="small again", t=T0 + 2)])
    assert messages(tmp_path / "all.log.2") == ["small"]
    assert messages(tmp_path / "all.log.1") == ["x" * 500]
    assert messages(tmp_path / "all.log") == ["small again"]


@pytest.mark.parametrize(
    "client",
    [
        "../x", "agent/../../etc", "/abs", "agent", "agent/3/4", "agent/", "/3", ".hidden/x",
        "agent/.x", "agent/-x", "a b/c", "agent/3\n", "all.log/x", "all.log.1/x", "",
        "x" * 201 + "/y", "x" * 129 + "/y", "ALL.LOG/x",
    ],
)
def test_client_ids_that_could_escape_root_are_refused(tmp_path: Path, client: str) -> None:
    with pytest.raises(ValueError), LogFiles(tmp_path / "logs") as files:
        files.write([make_line(message="fine"), make_line(client=client)])
    # Nothing of the batch was written, and nothing outside root was created.
    assert not (tmp_path / "logs" / "all.log").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_valid_client_ids_get_a_file_per_group_and_name(tmp_path: Path) -> None:
    with LogFiles(tmp_path) as files:
        files.write([make_line(client="Learner_1/gpu-0.main", message="m")])
    assert messages(tmp_path / "Learner_1" / "gpu-0.main.log") == ["m"]


def test_the_hubs_own_reserved_client_id_is_writable(tmp_path: Path) -> None:
    with LogFiles(tmp_path) as files:
        files.write([make_line(client=HUB_CLIENT_ID, message="restarted", logger="rayplex.hub")])
    assert messages(tmp_path / "rayplex" / "hub.log") == ["restarted"]


@pytest.mark.parametrize(
    ("field", "bad"),
    [("logger", 3), ("logger", "a\nb"), ("logger", ""), ("level", "INFO"), ("level", None),
     ("message", b"bytes"), ("message", None), ("exc_text", 5), ("node", None), ("pid", "7"),
     ("time", "now")],
)
def test_a_line_with_a_bad_field_is_refused_and_nothing_of_its_batch_is_written(
    tmp_path: Path, field: str, bad: object
) -> None:
    bad_line = make_line(message="bad")._replace(**{field: bad})
    with LogFiles(tmp_path / "logs") as files:
        with pytest.raises(ValueError, match=field):
            files.write([make_line(message="fine"), bad_line])
        files.write([make_line(message="after")])  # the writer is still usable
    assert messages(tmp_path / "logs" / "all.log") == ["after"]


def test_check_refuses_a_bad_batch_without_creating_any_file(tmp_path: Path) -> None:
    with LogFiles(tmp_path) as files:
        files.check([make_line()])
        with pytest.raises(ValueError, match="logger name"):
            files.check([make_line(), make_line(logger=None)])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@given(st.one_of(st.text(max_size=300), st.integers(), st.none()))
def test_line_from_record_turns_any_logger_name_into_a_valid_field(name: object) -> None:
    record = logging.makeLogRecord({"name": name, "levelno": 20, "msg": "m"})
    line = line_from_record(record, "agent/3", "n")
    validate_log_line(tuple(line))
    assert format_line(line).count("\n") == 1


def test_line_from_record_keeps_a_valid_logger_name_unchanged() -> None:
    record = logging.makeLogRecord({"name": "my_lib.io", "levelno": 20, "msg": "m"})
    assert line_from_record(record, "agent/3", "n").logger == "my_lib.io"


def test_least_recently_used_files_are_closed_and_reopened_for_appending(tmp_path: Path) -> None:
    clients = ["g/a", "g/b", "g/c"]
    with LogFiles(tmp_path, max_open_files=2) as files:
        for i in range(6):
            files.write([make_line(t=T0 + i, client=clients[i % 3], message=f"m{i}")])
        assert len(files._clients) == 2
    assert messages(tmp_path / "g" / "a.log") == ["m0", "m3"]
    assert messages(tmp_path / "g" / "c.log") == ["m2", "m5"]


def test_flush_and_close_can_be_called_twice_and_writing_afterwards_raises(
    tmp_path: Path,
) -> None:
    files = LogFiles(tmp_path, autoflush=False)
    files.write([make_line(message="buffered")])
    files.flush()
    files.flush()
    assert messages(tmp_path / "all.log") == ["buffered"]
    files.close()
    files.close()
    files.flush()
    with pytest.raises(ValueError):
        files.write([make_line()])


def test_an_empty_batch_creates_no_files(tmp_path: Path) -> None:
    with LogFiles(tmp_path, level="ERROR") as files:
        files.write([])
        files.write([make_line(level=logging.INFO)])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ tail


@pytest.fixture
def mixed_log() -> list[str]:
    error = line_from_record(record_with_traceback(), "agent/3", "1a2b3c4d")
    text = "".join([
        format_line(make_line(t=T0, client="agent/3", message="a3 info")),
        format_line(error),
        format_line(make_line(t=T0 + 1, client="agent/30", level=logging.ERROR, message="a30\nx")),
        format_line(make_line(t=T0 + 2, client="learner/main", level=DEBUG3, message="lm debug")),
        format_line(make_line(t=T0 + 3, client="learner/main", level=INFO5, message="lm info5")),
    ])
    return text.splitlines(keepends=True)


def headers(lines: list[str]) -> list[str]:
    parsed = [parse_line(text) for text in lines]
    return [p.message for p in parsed if p is not None and not p.is_continuation]


def test_filter_lines_keeps_one_clients_records_with_their_continuations(
    mixed_log: list[str],
) -> None:
    kept = list(filter_lines(mixed_log, client="agent/3"))
    assert headers(kept) == ["a3 info", "step 7 failed"]
    assert kept[-1].rstrip("\n").endswith("ZeroDivisionError: division by zero")
    assert all(" agent/3 " in text for text in kept)


def test_filter_lines_with_a_group_keeps_all_its_clients(mixed_log: list[str]) -> None:
    assert headers(list(filter_lines(mixed_log, client="learner"))) == ["lm debug", "lm info5"]


def test_filter_lines_by_level_keeps_tracebacks_and_understands_fine_levels(
    mixed_log: list[str],
) -> None:
    errors = list(filter_lines(mixed_log, level=logging.ERROR))
    assert headers(errors) == ["step 7 failed", "a30"]
    assert any("Traceback (most recent call last):" in text for text in errors)
    assert errors[-1] == f"{CONTINUATION_PREFIX}agent/30 | x\n"
    assert headers(list(filter_lines(mixed_log, level="INFO5"))) == [
        "a3 info", "step 7 failed", "a30", "lm info5",
    ]
    assert headers(list(filter_lines(mixed_log, client="learner/main", level="DEBUG3"))) == [
        "lm debug", "lm info5",
    ]


def test_filter_lines_without_filters_passes_everything_through(mixed_log: list[str]) -> None:
    assert list(filter_lines(mixed_log + ["garbage\n"])) == mixed_log + ["garbage\n"]


def test_colorize_adds_level_colours_but_keeps_the_text(mixed_log: list[str]) -> None:
    for text in mixed_log:
        coloured = colorize(text)
        assert coloured != text
        assert "\x1b[" in coloured
        assert coloured.endswith("\n")
        assert coloured.replace("\x1b[0m", "").replace("\x1b[2m", "").count("agent") == text.count(
            "agent"
        )
    assert "\x1b[31m" in colorize(mixed_log[1])  # ERROR is red
    assert colorize("not a log line\n") == "not a log line\n"


class Follower:
    """Runs ``follow()`` in a thread and collects what it yields."""

    def __init__(self, path: Path, **kwargs: object) -> None:
        self.stop = threading.Event()
        self.lines: list[str] = []
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path,), kwargs=kwargs, daemon=True)
        self._thread.start()

    def _run(self, path: Path, **kwargs: object) -> None:
        try:
            for line in follow(path, poll_s=0.01, stop=self.stop, **kwargs):  # type: ignore[arg-type]
                self.lines.append(line)
        finally:
            self.finished.set()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return list(self.lines)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)
        assert self.finished.is_set()


@pytest.fixture
def follower_factory() -> Iterator[type[Follower]]:
    started: list[Follower] = []

    class Tracked(Follower):
        def __init__(self, path: Path, **kwargs: object) -> None:
            super().__init__(path, **kwargs)
            started.append(self)

    yield Tracked
    for follower in started:
        follower.close()


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


def test_follow_yields_existing_and_appended_lines(
    tmp_path: Path, follower_factory: type[Follower]
) -> None:
    path = tmp_path / "all.log"
    path.write_text("one\n")
    follower = follower_factory(path)
    assert follower.wait_for(1) == ["one\n"]
    append(path, "two\nthr")
    assert follower.wait_for(2) == ["one\n", "two\n"]
    append(path, "ee\n")
    assert follower.wait_for(3) == ["one\n", "two\n", "three\n"]


def test_follow_from_the_end_skips_existing_lines(
    tmp_path: Path, follower_factory: type[Follower]
) -> None:
    path = tmp_path / "all.log"
    path.write_text("old\n")
    follower = follower_factory(path, from_start=False)
    # The follower has no way to signal "positioned at the end": write until it reports.
    deadline = time.monotonic() + 10
    while not follower.lines and time.monotonic() < deadline:
        append(path, "new\n")
        follower.wait_for(1, timeout=0.05)
    assert follower.lines and "old\n" not in follower.lines


def test_follow_waits_for_a_file_that_does_not_exist_yet(
    tmp_path: Path, follower_factory: type[Follower]
) -> None:
    path = tmp_path / "all.log"
    follower = follower_factory(path)
    path.write_text("first\n")
    assert follower.wait_for(1) == ["first\n"]


def test_follow_continues_into_the_new_file_after_rotation(
    tmp_path: Path, follower_factory: type[Follower]
) -> None:
    path = tmp_path / "all.log"
    path.write_text("a\n")
    follower = follower_factory(path)
    assert follower.wait_for(1) == ["a\n"]
    append(path, "b\n")  # may or may not be read before the rename: either way it is seen
    os.replace(path, tmp_path / "all.log.1")
    path.write_text("c\n")
    assert follower.wait_for(3) == ["a\n", "b\n", "c\n"]


@pytest.mark.skipif(sys.platform == "win32", reason="truncating an open file")
def test_follow_rereads_a_truncated_file(
    tmp_path: Path, follower_factory: type[Follower]
) -> None:
    path = tmp_path / "all.log"
    path.write_text("long line one\nlong line two\n")
    follower = follower_factory(path)
    assert len(follower.wait_for(2)) == 2
    with open(path, "r+", encoding="utf-8") as file:
        file.truncate(0)
        file.write("x\n")
    assert follower.wait_for(3)[2:] == ["x\n"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_follow_refuses_a_fifo_at_the_path_instead_of_blocking(tmp_path: Path) -> None:
    path = tmp_path / "all.log"
    os.mkfifo(path)
    outcome: list[BaseException | str] = []

    def read_one() -> None:
        try:
            outcome.append(next(follow(path, poll_s=0.01)))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read_one, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked in open(): give it a writer so the thread can end
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
    assert outcome and isinstance(outcome[0], NotRegularFileError), outcome


def test_follow_stops_promptly_when_the_event_is_set(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert list(follow(tmp_path / "missing.log", poll_s=120, stop=stop)) == []
    assert time.monotonic() - started < 60  # not one poll: it did not wait for the file
