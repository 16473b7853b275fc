"""Feeding MLflow / W&B from many Ray workers: a tracker client in every worker vs rayplex
forwarding (one forwarder following the hub's committed event files).

8 Ray tasks each log ``--scalars`` scalars (``--keys`` keys per step). Measured per set-up,
from the moment the workers start logging until every point is in the tracker:
end-to-end scalars/s, and the number of tracker calls.

(a) the tracker's own multi-process recipe, in every worker:
    * MLflow: one run per worker (as MLflow users do per rank), ``MlflowClient.log_batch`` with
      1,000 metrics per call (the batched API: the most favourable use of the client);
    * W&B: ``wandb.init(group=...)`` in every worker (W&B's "one run per process, grouped"),
      one ``run.log`` per step with all keys, offline mode; done when ``finish()`` returned.
(b) rayplex: the workers call ``add_scalar``; ``rayplex.init(logdir, forward=[tracker])``
    forwards to the same tracker. Workers are one normal group (``--group normal``: one tracker
    run, keys ``<worker>/<key>``) or an indexed group (``--group indexed``: one tracker run per
    worker, like (a)). Done when the forwarder's ``forwarded`` counter reached the total.

The MLflow store is a fresh SQLite file per repetition, created before the clock runs.

    python benchmarks/bench_forward.py                      # 8 x 20k, 3 repetitions
    python benchmarks/bench_forward.py --scalars 5000 --reps 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import _common as C
import ray

WORKERS = 8


def _values(worker: int, steps: int, keys: int) -> list[tuple[int, dict[str, float]]]:
    return [(s, {f"k{j}": worker + s * 0.001 + j for j in range(keys)}) for s in range(steps)]


@ray.remote(num_cpus=0)
def mlflow_worker(uri: str, experiment_id: str, worker: int, steps: int, keys: int,
                  start_at: float) -> int:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri)
    time.sleep(max(0.0, start_at - time.time()))
    run = client.create_run(experiment_id, run_name=f"w{worker}")
    calls = 1
    pending: list[Metric] = []
    for step, values in _values(worker, steps, keys):
        now = int(time.time() * 1000)
        pending += [Metric(k, v, now, step) for k, v in values.items()]
        if len(pending) >= 1000:
            client.log_batch(run.info.run_id, metrics=pending[:1000], synchronous=True)
            pending = pending[1000:]
            calls += 1
    if pending:
        client.log_batch(run.info.run_id, metrics=pending, synchronous=True)
        calls += 1
    return calls


@ray.remote(num_cpus=0)
def wandb_worker(directory: str, worker: int, steps: int, keys: int, start_at: float) -> int:
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    import wandb

    time.sleep(max(0.0, start_at - time.time()))
    run = wandb.init(project="bench", group="bench", name=f"w{worker}", dir=directory,
                     mode="offline", settings=wandb.Settings(silent=True, console="off",
                                                             x_disable_stats=True))
    for step, values in _values(worker, steps, keys):
        run.log(values, step=step)
    run.finish()
    return steps + 2


@ray.remote(num_cpus=0)
def rayplex_worker(hub: str, client: str, worker: int, steps: int, keys: int,
                   start_at: float) -> int:
    import rayplex

    log = rayplex.get_logger(client, hub=hub)
    time.sleep(max(0.0, start_at - time.time()))
    for step, values in _values(worker, steps, keys):
        log.add_scalars(values, step=step)
    log.flush()
    return 0


@ray.remote(num_cpus=0)
def warm_imports(hold_s: float) -> int:
    import mlflow  # noqa: F401
    import wandb  # noqa: F401

    import rayplex  # noqa: F401

    time.sleep(hold_s)
    return os.getpid()


def fresh_mlflow(root: str) -> tuple[str, str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{os.path.join(root, 'mlruns.db')}"
    return uri, MlflowClient(tracking_uri=uri).create_experiment("bench")


def direct(tracker: str, steps: int, keys: int) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="bench-fwd-")
    try:
        start_at = time.time() + 3.0
        if tracker == "mlflow":
            uri, experiment = fresh_mlflow(root)
            start_at = time.time() + 3.0
            refs = [mlflow_worker.remote(uri, experiment, w, steps, keys, start_at)
                    for w in range(WORKERS)]
        else:
            refs = [wandb_worker.remote(root, w, steps, keys, start_at) for w in range(WORKERS)]
        calls = sum(ray.get(refs))
        elapsed = time.time() - start_at
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"seconds": elapsed, "calls": calls}


def forwarded(tracker: str, steps: int, keys: int, group: str) -> dict[str, float]:
    import rayplex
    from rayplex.forward import MLflow, WandB

    root = tempfile.mkdtemp(prefix="bench-fwd-")
    try:
        if tracker == "mlflow":
            uri, _ = fresh_mlflow(root)
            spec: MLflow | WandB = MLflow(tracking_uri=uri, experiment="bench")
        else:
            spec = WandB(project="bench", mode="offline", dir=root)
        hub = rayplex.init(os.path.join(root, "exp"), name="benchfwd", forward=[spec])
        if group == "indexed":
            hub.register_indexed_group("w", WORKERS)
        else:
            hub.register_normal_group("w")
        total = WORKERS * steps * keys
        while _forwarder(hub.name)["polls"] < 2:  # connected (tracker imported) before timing
            time.sleep(0.05)
        start_at = time.time() + 3.0
        ray.get([rayplex_worker.remote(hub.name, f"w/{w}", w, steps, keys, start_at)
                 for w in range(WORKERS)])
        logged = time.time() - start_at
        info: dict = {}
        while True:
            info = _forwarder(hub.name)
            if info["forwarded"] >= total:
                break
            time.sleep(0.05)
        elapsed = time.time() - start_at
        rayplex.shutdown(hub.name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"seconds": elapsed, "logged_s": logged, "calls": info["tracker_calls"]}


def _forwarder(name: str) -> dict:
    import rayplex

    [status] = [s for s in rayplex.status() if s.get("name") == name]
    return dict(status["forwarders"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scalars", type=int, default=20_000, help="per worker")
    parser.add_argument("--keys", type=int, default=20, help="keys per step")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--trackers", nargs="+", default=["mlflow", "wandb"])
    parser.add_argument("--group", choices=["normal", "indexed"], default="normal")
    args = parser.parse_args()
    steps = args.scalars // args.keys
    total = WORKERS * steps * args.keys
    C.start_ray()
    C.warm_workers(WORKERS)
    ray.get([warm_imports.remote(3.0) for _ in range(WORKERS)])  # imports are not timed
    results = {}
    rows = []
    for tracker in args.trackers:
        runs: dict[str, list[dict[str, float]]] = {"direct": [], "rayplex": []}
        for _ in range(args.reps):  # alternate, so that the machine's load hits both alike
            runs["direct"].append(direct(tracker, steps, args.keys))
            runs["rayplex"].append(forwarded(tracker, steps, args.keys, args.group))
        med = {k: C.median([r["seconds"] for r in v]) for k, v in runs.items()}
        calls = {k: C.median([r["calls"] for r in v]) for k, v in runs.items()}
        results[tracker] = {"runs": runs, "median_s": med, "median_calls": calls}
        rate = {k: total / s for k, s in med.items()}
        rows.append([tracker, f"{rate['direct']:,.0f}", f"{rate['rayplex']:,.0f}",
                     f"{rate['rayplex'] / rate['direct']:.2f}x", f"{calls['direct']:.0f}",
                     f"{calls['rayplex']:.0f}"])
    C.print_table(["tracker", "client in every worker (scalars/s)",
                   f"rayplex forwarding, {args.group} group (scalars/s)", "ratio",
                   "tracker calls (direct)", "tracker calls (rayplex)"], rows,
                  title=f"{WORKERS} workers x {steps * args.keys} scalars, medians of "
                        f"{args.reps}")
    C.write_json("bench_forward", vars(args), results)


if __name__ == "__main__":
    main()
