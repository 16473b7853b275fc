"""``rayplex demo``: fifty logged Ray tasks and actors in all three group kinds, on a local Ray.

It shows the whole path at once: ``@rayplex.logged`` tasks in an indexed group (``agent``),
actors in a combined group (``eval``) and the driver in a normal group (``learner``), all
landing in one logdir that TensorBoard reads.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

import rayplex


# A quarter CPU each: eight rollouts at a time on two cores, in waves.
@ray.remote(num_cpus=0.25)
@rayplex.logged("agent/{index}")
def _agent(index: int, seconds: float, logger: Any = None) -> int:
    rng = random.Random(index)
    steps = 0
    deadline = time.time() + seconds
    logger.info("rollout %d starts for %.1f s", index, seconds)
    while time.time() < deadline:
        progress = steps / 200
        reward = math.tanh(progress * (0.5 + index / 40)) + rng.gauss(0, 0.05)
        logger.add_scalars({"reward": reward, "episode_length": 200 - 150 * reward}, step=steps)
        logger.store_metrics(episode_reward=reward)
        if steps % 20 == 19:
            logger.log_metrics_summary(step=steps // 20, stats=("mean", "std", "min", "max", "p90"))
        if steps % 50 == 0:
            logger.add_histogram("action_logits", np.random.default_rng(steps).normal(reward, 1, 500),
                                 step=steps)
        steps += 1
        time.sleep(0.01)
    logger.log_metrics_summary(step=steps // 20, stats=("mean", "std", "min", "max", "p90"))
    logger.info("rollout %d done after %d steps", index, steps)
    return steps


@ray.remote(num_cpus=0)
@rayplex.logged("eval/{mode}-{index}")
class _Evaluator:
    def __init__(self, mode: str, index: int, logger: Any = None) -> None:
        self.logger = logger
        self.mode = mode
        self.index = index

    def evaluate(self, step: int) -> float:
        noise = 0.3 if self.mode == "stochastic" else 0.05
        score = math.tanh(step / 400) + random.gauss(0, noise)
        self.logger.add_scalar("score", score, step=step)
        return score


@dataclass
class DemoResult:
    logdir: str
    clients: int
    records: int
    bytes: int
    seconds: float


def _dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def run_demo(logdir: str, workers: int = 40, evaluators: int = 8, seconds: float = 20.0,
             address: str | None = None, progress: bool = True) -> DemoResult:
    """Run the demo and return what it wrote.

    Example:
        >>> run_demo("/tmp/rayplex-demo", workers=4, evaluators=2, seconds=2)  # doctest: +SKIP
    """
    from rich.progress import Progress

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    hub = rayplex.init(logdir)
    (hub.register_normal_group("learner")
        .register_indexed_group("agent", 8)
        .register_combined_group("eval", lambda name: name.split("-")[0]))
    start = time.time()
    concurrent = max(1, int(8 * ray.cluster_resources().get("CPU", 2) / 2))
    rollout_seconds = seconds * min(1.0, concurrent / max(workers, 1))
    agents = [_agent.remote(i, rollout_seconds) for i in range(workers)]
    modes = ["stochastic" if i % 2 else "deterministic" for i in range(evaluators)]
    evals = [_Evaluator.remote(mode, i) for i, mode in enumerate(modes)]  # type: ignore[attr-defined]
    learner = rayplex.get_logger("learner/main")
    learner.log_params(Args={"workers": workers, "evaluators": evaluators, "seconds": seconds})
    yy, xx = np.mgrid[0:64, 0:64]
    learner.add_image("observation", np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.uint8),
                      step=0)
    frames = np.stack([np.roll(np.eye(32, dtype=np.uint8) * 255, k, axis=1) for k in range(16)])
    learner.add_video("policy_rollout", frames[..., None].repeat(3, -1), step=0, fps=8)
    step = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"logging from {workers + evaluators + 1} workers", total=seconds)
        while time.time() - start < seconds:
            learner.add_scalar("loss", 1 / (1 + step / 10) + random.random() * 0.01, step=step)
            learner.add_scalar("learning_rate", 1e-3 * 0.99**step, step=step)
            ray.get([e.evaluate.remote(step) for e in evals])
            if step % 20 == 0:
                learner.add_text("notes", f"step {step}: all good", step=step)
            step += 1
            bar.update(task, completed=min(seconds, time.time() - start))
            time.sleep(0.1)
    ray.get(agents)
    rayplex.flush()
    info = hub.info()
    result = DemoResult(hub.logdir, info["clients"], info["records_written"],
                        _dir_size(hub.logdir), time.time() - start)
    rayplex.shutdown()
    for e in evals:
        ray.kill(e)
    return result
