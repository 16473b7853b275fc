"""The columnar store: indexing points/s, read_series latency (cold and warm) and a SQL query,
against rayplex.read_scalars of one tag, on a generated logdir (no Ray needed).

The logdir has rayplex's layout (``tensorboard/<group>/<i>/events...``): ``--runs`` runs of
``--tags`` tags of ``--steps`` steps each, one scalar per record as rayplex writes them.

Cold means the first call in a fresh Python process (imports included, interpreter start
excluded); warm the median of repeated calls in one process.

Example:
    python benchmarks/bench_store.py                       # 200 runs x 4 tags x 5,000 steps
    python benchmarks/bench_store.py --runs 20 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import median, print_table, temp_logdir, write_json  # noqa: E402

from rayplex.tfrecord import frame  # noqa: E402


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _event(step: int, wall_time: float, tag: bytes, value: float) -> bytes:
    """A serialized ``Event`` with one ``simple_value`` (protobuf wire format by hand)."""
    val = b"\x0a" + _varint(len(tag)) + tag + b"\x15" + struct.pack("<f", value)
    summary = b"\x0a" + _varint(len(val)) + val
    return (b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
            + b"\x2a" + _varint(len(summary)) + summary)


def generate(logdir: str, runs: int, tags: int, steps: int) -> int:
    """Write the logdir; return the event files' total size."""
    import numpy as np

    rng = np.random.default_rng(0)
    total = 0
    names = [f"agent/reward/{t}".encode() if t == 0 else f"agent/metric_{t}".encode()
             for t in range(tags)]
    for run in range(runs):
        directory = os.path.join(logdir, "tensorboard", "agent", str(run))
        os.makedirs(directory)
        values = rng.normal(size=(steps, tags)).cumsum(axis=0)
        chunks = [frame(b"\x09" + struct.pack("<d", 1.7e9) + b"\x1a\x0ebrain.Event:2")]
        for step in range(steps):
            wall = 1.7e9 + step * 0.01
            for t in range(tags):
                chunks.append(frame(_event(step, wall, names[t], float(values[step, t]))))
        path = os.path.join(directory, "events.out.tfevents.1700000000.bench")
        with open(path, "wb") as f:
            f.write(b"".join(chunks))
        total += os.path.getsize(path)
    return total


_COLD = """
import json, sys, time
t = time.perf_counter()
import rayplex
df = rayplex.read_series(sys.argv[1], "agent/reward/0", buckets=1000, refresh=False)
print(json.dumps({"seconds": time.perf_counter() - t, "rows": len(df)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--tags", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5, help="warm calls (median)")
    parser.add_argument("--read-scalars-repeats", type=int, default=1)
    args = parser.parse_args()

    import rayplex

    logdir = temp_logdir("bench_store_")
    try:
        t = time.perf_counter()
        event_bytes = generate(logdir, args.runs, args.tags, args.steps)
        gen_s = time.perf_counter() - t
        points = args.runs * args.tags * args.steps

        t = time.perf_counter()
        report = rayplex.index(logdir)
        index_s = time.perf_counter() - t
        assert report.points == points, (report.points, points)
        t = time.perf_counter()
        rayplex.index(logdir)
        noop_s = time.perf_counter() - t

        cold = []
        for _ in range(3):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:2])}
            done = subprocess.run([sys.executable, "-c", _COLD, logdir], capture_output=True,
                                  text=True, check=True, env=env)
            cold.append(json.loads(done.stdout)["seconds"])

        def timed(fn):  # type: ignore[no-untyped-def]
            out = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                result = fn()
                out.append(time.perf_counter() - t0)
            return median(out), result

        warm_s, frame_all = timed(lambda: rayplex.read_series(
            logdir, "agent/reward/0", buckets=1000, refresh=False))
        assert frame_all["count"].sum() == args.runs * args.steps
        zoom_s, _ = timed(lambda: rayplex.read_series(
            logdir, "agent/reward/0", buckets=1000, steps=(args.steps // 3, args.steps // 2),
            refresh=False))
        refresh_s, _ = timed(lambda: rayplex.read_series(logdir, "agent/reward/0", buckets=1000))
        sql_s, best = timed(lambda: rayplex.sql(
            logdir, "SELECT arg_max(run, value) AS run, max(value) AS best FROM scalars "
                    "WHERE tag = 'agent/reward/0'", refresh=False))
        rs = []
        for _ in range(args.read_scalars_repeats):
            t = time.perf_counter()
            rows = rayplex.read_scalars(logdir, tag="agent/reward/0")
            rs.append(time.perf_counter() - t)
        assert len(rows) == args.runs * args.steps

        results = {
            "points": points, "event_bytes": event_bytes, "store_bytes": report.store_bytes,
            "store_ratio": report.ratio, "generate_s": gen_s, "index_s": index_s,
            "index_points_per_s": points / index_s, "index_noop_s": noop_s,
            "read_series_cold_s": median(cold), "read_series_warm_s": warm_s,
            "read_series_zoom_warm_s": zoom_s, "read_series_with_refresh_check_s": refresh_s,
            "read_series_rows": len(frame_all), "sql_argmax_s": sql_s,
            "read_scalars_one_tag_s": median(rs),
        }
        print_table(["measure", "value"], [(k, v) for k, v in results.items()],
                    title=f"store: {args.runs} runs x {args.tags} tags x {args.steps} steps")
        write_json("store", vars(args), results, notes=[
            "cold: first read_series in a fresh process (imports included)",
            "warm: median of --repeats calls in one process",
            f"sql argmax answer: {best.values.tolist()}",
        ])
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    main()
