"""Loggerplex: text logs from every worker into per-client and combined files on the hub."""

from __future__ import annotations

import logging
import os
import re

import pytest
import ray

import rayplex
from rayplex.textlog import parse_line
from tests.fixtures import shared_experiment  # noqa: F401  (one hub for this module)


def _read(logdir, *parts):
    with open(os.path.join(logdir, "logs", *parts), encoding="utf-8") as f:
        return f.read()


def test_lines_go_to_the_client_file_and_all_log_with_the_documented_format(experiment):
    import time

    log = rayplex.get_logger("agent/3")
    before = time.time()
    log.info("episode %d done", 12)
    log.warning("slow env")
    log.flush()
    text = _read(experiment.logdir, "agent", "3.log")
    first = parse_line(text.splitlines()[0])
    assert first.client == "agent/3" and first.level == "INFO" and first.message == "episode 12 done"
    assert first.pid == os.getpid() and before - 1 <= first.time <= time.time()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 INFO ", text)
    assert "slow env" in _read(experiment.logdir, "all.log")


def test_a_traceback_is_kept_whole_and_greppable(experiment):
    log = rayplex.get_logger("agent/4")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    log.flush()
    lines = [ln for ln in _read(experiment.logdir, "all.log").splitlines() if " agent/4 " in ln]
    assert any("Traceback (most recent call last):" in ln for ln in lines)
    assert any("RuntimeError: boom" in ln for ln in lines)


def test_stack_info_ends_at_the_line_that_called_the_logger(experiment):
    log = rayplex.get_logger("agent/5")

    def train_step():
        log.warning("where am I", stack_info=True)

    train_step()
    log.flush()
    lines = _read(experiment.logdir, "agent", "5.log").splitlines()
    assert parse_line(lines[0]).message == "where am I"
    stack = [parse_line(ln).message for ln in lines[1:]]
    assert stack[0] == "Stack (most recent call last):"
    assert stack[-2].endswith(", in train_step")  # then the source line of the call
    assert not any("rayplex" + os.sep + "logger.py" in text for text in stack)


def test_level_filtering_with_fine_levels(ray_session, tmp_path):
    hub = rayplex.init(str(tmp_path / "x"), name="lvl", log_level="INFO5")
    try:
        log = rayplex.get_logger("agent/1", hub="lvl")
        log.info3("kept fine level")
        log.info7("dropped fine level")
        log.debug("dropped debug")
        log.flush()
        text = _read(hub.logdir, "all.log")
        assert "kept fine level" in text and "dropped" not in text
    finally:
        rayplex.shutdown("lvl")


def test_stdlib_logger_forwards_through_log_handler(experiment):
    handler = rayplex.LogHandler("learner/lib")
    lib = logging.getLogger("my_lib_for_test")
    lib.setLevel(logging.INFO)
    lib.addHandler(handler)
    try:
        lib.info("from the library %s", "ok")
    finally:
        lib.removeHandler(handler)
    rayplex.get_logger("learner/lib").flush()
    line = parse_line(_read(experiment.logdir, "learner", "lib.log").splitlines()[0])
    assert (line.logger, line.message) == ("my_lib_for_test", "from the library ok")


@ray.remote
@rayplex.logged("agent/{i}", capture_logging=True)
def _captured(i, logger=None):
    logging.getLogger("inside.task").info("started %d", i)
    return i


def test_capture_logging_forwards_the_tasks_root_logger(experiment):
    ray.get(_captured.remote(7))
    assert "started 7" in _read(experiment.logdir, "agent", "7.log")


@ray.remote
@rayplex.logged("chatty/{i}")
def _chatty(i, n, logger=None):
    for k in range(n):
        logger.info("line %d of %d", k, i)


@pytest.mark.slow
def test_concurrent_tasks_deliver_every_line_once_in_order(experiment):
    ray.get([_chatty.remote(i, 1000) for i in range(20)])
    for i in range(20):
        lines = _read(experiment.logdir, "chatty", f"{i}.log").splitlines()
        assert [parse_line(ln).message for ln in lines] == [f"line {k} of {i}" for k in range(1000)]
    combined = [parse_line(ln) for ln in _read(experiment.logdir, "all.log").splitlines()]
    for i in range(20):
        mine = [p.message for p in combined if p.client == f"chatty/{i}"]
        assert mine == [f"line {k} of {i}" for k in range(1000)]


def test_echo_also_prints_locally(experiment, capsys):
    log = rayplex.get_logger("learner/echo", echo=True)
    log.info("visible here")
    assert "visible here" in capsys.readouterr().err
