"""Latency: ``flush()`` round trips on an idle cluster, and log call -> record on disk.

1. ``flush()`` on an idle cluster, ``--flushes`` times: right after logging one scalar (a real
   round trip worker -> NodeBuffer -> hub -> disk -> ack) and with nothing pending. Measured
   in the driver and in a Ray actor (a typical worker process).
2. Log-to-disk at default settings (no flush): log one scalar, then poll the run's event file
   every millisecond until a complete record with that step is in it. Calls are spaced by a
   random pause so that they land anywhere in the background thread's flush interval.

    python benchmarks/bench_latency.py                       # ~1.5 minutes
    python benchmarks/bench_latency.py --flushes 1000 --disk-samples 100
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import struct
import time
import warnings

import _common as C
import ray


def flush_samples(log, n: int, step0: int) -> dict[str, list[float]]:
    after_one, empty = [], []
    for i in range(n):
        log.add_scalar("rtt", float(i), step0 + i)
        t0 = time.perf_counter()
        log.flush()
        after_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        log.flush()
        empty.append(time.perf_counter() - t0)
    return {"after one scalar": after_one, "nothing pending": empty}


def _has_step(data: bytes, step: int) -> bool:
    """True if ``data`` (a run of TFRecords) holds a complete event with this step."""
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        start, stop = pos + 12, pos + 12 + length
        if stop + 4 > len(data):
            return False
        payload = data[start:stop]
        # wall_time (0x09 + 8 bytes), then step (0x10 + varint)
        if len(payload) > 10 and payload[0] == 0x09 and payload[9] == 0x10:
            value, shift, p = 0, 0, 10
            while True:
                b = payload[p]
                value |= (b & 0x7F) << shift
                p += 1
                shift += 7
                if not b & 0x80:
                    break
            if value == step:
                return True
        pos = stop + 4
    return False


def disk_samples(log, run_dir: str, n: int, step0: int, max_pause_s: float,
                 timeout_s: float = 30.0) -> list[float]:
    """Seconds from ``add_scalar`` returning to its record being complete in the event file."""
    out = []
    rng = random.Random(step0)
    for i in range(n):
        time.sleep(rng.uniform(0.0, max_pause_s))
        files = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))
        path = files[-1]
        offset = os.path.getsize(path)
        step = step0 + i
        log.add_scalar("disk", float(i), step)
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        while True:
            if os.path.getsize(path) > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    if _has_step(f.read(), step):
                        break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"scalar at step {step} not on disk after {timeout_s} s")
            time.sleep(0.001)
        out.append(time.perf_counter() - t0)
    return out


@ray.remote(num_cpus=0)
class LatencyProbe:
    """Measures the same things from inside a Ray actor."""

    def __init__(self) -> None:
        import rayplex

        self.log = rayplex.get_logger("lat/actor")
        self.log.add_scalar("warm", 0.0, 0)
        self.log.flush()

    def ready(self) -> bool:
        return True

    def flushes(self, n: int) -> dict[str, list[float]]:
        return flush_samples(self.log, n, 1_000_000)

    def disk(self, run_dir: str, n: int, max_pause_s: float) -> list[float]:
        return disk_samples(self.log, run_dir, n, 2_000_000, max_pause_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flushes", type=int, default=200, help="flush() samples per kind")
    parser.add_argument("--disk-samples", type=int, default=20,
                        help="log-to-disk samples per process (each takes up to one flush "
                             "interval)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import rayplex

    interval = float(os.environ.get("RAYPLEX_FLUSH_INTERVAL_S") or 1.0)
    C.start_ray(num_cpus=os.cpu_count())
    logdir = C.temp_logdir("latency")
    results: dict = {"flush": {}, "log_to_disk": {}, "flush_interval_s": interval}
    rows = []
    try:
        hub = rayplex.init(logdir)
        hub.register_normal_group("lat")  # one run directory, tensorboard/lat
        log = rayplex.get_logger("lat/driver")
        log.add_scalar("warm", 0.0, 0)
        log.flush()  # starts the NodeBuffer and opens the event file
        probe = LatencyProbe.remote()
        ray.get(probe.ready.remote())

        for where, samples in (("driver", flush_samples(log, args.flushes, 10)),
                               ("actor", ray.get(probe.flushes.remote(args.flushes)))):
            for kind, values in samples.items():
                ms = [v * 1e3 for v in values]
                entry = {"n": len(ms), "median_ms": C.median(ms),
                         "p99_ms": C.percentile(ms, 99), "max_ms": max(ms)}
                results["flush"][f"{where}, {kind}"] = entry
                rows.append([f"flush() in {where}, {kind}", entry["n"], entry["median_ms"],
                             entry["p99_ms"], entry["max_ms"]])
        print("  flush done", flush=True)

        run_dir = os.path.join(logdir, "tensorboard", "lat")
        driver_disk = disk_samples(log, run_dir, args.disk_samples, 100_000, interval)
        actor_disk = ray.get(probe.disk.remote(run_dir, args.disk_samples, interval))
        for where, values in (("driver", driver_disk), ("actor", actor_disk)):
            ms = [v * 1e3 for v in values]
            entry = {"n": len(ms), "median_ms": C.median(ms), "p99_ms": C.percentile(ms, 99),
                     "max_ms": max(ms)}
            results["log_to_disk"][where] = entry
            rows.append([f"log call -> on disk, {where}", entry["n"], entry["median_ms"],
                         entry["p99_ms"], entry["max_ms"]])
        ray.kill(probe)
    finally:
        rayplex.shutdown()
        shutil.rmtree(logdir, ignore_errors=True)
        ray.shutdown()

    C.print_table(["measure", "n", "median ms", "p99 ms", "max ms"], rows,
                  title=f"\nlatency on an idle cluster (flush interval {interval:g} s)")
    flush_p99 = max(e["p99_ms"] for k, e in results["flush"].items() if "after one" in k)
    flush_med = max(e["median_ms"] for k, e in results["flush"].items() if "after one" in k)
    disk_max = max(e["max_ms"] for e in results["log_to_disk"].values())
    verdict = ("meets" if flush_p99 <= 20 else
               "median meets, p99 misses" if flush_med <= 20 else "misses")
    notes = [
        f"target flush <= 20 ms: median {flush_med:.1f} ms, p99 {flush_p99:.1f} ms ({verdict})",
        f"target log-to-disk <= 1.5 s: worst {disk_max / 1e3:.2f} s "
        f"({'meets' if disk_max <= 1500 else 'misses'})",
    ]
    for note in notes:
        print("note:", note)
    C.write_json("latency", args, results, notes)


if __name__ == "__main__":
    main()
