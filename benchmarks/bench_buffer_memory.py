"""Memory: a worker buffer's RSS growth while the hub is stopped, against its byte bound.

Each run is a fresh Python process (no Ray) that builds a :class:`rayplex.buffer.Buffer` of
``--bound-mib`` (8 MiB) and puts ``--volume`` times the bound of one kind of record into it
with nothing draining: 10 KB text lines, ~50 KB encoded image payloads, or scalar tuples (each
record a new object, sized as the transport is to size it). It samples its own RSS (psutil)
every few puts and reads the kernel's high-water mark (``ru_maxrss``) at the end; growth is
measured from the RSS just before the first put.

For each kind, three more runs give the context:

- ``drained``: the same puts, drained and released every 64 records (a hub keeping up): the
  fixed cost of making the records (allocator, interpreter), the "baseline" of the target;
- ``spill_replay``: ``spill``, then the hub comes back: everything is drained (2,000 records
  per batch) and released; peak over both phases, and the read-back is checked (every record
  once, in order);
- ``count_bound``: a plain deque bounded at 128 B per record, the rule the transport used
  before (8 MiB -> 65,536 records; it never filled here, so it held the whole volume).

Target: peak growth <= 2 x bound + the ``drained`` growth of the same kind.

This benchmark uses ``rayplex.buffer`` directly (a module, not the public API): it measures
the buffer alone, with no hub and no Ray.

    python benchmarks/bench_buffer_memory.py                 # ~1 minute
    python benchmarks/bench_buffer_memory.py --bound-mib 64 --volume 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from typing import Any

import _common as C

MIB = 1024 * 1024
KINDS = ("text_10kb", "image_50kb", "scalar")
POLICIES = ("spill", "drop_oldest", "block")
MODES = (*POLICIES, "spill_replay", "drained", "count_bound")
JUDGED = (*POLICIES, "spill_replay")
OLD_RECORD_ESTIMATE = 128  # what the transport counted per record before Buffer


def _maker(kind: str) -> tuple[Any, int]:
    """``(make(i) -> (item, nbytes), nominal bytes per record)`` for one kind of record."""
    if kind == "text_10kb":
        text = "y" * (10 * 1024)

        def make(i: int) -> tuple[Any, int]:
            message = text[:-8] + f"{i:08d}"  # a new 10 KB string each time
            return (3, (time.time(), 20, "learner/main", "node", i, "log", message, None)), \
                len(message) + 300
        return make, 10 * 1024 + 300
    if kind == "image_50kb":
        blob = os.urandom(50 * 1024 - 8)

        def make(i: int) -> tuple[Any, int]:
            payload = blob + i.to_bytes(8, "little")  # a new 50 KB bytes object each time
            return (1, "learner/main", "image", i, time.time(), payload), len(payload) + 200
        return make, 50 * 1024 + 200

    def make(i: int) -> tuple[Any, int]:
        return (0, "learner/main", "loss", i, time.time(), i * 0.5), 200
    return make, 200


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def child(kind: str, mode: str, bound: int, volume: float, block_timeout_s: float) -> dict:
    """One run in this (fresh) process; returns its figures."""
    import gc

    from rayplex.buffer import Buffer

    make, nominal = _maker(kind)
    count = int(volume * bound / nominal)
    every = max(1, count // 4000)
    spill_dir = tempfile.mkdtemp(prefix="rayplex-bench-spill-")
    buf = None
    old: deque[Any] = deque()
    old_limit = max(1000, bound // OLD_RECORD_ESTIMATE)
    if mode != "count_bound":
        policy = "spill" if mode in ("drained", "spill_replay") else mode
        buf = Buffer(bound, policy, spill_dir, block_timeout_s, f"bench-{kind}")
    make(0)
    gc.collect()
    base = _rss()
    peak = base
    t0 = time.perf_counter()
    for i in range(count):
        item, nbytes = make(i)
        if buf is None:
            old.append(item)
            if len(old) > old_limit:
                old.popleft()
        else:
            buf.put(item, nbytes)
            if mode == "drained" and i % 64 == 63:
                _, _, taken = buf.drain(10_000)
                buf.release(taken)
        if i % every == 0:
            peak = max(peak, _rss())
    seconds = time.perf_counter() - t0
    replay: dict[str, Any] = {}
    if mode == "spill_replay":
        assert buf is not None
        t1 = time.perf_counter()
        expected = 0
        in_order = True
        while True:
            items, _, taken = buf.drain(2000)
            if not items:
                break
            for item in items:  # every kind carries its index at the same place
                index = item[1][4] if kind == "text_10kb" else item[3]
                in_order = in_order and index == expected
                expected += 1
            buf.release(taken)
            peak = max(peak, _rss())
        replay = {"replayed_records": expected, "in_order_exactly_once": in_order
                  and expected == count, "replay_us_per_record":
                  (time.perf_counter() - t1) / max(expected, 1) * 1e6}
    end = _rss()
    peak = max(peak, end)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out: dict[str, Any] = {
        "kind": kind, "mode": mode, "records": count, "nominal_record_bytes": nominal,
        "put_mib": count * nominal / MIB, "rss_base_mib": base / MIB,
        "peak_growth_mib": (peak - base) / MIB, "end_growth_mib": (end - base) / MIB,
        "maxrss_growth_mib": (maxrss - base) / MIB, "us_per_record": seconds / count * 1e6,
        **replay,
    }
    if buf is not None:
        out["counters"] = buf.counters
        out["held_mib"] = (out["counters"]["queued_bytes"]
                           + out["counters"]["in_flight_bytes"]) / MIB
        buf.close()
    else:
        out["held_records"] = len(old)
    shutil.rmtree(spill_dir, ignore_errors=True)
    return out


def put_cost_ns() -> dict[str, float]:
    """ns per put with room (timeit, best of 15): deque.append, Buffer.put, the locked put."""
    import timeit

    from rayplex.buffer import Buffer

    item = (0, "learner/main", "loss", 1, 1.0, 0.5)
    n = 200_000

    def best(make_put: Any) -> float:
        times = []
        for _ in range(15):
            put = make_put()
            times.append(timeit.timeit("put(item, 200)", globals={"put": put, "item": item},
                                       number=n))
        return min(times) / n * 1e9

    def new_buffer() -> Buffer:
        return Buffer(1 << 40, "spill", tempfile.gettempdir(), 1.0, "timeit")

    def append_only() -> Any:
        q: deque[Any] = deque()
        return lambda it, nbytes: q.append(it)

    return {"deque_append_in_a_lambda_ns": best(append_only),
            "buffer_put_ns": best(lambda: new_buffer().put),
            "buffer_put_locked_ns": best(lambda: new_buffer()._put_locked)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bound-mib", type=float, default=8.0, help="Buffer max_bytes in MiB")
    parser.add_argument("--volume", type=float, default=12.0,
                        help="records put per run, in multiples of the bound")
    parser.add_argument("--block-timeout-s", type=float, default=0.2)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    bound = int(args.bound_mib * MIB)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], bound, args.volume,
                               args.block_timeout_s)))
        return

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(here), here, env.get("PYTHONPATH", "")) if p)
    runs = []
    for kind in KINDS:
        for mode in MODES:
            cmd = [sys.executable, os.path.abspath(__file__), "--bound-mib", str(args.bound_mib),
                   "--volume", str(args.volume), "--block-timeout-s", str(args.block_timeout_s),
                   "--child", kind, mode]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            print(f"  {kind:11s} {mode:12s} peak +{r['peak_growth_mib']:.1f} MiB", flush=True)

    rows = []
    notes = []
    verdicts = {}
    for kind in KINDS:
        by_mode = {r["mode"]: r for r in runs if r["kind"] == kind}
        baseline = by_mode["drained"]["peak_growth_mib"]
        limit = 2 * args.bound_mib + baseline
        for mode in MODES:
            r = by_mode[mode]
            c = r.get("counters", {})
            ok = r["peak_growth_mib"] <= limit if mode in JUDGED else None
            if mode == "spill_replay" and not r["in_order_exactly_once"]:
                ok = False
                notes.append(f"READ-BACK MISMATCH: {kind} replayed {r['replayed_records']:,} "
                             f"of {r['records']:,} records, or out of order")
            if ok is not None:
                verdicts[f"{kind}/{mode}"] = ok
            rows.append([kind, mode, r["records"], r["put_mib"], r["peak_growth_mib"],
                         r["maxrss_growth_mib"], r["peak_growth_mib"] / args.bound_mib,
                         c.get("spilled"), c.get("dropped"), r["us_per_record"],
                         {True: "meets", False: "MISSES", None: "-"}[ok]])
    C.print_table(["kind", "mode", "records", "put MiB", "peak +MiB", "maxrss +MiB",
                   "peak/bound", "spilled", "dropped", "us/record", "target"], rows,
                  title=f"\nRSS growth of one process putting {args.volume:g}x a "
                        f"{args.bound_mib:g} MiB bound with nothing draining")
    costs = put_cost_ns()
    print("\nput with room: " + ", ".join(f"{k} {v:.0f}" for k, v in costs.items()))
    notes.append("target: peak RSS growth <= 2 x bound + the 'drained' run's growth of the "
                 f"same kind; {sum(verdicts.values())} of {len(verdicts)} runs meet it")
    notes.append("count_bound = the old rule (128 B per record): with 10 KB / 50 KB records it "
                 "never filled, so it held everything put")
    for note in notes:
        print("note:", note)
    C.write_json("buffer_memory", args, {"bound_mib": args.bound_mib, "runs": runs,
                                         "target_met": verdicts, "put_cost": costs}, notes)


if __name__ == "__main__":
    main()
