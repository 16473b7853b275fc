"""Hub state on disk is data: the registry as JSON, never unpickled; bad files are ignored."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest

from rayplex.actors.state import (
    LEGACY_REGISTRY_FILE,
    REGISTRY_FILE,
    load_registry,
    partial_from_json,
    partial_to_json,
    save_registry,
)
from rayplex.groups import COMBINED, GroupRegistry, GroupSpec, registry_from_json, registry_to_json
from rayplex.records import Partial
from rayplex.stats import PartialStats


class _CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def _registry() -> GroupRegistry:
    return (GroupRegistry(epoch="e1")
            .with_group(GroupSpec.normal("learner"))
            .with_group(GroupSpec.indexed("agent", 8))
            .with_group(GroupSpec.combined("eval", lambda name: name.split("-")[0])))


def test_the_registry_round_trips_through_json_without_its_bin_fn() -> None:
    registry = _registry()
    clone = registry_from_json(json.loads(json.dumps(registry_to_json(registry))))
    assert clone == registry and clone.stamp == registry.stamp
    assert clone.groups["agent"].bin_size == 8
    assert clone.groups["eval"].kind == COMBINED and clone.groups["eval"].bin_fn is None


def test_a_saved_registry_loads_back_and_a_lost_bin_fn_bumps_the_version(tmp_path: Path) -> None:
    path = str(tmp_path / REGISTRY_FILE)
    plain = GroupRegistry(epoch="e").with_group(GroupSpec.indexed("agent", 4))
    save_registry(path, plain)
    assert load_registry(path) == plain and load_registry(path).stamp == plain.stamp  # type: ignore[union-attr]
    save_registry(path, _registry())
    loaded = load_registry(path)
    assert loaded is not None and loaded.stamp == ("e1", _registry().version + 1)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


def test_no_registry_file_means_none(tmp_path: Path) -> None:
    assert load_registry(str(tmp_path / REGISTRY_FILE)) is None


def test_a_crafted_registry_pkl_is_never_unpickled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / LEGACY_REGISTRY_FILE).write_bytes(pickle.dumps(_CreatesAFile(marker)))
    with caplog.at_level(logging.WARNING, logger="rayplex.hub"):
        assert load_registry(str(tmp_path / REGISTRY_FILE)) is None
    assert not marker.exists() and "not read" in caplog.text


@pytest.mark.parametrize("content", [
    b"",
    b'{"format": "rayplex-registry", "v": 1, "epoch": "e", "ver',  # torn
    b"\x80\x04\x95pickle",
    b'{"format": "something-else"}',
    b'{"format": "rayplex-registry", "v": 2, "epoch": "e", "version": 1, "groups": []}',
    b'{"format": "rayplex-registry", "v": 1, "epoch": "e", "version": true, "groups": []}',
    b'{"format": "rayplex-registry", "v": 1, "epoch": "e", "version": 1, '
    b'"groups": [{"name": "../../etc", "kind": "normal", "bin_size": 1}]}',
    b'{"format": "rayplex-registry", "v": 1, "epoch": "e", "version": 1, '
    b'"groups": [{"name": "agent", "kind": "indexed", "bin_size": 0}]}',
    b'{"format": "rayplex-registry", "v": 1, "epoch": "e", "version": 1, '
    b'"groups": [{"name": "agent", "kind": "eval()", "bin_size": 1}]}',
    b"[" * 100_000,
])
def test_a_torn_foreign_or_hostile_registry_is_warned_about_and_ignored(
        tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / REGISTRY_FILE
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="rayplex.hub"):
        assert load_registry(str(path)) is None
    assert "could not read" in caplog.text


def test_a_partial_round_trips_through_json_exactly() -> None:
    stats = PartialStats([1.0, -2.0, float("inf"), float("nan")])
    part = Partial("agent", 7, ("mean", "p90"), {"reward": stats}, ("agent/1", "agent/2"),
                   (("w", 3),))
    clone = partial_from_json(json.loads(json.dumps(partial_to_json(part), allow_nan=False)))
    assert (clone.group, clone.step, clone.stats, clone.clients, clone.contributors) == (
        "agent", 7, ("mean", "p90"), ("agent/1", "agent/2"), (("w", 3),))
    assert clone.metrics["reward"].__getstate__() == stats.__getstate__()


@pytest.mark.parametrize("corrupt", [
    lambda d: {**d, "step": "7"},
    lambda d: {**d, "stats": ["__import__"]},
    lambda d: {**d, "metrics": {"bad\nkey": d["metrics"]["reward"]}},
    lambda d: {**d, "clients": ["no-slash"]},
    lambda d: {**d, "contributors": [["w"]]},
    lambda d: {k: v for k, v in d.items() if k != "group"},
])
def test_a_malformed_partial_is_refused_with_value_error(corrupt: object) -> None:
    data = partial_to_json(Partial("agent", 7, ("mean",), {"reward": PartialStats([1.0])}))
    with pytest.raises(ValueError):
        partial_from_json(corrupt(data))  # type: ignore[operator]
