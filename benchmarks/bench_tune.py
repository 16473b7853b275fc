"""A Tune sweep logged by Tune's default loggers versus by rayplex's callback.

A trivial function trainable reports ``--iters`` results in each of ``--trials`` trials.
Variant ``tune``: Tune's default logger callbacks (CSV, JSON, TensorBoardX: one writer and
three files per trial, flushed every result). Variant ``rayplex``: the default loggers off
(``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``) and ``RayplexLoggerCallback`` instead. Each
variant runs in its own subprocess with its own local Ray; the rounds alternate the variants.

Measured per run: the sweep's wall time (callback construction, ``Tuner.fit`` and, for
rayplex, the final flush that makes everything durable), and the number of files created:
under the Tune storage path, under the Ray session's artifacts (Tune's local staging copy of
each trial directory) and under the rayplex logdir. The rayplex variant also checks that
every result was written once (trials × iterations points of ``tune/loss/all``).

    python benchmarks/bench_tune.py                                    # 200 x 50, 3 rounds
    python benchmarks/bench_tune.py --trials 20 --iters 10 --rounds 1  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import _common as C

VARIANTS = ("tune", "rayplex")


def _count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root)) if os.path.isdir(root) else 0


def _trainable(config: dict) -> None:
    from ray import tune

    for i in range(1, config["iters"] + 1):
        tune.report({"loss": config["x"] / i, "acc": 1.0 - 1.0 / (i + config["x"])})


HOOKS = ("log_trial_start", "log_trial_result", "log_trial_end", "on_experiment_end")


def _time_hooks(callback: object) -> dict[str, float]:
    """Wrap the callback's hooks to add up the time they take on Tune's loop."""
    spent = dict.fromkeys(HOOKS, 0.0)

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    for name in HOOKS:
        setattr(callback, name, timed(name, getattr(callback, name)))
    return spent


def run_variant(variant: str, trials: int, iters: int, cpus: int) -> dict:
    """One sweep in this process (called in the subprocess)."""
    import ray
    from ray import tune

    root = tempfile.mkdtemp(prefix=f"bench_tune_{variant}_")
    storage = os.path.join(root, "storage")
    logdir = os.path.join(root, "rayplex")
    C.start_ray(num_cpus=cpus)
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    t0 = time.perf_counter()
    callbacks = []
    if variant == "rayplex":
        from rayplex.integrations.tune import RayplexLoggerCallback

        callbacks.append(RayplexLoggerCallback(logdir, hub="bench-tune"))
        spent = _time_hooks(callbacks[0])
    tuner = tune.Tuner(
        _trainable,
        param_space={"x": tune.grid_search(list(range(1, trials + 1))), "iters": iters},
        run_config=tune.RunConfig(storage_path=storage, callbacks=callbacks, verbose=0),
    )
    results = tuner.fit()
    if variant == "rayplex":
        import rayplex

        rayplex.flush("bench-tune")
    wall = time.perf_counter() - t0
    out = {
        "variant": variant,
        "wall_s": wall,
        "errors": results.num_errors,
        "files_storage": _count_files(storage),
        "files_staging": _count_files(os.path.join(session_dir, "artifacts")),
        "files_rayplex": _count_files(logdir),
    }
    out["files_total"] = out["files_storage"] + out["files_staging"] + out["files_rayplex"]
    if variant == "rayplex":
        import rayplex

        rows = rayplex.read_scalars(logdir, group="tune", tag="tune/loss/all")
        steps = {(r.run, r.step) for r in rows}
        out["points_read_back"] = len(rows)
        out["points_expected"] = trials * iters
        out["all_once"] = len(rows) == len(steps) == trials * iters
        out["replayed_skipped"] = callbacks[0].replayed
        out["callback_s"] = spent
        rayplex.shutdown("bench-tune")
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="Ray's logical CPUs (1 per trial)")
    parser.add_argument("--rayplex-first", action="store_true",
                        help="start the alternation with rayplex (default: Tune's loggers)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # the subprocess: one sweep, its result as the last line of stdout
        print(json.dumps(run_variant(args.variant, args.trials, args.iters, args.cpus)))
        return

    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for rnd in range(args.rounds):
        for variant in VARIANTS if (rnd + args.rayplex_first) % 2 == 0 else VARIANTS[::-1]:
            env = dict(os.environ)
            if variant == "rayplex":
                env["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
            else:
                env.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
            cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant,
                   "--trials", str(args.trials), "--iters", str(args.iters),
                   "--cpus", str(args.cpus)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"{variant} sweep failed (exit {proc.returncode})")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[variant].append(result)
            print(f"round {rnd + 1}: {variant:8s} {result['wall_s']:7.1f} s  "
                  f"{result['files_total']:6d} files", flush=True)

    def med(variant: str, key: str) -> float:
        return C.median([r[key] for r in runs[variant]])

    rows = [(v, len(runs[v]), med(v, "wall_s"), min(r["wall_s"] for r in runs[v]),
             max(r["wall_s"] for r in runs[v]), med(v, "files_storage"),
             med(v, "files_staging"), med(v, "files_rayplex"), med(v, "files_total"))
            for v in VARIANTS]
    C.print_table(["variant", "rounds", "wall s (median)", "min", "max", "files: storage",
                   "staging", "rayplex", "total"], rows,
                  title=f"\nTune sweep, {args.trials} trials x {args.iters} iterations")
    for r in runs["rayplex"]:
        print("rayplex callback time on Tune's loop (s):",
              {k: round(v, 3) for k, v in r["callback_s"].items()})
    C.write_json("tune", args, runs, notes=[
        "wall_s: callback construction + Tuner.fit + (rayplex) final flush, per subprocess",
        "files_staging: Tune's local copy of trial dirs under the Ray session's artifacts",
    ])


if __name__ == "__main__":
    main()
