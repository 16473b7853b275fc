"""store_metrics + log_metrics_summary: cluster-wide statistics, merged per node and at the hub.

The tests share the module's hub (``shared_experiment``); a summary is per group, so each test
logs to a group of its own."""

from __future__ import annotations

import numpy as np
import pytest
import ray

import rayplex
from tests.conftest import tb_scalars
from tests.fixtures import shared_experiment  # noqa: F401

STATS = ("mean", "std", "min", "max", "count")


@ray.remote
@rayplex.logged("{group}/{i}")
def _store(group, i, steps, per_step, logger=None, summarize=True):
    rng = np.random.default_rng(i)
    values = {}
    for step in range(steps):
        rewards = rng.normal(i, 1.0, per_step)
        for r in rewards:
            logger.store_metrics(reward=float(r))
        logger.store_metrics({"length": float(per_step + i)})
        values[step] = rewards.tolist()
        if summarize:
            logger.log_metrics_summary(step=step, stats=STATS + ("p50", "p90"))
    return values


def _expect(summary, key, step, values):
    arr = np.asarray(values)
    got = {stat: dict(summary[f"{key}/{stat}"])[step] for stat in STATS}
    assert got["count"] == arr.size
    assert got["mean"] == pytest.approx(arr.mean(), rel=1e-5, abs=1e-5)
    assert got["std"] == pytest.approx(arr.std(), rel=1e-4, abs=1e-5)
    assert got["min"] == pytest.approx(arr.min(), rel=1e-6)
    assert got["max"] == pytest.approx(arr.max(), rel=1e-6)


def test_summaries_cover_every_value_of_every_worker(experiment):
    experiment.register_indexed_group("agent", 8)
    results = ray.get([_store.remote("agent", i, 3, 40) for i in range(6)])
    rayplex.flush()
    summary = tb_scalars(experiment.logdir)["agent/summary"]
    for step in range(3):
        union = [v for per_worker in results for v in per_worker[step]]
        _expect(summary, "reward", step, union)
        p50 = dict(summary["reward/p50"])[step]
        assert p50 == pytest.approx(np.quantile(union, 0.5), rel=0.05, abs=0.05)
    assert dict(summary["length/count"])[0] == 6


def test_default_stats_and_nan_count(experiment):
    log = rayplex.get_logger("defaults/a")
    for v in (1.0, 2.0, float("nan"), 3.0):
        log.store_metrics(loss=v)
    log.log_metrics_summary(step=7)
    rayplex.flush()
    summary = tb_scalars(experiment.logdir)["defaults/summary"]
    assert set(summary) == {f"loss/{s}" for s in STATS} | {"loss/nan_count"}
    assert summary["loss/mean"] == [(7, 2.0)] and summary["loss/nan_count"] == [(7, 1.0)]


def test_per_worker_summary_goes_to_the_workers_own_run(experiment):
    experiment.register_indexed_group("worker", 4)
    log = rayplex.get_logger("worker/2")
    log.store_metrics(reward=[1.0, 3.0])
    log.log_metrics_summary(step=0, stats=("mean", "max"), per_worker=True)
    rayplex.flush()
    scalars = tb_scalars(experiment.logdir)
    assert scalars["worker/2"]["worker/reward/mean/0-3"] == [(0, 2.0)]
    assert scalars["worker/summary"]["reward/max"] == [(0, 3.0)]


def test_peek_shows_the_current_window_and_summary_empties_it():
    from rayplex.stats import MetricsWindow

    window = MetricsWindow()
    window.store(reward=1.0)
    assert "reward" in window.table()


def test_bad_values_and_stat_names_are_refused_at_the_call_site(experiment):
    log = rayplex.get_logger("refused/b")
    with pytest.raises(TypeError):
        log.store_metrics(reward="high")
    log.store_metrics(reward=1.0)
    with pytest.raises(ValueError):
        log.log_metrics_summary(step=0, stats=("mean", "median-ish"))
    assert "reward" in log.peek_stored_metrics()  # nothing already stored was lost
    log.log_metrics_summary(step=0)
    rayplex.flush()
    assert tb_scalars(experiment.logdir)["refused/summary"]["reward/mean"] == [(0, 1.0)]


def test_stored_but_never_summarized_values_are_not_written(experiment):
    experiment.register_indexed_group("idle", 8)
    ray.get(_store.remote("idle", 0, 1, 5, summarize=False))
    rayplex.flush()
    assert "idle/summary" not in tb_scalars(experiment.logdir)


def test_a_step_summarized_by_some_workers_covers_only_them(experiment):
    a, b = rayplex.get_logger("some/a"), rayplex.get_logger("some/b")
    a.store_metrics(x=1.0)
    a.log_metrics_summary(step=0)
    b.store_metrics(x=100.0)  # b never closes step 0
    rayplex.flush()
    assert tb_scalars(experiment.logdir)["some/summary"]["x/mean"] == [(0, 1.0)]


def test_a_late_partial_adds_a_second_point_over_all_values(experiment):
    log = rayplex.get_logger("late/a")
    log.store_metrics(x=1.0)
    log.log_metrics_summary(step=0)
    rayplex.flush()
    log.store_metrics(x=3.0)
    log.log_metrics_summary(step=0)
    rayplex.flush()
    assert tb_scalars(experiment.logdir)["late/summary"]["x/mean"] == [(0, 1.0), (0, 2.0)]
    with open(f"{experiment.logdir}/logs/all.log") as f:
        assert "late store_metrics partial for group 'late'" in f.read()


def test_summary_is_written_after_the_quiet_delay_without_flush(experiment):
    import time

    log = rayplex.get_logger("quiet/a")
    log.store_metrics(x=5.0)
    log.log_metrics_summary(step=1)
    log.flush()  # at the hub, but the step's summary waits for RAYPLEX_SUMMARY_DELAY_S
    deadline = time.time() + 10
    while time.time() < deadline:
        if tb_scalars(experiment.logdir)["quiet/summary"].get("x/mean") == [(1, 5.0)]:
            break
        time.sleep(0.1)
    assert tb_scalars(experiment.logdir)["quiet/summary"]["x/mean"] == [(1, 5.0)]


@ray.remote
def _short_lived(group, round_, k):
    log = rayplex.get_logger(f"{group}/r{round_}-{k}")  # a plain task: a new client per round
    log.store_metrics(x=float(10 * round_ + k))
    log.log_metrics_summary(step=round_)


def _task_counts(logdir, group):
    return dict(tb_scalars(logdir)[f"{group}/summary"].get("x/count", []))


def test_a_quiet_group_of_short_lived_clients_is_summarised_within_the_silence_bound(
        experiment):
    import time

    from rayplex.config import config

    for round_ in range(3):
        ray.get([_short_lived.remote("task", round_, k) for k in range(2)])
    quiet_at = time.monotonic()
    cfg = config()
    bound = max(cfg.effective_summary_silent_s, 2 * cfg.effective_summary_hold_s) + 5
    while _task_counts(experiment.logdir, "task") != {0: 2.0, 1: 2.0, 2: 2.0}:
        assert time.monotonic() - quiet_at < bound, _task_counts(experiment.logdir, "task")
        time.sleep(0.2)  # polling the files for the hub's quiet-time write
    print(f"written {time.monotonic() - quiet_at:.1f} s after the group went quiet")
    assert tb_scalars(experiment.logdir)["task/summary"]["x/mean"] == [
        (0, 0.5), (1, 10.5), (2, 20.5)]  # one point per step, over both tasks


def test_flush_writes_the_complete_steps_of_a_group_of_short_lived_clients(experiment):
    for round_ in range(3):
        ray.get([_short_lived.remote("flushed", round_, k) for k in range(2)])
    rayplex.flush()
    assert _task_counts(experiment.logdir, "flushed") == {0: 2.0, 1: 2.0, 2: 2.0}
