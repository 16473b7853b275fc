"""The shared rules (rayplex.rules), and the promise they make: what they accept, every writer
under ``logdir`` can write. Plain objects in a tmp dir, no Ray."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayplex.actors.hub import Hub
from rayplex.actors.logfiles import LogFiles
from rayplex.artifacts import ArtifactStore
from rayplex.media import hparams_values
from rayplex.rules import (
    HUB_CLIENT_ID,
    MAX_LOGGER_NAME_LENGTH,
    MAX_PART_LENGTH,
    STEP_MAX,
    STEP_MIN,
    check_step,
    split_client_id,
    to_float,
    validate_group_name,
    validate_log_line,
    validate_logger_name,
)
from rayplex.stats import MetricsWindow, PartialStats
from rayplex.textlog import LogLine

# ------------------------------------------------------------------------------ steps


@pytest.mark.parametrize("step", [STEP_MAX + 1, 2**64 + 5, STEP_MIN - 1, -(2**64), 1e19,
                                  np.uint64(2**64 - 1)])
def test_steps_outside_signed_64_bits_are_value_errors_not_wrapped(step: object) -> None:
    with pytest.raises(ValueError, match="out of range"):
        check_step(step)


@pytest.mark.parametrize("step", [STEP_MIN, -1, 0, STEP_MAX, np.int64(STEP_MAX), 7.0])
def test_steps_inside_signed_64_bits_come_back_as_plain_ints(step: object) -> None:
    result = check_step(step)
    assert type(result) is int and result == int(step)  # type: ignore[call-overload]


@pytest.mark.parametrize("step", [True, 1.5, float("nan"), float("inf"), "3", None])
def test_non_integer_steps_are_type_errors(step: object) -> None:
    with pytest.raises(TypeError, match="step"):
        check_step(step)


# ------------------------------------------------------------------------- client ids


@pytest.mark.parametrize("client_id", ["hparams/x", "rayplex/hub", "system/0", "SYSTEM/a",
                                       "agent/summary", "learner/Summary"])
def test_names_rayplex_writes_itself_are_refused_for_users(client_id: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        split_client_id(client_id)


def test_internal_callers_may_use_the_reserved_names() -> None:
    assert split_client_id(HUB_CLIENT_ID, internal=True) == ("rayplex", "hub")
    assert split_client_id("agent/summary", internal=True) == ("agent", "summary")


@pytest.mark.parametrize("client_id", ["all.log/x", "all.log.1/x", "ALL.LOG/x", "All.Log.bak/x"])
@pytest.mark.parametrize("internal", [False, True])
def test_groups_named_like_the_combined_text_log_are_refused_for_everybody(
    client_id: str, internal: bool
) -> None:
    with pytest.raises(ValueError, match="all.log"):
        split_client_id(client_id, internal=internal)


def test_names_that_only_contain_a_reserved_word_are_fine() -> None:
    assert split_client_id("systems/summary2") == ("systems", "summary2")
    assert split_client_id("learner/system") == ("learner", "system")
    assert split_client_id("all.logs/x") == ("all.logs", "x")
    assert validate_group_name("hparams2") == "hparams2"


def test_a_part_of_exactly_the_length_limit_is_accepted_and_one_more_is_not() -> None:
    assert split_client_id("g/" + "n" * MAX_PART_LENGTH)
    with pytest.raises(ValueError, match="limit"):
        split_client_id("g/" + "n" * (MAX_PART_LENGTH + 1))


# ------------------------------------------------------------------------ logger names


@pytest.mark.parametrize("name", [3, None, b"lib", ["lib"]])
def test_a_logger_name_that_is_not_a_str_is_a_type_error(name: object) -> None:
    with pytest.raises(TypeError, match="logger name"):
        validate_logger_name(name)


@pytest.mark.parametrize("name", ["", "a\nb", "a\rb", "a\x00b", "a\u2028b", "a\x85b", "a\x1bb",
                                  "x" * (MAX_LOGGER_NAME_LENGTH + 1)])
def test_a_logger_name_that_cannot_stay_one_header_field_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="logger name"):
        validate_logger_name(name)


@pytest.mark.parametrize(
    "line",
    [
        (1.0, "INFO", "a/b", "n", 1, "l", "m", None),
        (1.0, True, "a/b", "n", 1, "l", "m", None),
        ("now", 20, "a/b", "n", 1, "l", "m", None),
        (1.0, 20, "a/b", 3, 1, "l", "m", None),
        (1.0, 20, "a/b", "n", "1", "l", "m", None),
        (1.0, 20, "a/b", "n", 1, 3, "m", None),
        (1.0, 20, "a/b", "n", 1, "l", b"m", None),
        (1.0, 20, "a/b", "n", 1, "l", "m", 5),
        (1.0, 20, "all.log/b", "n", 1, "l", "m", None),
        (1.0, 20, "a/b", "n", 1, "l", "m"),
        [1.0, 20, "a/b", "n", 1, "l", "m", None],
    ],
)
def test_every_field_of_a_text_line_is_checked(line: object) -> None:
    with pytest.raises(ValueError, match="text-log line"):
        validate_log_line(line)


def test_the_hubs_own_line_is_a_valid_text_line() -> None:
    validate_log_line(LogLine(1.0, logging.WARNING, HUB_CLIENT_ID, "hub", 1, "rayplex.hub", "x"))


# ------------------------------------------- what the rules accept, the writers can write

_part_chars = st.sampled_from("aZ09_.-")
_plain_parts = st.text(_part_chars, min_size=1, max_size=MAX_PART_LENGTH + 2)
_tricky_parts = st.sampled_from(
    ["all.log", "ALL.log", "all.log.1", "all.log.", "all.logx", "hparams", "rayplex", "system",
     "summary", "Summary", ".", "..", "...", ".tmp-x", "-x", "_", "0", "007", "x.log", "x.log.1"]
)
_parts = st.one_of(_plain_parts, _tricky_parts)
_ids = st.one_of(
    st.builds(lambda g, n: f"{g}/{n}", _parts, _parts),
    st.text(st.sampled_from("ab./-\n\x00 :"), max_size=12),
)


def _accepted(client_id: str, internal: bool) -> bool:
    try:
        split_client_id(client_id, internal=internal)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def logdir() -> Iterator[tuple[Path, Hub]]:
    """A tmp logdir and a plain (Ray-free) Hub on it: its save_params is the params writer."""
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub("rules-test", tmp)
        try:
            yield Path(tmp), hub
        finally:
            hub._stop.set()
            hub.close()


@given(_ids)
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_id_the_rules_accept_is_writable_as_text_log_artifact_and_params(
    logdir: tuple[Path, Hub], client_id: str
) -> None:
    root, hub = logdir
    strict, internal = _accepted(client_id, False), _accepted(client_id, True)
    assert internal or not strict  # the internal rule only ever accepts more
    line = LogLine(1.0, logging.INFO, client_id, "n", 1, "lib", f"hello from {client_id}")
    with LogFiles(root / "text") as files:
        if not internal:
            with pytest.raises(ValueError):
                files.write([line])
            return
        files.write([line])
    group, name = client_id.split("/")
    assert f" {client_id} " in (root / "text" / group / f"{name}.log").read_text()
    if not strict:
        return
    store = ArtifactStore(root / "artifacts")
    store.write_bytes(f"{client_id}/ckpt.pkl", client_id.encode())
    assert store.read_bytes(f"{client_id}/ckpt.pkl") == client_id.encode()
    assert _save_params(hub, client_id, {"lr": 0.1}) == {"lr": 0.1}
    params = root / "params" / group / f"{name}.json"
    assert json.loads(params.read_text()) == {"lr": 0.1}


def _save_params(hub: Hub, client_id: str, params: dict[str, float]) -> object:
    """The hub's params writer, through its request API (``save_params`` before that)."""
    request = getattr(hub, "request", None)
    if request is None:
        return hub.save_params(client_id, params)  # type: ignore[attr-defined]
    ok, result = request(uuid.uuid4().hex, "save_params", (client_id, params))
    assert ok, result
    return result


# ------------------------------------------------------------------------------ numbers


class _ScalarTensor:
    """Behaves like a torch/jax 0-d tensor: converts with float(), is no numbers.Real."""

    ndim = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        return self.value


class _BigTensor(_ScalarTensor):
    ndim = 1

    def __float__(self) -> float:
        raise ValueError("only one element tensors can be converted to Python scalars")


NUMBERS = [
    (3, 3.0), (True, 1.0), (np.float32(0.5), 0.5), (np.int64(-2), -2.0), (np.bool_(True), 1.0),
    (np.array(2.5), 2.5), (np.array([7], dtype=np.uint8), 7.0), (_ScalarTensor(1.25), 1.25),
]
NOT_NUMBERS = ["1.5", b"1", None, 1j, np.complex64(1), [1.0], np.array([1.0, 2.0]),
               np.array("a"), object(), _BigTensor(0.0)]


@pytest.mark.parametrize(("value", "expected"), NUMBERS)
def test_to_float_accepts_python_numpy_and_tensor_scalars(value: object, expected: float) -> None:
    result = to_float(value, "x")
    assert type(result) is float and result == expected


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_to_float_raises_type_error_naming_the_value_and_its_type(value: object) -> None:
    with pytest.raises(TypeError, match=rf"^value for tag 'loss' must be a real number, got "
                                        rf"{type(value).__name__} "):
        to_float(value, "value for tag 'loss'")


@pytest.mark.parametrize(("value", "expected"), NUMBERS)
def test_store_metrics_partial_stats_and_hparams_metrics_accept_what_to_float_accepts(
    value: object, expected: float
) -> None:
    window = MetricsWindow()
    window.store(m=value)
    part = PartialStats()
    part.add(value)  # type: ignore[arg-type]
    assert window.take()["m"].mean == part.mean == expected
    assert len(hparams_values({"lr": 0.1}, {"m": value})) == 3  # type: ignore[dict-item]


@pytest.mark.parametrize("value", [v for v in NOT_NUMBERS if not isinstance(v, (list, np.ndarray))])
def test_store_metrics_partial_stats_and_hparams_metrics_refuse_what_to_float_refuses(
    value: object,
) -> None:
    if value is not None:  # store_metrics counts None as NaN, as ML-Logger does (test_stats.py)
        with pytest.raises(TypeError, match="'m'"):
            MetricsWindow().store(m=value)
    with pytest.raises(TypeError):
        PartialStats().add(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'m'"):
        hparams_values({"lr": 0.1}, {"m": value})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------ logdirs


@pytest.mark.parametrize("logdir", ["s3://bucket/exp", "gs://b/x", "S3://Bucket", "hdfs://nn:8020/x",
                                    "file:///tmp/x", "https://host/x", "az://c/x"])
def test_a_url_logdir_is_refused_naming_it(logdir: str) -> None:
    from rayplex.rules import local_logdir

    with pytest.raises(ValueError, match=f"{re.escape(repr(logdir))}.*object storage"):
        local_logdir(logdir)


@pytest.mark.parametrize("logdir", ["C:\\runs\\exp", "C:/runs/exp", "C://runs", "runs:2024/exp",
                                    "a:b", "./s3:/bucket", "exp", "/tmp/exp://x"])
def test_a_path_with_a_colon_but_no_scheme_stays_a_path(logdir: str) -> None:
    from rayplex.rules import local_logdir

    assert local_logdir(logdir) == logdir
    assert local_logdir(Path(logdir)) == str(Path(logdir))


# ------------------------------------------------------------------------------ any text as a group


@pytest.mark.parametrize("text", ["alice.exp-1", "wat", "a_b"])
def test_a_valid_group_name_is_its_own_group(text: str) -> None:
    from rayplex.rules import group_name_for

    assert group_name_for(text) == text


@given(st.lists(st.text(min_size=0, max_size=200), min_size=2, max_size=6, unique=True))
@settings(max_examples=300, deadline=None)
def test_distinct_texts_get_distinct_valid_group_names(texts: list[str]) -> None:
    from rayplex.rules import group_name_for

    names = [group_name_for(t) for t in texts]
    for name in names:
        validate_group_name(name)
    assert len(set(names)) == len(texts)
    assert names == [group_name_for(t) for t in texts]  # stable


@pytest.mark.parametrize("a, b", [("实验.run1", "测试.run1"), ("-x", "_-x"), ("system", "_system"),
                                  ("a!", "a_"), ("x" * 200, "x" * 201), ("", "_")])
def test_texts_that_a_replacement_would_merge_stay_apart(a: str, b: str) -> None:
    from rayplex.rules import group_name_for

    assert group_name_for(a) != group_name_for(b)
