"""rayplex.integrations.rllib: a real PPO run on CartPole (two iterations, two env runners)
logged through RayplexRLlibCallback, read back with rayplex's reader and TensorBoard's loader."""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import pytest

import rayplex
from tests.conftest import tb_scalars, tb_values

pytest.importorskip("ray.rllib")
pytest.importorskip("torch")

HUB = "rllib-test"
ITERATIONS = 2


def _callback_class(base):
    class Recording(base):  # a user's subclass: also logs an image from its own callback
        def on_episode_end(self, *, episode, env_runner=None, **kwargs):
            super().on_episode_end(episode=episode, env_runner=env_runner, **kwargs)
            if env_runner is not None:
                log = self.logger(env_runner)
                log.log_text("INFO", f"episode return={float(episode.get_return())!r} "
                                     f"len={len(episode)}")

        def on_sample_end(self, *, env_runner=None, **kwargs):
            super().on_sample_end(env_runner=env_runner, **kwargs)
            if env_runner is not None:
                self.logger(env_runner).add_image("frame", [[0, 255], [255, 0]],
                                                  step=self._rounds, dataformats="HW")

    return Recording


@pytest.fixture(scope="module")
def ppo_run(ray_session, tmp_path_factory):
    from ray.rllib.algorithms.ppo import PPOConfig

    from rayplex.integrations.rllib import RayplexRLlibCallback

    logdir = str(tmp_path_factory.mktemp("ppo") / "exp")
    callback = _callback_class(RayplexRLlibCallback.to(logdir, hub=HUB))
    config = (PPOConfig().environment("CartPole-v1")
              .env_runners(num_env_runners=2, num_cpus_per_env_runner=0)
              .training(train_batch_size=400, minibatch_size=64, num_epochs=1)
              .callbacks(callback))
    algo = config.build_algo()
    results = [algo.train() for _ in range(ITERATIONS)]
    algo.stop()
    rayplex.flush(HUB)
    yield logdir, results
    rayplex.shutdown(HUB)


def _f32(x):
    return float(np.float32(x))


def test_train_results_are_scalars_at_each_iteration(ppo_run):
    logdir, results = ppo_run
    algorithm = {tag[len("algorithm/"):]: points for tag, points in tb_scalars(logdir)["rllib"].items()
                 if tag.startswith("algorithm/")}
    for key in ("env_runners/num_env_steps_sampled", "num_env_steps_sampled_lifetime"):
        expected = [(r["training_iteration"], _f32(_get(r, key))) for r in results]
        assert sorted(algorithm[key]) == expected
    assert not any(key.startswith("config") for key in algorithm)  # the config is not a metric


def test_episodes_summarised_across_env_runners(ppo_run):
    logdir, _ = ppo_run
    episodes = _episodes(logdir)  # {runner: [(return, length)]}, from the runners' text logs
    assert set(episodes) == {"1", "2"} and all(episodes.values())
    summary = tb_scalars(logdir)["rllib_env/summary"]
    counts = dict(summary["episode_return/count"])
    assert sorted(counts) == list(range(1, ITERATIONS + 1))
    # every episode of every env runner is counted once, in the summary of its sample round
    assert sum(counts.values()) == sum(len(e) for e in episodes.values())
    returns = [ret for e in episodes.values() for ret, _ in e]
    assert _f32(min(returns)) == min(v for _, v in summary["episode_return/min"])
    assert _f32(max(returns)) == max(v for _, v in summary["episode_return/max"])
    lengths = [length for e in episodes.values() for _, length in e]
    assert sum(lengths) == pytest.approx(
        sum(dict(summary["episode_len/mean"])[s] * counts[s] for s in counts), rel=1e-5)


def test_user_callbacks_log_media_through_the_env_runner_logger(ppo_run):
    logdir, _ = ppo_run
    frames = {run: sorted(step for step, _, _ in tags["rllib_env/frame/0-7"])
              for run, tags in tb_values(logdir).items() if "rllib_env/frame/0-7" in tags}
    assert frames == {"rllib_env/1": [1, 2], "rllib_env/2": [1, 2]}


def _get(result, key):
    for part in key.split("/"):
        result = result[part]
    return result


def _episodes(logdir):
    out = {}
    for path in glob.glob(os.path.join(logdir, "logs", "rllib_env", "*.log")):
        runner = os.path.basename(path)[: -len(".log")]
        with open(path) as f:
            out[runner] = [(float(m.group(1)), int(m.group(2)))
                           for m in re.finditer(r"episode return=(\S+) len=(\d+)", f.read())]
    return out
