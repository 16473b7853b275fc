"""rayplex.integrations.tune: a real Tune sweep (retried and failing trials included) logged
through RayplexLoggerCallback, read back with rayplex's reader and TensorBoard's loader."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

import rayplex
from rayplex.integrations._common import int_step, numeric_items
from tests import tune_restore_driver as crash
from tests.conftest import tb_scalars, tb_values, wait_for

HUB = "tune-test"
ITERS = 5
FAIL_ONCE_AT = 4  # trial x=2 fails there on its first attempt; its checkpoint is at 2
FAIL_ALWAYS_AT = 2  # trial x=3 fails there every attempt: retried once, then errors


def _f32(x):
    return float(np.float32(x))


def _trainable(config):
    from ray import tune

    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "it")) as f:
            start = int(f.read()) + 1
    x = config["x"]
    for i in range(start, ITERS + 1):
        if x == 2 and i == FAIL_ONCE_AT and not os.path.exists(config["flag"]):
            open(config["flag"], "w").close()
            raise RuntimeError("trial two breaks once")
        if x == 3 and i == FAIL_ALWAYS_AT:
            raise RuntimeError("trial three always breaks")
        saved = None
        if i % 2 == 0:
            d = tempfile.mkdtemp()
            with open(os.path.join(d, "it"), "w") as f:
                f.write(str(i))
            saved = tune.Checkpoint.from_directory(d)
        tune.report({"loss": x * i + 0.25, "nested": {"a": -i}, "note": "text"},
                    checkpoint=saved)


@pytest.fixture(scope="module")
def sweep(ray_session, tmp_path_factory):
    from ray import tune

    from rayplex.integrations.tune import RayplexLoggerCallback

    root = tmp_path_factory.mktemp("sweep")
    logdir = str(root / "exp")
    callback = RayplexLoggerCallback(logdir, hub=HUB)
    tuner = tune.Tuner(
        _trainable,
        param_space={"x": tune.grid_search([1, 2, 3]), "flag": str(root / "flag")},
        run_config=tune.RunConfig(storage_path=str(root / "storage"), callbacks=[callback],
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  verbose=0),
    )
    results = tuner.fit()  # no rayplex.flush: the callback flushed at each trial's end
    yield SimpleNamespace(logdir=logdir, callback=callback, results=results,
                          trial=_trial_ids(results))
    rayplex.shutdown(HUB)


def _trial_ids(results):
    """x -> trial id, from Tune's own result metrics."""
    return {r.config["x"]: r.metrics["trial_id"] for r in results}


def _series(logdir, tag):
    out = defaultdict(list)
    for row in rayplex.read_scalars(logdir, group="tune", tag=tag):
        out[row.run].append((row.step, row.value))
    return out


def test_every_trial_is_a_run_with_its_value_at_each_iteration_exactly(sweep):
    loss = _series(sweep.logdir, "tune/loss/all")
    expected = {
        f"tune/{sweep.trial[1]}": [(i, _f32(i + 0.25)) for i in range(1, ITERS + 1)],
        f"tune/{sweep.trial[2]}": [(i, _f32(2 * i + 0.25)) for i in range(1, ITERS + 1)],
        f"tune/{sweep.trial[3]}": [(1, _f32(3.25))],
    }
    assert dict(loss) == expected
    nested = _series(sweep.logdir, "tune/nested/a/all")
    assert nested[f"tune/{sweep.trial[2]}"] == [(i, -float(i)) for i in range(1, ITERS + 1)]


def test_replayed_iterations_of_retried_trials_are_written_once(sweep):
    # trial 2 resumed from its checkpoint at 2 and replayed 3; trial 3 restarted and replayed 1
    assert sweep.callback.replayed >= 2
    seen = defaultdict(int)
    for run, tags in tb_scalars(sweep.logdir).items():
        for tag, points in tags.items():
            for step, _ in points:
                seen[(run, tag, step)] += 1
    assert seen and max(seen.values()) == 1


def test_one_chart_per_metric_overlays_all_trials(sweep):
    scalars = tb_scalars(sweep.logdir)
    runs = {f"tune/{t}" for t in sweep.trial.values()}
    assert runs <= set(scalars)
    for run in runs:
        assert "tune/loss/all" in scalars[run]
        assert "tune/training_iteration/all" in scalars[run]
        assert not any("note" in tag or "config" in tag for tag in scalars[run])


def test_trial_config_is_in_params_and_in_the_hparams_tab_with_last_metrics(sweep):
    from tensorboard.plugins.hparams import metadata

    params = rayplex.read_params(sweep.logdir)
    for x, trial_id in sweep.trial.items():
        assert params[f"tune/{trial_id}"]["config"]["x"] == x
    run = f"hparams/tune/{sweep.trial[2]}"
    values = tb_values(sweep.logdir)[run]
    start = values["_hparams_/session_start_info"][0][2]
    info = metadata.parse_session_start_info_plugin_data(start.metadata.plugin_data.content)
    assert info.hparams["x"].number_value == 2
    experiment = values["_hparams_/experiment"][0][2]
    names = {m.name.tag for m in metadata.parse_experiment_plugin_data(
        experiment.metadata.plugin_data.content).metric_infos}
    assert "loss" in names
    assert tb_scalars(sweep.logdir)[run]["loss"] == [(0, _f32(2 * ITERS + 0.25))]


def test_trial_start_retry_error_and_end_are_in_the_text_logs(sweep):
    def text(x):
        path = os.path.join(sweep.logdir, "logs", "tune", f"{sweep.trial[x]}.log")
        with open(path, encoding="utf-8") as f:
            return f.read()

    retried, failed = text(2), text(3)
    assert "started" in retried and "failed and is retried" in retried
    assert "trial two breaks once" in retried and "in _trainable" in retried
    assert "completed at iteration 5" in retried
    assert "trial three always breaks" in failed and "raise RuntimeError" in failed
    assert f"trial {sweep.trial[3]} failed:" in failed
    assert "\x1b[" not in failed


def test_callback_state_carries_written_iterations_into_a_new_callback(experiment):
    from rayplex.integrations.tune import RayplexLoggerCallback

    first = RayplexLoggerCallback(hub=experiment.name)
    trial = SimpleNamespace(trial_id="abc_00000", config={"lr": 0.1})
    for i in (1, 2):
        first.log_trial_result(i, trial, {"training_iteration": i, "loss": float(i)})
    restored = pickle.loads(pickle.dumps(first))
    restored.set_state(first.get_state())
    for i in (1, 2, 3):  # an experiment restore replays 1 and 2
        restored.log_trial_result(i, trial, {"training_iteration": i, "loss": 10.0 * i})
    restored.on_experiment_end([])
    rows = rayplex.read_scalars(experiment.logdir, group="tune", tag="tune/loss/all")
    assert [(r.step, r.value) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert restored.replayed == 2


def test_a_restored_callback_takes_its_memory_from_the_logdir_and_completes_a_cut_iteration(
        experiment):
    from rayplex.integrations.tune import RayplexLoggerCallback

    RayplexLoggerCallback(hub=experiment.name)  # registers the group, as the dead driver did
    shipped = rayplex.get_logger("tune/abc_00000")  # what the dead driver's callback shipped:
    for i in (1, 2):
        shipped.add_scalars({"training_iteration": i, "loss": float(i), "acc": -float(i)}, step=i)
    shipped.add_scalars({"training_iteration": 3, "loss": 3.0}, step=3)  # its crash cut 3 short
    restored = pickle.loads(pickle.dumps(RayplexLoggerCallback(hub=experiment.name)))
    restored.set_state({"written": {"abc_00000": 5}})  # a snapshot ahead of what was shipped
    trial = SimpleNamespace(trial_id="abc_00000", config={})
    for i in range(1, 7):  # the restored trial replays from the start
        restored.log_trial_result(i, trial, {"training_iteration": i, "loss": 10.0 * i,
                                             "acc": -10.0 * i})
    restored.on_experiment_end([])
    scalars = tb_scalars(experiment.logdir)["tune/abc_00000"]
    assert scalars["tune/loss/all"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0),
                                        (6, 60.0)]
    assert scalars["tune/acc/all"] == [(1, -1.0), (2, -2.0), (3, -30.0), (4, -40.0),
                                       (5, -50.0), (6, -60.0)]
    assert [s for s, _ in scalars["tune/training_iteration/all"]] == [1, 2, 3, 4, 5, 6]
    assert restored.replayed == 2


def test_callback_refuses_a_bad_group_name_before_starting_anything():
    from rayplex.integrations.tune import RayplexLoggerCallback

    with pytest.raises(ValueError, match="group"):
        RayplexLoggerCallback("/nonexistent/never", group="bad/name")


def test_numeric_entries_are_flattened_and_others_skipped():
    result = {"loss": np.float32(0.5), "ok": True, "n": np.int64(3), "cfg": {"lr": 0.1},
              "text": "x", "none": None, "arr": np.zeros(3), "": 1.0, "config": {"x": 1}}
    assert numeric_items(result, skip=frozenset({"config"})) == {
        "loss": 0.5, "ok": 1.0, "n": 3.0, "cfg/lr": 0.1}


def test_only_integral_numbers_are_steps():
    assert [int_step(v) for v in (3, 4.0, np.int64(5), 2.5, True, "6", None)] == [
        3, 4, 5, None, None, None, None]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_AFTER = 20  # iterations on disk for every trial before the driver is killed


def _start_driver(mode, tmp_path):
    # Tune snapshots the experiment every second (default: 10 s or more), so the restored
    # trials resume mid-way from a checkpoint and the callback's state comes back from a
    # snapshot a little behind what was already shipped
    env = dict(os.environ, RAYPLEX_FLUSH_INTERVAL_S="0.2", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
               TUNE_GLOBAL_CHECKPOINT_S="1",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env.pop("RAY_ADDRESS", None)
    with open(tmp_path / f"{mode}.out", "w") as out, open(tmp_path / f"{mode}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, crash.__file__, mode, str(tmp_path / "storage"),
             str(tmp_path / "exp")], env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, start_new_session=True)  # its own group: its Ray too


def _iterations_on_disk(logdir):
    """{run: iterations of the trial's loss on disk} (rayplex's reader; a torn tail is fine)."""
    if not os.path.isdir(os.path.join(logdir, "tensorboard")):
        return {}
    counts = defaultdict(int)
    for row in rayplex.read_scalars(logdir, group="tune", tag="tune/loss/all"):
        counts[row.run] += 1
    return counts


def _driver_output(proc, tmp_path, mode, timeout):
    try:
        proc.wait(timeout=timeout)
    finally:
        _kill_group(proc)
    out = (tmp_path / f"{mode}.out").read_text()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, (out[-2000:]
                                            + (tmp_path / f"{mode}.err").read_text()[-6000:])
    return json.loads(lines[-1])


def _kill_group(proc):
    """The driver's process group: what is left of its local Ray."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_replayed_iterations_are_written_once_across_a_driver_crash_and_tuner_restore(tmp_path):
    logdir = str(tmp_path / "exp")
    first = _start_driver("fit", tmp_path)
    try:
        def mid_way():  # kill once every trial has results on disk, mid-way
            on_disk = _iterations_on_disk(logdir)
            if len(on_disk) == len(crash.XS) and min(on_disk.values()) >= KILL_AFTER:
                return on_disk
            assert first.poll() is None, (tmp_path / "fit.err").read_text()[-6000:]
            return None

        on_disk = wait_for(mid_way, 300, "results of every trial on disk")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        _kill_group(first)
    assert min(on_disk.values()) < crash.ITERS, f"the crash came after the end: {on_disk}"

    report = _driver_output(_start_driver("restore", tmp_path), tmp_path, "restore", 600)
    scalars = tb_scalars(logdir)
    duplicated, wrong = {}, {}
    for trial_id, x in report["x"].items():
        run = f"tune/{trial_id}"
        for tag in ("tune/loss/all", "tune/training_iteration/all"):
            steps = [step for step, _ in scalars[run][tag]]
            duplicated[(run, tag)] = len(steps) - len(set(steps))
            wrong[(run, tag)] = sorted(set(range(1, crash.ITERS + 1)) ^ set(steps))
        assert sorted(scalars[run]["tune/loss/all"]) == [
            (i, _f32(crash.loss(x, i))) for i in range(1, crash.ITERS + 1)], (
                f"duplicated {duplicated}, missing or extra {wrong}")
    assert len(report["x"]) == len(crash.XS)
    assert not any(duplicated.values()) and not any(wrong.values())
    assert report["replayed"] > 0  # the restored trials did replay iterations
