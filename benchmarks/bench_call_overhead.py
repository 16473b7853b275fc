"""Cost of one log call on the calling thread: rayplex vs tensorboardX vs an actor call per scalar.

Every call is timed on its own with ``time.perf_counter_ns``; the cost of timing an empty call
is measured first and subtracted. Medians and p99 are reported, plus the rate of an untimed
loop of the same calls (which includes the background threads' share of the GIL).

    python benchmarks/bench_call_overhead.py            # ~1 minute
    python benchmarks/bench_call_overhead.py --calls 1000000 --actor-calls 50000
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings

import _common as C


def measure(name: str, fn, n: int, baseline_ns: float, notes: list[str]) -> dict:
    """Per-call samples of ``fn(i)``, then an untimed loop of the same size for the rate."""
    samples = C.time_calls(fn, n, subtract_ns=baseline_ns)
    stats = C.summarize_ns(samples)
    t0 = time.perf_counter()
    base = n + 10_000  # fresh steps, so nothing is deduplicated or cached by step
    for i in range(base, base + n):
        fn(i)
    stats["untimed_loop_calls_per_s"] = n / (time.perf_counter() - t0)
    stats["name"] = name
    print(f"  {name}: median {stats['median_us']:.2f} us, p99 {stats['p99_us']:.2f} us "
          f"(n={n:,})", flush=True)
    return stats


def bench_rayplex(args, baseline_ns: float, notes: list[str]) -> list[dict]:
    import numpy as np

    import rayplex

    logdir = C.temp_logdir("overhead")
    rows = []
    try:
        hub = rayplex.init(logdir)
        hub.register_normal_group("bench")
        log = rayplex.get_logger("bench/main")
        rows.append(measure("rayplex add_scalar(float)",
                            lambda i: log.add_scalar("loss", 0.5, i), args.calls, baseline_ns,
                            notes))
        f32 = np.float32(0.5)
        rows.append(measure("rayplex add_scalar(np.float32)",
                            lambda i: log.add_scalar("loss32", f32, i), args.calls // 4,
                            baseline_ns, notes))
        rows.append(measure("rayplex add_scalar(step=None)",
                            lambda i: log.add_scalar("auto", 0.5), args.calls // 4,
                            baseline_ns, notes))
        if hasattr(rayplex.Logger, "store_metrics"):
            rows.append(measure("rayplex store_metrics(reward=x)",
                                lambda i: log.store_metrics(reward=0.5), args.calls // 4,
                                baseline_ns, notes))
        else:
            notes.append("Logger.store_metrics does not exist yet: skipped")
        if hasattr(rayplex.Logger, "info"):
            rows.append(measure("rayplex info(text)",
                                lambda i: log.info("episode finished"), args.calls // 4,
                                baseline_ns, notes))
        else:
            notes.append("Logger.info does not exist yet: skipped")
        t0 = time.perf_counter()
        log.flush()
        flush_s = time.perf_counter() - t0
        info = hub.info()
        notes.append(f"rayplex: final flush() took {flush_s * 1e3:.0f} ms; hub wrote "
                     f"{info['records_written']:,} records")
    finally:
        rayplex.shutdown()
        shutil.rmtree(logdir, ignore_errors=True)
    return rows


def bench_tensorboardx(args, baseline_ns: float, notes: list[str]) -> dict:
    from tensorboardX import SummaryWriter

    logdir = C.temp_logdir("overhead-tbx")
    try:
        writer = SummaryWriter(logdir)
        row = measure("tensorboardX SummaryWriter.add_scalar",
                      lambda i: writer.add_scalar("loss", 0.5, i), args.calls // 2, baseline_ns,
                      notes)
        t0 = time.perf_counter()
        writer.close()
        notes.append(f"tensorboardX: close() took {(time.perf_counter() - t0) * 1e3:.0f} ms")
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return row


def bench_actor(args, baseline_ns: float, notes: list[str]) -> dict:
    import ray

    @ray.remote
    class ScalarActor:
        """The obvious Ray design: one actor owns a SummaryWriter, one call per scalar."""

        def __init__(self, logdir: str) -> None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(logdir)
            self.n = 0

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.writer.add_scalar(tag, value, step)
            self.n += 1

        def close(self) -> int:
            self.writer.close()
            return self.n

    logdir = C.temp_logdir("overhead-actor")
    try:
        actor = ScalarActor.remote(logdir)
        ray.get(actor.add_scalar.remote("warm", 0.0, 0))
        n = args.actor_calls
        row = measure("Ray actor.add_scalar.remote (fire-and-forget)",
                      lambda i: actor.add_scalar.remote("loss", 0.5, i), n, baseline_ns, notes)
        t0 = time.perf_counter()
        written = ray.get(actor.close.remote())
        notes.append(f"actor-per-scalar: the actor needed {time.perf_counter() - t0:.1f} s more to "
                     f"drain after the last submission ({written:,} calls in total)")
        ray.kill(actor)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000,
                        help="timed rayplex add_scalar calls (other rayplex rows: a quarter; "
                             "tensorboardX: half)")
    parser.add_argument("--actor-calls", type=int, default=20_000,
                        help="timed actor.add_scalar.remote calls")
    parser.add_argument("--skip-peers", action="store_true",
                        help="rayplex rows only (no tensorboardX, no actor call); "
                             "bench_before_after.py uses this")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    notes: list[str] = []

    C.start_ray(num_cpus=os.cpu_count())
    baseline_ns = C.call_baseline_ns()
    notes.append(f"timing an empty call costs {baseline_ns:.0f} ns; subtracted from every sample")
    print(f"timer+call baseline: {baseline_ns:.0f} ns", flush=True)

    rows = bench_rayplex(args, baseline_ns, notes)
    if not args.skip_peers:
        rows.append(bench_tensorboardx(args, baseline_ns, notes))
        rows.append(bench_actor(args, baseline_ns, notes))

    ref = rows[0]
    for row in rows:
        row["median_vs_rayplex"] = C.ratio(row["median_us"], ref["median_us"])
        row["p99_vs_rayplex"] = C.ratio(row["p99_us"], ref["p99_us"])
    C.print_table(
        ["call", "n", "median us", "p99 us", "p99.9 us", "mean us", "untimed calls/s",
         "median x rayplex", "p99 x rayplex"],
        [[r["name"], r["n"], r["median_us"], r["p99_us"], r["p999_us"], r["mean_us"],
          r["untimed_loop_calls_per_s"], r["median_vs_rayplex"], r["p99_vs_rayplex"]]
         for r in rows],
        title="\nper-call cost on the calling thread (x rayplex = how many times rayplex "
              "add_scalar(float))",
    )
    target = 2.0
    verdict = "meets" if ref["median_us"] <= target else "misses"
    notes.append(f"target add_scalar <= {target} us: median {ref['median_us']:.2f} us ({verdict})")
    for note in notes:
        print("note:", note)
    C.write_json("call_overhead", args, rows, notes)

    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
