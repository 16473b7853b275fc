"""rayplex.nested as plain functions: the one flattener, the one deep merge, the one back-off."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayplex.config import RETRY_START_BACKOFF_S
from rayplex.nested import SEP, Backoff, deep_merge, flatten

keys = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                   st.text(max_size=5), st.lists(st.integers(), max_size=3))
trees = st.recursive(leaves, lambda kids: st.dictionaries(keys, kids, max_size=4), max_leaves=20)
mappings = st.dictionaries(keys, trees, max_size=5)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, last = name.split(SEP)
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def test_the_rule_on_none_empty_mappings_lists_and_non_string_keys() -> None:
    tree = {"Args": {"lr": 0.1, "ckpt": None, "net": {}, "layers": [64, 64], 3: "x"},
            "seed": 1, 2.5: {"a": (1, 2)}}
    assert flatten(tree) == {"Args/lr": 0.1, "Args/ckpt": None, "Args/net": {},
                             "Args/layers": [64, 64], "Args/3": "x", "seed": 1, "2.5/a": (1, 2)}


def test_the_separator_is_a_parameter_for_ml_loggers_dotted_lookups() -> None:
    assert flatten({"Args": {"lr": 0.1}}, sep=".") == {"Args.lr": 0.1}
    assert flatten({"a": {"b": 1}}, prefix="p/") == {"p/a/b": 1}


@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
@given(mappings)
def test_flatten_keeps_every_leaf_and_round_trips(tree: dict[str, Any]) -> None:
    flat = flatten(tree)
    assert all(not isinstance(v, dict) or v == {} for v in flat.values())
    assert unflatten(flat) == tree  # nothing dropped, nothing renamed (keys without "/")


@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
@given(mappings)
def test_flatten_of_json_read_back_is_the_same(tree: dict[str, Any]) -> None:
    assert flatten(json.loads(json.dumps(tree))) == json.loads(json.dumps(flatten(tree)))


@settings(deadline=None)  # a shared 2-core machine: no per-example deadline
@given(mappings, mappings)
def test_deep_merge_is_flat_update_on_leaves(a: dict[str, Any], b: dict[str, Any]) -> None:
    merged = deep_merge(a, b)
    flat_b = flatten(b)
    flat_m = flatten(merged)
    for key, value in flat_b.items():  # every leaf of the newer wins (an empty mapping
        if value != {}:                # merged into a mapping adds nothing)
            assert flat_m[key] == value
    a_copy = json.loads(json.dumps(a))
    assert deep_merge(a, {}) == a and a == a_copy  # nothing changed in place


def test_deep_merge_replaces_non_mappings_and_shares_no_dict() -> None:
    base = {"a": {"x": 1, "y": [1]}, "b": 1, "c": {"d": 1}}
    new = {"a": {"y": [2]}, "b": {"c": 2}, "c": None}
    merged = deep_merge(base, new)
    assert merged == {"a": {"x": 1, "y": [2]}, "b": {"c": 2}, "c": None}
    merged["a"]["x"] = 99
    merged["b"]["c"] = 99
    assert base["a"]["x"] == 1 and new["b"] == {"c": 2}


def test_backoff_doubles_from_the_start_to_the_maximum_and_resets() -> None:
    b = Backoff(maximum=0.4)
    assert [b.next() for _ in range(5)] == [RETRY_START_BACKOFF_S, 0.1, 0.2, 0.4, 0.4]
    b.reset()
    assert b.next() == RETRY_START_BACKOFF_S
    waited: list[float] = []
    assert Backoff(0.5, 2.0).sleep(waited.append) == 0.5 and waited == [0.5]
    assert Backoff(0.5, 0.1).next() == 0.1  # a maximum under the start bounds it too


def test_backoff_reads_the_configured_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    from rayplex.config import reload_config

    monkeypatch.setenv("RAYPLEX_RETRY_MAX_BACKOFF_S", "0.1")
    reload_config()
    try:
        b = Backoff()
        assert [b.next() for _ in range(4)] == [0.05, 0.1, 0.1, 0.1]
    finally:  # the environment as it was, for the rest of this process
        monkeypatch.undo()
        reload_config()


def test_backoff_refuses_a_start_that_never_waits() -> None:
    with pytest.raises(ValueError, match="> 0"):
        Backoff(0.0)
