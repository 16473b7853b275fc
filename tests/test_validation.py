"""Every public entry point refuses bad input at the call site; fuzzed with hypothesis."""

from __future__ import annotations

import posixpath

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rayplex
from rayplex.artifacts import safe_relpath
from rayplex.groups import split_client_id, validate_tag

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
