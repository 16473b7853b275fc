"""The core data path end to end: real Ray, real hub and node buffers, real event files read
back with TensorBoard's own loader."""

from __future__ import annotations

import os
import pickle
import uuid

import numpy as np
import pytest
import ray

import rayplex
from rayplex.actors import list_rayplex_actors
from tests.conftest import event_files, tb_scalars, tb_values
from tests.fixtures import shared_experiment  # noqa: F401  (one hub for this module)


@ray.remote
@rayplex.logged("agent/{i}")
def rollout(i, steps, logger=None):
    for s in range(steps):
        logger.add_scalar("reward", float(i + s), step=s)
    return i


@ray.remote
@rayplex.logged("eval/{name}")
class Evaluator:
    def __init__(self, name, logger=None):
        self.logger = logger

    def run(self):
        self.logger.add_scalars({"reward": 1.0, "length": 7}, step=0)
        return True


def _register(hub):
    (hub.register_normal_group("learner")
        .register_indexed_group("agent", 8)
        .register_combined_group("eval", lambda name: name.split("-")[0]))


def test_the_issue_example_lands_in_the_documented_runs_and_tags(experiment):
    _register(experiment)
    ray.get([rollout.options(name=f"r{i}").remote(i, 20) for i in range(20)])
    evaluator = Evaluator.remote("stochastic-1")
    assert ray.get(evaluator.run.remote())
    log = rayplex.get_logger("learner/system", hub=experiment.name)
    log.add_scalar("loss", 0.25, step=3)
    log.add_text("note", "hello", step=3)
    log.add_histogram("weights", np.random.randn(1000), step=3)
    log.flush()
    rayplex.flush(experiment.name)

    scalars = tb_scalars(experiment.logdir)
    for i in range(20):
        lo = i // 8 * 8
        tag = f"agent/reward/{lo}-{lo + 7}"
        assert scalars[f"agent/{i}"][tag] == [(s, float(i + s)) for s in range(20)]
    assert scalars["eval/stochastic-1"]["eval/reward/stochastic"] == [(0, 1.0)]
    assert scalars["eval/stochastic-1"]["eval/length/stochastic"] == [(0, 7.0)]
    assert scalars["learner"]["system/loss"] == [(3, 0.25)]

    values = tb_values(experiment.logdir)
    (step, _, text), = values["learner"]["system/note"]
    assert step == 3 and text.metadata.plugin_data.plugin_name == "text"
    assert b"hello" in text.tensor.string_val[0]
    (step, _, hist), = values["learner"]["system/weights"]
    from tensorboard.util import tensor_util
    buckets = tensor_util.make_ndarray(hist.tensor)
    assert step == 3 and buckets[:, 2].sum() == 1000
    ray.kill(evaluator)


def test_a_task_is_flushed_when_it_returns(experiment):
    _register(experiment)
    ray.get(rollout.remote(21, 5))  # no flush by the test: the decorator did it
    assert tb_scalars(experiment.logdir)["agent/21"]["agent/reward/16-23"] == [
        (s, float(21 + s)) for s in range(5)
    ]


def test_a_task_that_raises_still_delivers_what_it_logged(experiment):
    @ray.remote(max_retries=0)
    @rayplex.logged("learner/{who}", hub=experiment.name)
    def failing(who, logger=None):
        logger.add_scalar("before_crash", 1.0, step=0)
        raise RuntimeError("boom")

    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(failing.remote("w"))
    assert tb_scalars(experiment.logdir)["learner"]["w/before_crash"] == [(0, 1.0)]


def test_flush_is_a_barrier_in_the_driver(experiment):
    log = rayplex.get_logger("learner/main", hub=experiment.name)
    for step in range(1000):
        log.add_scalar("x", step * 0.5, step=step)
    log.flush()
    points = tb_scalars(experiment.logdir)["learner"]["main/x"]
    assert points == [(s, s * 0.5) for s in range(1000)]


def test_step_none_counts_per_tag_and_walltime_is_taken_at_the_call(experiment):
    import time

    log = rayplex.get_logger("learner/auto", hub=experiment.name)
    before = time.time()
    for v in (1.0, 2.0, 3.0):
        log.add_scalar("a", v)
    log.add_scalar("b", 9.0)
    log.add_scalar("a", 4.0, walltime=123.0)
    log.flush()
    values = tb_values(experiment.logdir)["learner"]
    assert [s for s, _, _ in values["auto/a"]] == [0, 1, 2, 3]
    assert [s for s, _, _ in values["auto/b"]] == [0]
    walls = [w for _, w, _ in values["auto/a"]]
    assert all(before <= w for w in walls[:3]) and walls[3] == 123.0


def test_nan_and_inf_are_kept(experiment):
    log = rayplex.get_logger("learner/odd", hub=experiment.name)
    log.add_scalar("v", float("nan"), step=0)
    log.add_scalar("v", float("inf"), step=1)
    log.add_scalar("v", np.float32(2.5), step=2)
    log.add_scalar("v", np.array(7), step=3)
    log.flush()
    pts = tb_scalars(experiment.logdir)["learner"]["odd/v"]
    assert np.isnan(pts[0][1]) and pts[1][1] == float("inf") and pts[2:] == [(2, 2.5), (3, 7.0)]


def test_log_calls_validate_their_arguments_at_the_call_site(experiment):
    log = rayplex.get_logger("learner/bad", hub=experiment.name)
    with pytest.raises(TypeError, match="real number"):
        log.add_scalar("x", "1.0")
    with pytest.raises(TypeError):
        log.add_scalar("x", [1.0, 2.0])
    with pytest.raises(TypeError, match="step"):
        log.add_scalar("x", 1.0, step="3")
    with pytest.raises(ValueError):
        log.add_scalar("", 1.0)
    with pytest.raises(TypeError):
        log.add_scalars([("x", 1.0)])
    log.add_scalar("x", 1.0, step=0)  # what was fine before is still delivered
    log.flush()
    assert tb_scalars(experiment.logdir)["learner"]["bad/x"] == [(0, 1.0)]


def test_logger_pickles_to_names_and_works_inside_a_task(experiment):
    log = rayplex.get_logger("learner/shared", hub=experiment.name)
    assert len(pickle.dumps(log)) < 300

    @ray.remote
    def use(logger):
        logger.add_scalar("from_task", 5.0, step=1)
        logger.flush()

    ray.get(use.remote(log))
    assert tb_scalars(experiment.logdir)["learner"]["shared/from_task"] == [(1, 5.0)]


def test_template_is_formatted_from_bound_arguments_with_defaults(experiment):
    experiment.register_indexed_group("worker", 4)

    @ray.remote
    @rayplex.logged("worker/{index}", hub=experiment.name)
    def task(seed, index=6):
        rayplex.current_logger().add_scalar("seed", seed, step=0)
        return rayplex.current_logger().client_id

    assert ray.get(task.remote(11)) == "worker/6"
    assert ray.get(task.remote(12, index=1)) == "worker/1"
    scalars = tb_scalars(experiment.logdir)
    assert scalars["worker/6"]["worker/seed/4-7"] == [(0, 11.0)]
    assert scalars["worker/1"]["worker/seed/0-3"] == [(0, 12.0)]


def test_a_bad_template_names_the_missing_argument(experiment):
    @rayplex.logged("agent/{j}", hub=experiment.name)
    def f(i):
        return i

    with pytest.raises(ValueError, match="agent/{j}"):
        f(1)


def test_logged_on_top_of_ray_remote_explains_the_order():
    @ray.remote
    def f():
        return 1

    with pytest.raises(TypeError, match="below @ray.remote"):
        rayplex.logged("agent/{i}")(f)


def test_current_logger_outside_a_logged_task_is_an_error():
    with pytest.raises(RuntimeError, match="logged"):
        rayplex.current_logger()


def test_init_is_idempotent_for_the_same_logdir(experiment):
    again = rayplex.init(experiment.logdir, name=experiment.name)
    assert again.actor._actor_id == experiment.actor._actor_id


def test_init_with_another_logdir_names_both(experiment, tmp_path):
    other = str(tmp_path / "elsewhere")
    with pytest.raises(rayplex.LogdirConflictError) as info:
        rayplex.init(other, name=experiment.name)
    assert other in str(info.value) and experiment.logdir in str(info.value)
    assert not os.path.exists(other)


def test_get_logger_without_a_hub_tells_to_call_init(ray_session):
    with pytest.raises(rayplex.HubNotFoundError, match=r"rayplex\.init"):
        rayplex.get_logger("agent/1", hub="nope" + uuid.uuid4().hex[:6])


@pytest.mark.parametrize("client_id", ["agent", "a/b/c", "../x", "agent/..", "", "x/ y"])
def test_get_logger_rejects_invalid_client_ids(experiment, client_id):
    with pytest.raises(ValueError):
        rayplex.get_logger(client_id, hub=experiment.name)


def test_get_logger_rejects_a_non_integer_name_in_an_indexed_group(experiment):
    experiment.register_indexed_group("agent", 8)
    with pytest.raises(ValueError, match="integer"):
        rayplex.get_logger("agent/three", hub=experiment.name)


def test_two_experiments_on_one_cluster_stay_apart(experiment, tmp_path):
    second = rayplex.init(str(tmp_path / "exp2"), name=experiment.name + "b")
    try:
        rayplex.get_logger("learner/a", hub=experiment.name).add_scalar("x", 1.0, step=0)
        rayplex.get_logger("learner/a", hub=second.name).add_scalar("x", 2.0, step=0)
        rayplex.flush(experiment.name)
        rayplex.flush(second.name)
        assert tb_scalars(experiment.logdir)["learner"]["a/x"] == [(0, 1.0)]
        assert tb_scalars(second.logdir)["learner"]["a/x"] == [(0, 2.0)]
    finally:
        rayplex.shutdown(second.name)


def test_rayplex_hub_env_var_selects_the_experiment(experiment):
    @ray.remote(runtime_env={"env_vars": {"RAYPLEX_HUB": experiment.name}})
    def task():
        log = rayplex.get_logger("learner/env")
        log.add_scalar("x", 3.0, step=0)
        log.flush()
        return log.hub

    assert ray.get(task.remote()) == experiment.name
    assert tb_scalars(experiment.logdir)["learner"]["env/x"] == [(0, 3.0)]


def test_unregistered_group_warns_once_and_acts_normal(experiment):
    with pytest.warns(UserWarning, match="not registered"):
        log = rayplex.get_logger("replay/0", hub=experiment.name)
    log.add_scalar("size", 10.0, step=0)
    log.flush()
    assert tb_scalars(experiment.logdir)["replay"]["0/size"] == [(0, 10.0)]


def test_registration_after_a_worker_started_routes_what_is_written_later(experiment):
    log = rayplex.get_logger("late/5", hub=experiment.name)
    log.add_scalar("x", 1.0, step=0)
    log.flush()
    # another driver-side handle registers: this process's transport learns it on its next ack
    experiment.actor.register_group.remote(
        __import__("rayplex.groups", fromlist=["GroupSpec"]).GroupSpec.indexed("late", 4)
    )
    log.add_scalar("x", 2.0, step=1)
    log.flush()
    scalars = tb_scalars(experiment.logdir)
    assert scalars["late"]["5/x"] == [(0, 1.0)]
    assert scalars["late/5"]["late/x/4-7"] == [(1, 2.0)]


def test_one_event_writer_per_run_directory(experiment):
    _register(experiment)
    ray.get([rollout.remote(i, 3) for i in range(4)])
    for i in range(3):
        rayplex.get_logger(f"learner/l{i}", hub=experiment.name).add_scalar("x", 1.0, step=0)
    rayplex.flush(experiment.name)
    files = event_files(experiment.logdir)
    dirs = [os.path.dirname(f) for f in files]
    assert len(dirs) == len(set(dirs))


def test_shutdown_stops_the_hub_and_node_buffers(ray_session, tmp_path):
    name = "s" + uuid.uuid4().hex[:6]
    hub = rayplex.init(str(tmp_path / "x"), name=name)
    log = rayplex.get_logger("learner/a", hub=name)
    log.add_scalar("x", 1.0, step=0)
    rayplex.shutdown(name)
    assert tb_scalars(hub.logdir)["learner"]["a/x"] == [(0, 1.0)]
    assert not [n for n in list_rayplex_actors() if f":{name}" in n]
    rayplex.shutdown(name)  # twice is fine
    with pytest.raises(rayplex.HubNotFoundError):
        rayplex.get_logger("learner/a", hub=name)


def test_node_buffer_runs_on_the_workers_node_without_cpus(experiment):
    log = rayplex.get_logger("learner/n", hub=experiment.name)
    log.add_scalar("x", 1.0)
    log.flush()
    node_id = ray.get_runtime_context().get_node_id()
    names = [n for n in list_rayplex_actors() if n.startswith(f"node:{experiment.name}:")]
    assert names == [f"node:{experiment.name}:{node_id}"]
