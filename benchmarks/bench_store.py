"""The columnar store at issue 23's scale, side by side in one run (no Ray needed).

Three logdirs with rayplex's layout (``tensorboard/<group>/<run>/events...``), written with
rayplex's own encoder (:func:`rayplex.event_bytes.scalar_records`, the hub's path), values in
[0, 1) with one planted spike (1e6) in one run at one step of the first tag:

- **wide**: 1,000 workers x 4 tags x 5,000 steps (20M points)
- **long**: 16 runs x 2 tags x 1,000,000 steps (32M points)
- **many**: 3,000 Tune-like trials x 2 tags x 300 steps (1.8M points)

``--scale`` multiplies the runs of wide and many and the steps of long (1 = the issue's
scale). For each logdir: indexing (points/s, wall and per CPU second), store size /
event-file size, ``read_series`` of one tag over all runs at 1,000 buckets cold (a fresh process:
the first call, and the process's imports too), warm and zoomed to 1% of the steps
(medians), whether the spike's bucket has max = 1e6 at each zoom and in one run's chart
(wall and CPU seconds, the latter unaffected by a shared machine's load); ``rayplex ls``
with the store and without it; then, each in its own process with a time limit:
``rayplex.read_scalars`` of that tag (today's reader), tbparse, and TensorBoard's own data
loader (``EventMultiplexer`` with its default sampling: time until all runs are served,
points per series, spike kept or not), with peak RSS.

Example:
    python benchmarks/bench_store.py --scale 0.05
    python benchmarks/bench_store.py --scale 1 --baselines read_scalars,tensorboard
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import median, print_table, temp_logdir, write_json  # noqa: E402

SPIKE = 1e6


@dataclass(frozen=True)
class Spec:
    """One logdir: ``runs`` runs of ``group``, ``tags`` x ``steps`` points each."""

    name: str
    group: str
    runs: int
    tags: list[str]
    steps: int

    @property
    def points(self) -> int:
        return self.runs * len(self.tags) * self.steps

    @property
    def spike(self) -> tuple[str, int]:
        """(run, step) of the planted spike (in the first tag)."""
        return f"{self.group}/{self.runs // 2}", (self.steps * 2) // 3

    def run_dir(self, i: int) -> str:
        return f"{self.group}/{i}"


def specs(scale: float) -> dict[str, Spec]:
    def n(x: float) -> int:
        return max(1, round(x * scale))

    return {
        "wide": Spec("wide", "agent", n(1000), ["agent/reward/0", "agent/metric_1",
                                                "agent/metric_2", "agent/metric_3"], 5000),
        "long": Spec("long", "long", 16, ["long/loss", "long/reward"], n(1_000_000)),
        "many": Spec("many", "tune", n(3000), ["tune/reward", "tune/loss"], 300),
    }


def generate(logdir: str, spec: Spec, block: int = 200_000) -> int:
    """Write the logdir's event files (rayplex's encoder); return their total size."""
    import numpy as np

    from rayplex.event_bytes import file_version_record, scalar_records, scalar_tail, tag_header

    rng = np.random.default_rng(0)
    tails = [scalar_tail(tag_header(t)) for t in spec.tags]
    k = len(spec.tags)
    spike_run, spike_step = spec.spike
    total = 0
    for i in range(spec.runs):
        directory = os.path.join(logdir, "tensorboard", spec.run_dir(i))
        os.makedirs(directory)
        path = os.path.join(directory, "events.out.tfevents.1700000000.bench")
        with open(path, "wb") as f:
            f.write(file_version_record(1.7e9))
            for lo in range(0, spec.steps, max(1, block // k)):
                hi = min(spec.steps, lo + max(1, block // k))
                steps = np.repeat(np.arange(lo, hi, dtype=np.int64), k)
                values = rng.random(len(steps))
                if spec.run_dir(i) == spike_run and lo <= spike_step < hi:
                    values[(spike_step - lo) * k] = SPIKE
                tail_index = np.tile(np.arange(k), hi - lo)
                f.write(scalar_records(tails, tail_index, 1.7e9 + steps * 0.01, steps, values))
        total += os.path.getsize(path)
    return total


# ----------------------------------------------------------------------------- children

_COLD = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import rayplex
t1, c1 = time.perf_counter(), time.process_time()
df = rayplex.read_series(sys.argv[1], sys.argv[2], buckets=1000, refresh=False)
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "call_s": t2 - t1, "with_imports_s": t2 - t0,
                  "call_cpu_s": c2 - c1, "with_imports_cpu_s": c2 - c0, "rows": len(df)}))
"""


def _baseline(name: str, logdir: str, tag: str, spike_run: str) -> dict[str, Any]:
    """Run one reader (in this child process); what it served."""
    t = time.perf_counter()
    if name == "read_scalars":
        import rayplex

        rows = rayplex.read_scalars(logdir, tag=tag)
        seconds = time.perf_counter() - t
        values = [r.value for r in rows if r.run == spike_run]
        return {"seconds": seconds, "points": len(rows), "spike": SPIKE in values}
    if name == "tbparse":
        from tbparse import SummaryReader

        df = SummaryReader(os.path.join(logdir, "tensorboard"), pivot=False,
                           extra_columns={"dir_name"}).scalars
        seconds = time.perf_counter() - t
        df = df[df.tag == tag]
        spike = bool((df[df.dir_name == spike_run].value == SPIKE).any())
        return {"seconds": seconds, "points": len(df), "spike": spike}
    if name == "tensorboard":
        from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

        mux = pem.EventMultiplexer()  # TensorBoard's defaults: 1,000 sampled scalars a series
        mux.AddRunsFromDirectory(os.path.join(logdir, "tensorboard"))
        mux.Reload()
        seconds = time.perf_counter() - t
        runs = mux.Runs()
        t = time.perf_counter()
        served = [len(mux.Tensors(run, tag)) for run in runs if tag in runs[run].get(
            "tensors", [])]
        fetch_s = time.perf_counter() - t
        t = time.perf_counter()
        chart = len(mux.Tensors(spike_run, tag))
        chart_s = time.perf_counter() - t
        import numpy as np
        from tensorboard.util import tensor_util

        spike = any(float(np.asarray(tensor_util.make_ndarray(e.tensor_proto))) == SPIKE
                    for e in mux.Tensors(spike_run, tag))
        return {"seconds": seconds, "fetch_tag_all_runs_s": fetch_s, "one_chart_s": chart_s,
                "chart_points": chart, "points": sum(served), "runs": len(served),
                "points_per_series": median([float(s) for s in served]), "spike": spike}
    raise ValueError(name)


def _child(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run this script's ``--child`` mode; its JSON plus peak RSS, or why it did not finish."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:2])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *argv],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak > before:
        out["peak_rss_mb"] = peak / 1024
    return out


# ----------------------------------------------------------------------------- main


def _spike_seen(frame: Any, spec: Spec) -> bool:
    run, step = spec.spike
    hit = frame[(frame.run == run) & (frame.step_lo <= step) & (frame.step_hi >= step)]
    return len(hit) == 1 and float(hit["max"].iloc[0]) == SPIKE


def _ls_seconds(logdir: str) -> float:
    """Wall time of ``rayplex ls`` in this process (output discarded)."""
    import contextlib
    import io

    from rayplex.cli import main as cli

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        cli(["ls", logdir])
    return time.perf_counter() - t


def bench_one(spec: Spec, args: argparse.Namespace) -> dict[str, Any]:
    import rayplex

    logdir = temp_logdir(f"bench_store_{spec.name}_")
    try:
        t = time.perf_counter()
        event_bytes = generate(logdir, spec)
        gen_s = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        report = rayplex.index(logdir)
        index_s, index_cpu_s = time.perf_counter() - t, time.process_time() - cpu
        assert report.points == spec.points, (report.points, spec.points)
        tag = spec.tags[0]
        out: dict[str, Any] = {
            "points": spec.points, "runs": spec.runs, "generate_s": gen_s,
            "event_mb": event_bytes / 1e6, "store_mb": report.store_bytes / 1e6,
            "store_ratio": report.ratio, "index_s": index_s,
            "index_points_per_s": spec.points / index_s,
            "index_points_per_cpu_s": spec.points / index_cpu_s,
        }
        cold = [_child(["cold", logdir, tag], args.timeout) for _ in range(args.cold)]
        for key, name in (("call_s", "s"), ("with_imports_s", "with_imports_s"),
                          ("call_cpu_s", "cpu_s"), ("with_imports_cpu_s", "with_imports_cpu_s"),
                          ("import_s", "import_rayplex_s")):
            out[f"read_series_cold_{name}"] = median([c[key] for c in cold if key in c])

        def timed(name: str, **kw: Any) -> Any:
            """Median wall and CPU seconds of ``--repeats`` calls (CPU: what a core needs, which
            a shared machine's load does not inflate as it does wall time); the last frame."""
            times, cpu, frame = [], [], None
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                frame = rayplex.read_series(logdir, tag, buckets=1000, refresh=False, **kw)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            out[f"{name}_s"], out[f"{name}_cpu_s"] = median(times), median(cpu)
            return frame

        frame = timed("read_series_warm")
        chart = timed("read_series_one_chart", runs=spec.spike[0])
        spike_ok_chart = _spike_seen(chart, spec)
        assert frame["count"].sum() == spec.runs * spec.steps
        out["rows"] = len(frame)
        spike_ok = [_spike_seen(frame, spec)]
        _, step = spec.spike
        width = max(1, spec.steps // 100)
        lo = min(max(0, step - width // 2), spec.steps - width)
        zoomed = timed("read_series_zoom_1pct", steps=(lo, lo + width - 1))
        spike_ok.append(_spike_seen(zoomed, spec))
        for b in (1, 7, 100, 5000):
            spike_ok.append(_spike_seen(rayplex.read_series(
                logdir, tag, buckets=b, refresh=False), spec))
        out["spike_kept_every_zoom"] = all(spike_ok) and spike_ok_chart
        out["ls_store_s"] = _ls_seconds(logdir)
        shutil.move(os.path.join(logdir, "store"), logdir + "-store")
        out["ls_event_files_s"] = _ls_seconds(logdir)
        shutil.move(logdir + "-store", os.path.join(logdir, "store"))
        t = time.perf_counter()
        rayplex.read_series(logdir, tag, buckets=1000)  # refresh=True: stats the event files
        out["read_series_with_refresh_check_s"] = time.perf_counter() - t
        for name in args.baselines:
            got = _child(["baseline", name, logdir, tag, spec.spike[0]], args.timeout)
            for key, value in got.items():
                out[f"{name}_{key}"] = value
        return out
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        if sys.argv[2] == "cold":
            sys.argv = ["cold", *sys.argv[3:]]
            exec(_COLD)  # noqa: S102 - our own fixed snippet
            return
        print(json.dumps(_baseline(*sys.argv[3:7])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.05, help="1 = the issue's scale")
    parser.add_argument("--logdirs", default="wide,long,many")
    parser.add_argument("--baselines", default="read_scalars,tbparse,tensorboard",
                        help="comma-separated; '' for none")
    parser.add_argument("--repeats", type=int, default=7, help="warm calls (median)")
    parser.add_argument("--cold", type=int, default=3, help="fresh processes (median)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per child process, s")
    args = parser.parse_args()
    args.baselines = [b for b in args.baselines.split(",") if b]
    load = os.getloadavg()
    chosen = specs(args.scale)
    results = {name: bench_one(chosen[name], args) for name in args.logdirs.split(",")}
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print_table(["measure", *results], [(k, *(r.get(k, "") for r in results.values()))
                                        for k in keys],
                title=f"store, scale {args.scale} (load avg at start {load[0]:.1f}, "
                      f"end {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    write_json("store", {**vars(args), "load_start": load, "load_end": os.getloadavg()},
               results, notes=[
                   "cold: first read_series in a fresh process (call alone; and with `import "
                   "rayplex`); wall and CPU seconds of the child",
                   "warm / zoom: median of --repeats calls in one process",
                   "tensorboard: EventMultiplexer, default size guidance (sampled series)",
               ])


if __name__ == "__main__":
    main()
