"""The live store's lag behind the hub's commit, and what the feed costs the write path.

For each target rate (``--rates``, scalars/s; ``0`` = as fast as the workers can), W Ray tasks
log paced scalars (``add_scalars`` of ``--tags`` tags a step) for ``--seconds``, once with the
live store feed (the default) and once with ``RAYPLEX_STORE=0``, in one run. While they log,
the driver samples every 0.1 s the hub's committed bytes (``Hub.committed_sizes``, on the hub's
query threads) and the store manifest's cursors. The lag at a sample time t is t minus the time
of the latest sample whose committed bytes the store's cursors at t cover (0 when the store
has everything committed at t): how far the store's last committed point trails the hub's
commit. Quoted: median, p90 and max lag while logging, and after the workers stop, the time
until the store covers everything committed.

Write-path cost, same run, feed on vs off: the achieved scalars/s from the first log call to
the end of ``flush()``, and the workers' time per ``add_scalars`` call (median over calls).

Readers (``--readers RUNSxTAGSxSTEPS``, no Ray): on a generated logdir (``bench_store.generate``),
``rayplex export --format parquet`` and ``read_scalars`` of one tag, from the store vs from the
event files (the store moved aside), each in a fresh process: seconds and peak RSS.

    python benchmarks/bench_store_live.py                          # 100k, 200k, max; ~3 min
    python benchmarks/bench_store_live.py --rates 100000 --seconds 5
    python benchmarks/bench_store_live.py --rates --readers 200x4x5000
    python benchmarks/bench_store_live.py --compare /tmp/old-checkout --reps 4  # lag, old vs new
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time

import _common as C
import ray


@ray.remote(num_cpus=0)
def worker(hub: str, i: int, rate: float, seconds: float, tags: int, start_at: float) -> dict:
    import rayplex

    log = rayplex.get_logger(f"worker/{i}", hub=hub)
    names = [f"m{j}" for j in range(tags)]
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    step, calls = 0, []
    while (now := time.perf_counter()) - t0 < seconds:
        if rate and step * tags / rate > now - t0:  # ahead of the schedule
            time.sleep(min(0.01, step * tags / rate - (now - t0)))
            continue
        values = {name: step * 0.001 + j for j, name in enumerate(names)}
        c0 = time.perf_counter_ns()
        log.add_scalars(values, step=step)
        calls.append(time.perf_counter_ns() - c0)
        step += 1
    log.flush()
    return {"scalars": step * tags, "call_us": C.median(calls) / 1e3,
            "seconds": time.perf_counter() - t0, "rayplex_file": rayplex.__file__}


def _cursor_total(logdir: str) -> int:
    """The store's committed cursors: its snapshot *and* the records of its log (a commit
    appends to the log; the snapshot alone lags by up to a checkpoint)."""
    from rayplex.store.format import Layout, Manifest

    try:
        return sum(Manifest.load(Layout.of(logdir)).cursors.values())
    except (OSError, ValueError):
        return 0


def _committed_total(hub) -> int:
    from rayplex.actors.hub import QUERY_GROUP

    sizes = ray.get(hub.committed_sizes.options(concurrency_group=QUERY_GROUP).remote())
    return sum(v for k, v in sizes.items() if k.startswith("tensorboard/"))


def _lags(samples: list[tuple[float, int, int]]) -> list[float]:
    """``samples`` of (time, committed, cursor): the lag at each sample time."""
    out = []
    for t, committed, cursor in samples:
        if cursor >= committed:
            out.append(0.0)
            continue
        covered = [ts for ts, c, _ in samples if ts <= t and c <= cursor]
        out.append(t - max(covered) if covered else t - samples[0][0])
    return out


def run_one(rate: float, store: bool, args: argparse.Namespace) -> dict:
    import rayplex
    from rayplex.config import reload_config

    os.environ["RAYPLEX_STORE"] = "1" if store else "0"
    reload_config()
    logdir = C.temp_logdir("store-live")
    hub = rayplex.init(logdir, name=f"bench{int(time.time() * 1000) % 10**8}")
    actor = hub.actor
    hub_pid = ray.get(actor.info.remote())["pid"]
    feed_pid, cpu0 = None, {}
    if store:
        from rayplex.store.feed import store_feed_name

        feed_pid = ray.get(ray.get_actor(store_feed_name(hub.name), namespace="rayplex")
                           .info.remote())["pid"]
    for name, pid in (("hub", hub_pid), ("feed", feed_pid)):
        if pid is not None:
            cpu0[name] = C.process_cpu_s(pid)
    load0 = os.getloadavg()[0]
    start_at = time.time() + 2.0
    start_mono = time.monotonic() + 2.0
    refs = [worker.remote(hub.name, i, rate / args.workers if rate else 0, args.seconds, args.tags,
                          start_at) for i in range(args.workers)]
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            committed = _committed_total(actor)
            samples.append((time.monotonic(), committed, _cursor_total(logdir)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results = ray.get(refs)
    ended = time.time()
    ended_mono = time.monotonic()
    rayplex.flush(hub.name)
    flushed = time.time()
    stop.set()
    sampler.join()
    catch_up = float("nan")
    if store:
        final = _committed_total(actor)
        t0 = time.monotonic()
        while _cursor_total(logdir) < final and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        catch_up = time.monotonic() - t0
    feed = {}
    if store:
        from rayplex.store.feed import store_feed_name

        feed = ray.get(ray.get_actor(store_feed_name(hub.name), namespace="rayplex")
                       .info.remote())
    cpu = {name: C.process_cpu_s(pid) - cpu0[name]
           for name, pid in (("hub", hub_pid), ("feed", feed_pid)) if pid is not None}
    rayplex.shutdown(hub.name)
    scalars = sum(r["scalars"] for r in results)
    lags = _lags([s for s in samples if start_mono <= s[0] <= ended_mono])  # while logging
    shutil.rmtree(logdir, ignore_errors=True)
    return {
        "target_per_s": rate, "store": store, "scalars": scalars,
        "achieved_per_s": scalars / max(r["seconds"] for r in results),
        "end_to_end_per_s": scalars / (flushed - start_at),
        "flush_s": flushed - ended,
        "add_scalars_call_us": C.median([r["call_us"] for r in results]),
        "lag_median_s": C.median(lags) if store else None,
        "lag_p90_s": C.percentile(lags, 90) if store else None,
        "lag_max_s": max(lags) if store and lags else None,
        "catch_up_s": catch_up if store else None,
        "feed_rounds": feed.get("rounds"), "feed_segments": feed.get("segments"),
        "feed_compacted": feed.get("compacted"), "feed_cpu_s": cpu.get("feed"),
        "hub_cpu_s": cpu.get("hub"), "load_start": load0, "load_end": os.getloadavg()[0],
        "lag_samples": len(lags), "rayplex_file": results[0]["rayplex_file"],
    }


_READER = """
import json, sys, time
t = time.perf_counter()
import rayplex
from rayplex.cli import main
if sys.argv[2] == "export":
    main(["export", sys.argv[1], "--format", "parquet", "-o", sys.argv[3]])
else:
    rows = rayplex.read_scalars(sys.argv[1], tag="agent/reward/0")
# VmHWM: this process's own peak (ru_maxrss would include the parent's at fork)
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": int(peak) / 1024}))
"""


def readers(spec: str) -> list[dict]:
    import subprocess
    import sys

    from bench_store import generate

    import rayplex

    runs, tags, steps = (int(x) for x in spec.split("x"))
    logdir = C.temp_logdir("store-readers")
    size = generate(logdir, runs, tags, steps)
    rayplex.index(logdir)
    out = os.path.join(logdir, "out.parquet")
    rows = []
    for source in ("store", "events"):
        if source == "events":
            os.rename(os.path.join(logdir, "store"), os.path.join(logdir, "store.aside"))
        for what in ("export", "read_scalars"):
            done = subprocess.run([sys.executable, "-c", _READER, logdir, what, out],
                                  capture_output=True, text=True, check=True)
            row = {"points": runs * tags * steps, "event_mb": size / 2**20, "source": source,
                   "call": what, **json.loads(done.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    shutil.rmtree(logdir, ignore_errors=True)
    return rows


def compare(args: argparse.Namespace) -> list[dict]:
    """Old code (``--compare DIR``, a checkout's root) and this checkout side by side: each rep
    runs every rate with the feed on, in a fresh process (and Ray) per code, alternating old,
    new, new, old, ... so that the machine's load hits both alike."""
    import subprocess
    import sys
    import tempfile

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    codes = {"old": os.path.abspath(args.compare), "new": here}
    rows: list[dict] = []
    for rep in range(args.reps):
        for label in (("old", "new") if rep % 2 == 0 else ("new", "old")):
            out = tempfile.mktemp(prefix="rayplex-bench-live-", suffix=".json")
            cmd = [sys.executable, os.path.abspath(__file__), "--store-only", "--json-out", out,
                   "--seconds", str(args.seconds), "--workers", str(args.workers),
                   "--tags", str(args.tags), "--rates", *(str(r) for r in args.rates)]
            env = {**os.environ, "PYTHONPATH": codes[label]}
            subprocess.run(cmd, env=env, cwd=codes[label], check=True, timeout=1800)
            with open(out) as f:
                got = json.load(f)
            os.unlink(out)
            for row in got:
                row.update(code=label, rep=rep)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _median_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return C.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="*", default=[100_000, 200_000, 0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--readers", default="", metavar="RUNSxTAGSxSTEPS")
    parser.add_argument("--store-only", action="store_true",
                        help="only the runs with the feed on (no write-path comparison)")
    parser.add_argument("--compare", default="", metavar="OLD_CHECKOUT",
                        help="lag of that checkout's code vs this one's, alternating, --reps each")
    parser.add_argument("--json-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        rows = compare(args)
        table = []
        for rate in args.rates:
            for code in ("old", "new"):
                mine = [r for r in rows if r["target_per_s"] == rate and r["code"] == code]
                table.append([rate or "max", code, len(mine),
                              *(_median_of(mine, k) for k in (
                                  "achieved_per_s", "lag_median_s", "lag_p90_s", "lag_max_s",
                                  "catch_up_s", "feed_cpu_s", "hub_cpu_s", "load_start"))])
        C.print_table(["target/s", "code", "runs", "achieved/s", "lag median s", "lag p90 s",
                       "lag max s", "catch-up s", "feed CPU s", "hub CPU s", "load"], table,
                      title="live store lag, old vs new code (medians over runs)")
        C.write_json("store_live_compare", args, rows)
        return
    if args.readers:
        found = readers(args.readers)
        C.print_table(["points", "source", "call", "seconds", "peak RSS MB"],
                      [[r["points"], r["source"], r["call"], r["seconds"], r["peak_rss_mb"]]
                       for r in found], title="export / read_scalars: store vs event files")
        C.write_json("store_readers", args, found)
    if not args.rates:
        return
    C.start_ray()
    rows = []
    for rate in args.rates:
        for _ in range(args.reps):
            for store in ((True,) if args.store_only else (True, False)):
                row = run_one(rate, store, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f)
        return
    headers = ["target/s", "store", "achieved/s", "end-to-end/s", "add_scalars us",
               "lag median s", "lag p90 s", "lag max s", "catch-up s", "feed CPU s"]
    C.print_table(headers, [[r["target_per_s"] or "max", r["store"], r["achieved_per_s"],
                             r["end_to_end_per_s"], r["add_scalars_call_us"], r["lag_median_s"],
                             r["lag_p90_s"], r["lag_max_s"], r["catch_up_s"], r["feed_cpu_s"]]
                            for r in rows],
                  title="live store: lag behind the hub's commit; write path with the feed on/off")
    C.write_json("store_live", args, rows)


if __name__ == "__main__":
    main()
