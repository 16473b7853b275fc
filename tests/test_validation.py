"""Every public entry point refuses bad input at the call site; fuzzed with hypothesis."""

from __future__ import annotations

import os
import posixpath

import numpy as np
import pytest
import ray
from hypothesis import given, settings
from hypothesis import strategies as st

import rayplex
from rayplex.artifacts import safe_relpath
from rayplex.rules import STEP_MAX, STEP_MIN, split_client_id, validate_tag
from tests.conftest import tb_scalars, tb_values
from tests.fixtures import shared_experiment  # noqa: F401  (one hub for this module)

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@given(_text)
@settings(max_examples=300, deadline=None)
def test_client_ids_either_fail_cleanly_or_are_two_safe_path_parts(client_id):
    try:
        group, name = split_client_id(client_id)
    except ValueError:
        return
    for part in (group, name):
        assert part not in (".", "..") and "/" not in part and "\x00" not in part
        assert posixpath.normpath(part) == part and not part.startswith((".", "-"))


@given(_text)
@settings(max_examples=300, deadline=None)
def test_tags_either_fail_cleanly_or_have_no_nul_or_newline(tag):
    try:
        validate_tag(tag)
    except ValueError:
        return
    assert tag and "\x00" not in tag and "\n" not in tag and len(tag) <= 1024


@given(_text)
@settings(max_examples=300, deadline=None)
def test_artifact_paths_either_fail_cleanly_or_stay_inside(path):
    try:
        rel = safe_relpath(path)
    except ValueError:
        return
    joined = posixpath.normpath(posixpath.join("/root", rel))
    assert joined.startswith("/root/") and ".." not in rel.split("/")


@pytest.mark.parametrize("bad", [None, 3, b"agent/1", ["agent", "1"]])
def test_non_string_client_ids_are_type_errors(bad):
    with pytest.raises(TypeError):
        split_client_id(bad)


def test_bad_arguments_to_log_calls_raise_specific_errors(experiment):
    log = rayplex.get_logger("learner/v")
    with pytest.raises(ValueError):
        log.add_scalar("a\x00b", 1.0)
    with pytest.raises(ValueError):
        log.add_scalar("t" * 5000, 1.0)
    with pytest.raises(TypeError):
        log.add_scalar(None, 1.0)
    with pytest.raises(ValueError):
        log.add_histogram("h", np.array([]))
    with pytest.raises(ValueError):
        log.add_video("v", np.zeros((2, 2)))
    with pytest.raises(TypeError):
        log.add_text("t", 3)
    with pytest.raises(TypeError):
        log.log_params(Args=3)
    with pytest.raises(ValueError):
        log.save_text("x", "a/../../etc/passwd")
    with pytest.raises(TypeError):
        rayplex.init(3)
    with pytest.raises(ValueError):
        experiment.register_indexed_group("bad/name", 2)
    log.add_scalar("ok", 1.0, step=0)
    log.flush()  # the hub is still up and took what was valid
    assert rayplex.status()[0]["records_written"] >= 1


def test_steps_outside_signed_64_bits_raise_at_every_call_site_and_nothing_wraps(experiment):
    log = rayplex.get_logger("steps/main")  # a group of its own: every tag and summary checked
    log.store_metrics(kept=1.0)
    calls = {
        "add_scalar": lambda s: log.add_scalar("a", 1.0, step=s),
        "add_scalars": lambda s: log.add_scalars({"b": 1.0, "c": 2.0}, step=s),
        "add_text": lambda s: log.add_text("t", "x", step=s),
        "add_histogram": lambda s: log.add_histogram("h", np.arange(5.0), step=s),
        "log": lambda s: log.log(step=s, d=1.0),
        "log_metrics_summary": lambda s: log.log_metrics_summary(step=s),
    }
    for step in (STEP_MAX + 1, 2**64 + 5, STEP_MIN - 1, np.uint64(2**64 - 1)):
        for name, call in calls.items():
            with pytest.raises(ValueError, match="out of range"):
                call(step)
                pytest.fail(f"{name}(step={step}) did not raise")
    # Counting on from the largest step must not wrap either.
    log.add_scalar("last", 1.0, step=STEP_MAX)
    with pytest.raises(ValueError, match="out of range"):
        log.add_scalar("last", 2.0)
    log.add_text("note", "x", step=STEP_MAX)
    with pytest.raises(ValueError, match="out of range"):
        log.add_text("note", "y")
    log.log(step=STEP_MAX, row=1.0)
    log.flush()
    with pytest.raises(ValueError, match="out of range"):
        log.log(row=2.0)
    log.add_scalar("a", 2.0, step=5)
    log.log_metrics_summary(step=5)  # the window survived the refused calls
    rayplex.flush()  # also writes the summaries that are due
    scalars = tb_scalars(experiment.logdir)
    assert dict(scalars["steps"]) == {
        "main/a": [(5, 2.0)], "main/last": [(STEP_MAX, 1.0)], "main/row": [(STEP_MAX, 1.0)]}
    assert scalars["steps/summary"]["kept/mean"] == [(5, 1.0)]
    assert [step for step, _, _ in tb_values(experiment.logdir)["steps"]["main/note"]] == [
        STEP_MAX]


def test_get_logger_refuses_ids_that_collide_or_that_rayplex_uses_itself(experiment):
    experiment.register_indexed_group("idx", 4)
    with pytest.raises(ValueError, match="idx/7"):
        rayplex.get_logger("idx/007")
    for bad in ("hparams/a", "rayplex/hub", "system/x", "learner/summary", "all.log/x",
                "All.Log.1/x"):
        with pytest.raises(ValueError, match="reserved|all.log"):
            rayplex.get_logger(bad)
        with pytest.raises(ValueError, match="reserved|all.log"):
            rayplex.LogHandler(bad)
    with pytest.raises(ValueError, match="reserved"):
        experiment.register_normal_group("hparams")
    log = rayplex.get_logger("idx/7")
    log.add_scalar("r", 1.0, step=0)
    log.flush()
    assert tb_scalars(experiment.logdir)["idx/7"]["idx/r/4-7"] == [(0, 1.0)]


def test_logged_refuses_a_reserved_client_id_when_the_task_starts(experiment):
    @ray.remote(num_cpus=0)
    @rayplex.logged("system/{i}", hub=experiment.name)
    def task(i, logger=None):
        return logger.client_id

    with pytest.raises(ValueError, match="reserved"):
        ray.get(task.remote(1))


def test_a_logger_name_is_checked_where_the_line_is_logged(experiment):
    log = rayplex.get_logger("learner/text")
    with pytest.raises(TypeError, match="logger name"):
        log.info("x", logger=3)
    with pytest.raises(ValueError, match="logger name"):
        log.warning("x", logger="a\nb")
    with pytest.raises(ValueError, match="logger name"):
        log.error("x", logger="")
    log.info("kept", logger="my_lib")
    log.flush()
    with open(os.path.join(experiment.logdir, "logs", "all.log"), encoding="utf-8") as f:
        text = f.read()
    assert " learner/text " in text and "my_lib: kept" in text
    assert rayplex.status()[0]["lines_written"] >= 1
