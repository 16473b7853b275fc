"""End-to-end scalars/s: W Ray tasks each log K scalars, until the data is on disk.

The clock runs from the first log call (all workers are released together by a shared start
time, after their setup) until the last worker's barrier returned: ``flush()`` for rayplex,
``close()`` for tensorboardX, the owning actor's ``close()`` for the actor design, the last
``log_batch`` for MLflow. Every variant's output is then read back and counted; a variant
that lost data is flagged. Each variant runs ``--repeats`` times; medians are quoted.

Variants:
  rayplex        ``rayplex.get_logger("worker/<i>")`` in each task (indexed group, one run each)
  tbx-per-worker each task its own tensorboardX SummaryWriter in its own directory
  actor-per-call one plain actor owns a SummaryWriter; one ``.remote()`` per scalar
                 (``--actor-scalars`` per worker, far fewer: the rate is what is compared)
  mlflow         MLflow file store, ``log_batch`` of 1,000 metrics (skipped if not installed)

    python benchmarks/bench_throughput.py                      # ~2 minutes
    python benchmarks/bench_throughput.py --workers 16 --scalars 50000
    python benchmarks/bench_throughput.py --only rayplex --profile /tmp/prof   # py-spy
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings

import _common as C
import ray

START_DELAY_S = 1.5  # workers finish their setup, then all start at the same moment


def _wait_until(t: float) -> float:
    now = time.time()
    if t > now:
        time.sleep(t - now)
    return max(t, time.time())


def _tag_names(n: int) -> list[str]:
    return [f"metric{j}" for j in range(n)]


# ----------------------------------------------------------------- rayplex
@ray.remote(num_cpus=1)
def rayplex_worker(i: int, k: int, n_tags: int, start_at: float, profile_dir: str | None,
                   profile_rate: int = 100):
    import rayplex

    log = rayplex.get_logger(f"worker/{i}")
    tags = _tag_names(n_tags)
    spy = None
    if profile_dir and i == 0:
        spy = C.PySpy(os.getpid(), os.path.join(profile_dir, "worker0.txt"), rate=profile_rate)
        spy.__enter__()
    t0 = _wait_until(start_at)
    add = log.add_scalar
    for j in range(k):
        add(tags[j % n_tags], float(j), j // n_tags)
    t_logged = time.time()
    log.flush()
    t1 = time.time()
    if spy is not None:
        spy.__exit__(None, None, None)
    return {"t0": t0, "t_logged": t_logged, "t1": t1, "pid": os.getpid(),
            "rayplex_file": rayplex.__file__}


def run_rayplex(args, logdir: str, profile_dir: str | None = None) -> dict:
    import rayplex

    hub = rayplex.init(logdir)
    hub.register_indexed_group("worker", 8)
    hub.register_normal_group("warmup")
    hub_pid = hub.info()["pid"]
    # The first batch of an experiment starts the node's NodeBuffer actor (a new process,
    # ~1 s here): pay that once before the clock runs, as a long experiment would.
    warm = rayplex.get_logger("warmup/driver")
    warm.add_scalar("warm", 0.0, 0)
    warm.flush()
    cpu0 = C.process_cpu_s(hub_pid)
    spies = []
    if profile_dir:
        spies.append(C.PySpy(hub_pid, os.path.join(profile_dir, "hub.txt"),
                             rate=args.profile_rate))
        nb_pid = _find_pid("NodeBuffer")
        if nb_pid is not None:
            spies.append(C.PySpy(nb_pid, os.path.join(profile_dir, "node_buffer.txt"),
                                 rate=args.profile_rate))
        for spy in spies:
            spy.__enter__()
    start_at = time.time() + START_DELAY_S
    out = ray.get([rayplex_worker.remote(i, args.scalars, args.tags, start_at, profile_dir,
                                         args.profile_rate) for i in range(args.workers)])
    for spy in spies:
        spy.__exit__(None, None, None)
    info = hub.info()
    cpu1 = C.process_cpu_s(hub_pid)
    rayplex.shutdown()
    t0 = min(o["t0"] for o in out)
    result = {
        "seconds": max(o["t1"] for o in out) - t0,
        "log_loop_seconds": max(o["t_logged"] for o in out) - t0,
        "written": _count_events(os.path.join(logdir, "tensorboard", "worker"), args),
        "hub_records_written": info["records_written"],
        "hub_batches_written": info["batches_written"],
        "hub_cpu_s": cpu1 - cpu0,
        "worker_rayplex_files": sorted({o["rayplex_file"] for o in out}),
    }
    return result


def _find_pid(needle: str) -> int | None:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::") and needle in cmdline:
            return proc.pid
    return None


# ----------------------------------------------------------------- tensorboardX per worker
@ray.remote(num_cpus=1)
def tbx_worker(i: int, k: int, n_tags: int, start_at: float, logdir: str):
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(os.path.join(logdir, f"worker{i}"))
    tags = _tag_names(n_tags)
    t0 = _wait_until(start_at)
    add = writer.add_scalar
    for j in range(k):
        add(tags[j % n_tags], float(j), j // n_tags)
    t_logged = time.time()
    writer.close()
    t1 = time.time()
    return {"t0": t0, "t_logged": t_logged, "t1": t1}


def run_tbx(args, logdir: str) -> dict:
    start_at = time.time() + START_DELAY_S
    out = ray.get([tbx_worker.remote(i, args.scalars, args.tags, start_at, logdir)
                   for i in range(args.workers)])
    t0 = min(o["t0"] for o in out)
    return {
        "seconds": max(o["t1"] for o in out) - t0,
        "log_loop_seconds": max(o["t_logged"] for o in out) - t0,
        "written": _count_events(logdir, args),
    }


# ----------------------------------------------------------------- one actor, one call per scalar
@ray.remote(num_cpus=0)
class WriterActor:
    """The obvious Ray design: a plain actor owns a SummaryWriter, one call per scalar."""

    def __init__(self, logdir: str) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        self.writer.close()


@ray.remote(num_cpus=1)
def actor_worker(actor, k: int, n_tags: int, start_at: float):
    tags = _tag_names(n_tags)
    ray.get(actor.ping.remote())
    t0 = _wait_until(start_at)
    for j in range(k):
        actor.add_scalar.remote(tags[j % n_tags], float(j), j // n_tags)
    t_logged = time.time()
    ray.get(actor.ping.remote())  # calls from one caller run in order: all of ours are done
    return {"t0": t0, "t_logged": t_logged, "t1": time.time()}


def run_actor(args, logdir: str) -> dict:
    actor = WriterActor.remote(logdir)
    start_at = time.time() + START_DELAY_S
    out = ray.get([actor_worker.remote(actor, args.actor_scalars, args.tags, start_at)
                   for i in range(args.workers)])
    ray.get(actor.close.remote())  # tensorboardX's flush() does not drain its queue; close() does
    t_end = time.time()
    ray.kill(actor)
    t0 = min(o["t0"] for o in out)
    return {
        "seconds": t_end - t0,
        "log_loop_seconds": max(o["t_logged"] for o in out) - t0,
        "written": _count_events(logdir, args),
    }


# ----------------------------------------------------------------- MLflow
@ray.remote(num_cpus=1)
def mlflow_worker(i: int, k: int, n_tags: int, start_at: float, uri: str, experiment_id: str):
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(experiment_id, run_name=f"worker{i}").info.run_id
    tags = _tag_names(n_tags)
    t0 = _wait_until(start_at)
    batch = []
    for j in range(k):
        batch.append(Metric(tags[j % n_tags], float(j), int(time.time() * 1000), j // n_tags))
        if len(batch) == 1000:  # MLflow's per-request limit
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    t1 = time.time()
    return {"t0": t0, "t_logged": t1, "t1": t1}


def run_mlflow(args, logdir: str) -> dict:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.tracking import MlflowClient

    uri = "file://" + logdir
    experiment_id = MlflowClient(tracking_uri=uri).create_experiment("bench")
    start_at = time.time() + START_DELAY_S + 2.0  # importing mlflow in a worker is slow
    out = ray.get([mlflow_worker.remote(i, args.mlflow_scalars, args.tags, start_at, uri,
                                        experiment_id) for i in range(args.workers)])
    t0 = min(o["t0"] for o in out)
    return {
        "seconds": max(o["t1"] for o in out) - t0,
        "log_loop_seconds": max(o["t_logged"] for o in out) - t0,
        "written": C.count_mlflow_points(logdir),
    }


# ----------------------------------------------------------------- driver
def _count_events(root: str, args) -> int:
    if args.tb_loader:
        return C.count_event_dir_tensorboard(root)["summaries"]
    counts = C.count_event_dir(root)
    if counts["bad_crc"] or counts["torn_tail_bytes"]:
        print(f"  read-back problem under {root}: {counts}", flush=True)
    return counts["summaries"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8, help="Ray tasks logging at once")
    parser.add_argument("--scalars", type=int, default=20_000, help="scalars per worker")
    parser.add_argument("--actor-scalars", type=int, default=500,
                        help="scalars per worker for the actor-per-call variant")
    parser.add_argument("--mlflow-scalars", type=int, default=None,
                        help="scalars per worker for MLflow (default: --scalars)")
    parser.add_argument("--tags", type=int, default=10, help="distinct tags per worker")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median)")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=["rayplex", "tbx-per-worker", "actor-per-call", "mlflow"])
    parser.add_argument("--tb-loader", action="store_true",
                        help="count with TensorBoard's EventFileLoader (slow) instead of the "
                             "fast CRC-checking TFRecord walk")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="after the timed runs, one more rayplex run under py-spy (hub, "
                             "node buffer, worker 0); written to results/throughput_profile.json")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    if args.mlflow_scalars is None:
        args.mlflow_scalars = args.scalars
    warnings.simplefilter("ignore")
    notes = [
        f"{args.workers} worker tasks on {os.cpu_count()} cores (Ray given num_cpus="
        f"{max(args.workers, os.cpu_count() or 1)} so all run at once)",
        "actor-per-call logs --actor-scalars per worker, not --scalars: its rate is compared "
        "(extrapolating to the full size would take minutes)",
    ]

    variants = {
        "rayplex": (run_rayplex, args.scalars),
        "tbx-per-worker": (run_tbx, args.scalars),
        "actor-per-call": (run_actor, args.actor_scalars),
    }
    if C.has_module("mlflow"):
        variants["mlflow"] = (run_mlflow, args.mlflow_scalars)
    else:
        notes.append("mlflow not installed: variant skipped (pip install mlflow-skinny)")
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}

    C.start_ray(num_cpus=max(args.workers, os.cpu_count() or 1))
    C.warm_workers(args.workers)

    results = {}
    for name, (fn, per_worker) in variants.items():
        expected = per_worker * args.workers
        runs = []
        for r in range(args.repeats):
            logdir = C.temp_logdir(f"tp-{name}")
            try:
                run = fn(args, logdir)
            finally:
                shutil.rmtree(logdir, ignore_errors=True)
            run["expected"] = expected
            run["lost"] = expected - run["written"]
            run["scalars_per_s"] = expected / run["seconds"]
            runs.append(run)
            print(f"  {name} run {r + 1}: {run['scalars_per_s']:,.0f} scalars/s "
                  f"({run['seconds']:.2f} s, read back {run['written']:,}/{expected:,})",
                  flush=True)
        results[name] = {
            "per_worker": per_worker,
            "expected": expected,
            "runs": runs,
            "median_scalars_per_s": C.median([r["scalars_per_s"] for r in runs]),
            "median_seconds": C.median([r["seconds"] for r in runs]),
            "median_log_loop_seconds": C.median([r["log_loop_seconds"] for r in runs]),
            "lost_any": any(r["lost"] != 0 for r in runs),
        }
        if name == "rayplex":
            results[name]["median_hub_cpu_us_per_scalar"] = C.median(
                [r["hub_cpu_s"] * 1e6 / expected for r in runs])

    rows = []
    ref = results.get("rayplex", {}).get("median_scalars_per_s", float("nan"))
    for name, res in results.items():
        rate = res["median_scalars_per_s"]
        res["rayplex_x"] = C.ratio(ref, rate)
        rows.append([name, args.workers, res["per_worker"], rate, res["median_seconds"],
                     res["median_log_loop_seconds"],
                     "LOST DATA" if res["lost_any"] else "all read back",
                     1.0 if name == "rayplex" else res["rayplex_x"]])
    C.print_table(
        ["variant", "workers", "per worker", "scalars/s (median)", "s to on-disk",
         "s in log loop", "read-back", "rayplex x"],
        rows, title=f"\nend-to-end throughput, median of {args.repeats} runs",
    )
    if "rayplex" in results:
        rp = results["rayplex"]
        notes.append(f"rayplex hub CPU: {rp['median_hub_cpu_us_per_scalar']:.2f} us/scalar")
        for other, target in (("tbx-per-worker", 10), ("actor-per-call", 100)):
            if other in results:
                x = results[other]["rayplex_x"]
                notes.append(f"target >= {target}x {other}: {x:.1f}x "
                             f"({'meets' if x >= target else 'misses'})")
        notes.append(f"target >= 300k scalars/s: {ref:,.0f} "
                     f"({'meets' if ref >= 300_000 else 'misses'})")

    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        print(f"\nprofiling one more rayplex run with py-spy into {args.profile}", flush=True)
        logdir = C.temp_logdir("tp-profile")
        try:
            run = run_rayplex(args, logdir, profile_dir=args.profile)
        finally:
            shutil.rmtree(logdir, ignore_errors=True)
        profile = {"run": run}
        for part in ("hub", "node_buffer", "worker0"):
            profile[part] = C.top_frames(os.path.join(args.profile, f"{part}.txt"))
            print(f"\n{part}: {profile[part]['samples']} samples; top self time:")
            for fn_name, pct in profile[part]["self"][:10]:
                print(f"  {pct:5.1f}%  {fn_name}")
        results["profile"] = profile

    for note in notes:
        print("note:", note)
    # A profiled run is slower and not comparable: keep it out of the reference results.
    C.write_json("throughput_profile" if args.profile else "throughput", args, results, notes)
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
