"""What telemetry costs a node buffer: CPU time of one sample of N logging processes and the
node, as a share of one core at the default period (``RAYPLEX_TELEMETRY_S`` = 10 s).

    python benchmarks/bench_telemetry.py [--processes 64] [--repeats 50]

Side by side: rayplex's sampler (psutil, one ``oneshot`` per process) and the naive way a
monitor loop does it (a fresh ``psutil.Process`` and separate calls per figure). Medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import psutil

from rayplex.telemetry import TelemetrySampler


def naive(pids: list[int]) -> None:
    for pid in pids:
        process = psutil.Process(pid)
        process.cpu_percent(None)
        process.memory_info()
        process.num_threads()
        process.num_fds()
    psutil.cpu_percent(None)
    psutil.virtual_memory()
    psutil.net_io_counters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--period", type=float, default=10.0)
    args = parser.parse_args()
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                for _ in range(args.processes)]
    try:
        pids = [c.pid for c in children]
        sampler = TelemetrySampler(disk_path=".")
        ours, theirs = [], []
        for _ in range(args.repeats):
            t0 = time.process_time()
            sampler.processes(pids)
            sampler.node()
            ours.append(time.process_time() - t0)
            t0 = time.process_time()
            naive(pids)
            theirs.append(time.process_time() - t0)
        mine, naive_s = statistics.median(ours), statistics.median(theirs)
        print(f"{args.processes} processes, median of {args.repeats} samples (CPU time):")
        print(f"  rayplex sampler  {mine * 1e3:7.2f} ms/sample = {100 * mine / args.period:.3f}% "
              f"of one core at one sample per {args.period:g} s")
        print(f"  naive loop       {naive_s * 1e3:7.2f} ms/sample = "
              f"{100 * naive_s / args.period:.3f}% (ratio rayplex/naive {mine / naive_s:.2f})")
    finally:
        for child in children:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
