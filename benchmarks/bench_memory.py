"""Memory: the hub's RSS growth over N scalars, and a worker's RSS while it logs flat out.

W Ray tasks log N scalars in total in two equal rounds, each ending with ``flush()``. The
driver samples the RSS of the hub (pid from ``HubHandle.info()``) and of the node's NodeBuffer
every 50 ms; each task samples its own RSS every 20 ms. Growth between the two rounds tells a
leak (grows with N) from a one-off high-water mark (allocator arenas, buffers).

    python benchmarks/bench_memory.py                        # 2 million scalars, ~1 minute
    python benchmarks/bench_memory.py --scalars 10000000     # the 10M target
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
import warnings

import _common as C
import ray

MB = 1024 * 1024


def _memory(pid: int) -> dict[str, int]:
    """RSS and its parts (Linux ``/proc/<pid>/status``): ``anon`` is the process's private
    heap; ``shmem`` is mostly Ray's object store pages it touched (shared, not its own)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[{"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file",
                     "RssShmem": "shmem"}[key]] = int(value.split()[0]) * 1024
    return out


class RssSampler:
    """Samples the memory of some processes in a thread; keeps the peak of each figure."""

    def __init__(self, pids: dict[str, int | None], period_s: float) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.peak: dict[str, dict[str, int]] = {name: {} for name in self.pids}
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, pid in self.pids.items():
            try:
                mem = _memory(pid)
            except OSError:
                continue
            out[name] = mem
            peak = self.peak[name]
            for key, value in mem.items():
                peak[key] = max(peak.get(key, 0), value)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


@ray.remote(num_cpus=1)
def mem_worker(i: int, k: int, n_tags: int, step0: int) -> dict:
    import rayplex

    log = rayplex.get_logger(f"mem/{i}")
    tags = [f"metric{j}" for j in range(n_tags)]
    with RssSampler({"self": os.getpid()}, 0.02) as sampler:
        before = sampler.sample()["self"]
        t0 = time.time()
        add = log.add_scalar
        for j in range(k):
            add(tags[j % n_tags], float(j), step0 + j // n_tags)
        t_logged = time.time()
        log.flush()
        t1 = time.time()
    return {"rss_before": before["rss"], "rss_peak": sampler.peak["self"]["rss"],
            "rss_after": sampler.sample()["self"]["rss"], "anon_before": before["anon"],
            "anon_peak": sampler.peak["self"]["anon"], "t0": t0, "t_logged": t_logged, "t1": t1}


def _find_node_buffer_pid() -> int | None:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::NodeBuffer"):
            return proc.pid
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scalars", type=int, default=2_000_000, help="scalars in total")
    parser.add_argument("--workers", type=int, default=4, help="Ray tasks logging at once")
    parser.add_argument("--tags", type=int, default=10, help="distinct tags per worker")
    parser.add_argument("--no-verify", action="store_true", help="skip reading the data back")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import rayplex

    C.start_ray(num_cpus=max(args.workers, os.cpu_count() or 1))
    C.warm_workers(args.workers)
    logdir = C.temp_logdir("memory")
    notes = []
    try:
        hub = rayplex.init(logdir)
        hub.register_normal_group("mem")
        hub_pid = hub.info()["pid"]
        # Warm-up: every worker's first batch (starts the NodeBuffer, opens the event file).
        ray.get([mem_worker.remote(i, 1000, args.tags, 0) for i in range(args.workers)])
        pids = {"hub": hub_pid, "node_buffer": _find_node_buffer_pid()}
        if pids["node_buffer"] is None:
            notes.append("NodeBuffer process not found by its title: its RSS is not reported")
        per_round = args.scalars // (2 * args.workers)
        rounds = []
        with RssSampler(pids, 0.05) as sampler:
            baseline = sampler.sample()
            for r in range(2):
                t0 = time.time()
                out = ray.get([mem_worker.remote(i, per_round, args.tags, 10_000 + r * per_round)
                               for i in range(args.workers)])
                rounds.append({"after": sampler.sample(), "workers": out,
                               "seconds": time.time() - t0})
                print(f"  round {r + 1}: {per_round * args.workers:,} scalars in "
                      f"{rounds[-1]['seconds']:.1f} s; hub RSS "
                      f"{rounds[-1]['after']['hub']['rss'] / MB:.1f} MB", flush=True)
        info = hub.info()
        rayplex.shutdown()
        total = per_round * args.workers * 2
        expected = total + 1000 * args.workers
        written = None
        if not args.no_verify:
            written = C.count_event_dir(os.path.join(logdir, "tensorboard"))["summaries"]
            if written != expected:
                notes.append(f"READ-BACK MISMATCH: expected {expected:,}, found {written:,}")
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
        ray.shutdown()

    results: dict = {"scalars": total, "hub_records_written": info["records_written"],
                     "read_back": written, "processes": {}}
    rows = []
    for name in sampler.pids:
        entry = {}
        for kind in ("rss", "anon", "shmem"):
            base = baseline[name][kind]
            half = rounds[0]["after"][name][kind]
            end = rounds[1]["after"][name][kind]
            entry[kind] = {
                "baseline_mb": base / MB, "after_half_mb": half / MB, "after_all_mb": end / MB,
                "peak_mb": sampler.peak[name][kind] / MB, "growth_mb": (end - base) / MB,
                "growth_second_half_mb": (end - half) / MB,
            }
            e = entry[kind]
            rows.append([f"{name} {kind}", e["baseline_mb"], e["after_half_mb"],
                         e["after_all_mb"], e["peak_mb"], e["growth_mb"],
                         e["growth_second_half_mb"]])
        results["processes"][name] = entry
    workers = [w for rnd in rounds for w in rnd["workers"]]
    worker_entry = {
        "baseline_mb": max(w["rss_before"] for w in workers) / MB,
        "peak_mb": max(w["rss_peak"] for w in workers) / MB,
        "after_flush_mb": max(w["rss_after"] for w in workers) / MB,
        "max_peak_over_baseline_mb": max(w["rss_peak"] - w["rss_before"] for w in workers) / MB,
        "max_anon_peak_over_baseline_mb": max(w["anon_peak"] - w["anon_before"]
                                              for w in workers) / MB,
        "scalars_per_worker_round": per_round,
        "log_loop_rate_per_worker": C.median(
            [per_round / max(w["t_logged"] - w["t0"], 1e-9) for w in workers]),
    }
    results["worker"] = worker_entry
    rows.append(["worker rss (max of tasks)", worker_entry["baseline_mb"], None,
                 worker_entry["after_flush_mb"], worker_entry["peak_mb"],
                 worker_entry["max_peak_over_baseline_mb"], None])
    rows.append(["worker anon (max of tasks)", None, None, None, None,
                 worker_entry["max_anon_peak_over_baseline_mb"], None])
    C.print_table(
        ["process / figure", "baseline MB", "after 1/2 MB", "after all MB", "peak MB", "growth MB",
         "growth 2nd half MB"],
        rows, title=f"\nRSS over {total:,} scalars ({args.workers} workers, {args.tags} tags each;"
                    " worker growth = its peak over its own baseline)",
    )
    hub = results["processes"]["hub"]
    notes.append(
        f"hub RSS growth {hub['rss']['growth_mb']:.1f} MB over {total / 1e6:g}M scalars, of "
        f"which {hub['shmem']['growth_mb']:.1f} MB shared memory (Ray object-store pages the "
        f"hub mapped to read batches: bounded by the store, not by N) and "
        f"{hub['anon']['growth_mb']:.1f} MB private heap")
    first = hub["anon"]["growth_mb"] - hub["anon"]["growth_second_half_mb"]
    slope = hub["anon"]["growth_second_half_mb"] / (total / 2e6)  # MB per million, 2nd half
    projected = first + slope * (10e6 - total / 2) / 1e6
    rss_10m = hub["rss"]["growth_mb"] if total >= 10e6 else None
    notes.append(
        f"target hub RSS growth < 50 MB over 10M: private heap projected to 10M from the second "
        f"half's slope ({slope:.2f} MB per million): {projected:.1f} MB "
        f"({'meets' if projected < 50 else 'misses'}); total RSS "
        + (f"measured over 10M: {rss_10m:.1f} MB ({'meets' if rss_10m < 50 else 'misses'})"
           if rss_10m is not None else "not measured at 10M (run with --scalars 10000000)"))
    notes.append(f"worker buffer: up to {worker_entry['max_peak_over_baseline_mb']:.0f} MB above "
                 f"baseline while logging {per_round:,} scalars flat out "
                 f"({worker_entry['log_loop_rate_per_worker']:,.0f}/s per worker)")
    for note in notes:
        print("note:", note)
    default = parser.get_default("scalars")
    C.write_json("memory" if args.scalars == default else f"memory_{args.scalars:_d}", args,
                 results, notes)


if __name__ == "__main__":
    main()
