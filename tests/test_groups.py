"""Routing of client ids to run directories and tags (Tensorplex's rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayplex.groups import GroupRegistry, GroupSpec, bin_for, split_client_id, validate_tag


@pytest.fixture
def registry():
    return (
        GroupRegistry(epoch="e")
        .with_group(GroupSpec.normal("learner"))
        .with_group(GroupSpec.indexed("agent", 8))
        .with_group(GroupSpec.indexed("individ", 1))
        .with_group(GroupSpec.combined("eval", lambda name: name.split("-")[0]))
    )


def test_normal_group_shares_one_run_and_prefixes_the_name(registry):
    route = registry.route("learner/system")
    assert (route.run, route.tag("reward")) == ("learner", "system/reward")


def test_indexed_group_gets_a_run_per_index_and_a_bin_suffix(registry):
    route = registry.route("agent/17")
    assert (route.run, route.tag("reward")) == ("agent/17", "agent/reward/16-23")


def test_indexed_group_of_bin_size_one_names_the_bin_by_the_index(registry):
    assert registry.route("individ/3").tag("reward") == "individ/reward/3"


def test_combined_group_bins_by_the_user_function(registry):
    route = registry.route("eval/stochastic-1")
    assert (route.run, route.tag("reward")) == ("eval/stochastic-1", "eval/reward/stochastic")


def test_colon_and_hash_become_dots_and_a_leading_dot_opens_a_section(registry):
    assert registry.route("agent/17").tag(".my#section/foo") == "agent.my.section/foo/16-23"
    assert registry.route("learner/system").tag(":my.section/foo") == "system.my.section/foo"


def test_a_leading_slash_behaves_like_no_prefix(registry):
    assert registry.route("learner/system").tag("/reward") == "system/reward"
    assert registry.route("agent/9").tag("/reward") == "agent/reward/8-15"


def test_unregistered_group_routes_like_a_normal_group(registry):
    route = registry.route("replay/0")
    assert (route.run, route.tag("x"), route.registered) == ("replay", "0/x", False)


@pytest.mark.parametrize(
    "client_id",
    ["agent", "agent/", "/3", "a/b/c", "../x", "agent/..", "agent/.", "ag ent/1", "a\x00/1",
     "x/" + "y" * 200, "-a/1"],
)
def test_invalid_client_ids_are_rejected(client_id):
    with pytest.raises(ValueError):
        split_client_id(client_id)


def test_indexed_group_names_must_be_integers(registry):
    with pytest.raises(ValueError, match="non-negative integer"):
        registry.route("agent/three")


def test_non_string_client_id_is_a_type_error():
    with pytest.raises(TypeError):
        split_client_id(3)


def test_bin_fn_errors_are_reported_with_the_group_name():
    reg = GroupRegistry().with_group(GroupSpec.combined("eval", lambda n: 1 / 0))
    with pytest.raises(ValueError, match="eval"):
        reg.route("eval/x")


@pytest.mark.parametrize("tag", ["", "/", "a\x00b", "a\nb", "x" * 2000])
def test_bad_tags_are_rejected(tag):
    with pytest.raises(ValueError):
        validate_tag(tag)


def test_bad_group_specs_are_rejected():
    with pytest.raises(ValueError):
        GroupSpec.indexed("agent", 0)
    with pytest.raises(TypeError):
        GroupSpec.indexed("agent", 2.0)
    with pytest.raises(TypeError):
        GroupSpec.combined("eval", "not callable")
    with pytest.raises(ValueError):
        GroupSpec.normal("a/b")


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=1000))
def test_every_index_falls_in_its_own_bin(index, size):
    name = bin_for(index, size)
    lo, _, hi = name.partition("-")
    lo_i, hi_i = int(lo), int(hi or lo)
    assert lo_i <= index <= hi_i and hi_i - lo_i + 1 == size


def test_registry_versions_grow_and_keep_the_epoch(registry):
    bigger = registry.with_group(GroupSpec.normal("x"))
    assert bigger.stamp == ("e", registry.version + 1)


@pytest.mark.parametrize(("client_id", "canonical"), [("agent/007", "agent/7"), ("agent/00", "agent/0")])
def test_an_indexed_name_with_leading_zeros_names_the_canonical_id(registry, client_id, canonical):
    with pytest.raises(ValueError, match=canonical):
        registry.check_client(client_id)


def test_leading_zeros_are_fine_in_a_group_that_is_not_indexed(registry):
    assert registry.route("learner/007").tag("x") == "007/x"
    assert registry.route("replay/007").run == "replay"


@pytest.mark.parametrize("make", [
    lambda name: GroupSpec.normal(name),
    lambda name: GroupSpec.indexed(name, 4),
    lambda name: GroupSpec.combined(name, str),
    lambda name: GroupSpec(name),
])
@pytest.mark.parametrize("name", ["hparams", "rayplex", "system", "System", "all.log", "all.log.1"])
def test_groups_named_like_rayplexs_own_runs_or_files_cannot_be_made(make, name):
    with pytest.raises(ValueError, match=name):
        make(name)


def test_a_registry_refuses_a_spec_that_bypassed_the_constructors(registry):
    spec = GroupSpec.normal("ok")
    object.__setattr__(spec, "name", "hparams")  # e.g. unpickled from a foreign process
    with pytest.raises(ValueError, match="reserved"):
        registry.with_group(spec)


def test_reserved_names_are_refused_when_routing_a_users_client(registry):
    with pytest.raises(ValueError, match="reserved"):
        registry.route("agent/summary")
    with pytest.raises(ValueError, match="reserved"):
        registry.route("system/x")
