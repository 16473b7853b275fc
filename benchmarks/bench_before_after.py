"""Before/after in one invocation: ``add_scalar`` cost and end-to-end scalars/s, old vs HEAD.

Checks out the old revision and HEAD as two detached ``git worktree``s in a temporary
directory (the main checkout's files are not touched, and other people's uncommitted edits in
it are not measured), then runs *this checkout's* ``bench_call_overhead.py --skip-peers`` and
``bench_throughput.py --only rayplex`` against each (``PYTHONPATH`` and the working directory
point at the worktree; the scripts only use rayplex's public API). Runs alternate
old, HEAD, HEAD, old, ... so that a change in the machine's load hits both sides alike.
Every subprocess's JSON records which ``rayplex/__init__.py`` it imported, in the driver and
in the Ray workers; a run that imported the wrong checkout stops the benchmark.
The worktrees are removed at the end.

    python benchmarks/bench_before_after.py                       # eadffa9 vs HEAD, ~3 minutes
    python benchmarks/bench_before_after.py --old eadffa9 --rounds 3 --scalars 50000
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
from typing import Any

import _common as C

HERE = os.path.dirname(os.path.abspath(__file__))
SUBPROCESS_TIMEOUT_S = 900.0


def _git(*args: str, cwd: str = HERE) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def add_worktree(rev: str, parent: str, label: str) -> tuple[str, str]:
    """A detached worktree of ``rev`` under ``parent``; returns (path, full commit)."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = os.path.join(parent, label)
    _git("worktree", "add", "--detach", path, commit)
    return path, commit


def remove_worktree(path: str) -> None:
    try:
        _git("worktree", "remove", "--force", path)
    except subprocess.CalledProcessError as exc:
        print(f"could not remove worktree {path}: {exc.stderr}", flush=True)


def run_script(script: str, script_args: list[str], code_root: str, result_name: str,
               log_path: str) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` with rayplex imported from ``code_root``; its JSON payload."""
    results_dir = tempfile.mkdtemp(prefix="rayplex-bench-ba-json-")
    env = dict(os.environ)
    env["PYTHONPATH"] = code_root
    env["RAYPLEX_BENCH_RESULTS_DIR"] = results_dir
    cmd = [sys.executable, os.path.join(HERE, script), *script_args]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        with open(log_path, "a") as log:
            log.write(f"\n$ cd {code_root} && PYTHONPATH={code_root} {' '.join(cmd)}\n")
            log.flush()
            subprocess.run(cmd, cwd=code_root, env=env, stdout=log, stderr=subprocess.STDOUT,
                           timeout=SUBPROCESS_TIMEOUT_S, check=True)
        with open(os.path.join(results_dir, f"{result_name}.json")) as f:
            payload: dict[str, Any] = json.load(f)
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)
    payload["loadavg_1min_before"] = round(load, 2)
    payload["wall_s"] = round(time.perf_counter() - t0, 1)
    imported = [payload["machine"].get("rayplex_file") or ""]
    for run in payload["results"].get("rayplex", {}).get("runs", []) \
            if isinstance(payload["results"], dict) else []:
        imported += run.get("worker_rayplex_files", [])
    wrong = [p for p in imported if not os.path.realpath(p).startswith(
        os.path.realpath(code_root) + os.sep)]
    if wrong:
        raise RuntimeError(f"{script} against {code_root} imported rayplex from {wrong}")
    return payload


def one_round(label: str, root: str, args: argparse.Namespace, log_path: str,
              out: dict[str, dict[str, list[Any]]]) -> None:
    print(f"  {label}: bench_call_overhead ...", end=" ", flush=True)
    co = run_script("bench_call_overhead.py",
                    ["--calls", str(args.calls), "--skip-peers"], root, "call_overhead", log_path)
    rows = {row["name"]: row for row in co["results"]}
    out[label]["call_overhead"].append({
        "loadavg_1min_before": co["loadavg_1min_before"],
        "rows": {name: {"median_us": r["median_us"], "p99_us": r["p99_us"],
                        "mean_us": r["mean_us"],
                        "untimed_loop_calls_per_s": r["untimed_loop_calls_per_s"]}
                 for name, r in rows.items()},
    })
    print(f"add_scalar median {rows['rayplex add_scalar(float)']['median_us']:.2f} us; "
          f"bench_throughput ...", end=" ", flush=True)
    tp = run_script("bench_throughput.py",
                    ["--only", "rayplex", "--workers", str(args.workers), "--scalars",
                     str(args.scalars), "--repeats", str(args.repeats)],
                    root, "throughput", log_path)
    rp = tp["results"]["rayplex"]
    runs = [{"scalars_per_s": r["scalars_per_s"], "seconds": r["seconds"],
             "log_loop_seconds": r["log_loop_seconds"], "lost": r["lost"],
             "hub_cpu_us_per_scalar": r["hub_cpu_s"] * 1e6 / r["expected"]}
            for r in rp["runs"]]
    out[label]["throughput"].append({"loadavg_1min_before": tp["loadavg_1min_before"],
                                     "runs": runs})
    print(", ".join(f"{r['scalars_per_s']:,.0f}/s" for r in runs), flush=True)


def summarize(side: dict[str, list[Any]]) -> dict[str, Any]:
    calls: dict[str, list[float]] = {}
    for inv in side["call_overhead"]:
        for name, row in inv["rows"].items():
            calls.setdefault(name, []).append(row["median_us"])
    runs = [r for inv in side["throughput"] for r in inv["runs"]]
    # The first run of each invocation also pays for importing rayplex in 8 fresh worker
    # processes when that takes longer than the start delay (a loaded machine): shown apart.
    later = [r for inv in side["throughput"] for r in inv["runs"][1:]]
    return {
        "scalars_per_s_median_without_first": C.median([r["scalars_per_s"] for r in later]),
        "call_median_us": {name: C.median(v) for name, v in calls.items()},
        "call_median_us_each": calls,
        "scalars_per_s_median": C.median([r["scalars_per_s"] for r in runs]),
        "scalars_per_s_each": [r["scalars_per_s"] for r in runs],
        "seconds_median": C.median([r["seconds"] for r in runs]),
        "log_loop_seconds_median": C.median([r["log_loop_seconds"] for r in runs]),
        "hub_cpu_us_per_scalar_median": C.median([r["hub_cpu_us_per_scalar"] for r in runs]),
        "lost_any": any(r["lost"] != 0 for r in runs),
    }


def _spread(values: list[float]) -> str:
    def fmt(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 1000 else C._fmt(x)

    return f"{fmt(min(values))}–{fmt(max(values))}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", default="eadffa9", help="the revision before the change")
    parser.add_argument("--new", default="HEAD", help="the revision after it")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds; each runs both scripts against both revisions, in the "
                             "order old,new then new,old (ABBA)")
    parser.add_argument("--calls", type=int, default=200_000,
                        help="timed add_scalar calls per bench_call_overhead run")
    parser.add_argument("--workers", type=int, default=8, help="bench_throughput tasks")
    parser.add_argument("--scalars", type=int, default=50_000, help="scalars per task")
    parser.add_argument("--repeats", type=int, default=3,
                        help="bench_throughput runs per invocation (all are pooled)")
    parser.add_argument("--report-only", metavar="JSON", default=None,
                        help="re-summarize the raw numbers of an earlier before_after.json "
                             "(no measurement)")
    args = parser.parse_args()
    if args.report_only:
        with open(args.report_only) as f:
            saved = json.load(f)
        for key, value in saved["args"].items():
            if key != "report_only":
                setattr(args, key, value)
        report(args, saved["results"]["commits"], saved["results"]["raw"])
        return

    parent = tempfile.mkdtemp(prefix="rayplex-before-after-")
    log_path = os.path.join(parent, "subprocess.log")
    trees: dict[str, str] = {}
    commits: dict[str, str] = {}
    out: dict[str, dict[str, list[Any]]] = {
        label: {"call_overhead": [], "throughput": []} for label in ("old", "new")}
    try:
        for label, rev in (("old", args.old), ("new", args.new)):
            trees[label], commits[label] = add_worktree(rev, parent, label)
            print(f"{label}: {rev} = {commits[label][:10]} at {trees[label]}", flush=True)
        print(f"subprocess output: {log_path}", flush=True)
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for label in order:
                one_round(label, trees[label], args, log_path, out)
    finally:
        for path in trees.values():
            remove_worktree(path)
        kept = os.path.join(tempfile.gettempdir(), "rayplex-before-after-subprocess.log")
        if os.path.exists(log_path):
            shutil.copyfile(log_path, kept)
            print(f"subprocess output kept in {kept}", flush=True)
        shutil.rmtree(parent, ignore_errors=True)

    report(args, commits, out)


def report(args: argparse.Namespace, commits: dict[str, str],
           out: dict[str, dict[str, list[Any]]]) -> None:
    """Summarize both sides, print the table, write ``results/before_after.json``."""
    old, new = summarize(out["old"]), summarize(out["new"])
    rows: list[list[Any]] = []
    for name in new["call_median_us"]:
        if name in old["call_median_us"]:
            o, n = old["call_median_us"][name], new["call_median_us"][name]
            rows.append([f"{name} median µs", o, n, C.ratio(n, o),
                         _spread(old["call_median_us_each"][name]),
                         _spread(new["call_median_us_each"][name])])
    rows.append([f"end-to-end scalars/s ({args.workers}×{args.scalars:,})",
                 old["scalars_per_s_median"], new["scalars_per_s_median"],
                 C.ratio(new["scalars_per_s_median"], old["scalars_per_s_median"]),
                 _spread(old["scalars_per_s_each"]), _spread(new["scalars_per_s_each"])])
    rows.append(["… without each invocation's first run", old["scalars_per_s_median_without_first"],
                 new["scalars_per_s_median_without_first"],
                 C.ratio(new["scalars_per_s_median_without_first"],
                         old["scalars_per_s_median_without_first"]), "", ""])
    rows.append(["s from first call to on disk", old["seconds_median"], new["seconds_median"],
                 C.ratio(new["seconds_median"], old["seconds_median"]), "", ""])
    rows.append(["hub CPU µs/scalar", old["hub_cpu_us_per_scalar_median"],
                 new["hub_cpu_us_per_scalar_median"],
                 C.ratio(new["hub_cpu_us_per_scalar_median"],
                         old["hub_cpu_us_per_scalar_median"]), "", ""])
    n_calls = len(out["new"]["call_overhead"])
    n_tp = len(new["scalars_per_s_each"])
    C.print_table(
        ["measure (median)", f"old {commits['old'][:7]}", f"new {commits['new'][:7]}",
         "new/old", "old range", "new range"], rows,
        title=f"\nbefore/after: call cost = median of {n_calls} invocation medians "
              f"({args.calls:,} timed calls each); throughput = median of {n_tp} runs",
    )
    notes = [
        f"old = {args.old} ({commits['old']}), new = {args.new} ({commits['new']}); both "
        "measured from clean worktrees with this checkout's benchmark scripts",
        "rounds alternate old,new / new,old; each side's numbers are pooled over all rounds",
        f"lost data: old {old['lost_any']}, new {new['lost_any']}",
        "loadavg (1 min) before each subprocess: " + ", ".join(
            f"{label} {inv['loadavg_1min_before']}" for label in ("old", "new")
            for kind in ("call_overhead", "throughput") for inv in out[label][kind]),
    ]
    for note in notes:
        print("note:", note)
    C.write_json("before_after", args,
                 {"commits": commits, "old": old, "new": new, "raw": out}, notes)


if __name__ == "__main__":
    main()
