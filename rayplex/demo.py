"""``rayplex demo``: fifty logged Ray tasks and actors in all three group kinds, on a local Ray.

It shows the whole path at once: ``@rayplex.logged`` tasks in an indexed group (``agent``),
actors in a combined group (``eval``) and the driver in a normal group (``learner``), all
landing in one logdir that TensorBoard reads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
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


def start_quiet_ray(address: str | None = None) -> None:
    """``ray.init`` for a command-line tool: Ray's own chatter stays out of the user's terminal.

    Ray's INFO/WARNING log lines (the token-auth notice, "Started a local Ray instance") are
    dropped, workers' stdout/stderr are not copied to this terminal (their log lines reach
    ``logs/`` through rayplex), and a local Ray gets a worker-pool size warning threshold that
    fits the demo's ~20 worker processes on a small machine. Errors still show: Ray's ERROR
    lines, and exceptions of tasks, which ``ray.get`` raises here.

    Args:
        address: A running cluster to join; ``None`` starts a new local Ray.

    Example:
        >>> start_quiet_ray()  # doctest: +SKIP
    """
    kwargs: dict[str, Any] = {}
    if address is None:
        # "local": a new Ray of its own, never one found in /tmp/ray (another user's or a test's).
        address = "local"
        # Ray warns ("N PYTHON worker processes have been started ... 4x the maximum expected
        # startup concurrency") once the node has 4x as many worker processes as CPUs, which the
        # demo's fractional-CPU tasks and zero-CPU actors reach on purpose.
        kwargs["_system_config"] = {"worker_maximum_startup_concurrency": 64}
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, **kwargs)


@dataclass
class Progress:
    """What :func:`run_demo` reports while it runs (about once a second)."""

    elapsed: float
    records: int
    clients: int


def run_demo(logdir: str, workers: int = 40, evaluators: int = 8, seconds: float = 20.0,
             address: str | None = None, progress: bool = True,
             on_progress: Callable[[Progress], None] | None = None) -> DemoResult:
    """Run the demo and return what it wrote.

    Args:
        logdir: Where the hub writes.
        workers: Agent tasks (indexed group ``agent``, bins of 8).
        evaluators: Evaluator actors (combined group ``eval``).
        seconds: How long to log.
        address: A Ray cluster to join; ``None`` starts a quiet local Ray (:func:`start_quiet_ray`)
            unless Ray is already initialized.
        progress: Show a progress display on stderr (records/s, clients, elapsed) while it runs;
            drawn only on a terminal.
        on_progress: Called about once a second with a :class:`Progress`.

    Example:
        >>> run_demo("/tmp/rayplex-demo", workers=4, evaluators=2, seconds=2)  # doctest: +SKIP
    """
    if not ray.is_initialized():
        start_quiet_ray(address)
    hub = rayplex.init(logdir)
    (hub.register_normal_group("learner")
        .register_indexed_group("agent", 8)
        .register_combined_group("eval", lambda name: name.split("-")[0]))
    start = time.time()
    cpus = ray.cluster_resources().get("CPU", 2)  # type: ignore[no-untyped-call]
    concurrent = max(1, int(8 * cpus / 2))
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
    # Timed from here: starting Ray's workers can take seconds on a small machine, and every
    # evaluator must still get steps to log.
    logging_start = time.time()
    with _display(progress, workers + evaluators + 1, seconds) as show:
        next_report = 0.0
        while step == 0 or time.time() - logging_start < seconds:
            learner.add_scalar("loss", 1 / (1 + step / 10) + random.random() * 0.01, step=step)
            learner.add_scalar("learning_rate", 1e-3 * 0.99**step, step=step)
            ray.get([e.evaluate.remote(step) for e in evals])
            if step % 20 == 0:
                learner.add_text("notes", f"step {step}: all good", step=step)
            step += 1
            elapsed = time.time() - logging_start
            if elapsed >= next_report:
                next_report = elapsed + 1.0
                info = hub.info()
                report = Progress(elapsed, int(info["records_written"]), int(info["clients"]))
                show(report)
                if on_progress is not None:
                    on_progress(report)
            time.sleep(0.1)
    ray.get(agents)
    rayplex.flush()
    info = hub.info()
    result = DemoResult(hub.logdir, info["clients"], info["records_written"],
                        _dir_size(hub.logdir), time.time() - start)
    for e in evals:
        ray.kill(e)
    rayplex.shutdown()
    return result


@contextlib.contextmanager
def _display(enabled: bool, clients: int, seconds: float) -> Iterator[Callable[[Progress], None]]:
    """A transient rich progress bar on stderr; a no-op when disabled or not on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda report: None
        return
    columns = (TextColumn("[bold]logging[/bold] from {task.fields[workers]} workers"), BarColumn(),
               TextColumn("{task.fields[rate]:>9,.0f} records/s"),
               TextColumn("{task.fields[clients]:>4} clients"), TimeElapsedColumn())
    with Bar(*columns, console=console, transient=True) as bar:
        task = bar.add_task("demo", total=seconds, workers=clients, rate=0.0, clients=0)

        def show(report: Progress) -> None:
            bar.update(task, completed=min(seconds, report.elapsed), clients=report.clients,
                       rate=report.records / max(report.elapsed, 1e-9))

        yield show
