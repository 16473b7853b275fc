"""Forwarding to a real MLflow (a local SQLite store in tmp_path): what the workers logged comes
out of MLflow exactly as the event files hold it, across tracker outages and forwarder
restarts, without duplicates."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import tb_values, wait_for

mlflow = pytest.importorskip("mlflow")

NORMAL, INDEXED, COMBINED = "learner", "agent", "eval"


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


_MIGRATED: list[Path] = []
"""A SQLite store MLflow created (its schema migrations take seconds), made once per process."""


@pytest.fixture
def tracking(tmp_path, tmp_path_factory):
    """A SQLite store of the test's own: a copy of one MLflow created and migrated (the
    unreachable-tracker test has the forwarder create its store from nothing)."""
    if not _MIGRATED:
        made = tmp_path_factory.mktemp("mlflow") / "mlruns.db"
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()
        _MIGRATED.append(made)
    shutil.copyfile(_MIGRATED[0], tmp_path / "mlruns.db")
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def start(tmp_path, tracker, name="fwd"):
    import rayplex
    import rayplex.forward  # noqa: F401

    hub = rayplex.init(str(tmp_path / "exp"), name=name, forward=[tracker])
    (hub.register_normal_group(NORMAL)
        .register_indexed_group(INDEXED, 2)
        .register_combined_group(COMBINED, lambda n: n.split("-")[0]))
    return hub


def log_from_workers(hub_name, clients, steps, offset=0.0):
    import ray

    import rayplex

    @ray.remote(num_cpus=1)  # at most two worker processes, reused from test to test
    def work(some):
        for client in some:
            log = rayplex.get_logger(client, hub=hub_name)
            for step in range(steps):
                log.add_scalar("reward", offset + step * 0.5 + len(client), step=step)
                log.add_scalars({"loss": 1.0 / (step + 1), "lr": 1e-3}, step=step)
                log.store_metrics(score=float(step + len(client)))
                if step % 5 == 4:
                    log.log_metrics_summary(step=step)
            log.log_params(Args={"lr": 1e-3, "client": client})
            log.flush()

    ray.get([work.remote(clients[i::3]) for i in range(3)])


CLIENTS = [f"{NORMAL}/main", f"{NORMAL}/aux", f"{INDEXED}/0", f"{INDEXED}/1", f"{INDEXED}/3",
           f"{COMBINED}/greedy-1", f"{COMBINED}/greedy-2"]


def mlflow_contents(tracking, logdir):
    """``{rayplex run: {key: sorted [(step, timestamp ms, value)]}}`` and params, from MLflow."""
    client = mlflow.MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("rayplex-test")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    metrics, params, tags = {}, {}, {}
    for run in runs:
        name = run.data.tags["rayplex.run"]
        assert run.data.tags["rayplex.logdir"] == logdir
        assert name not in metrics, f"two MLflow runs for rayplex run {name}"
        metrics[name] = {key: sorted((m.step, m.timestamp, m.value)
                                     for m in client.get_metric_history(run.info.run_id, key))
                         for key in run.data.metrics}
        params[name] = dict(run.data.params)
        tags[name] = dict(run.data.tags)
    return metrics, params, tags


def event_contents(logdir):
    """The same, from the event files through TensorBoard's own loader."""
    from tensorboard.util import tensor_util

    out = {}
    for run, tags in tb_values(logdir).items():
        for tag, rows in tags.items():
            points = []
            for step, wall, value in rows:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    points.append((step, int(round(wall * 1000)), float(value.simple_value)))
                elif kind == "tensor" and value.metadata.plugin_data.plugin_name == "scalars":
                    points.append((step, int(round(wall * 1000)),
                                   float(tensor_util.make_ndarray(value.tensor))))
            if points:
                out.setdefault(run, {})[tag] = sorted(points)
    return out


@pytest.mark.slow
def test_mlflow_holds_every_scalar_summary_and_param_with_the_event_files_steps_and_times(
        ray_session, tmp_path, tracking):
    import rayplex
    from rayplex.forward import MLflow

    hub = start(tmp_path, MLflow(tracking_uri=tracking, experiment="rayplex-test"))
    log_from_workers(hub.name, CLIENTS, steps=12)
    rayplex.shutdown(hub.name, timeout=120)  # drains the forwarder
    expected = event_contents(hub.logdir)
    metrics, params, tags = mlflow_contents(tracking, hub.logdir)
    assert set(expected) >= {"learner", "agent/0", "agent/1", "agent/3", "eval/greedy-1",
                             "agent/summary", "learner/summary", "eval/summary"}
    assert metrics == expected
    assert expected["agent/3"]["agent/reward/2-3"][5] == (5, expected["agent/3"][
        "agent/reward/2-3"][5][1], 2.5 + 7)
    assert "agent/score/mean" in metrics["agent/summary"] or "score/mean" in metrics["agent/summary"]
    assert tags["agent/3"]["rayplex.client"] == "agent/3"
    assert tags["agent/3"]["rayplex.group"] == "agent"
    assert tags["agent/summary"]["rayplex.summary"] == "true"
    assert params["agent/3"]["Args/client"] == "agent/3"
    assert params["learner"]["main/Args/client"] == "learner/main"
    assert params["learner"]["aux/Args/lr"] == "0.001"


@pytest.mark.slow
def test_a_killed_forwarder_resumes_from_its_cursor_without_loss_or_mlflow_duplicates(
        ray_session, tmp_path, tracking):
    import ray

    import rayplex
    from rayplex.forward import MLflow
    from rayplex.forward.actor import forwarder_name

    tracker = MLflow(tracking_uri=tracking, experiment="rayplex-test")
    hub = start(tmp_path, tracker, name="fwdkill")
    actor = ray.get_actor(forwarder_name(hub.name, tracker.key), namespace="rayplex")
    log_from_workers(hub.name, CLIENTS[:4], steps=10)
    wait_for(lambda: ray.get(actor.info.remote())["forwarded"] > 0, timeout=60, what="a first round")
    ray.kill(actor, no_restart=False)  # mid-run: Ray restarts it; it resumes from the cursor
    log_from_workers(hub.name, CLIENTS[:4], steps=10, offset=100.0)
    wait_for(lambda: _answers(actor), timeout=60, what="the restarted forwarder")
    rayplex.shutdown(hub.name, timeout=120)
    metrics, _, _ = mlflow_contents(tracking, hub.logdir)
    assert metrics == event_contents(hub.logdir)  # every point once: no loss, no duplicate


def test_a_locked_tracker_is_reported_within_slow_call_s_and_loses_nothing_once_released(
        ray_session, tmp_path, tracking):
    import ray

    import rayplex
    from rayplex.forward import MLflow

    tracker = MLflow(tracking_uri=tracking, experiment="rayplex-test", slow_call_s=2.0)
    hub = start(tmp_path, tracker, name="fwdlock")
    log_from_workers(hub.name, CLIENTS[:2], steps=5)
    wait_for(lambda: _forwarder_info(hub.name)["forwarded"] > 0, timeout=60, what="a first round")
    lock = sqlite3.connect(tracking[len("sqlite:///"):], timeout=1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        log_from_workers(hub.name, CLIENTS[:2], steps=5, offset=50.0)
        wait_for(lambda: _forwarder_info(hub.name)["slow_calls"] >= 1, timeout=30,
                 what="the outage warning")
        assert time.monotonic() - started < 30
        all_log = os.path.join(hub.logdir, "logs", "all.log")
        wait_for(lambda: "has been running" in read_text(all_log), timeout=10,
                 what="the warning in all.log")
    finally:
        lock.rollback()
        lock.close()
    rayplex.shutdown(hub.name, timeout=120)
    metrics, _, _ = mlflow_contents(tracking, hub.logdir)
    assert metrics == event_contents(hub.logdir)
    assert ray.is_initialized()


@pytest.mark.slow
def test_an_unreachable_tracker_delays_forwarding_with_backoff_and_then_catches_up(
        ray_session, tmp_path):
    import rayplex
    from rayplex.forward import MLflow

    missing = tmp_path / "not-yet"
    missing.write_text("a file where the store's directory should be: every call fails")
    tracking = f"sqlite:///{missing / 'mlruns.db'}"
    hub = start(tmp_path, MLflow(tracking_uri=tracking, experiment="rayplex-test",
                                 retry_max_s=2.0), name="fwdout")
    log_from_workers(hub.name, CLIENTS[2:5], steps=8)
    info = wait_for(lambda: (i := _forwarder_info(hub.name))["failures"] >= 2
                    and i["lag_bytes"] > 0 and i, timeout=30, what="failed rounds behind the hub")
    assert info["forwarded"] == 0 and info["problem"] and info["lag_bytes"] > 0
    all_log = os.path.join(hub.logdir, "logs", "all.log")
    assert "forwarding is delayed" in read_text(all_log)
    missing.unlink()
    missing.mkdir()  # the tracker comes back
    wait_for(lambda: _forwarder_info(hub.name)["problem"] is None, timeout=60,
             what="recovery")
    rayplex.shutdown(hub.name, timeout=120)
    metrics, _, _ = mlflow_contents(tracking, hub.logdir)
    assert metrics == event_contents(hub.logdir)


def _answers(actor):
    import ray

    try:
        return ray.get(actor.info.remote(), timeout=5)["rounds"] >= 0
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False  # still restarting


def _forwarder_info(name):
    import rayplex

    [status] = [s for s in rayplex.status() if s.get("name") == name]
    [info] = status["forwarders"]
    [row] = rayplex.forward_status(name)  # the same counters, one row per tracker
    assert row["hub"] == name and row["tracker"] and set(info) <= set(row)
    return info


def test_tags_and_job_statuses_mlflow_refuses_never_wedge_forwarding(ray_session, tmp_path,
                                                                      tracking):
    import ray

    import rayplex
    from rayplex.forward import MLflow
    from rayplex.forward.trackers import mlflow_key

    hub = start(tmp_path, MLflow(tracking_uri=tracking, experiment="rayplex-test"),
                name="fwdrefuse")
    name = hub.name

    @ray.remote(num_cpus=1)
    def work(client, completed):
        log = rayplex.get_logger(client, hub=name)
        if completed:
            log.job_completed()  # job.status changes: MLflow params cannot
        else:
            log.job_started()
            for step in range(10):
                log.add_scalar("eval/", step * 1.0, step=step)  # MLflow: not a normal path
                log.add_scalar("k" * 1000, step * 2.0, step=step)  # MLflow: keys <= 250
                log.add_scalar("reward", step * 3.0, step=step)
        log.flush()

    clients = (f"{NORMAL}/main", f"{INDEXED}/0")
    ray.get([work.remote(c, False) for c in clients])
    # the forwarder makes MLflow's tables first (two processes migrating one new SQLite
    # store at once can break it)
    wait_for(lambda: _forwarder_info(name)["forwarded"] > 0, timeout=120, what="a first round")
    client = mlflow.MlflowClient(tracking_uri=tracking)

    def started_in_mlflow():
        experiment = client.get_experiment_by_name("rayplex-test")
        runs = experiment and client.search_runs([experiment.experiment_id])
        return runs and sum("started" in r.data.params.values() for r in runs) == 2

    wait_for(started_in_mlflow, timeout=120, what="job.status 'started' in MLflow")
    ray.get([work.remote(c, True) for c in clients])
    info = wait_for(lambda: (i := _forwarder_info(name))["lag_bytes"] == 0
                    and i["forwarded"] >= 60 and i, timeout=120, what="forwarding caught up")
    assert info["failures"] == 0 and info["refused"] == 0 and info["problem"] is None
    started = time.monotonic()
    rayplex.shutdown(name, timeout=60)
    shutdown_s = time.monotonic() - started
    expected = {run: {mlflow_key(tag): points for tag, points in tags.items()}
                for run, tags in event_contents(hub.logdir).items()}
    metrics, params, tags = mlflow_contents(tracking, hub.logdir)
    assert metrics == expected and len(expected) == 2
    assert params["learner"]["main/job/status"] == "started"
    assert tags["learner"]["rayplex.param.main/job/status"] == "completed"
    assert params["agent/0"]["job/status"] == "started"
    assert tags["agent/0"]["rayplex.param.job/status"] == "completed"
    all_log = os.path.join(hub.logdir, "logs", "all.log")
    assert not os.path.exists(all_log) or "forwarding is delayed" not in read_text(all_log)
    assert shutdown_s < 50, f"the shutdown drain took {shutdown_s:.0f} s"
