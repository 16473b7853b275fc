"""The promises of tests/test_integrity.py that need a hub but not a fresh one: they share the
module's one hub (``module_experiment``), each with client ids of its own. The lifecycle tests
(init, shutdown, a stalled or stopped hub) stay in tests/test_integrity.py, a hub each."""

from __future__ import annotations

import os
import time

import pytest

import rayplex
from tests.fixtures import shared_experiment  # noqa: F401 - the module's one hub
from tests.test_integrity import _steps


def test_a_task_return_writes_its_pending_row(experiment):
    import ray

    @ray.remote
    @rayplex.logged("learner/task")
    def work(logger=None):
        logger.log(step=1, loss=1.0)
        logger.log(step=2, loss=2.0)

    ray.get(work.remote())
    rayplex.flush()
    assert _steps(experiment.logdir, "learner", "task/loss") == [1, 2]

# ------------------------------------------------------------------ 17. appends exactly once
def test_appending_to_a_plain_pickle_is_refused_and_keeps_it(experiment):
    log = rayplex.get_logger("learner/pk")
    log.save_pkl({"a": 1}, "state.pkl")
    with pytest.raises(ValueError, match="append"):
        log.save_pkl({"b": 2}, "state.pkl", append=True)
    assert log.load_pkl("state.pkl") == {"a": 1}


def test_a_replayed_append_request_is_applied_once(experiment):
    import cloudpickle
    import ray

    log = rayplex.get_logger("learner/pk2")
    log.save_pkl(0, "rows.pkl", append=True)
    data = cloudpickle.dumps(1)
    hub = experiment.actor
    first = ray.get(hub.request.remote("req-1", "save_artifact", ("learner/pk2/rows.pkl", data, True)))
    again = ray.get(hub.request.remote("req-1", "save_artifact", ("learner/pk2/rows.pkl", data, True)))
    assert first[0] and again[0] and first[1] == again[1]
    assert log.load_pkl("rows.pkl") == [0, 1]


# ------------------------------------------------------------------ 19. steps in range
@pytest.mark.parametrize("step", [2**63, 2**64 + 5, -(2**63) - 1])
def test_steps_outside_int64_are_refused(experiment, step):
    log = rayplex.get_logger("learner/steps")
    with pytest.raises(ValueError, match="out of range"):
        log.add_scalar("x", 1.0, step=step)
    with pytest.raises(ValueError, match="out of range"):
        log.add_text("t", "x", step=step)

# ------------------------------------------- 9. what the hub cannot write is counted, not retried
def test_a_line_no_rule_allows_is_quarantined_and_counted_by_its_sender(experiment):
    from rayplex.items import Line

    log = rayplex.get_logger("learner/poison")
    log.add_scalar("x", 1.0, step=0)
    # the strangest input the buffer accepts: a line whose logger name is not a str
    log._session.put(Line((time.time(), 20, "learner/poison", "n", 1, 7, "m", None)), 300)
    log.flush()
    log.add_scalar("x", 2.0, step=1)
    log.flush()
    assert log.stats()["rejected"] >= 1
    quarantine = os.path.join(experiment.logdir, ".rayplex", "quarantine")
    assert os.listdir(quarantine)
    with open(os.path.join(experiment.logdir, "logs", "all.log"), encoding="utf-8") as f:
        assert "quarantined" in f.read()
    assert _steps(experiment.logdir, "learner", "poison/x") == [1]  # the batch went whole

# ------------------------------------- issue 14: an unregistered group is reported once, by the hub
def test_an_unregistered_group_is_reported_once_per_experiment_by_the_hub(experiment):
    import ray

    @ray.remote
    @rayplex.logged("loose/{i}")
    def work(i, logger=None):
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rayplex.get_logger(f"loose/x{i}").add_scalar("x", 1.0, step=0)
        logger.add_scalar("x", float(i), step=0)
        return [str(w.message) for w in caught]

    assert ray.get([work.remote(i) for i in range(3)]) == [[], [], []]  # no per-worker warning
    rayplex.flush()
    with open(os.path.join(experiment.logdir, "logs", "all.log"), encoding="utf-8") as f:
        text = f.read()
    assert text.count("group 'loose' is not registered") == 1
