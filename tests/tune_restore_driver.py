"""A Tune driver for tests/test_tune.py's driver-crash test (run in a subprocess).

``fit STORAGE LOGDIR`` runs a sweep logged through ``RayplexLoggerCallback``; the test kills it
with SIGKILL while trials report. ``restore STORAGE LOGDIR`` resumes that sweep with
``Tuner.restore(..., resume_unfinished=True)`` (the callback comes back from Tune's pickle) and
prints one JSON line: each trial's x and the results the callback skipped as replays.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import ray
from ray import tune

import rayplex

HUB = "tune-restore"
NAME = "sweep"
ITERS = 60
CHECKPOINT_EVERY = 5
ITER_S = 0.05  # paces a trial like a short training step
XS = (1, 2)


def loss(x: int, i: int) -> float:
    return x * i + 0.25


def trainable(config: dict) -> None:
    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "it")) as f:
            start = int(f.read()) + 1
    for i in range(start, ITERS + 1):
        time.sleep(ITER_S)
        saved = None
        if i % CHECKPOINT_EVERY == 0:
            d = tempfile.mkdtemp()
            with open(os.path.join(d, "it"), "w") as f:
                f.write(str(i))
            saved = tune.Checkpoint.from_directory(d)
        tune.report({"loss": loss(config["x"], i)}, checkpoint=saved)


def main(mode: str, storage: str, logdir: str) -> None:
    from rayplex.integrations.tune import RayplexLoggerCallback

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    if mode == "fit":
        callback = RayplexLoggerCallback(logdir, hub=HUB)
        tuner = tune.Tuner(
            trainable, param_space={"x": tune.grid_search(list(XS))},
            run_config=tune.RunConfig(name=NAME, storage_path=storage, callbacks=[callback],
                                      verbose=0))
    else:
        tuner = tune.Tuner.restore(os.path.join(storage, NAME), trainable,
                                   resume_unfinished=True)
    results = tuner.fit()
    restored = [c for c in tuner._local_tuner.get_run_config().callbacks  # noqa: SLF001
                if isinstance(c, RayplexLoggerCallback)]
    print(json.dumps({"x": {r.metrics["trial_id"]: r.config["x"] for r in results},
                      "replayed": sum(c.replayed for c in restored)}), flush=True)
    rayplex.shutdown(HUB)


if __name__ == "__main__":
    main(*sys.argv[1:4])
