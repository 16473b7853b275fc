"""Peak RSS of a worker, the node buffer and the hub while the hub is stopped (SIGSTOP).

For each kind of record (10 KB text lines, 64×64×3 noise images, scalars) and each overflow
policy (``spill``, ``drop_oldest``, ``block``), a fresh experiment is started, a worker (a Ray
actor with ``RAYPLEX_MAX_BUFFER_MB``, default 8, and ``RAYPLEX_OVERFLOW`` in its runtime env)
logs one record of every kind to a side logger and flushes (imports, session, node buffer all
set up), the hub is stopped with SIGSTOP, and the worker logs ``--volume`` (default 12) times
its bound of records, then stays idle for ``--hold-s``. A thread in the driver samples the RSS
of the worker, the node buffer and the hub every 20 ms (``/proc/<pid>/status``: total, private
``RssAnon`` and the shared-memory pages ``RssShmem`` of Ray's object store). Then the hub gets
SIGCONT, the worker flushes, and what arrived is counted from the files (``read_scalars``,
the event files, the client's text log) against what the worker says it dropped.

A ``baseline`` scenario does the same but logs nothing: its growth is the fixed part (the flush
thread, Ray's own buffers) that the target allows on top of 2× the bound.

    python benchmarks/bench_rss_stopped_hub.py                 # ~8 minutes
    python benchmarks/bench_rss_stopped_hub.py --kinds text --modes spill --hold-s 30
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import threading
import time
import warnings
from typing import Any

import _common as C
import ray

MiB = 2**20
TEXT_CHARS = 10_000
IMAGE_SHAPE = (64, 64, 3)
# What the worker's buffer charges per record (rayplex.items.nbytes: payload + 200 for an
# image, message + 300 for a text line, 200 for a scalar); used only to size the volume.
NOMINAL_BYTES = {"text": TEXT_CHARS + 300, "image": 12_300 + 200, "scalar": 200}
GROUP = "rss"


def _memory(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            name = {"VmRSS": "rss", "RssAnon": "anon", "RssShmem": "shmem"}.get(key)
            if name is not None:
                out[name] = int(value.split()[0]) * 1024
    return out


class Sampler:
    """Peak memory figures of some processes, per phase, sampled in a thread."""

    def __init__(self, pids: dict[str, int], period_s: float = 0.02) -> None:
        self.pids = pids
        self.period_s = period_s
        self.phase = "before"
        self.peaks: dict[str, dict[str, dict[str, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, dict[str, int]]:
        now: dict[str, dict[str, int]] = {}
        for name, pid in self.pids.items():
            try:
                mem = _memory(pid)
            except OSError:
                continue
            now[name] = mem
            peak = self.peaks.setdefault(self.phase, {}).setdefault(name, {})
            for key, value in mem.items():
                peak[key] = max(peak.get(key, 0), value)
        return now

    def set_phase(self, phase: str) -> None:
        self.sample()
        self.phase = phase
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@ray.remote(num_cpus=0)
class Worker:
    """One worker process: a side logger for warming up, a measured logger for the records."""

    def setup(self, client: str) -> dict[str, Any]:
        import numpy as np

        import rayplex

        self.np = np
        self.client = client
        warm = rayplex.get_logger(f"{GROUP}/warm-{client.split('/')[-1]}")
        warm.add_scalar("warm", 0.0, 0)
        warm.info("x" * TEXT_CHARS)
        warm.add_image("warm", np.zeros(IMAGE_SHAPE, np.uint8), 0)
        warm.flush(timeout=60)
        self.log = rayplex.get_logger(client)
        self.rng = np.random.default_rng(0)
        self.images = [self.rng.integers(0, 256, IMAGE_SHAPE, dtype=np.uint8) for _ in range(64)]
        return {"pid": os.getpid(), "rayplex_file": rayplex.__file__,
                "env": {k: v for k, v in os.environ.items() if k.startswith("RAYPLEX_")}}

    def run(self, kind: str, n: int) -> dict[str, Any]:
        log = self.log
        t0 = time.perf_counter()
        if kind == "text":
            pad = "x" * (TEXT_CHARS - 9)
            for i in range(n):
                log.info(f"{i:08d} {pad}")
        elif kind == "image":
            images = self.images
            for i in range(n):
                # a fresh copy each call: noise that no encoder can shrink, not one cached array
                log.add_image("img", images[i % 64] ^ (i & 0xFF), i)
        elif kind == "scalar":
            add = log.add_scalar
            for i in range(n):
                add("s", float(i), i)
        return {"log_s": time.perf_counter() - t0, "stats": log.stats()}

    def stats(self) -> dict[str, int]:
        return dict(self.log.stats())

    def flush(self, timeout_s: float) -> dict[str, Any]:
        """Flush until done or ``timeout_s`` passes (a flush may time out while the backlog
        drains under the ``block`` policy's short RAYPLEX_FLUSH_TIMEOUT_S)."""
        import rayplex

        deadline = time.monotonic() + timeout_s
        t0 = time.perf_counter()
        error = None
        while True:
            try:
                self.log.flush(timeout=max(1.0, deadline - time.monotonic()))
                error = None
                break
            except rayplex.FlushTimeoutError as exc:
                error = repr(exc)
                if time.monotonic() >= deadline:
                    break
        return {"flush_s": time.perf_counter() - t0, "error": error, "stats": self.log.stats()}


def _node_buffer(hub_name: str) -> tuple[str, int]:
    """The name and pid of the experiment's node buffer on this (only) node."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a.get("namespace") == "rayplex" and a["name"].startswith(f"node:{hub_name}:")]
    if len(names) != 1:
        raise RuntimeError(f"expected one node buffer of {hub_name!r}, found {names}")
    actor = ray.get_actor(names[0], namespace="rayplex")
    pid: Any = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    return names[0], int(pid)


def _count_arrived(logdir: str, client: str, kind: str) -> dict[str, Any]:
    """Records of the measured client read back from the files (its tags are ``s``/``img``,
    the warm-up loggers' are ``warm``; how a normal group routes them is not assumed)."""
    import rayplex
    from rayplex.read import iter_events

    if kind == "scalar":
        rows = rayplex.read_scalars(logdir, group=GROUP)
        steps = [r.step for r in rows if r.tag == "s" or r.tag.endswith("/s")]
        return {"arrived": len(steps), "distinct": len(set(steps))}
    if kind == "image":
        steps = [event.step for _, event in iter_events(logdir, group=GROUP)
                 for value in event.summary.value
                 if value.tag == "img" or value.tag.endswith("/img")]
        return {"arrived": len(steps), "distinct": len(set(steps))}
    path = os.path.join(logdir, "logs", *client.split("/")) + ".log"
    indices = []
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                pos = line.find("x" * 50)
                if pos > 9:
                    indices.append(line[pos - 9:pos - 1])
    return {"arrived": len(indices), "distinct": len(set(indices))}


def scenario(args: argparse.Namespace, kind: str, mode: str, stop_hub: bool = True,
             hold_s: float | None = None) -> dict[str, Any]:
    """One fresh experiment: log ``--volume`` × the bound of ``kind`` with the hub stopped
    (or, with ``stop_hub=False``, running: the reference), then resume it and count."""
    import rayplex

    hold_s = args.hold_s if hold_s is None else hold_s

    bound = int(args.max_buffer_mb * MiB)
    n = 0 if kind == "none" else math.ceil(args.volume * bound / NOMINAL_BYTES[kind])
    logdir = C.temp_logdir(f"rss-{kind}-{mode}")
    env = {"RAYPLEX_MAX_BUFFER_MB": str(args.max_buffer_mb), "RAYPLEX_OVERFLOW": mode}
    if mode == "block":
        env["RAYPLEX_FLUSH_TIMEOUT_S"] = str(args.block_flush_timeout_s)
    hub_pid = 0
    stopped = False
    result: dict[str, Any] = {"kind": kind, "mode": mode, "records": n, "hub_stopped": stop_hub,
                              "hold_s": hold_s,
                              "nominal_mib": n * NOMINAL_BYTES.get(kind, 0) / MiB, "env": env}
    try:
        hub = rayplex.init(logdir)
        hub.register_normal_group(GROUP)
        hub_pid = int(hub.info()["pid"])
        driver = rayplex.get_logger(f"{GROUP}/driver")  # starts the node buffer, driver's env
        driver.add_scalar("warm", 0.0, 0)
        driver.flush(timeout=60)
        nb_name, nb_pid = _node_buffer(hub.name)
        client = f"{GROUP}/{kind}-{mode}"
        worker = Worker.options(runtime_env={"env_vars": env}).remote()  # type: ignore[attr-defined]
        setup = ray.get(worker.setup.remote(client), timeout=120)
        result["worker_rayplex_file"] = setup["rayplex_file"]
        pids = {"worker": setup["pid"], "node_buffer": nb_pid, "hub": hub_pid}
        with Sampler(pids) as sampler:
            start = sampler.sample()
            if stop_hub:
                os.kill(hub_pid, signal.SIGSTOP)
                stopped = True
            sampler.set_phase("stopped")
            t0 = time.perf_counter()
            run = ray.get(worker.run.remote(kind, n))
            # Idle with the hub still stopped: retries (after RAYPLEX_FLUSH_TIMEOUT_S) and the
            # flush thread's steady state show up here. Sampling, not synchronisation.
            time.sleep(hold_s)
            stopped_s = time.perf_counter() - t0
            stats_after_hold = ray.get(worker.stats.remote(), timeout=60)
            nb_info_stopped: Any = ray.get(
                ray.get_actor(nb_name, namespace="rayplex").info.remote(), timeout=30)
            sampler.set_phase("drain")
            if stop_hub:
                os.kill(hub_pid, signal.SIGCONT)
                stopped = False
            flushed = ray.get(worker.flush.remote(args.drain_timeout_s))
            nb_info_after: Any = ray.get(
                ray.get_actor(nb_name, namespace="rayplex").info.remote(), timeout=60)
            sampler.set_phase("after")
            end = sampler.sample()
        info = hub.info()
        ray.kill(worker)
        arrived = _count_arrived(logdir, client, kind) if n else {"arrived": 0, "distinct": 0}
        stats = flushed["stats"]
        dropped = int(stats.get("dropped", 0))
        lost_counter = int(stats.get("lost", 0))
        result.update({
            "log_s": run["log_s"], "stopped_s": stopped_s, "flush_s": flushed["flush_s"],
            "flush_error": flushed["error"], "stats_after_log": run["stats"],
            "stats_after_hold": stats_after_hold, "stats_after_flush": stats,
            "node_buffer_info_while_stopped": nb_info_stopped,
            "node_buffer_info_after": nb_info_after,
            "hub_records_written": info.get("records_written"),
            "start": start, "end": end, "peaks": sampler.peaks, **arrived,
            "dropped_counter": dropped, "lost_counter": lost_counter,
            "unaccounted": n - arrived["arrived"] - dropped,
        })
        for proc in pids:
            base = start[proc]
            for phase in ("stopped", "drain"):
                peak = sampler.peaks.get(phase, {}).get(proc, {})
                for key in ("rss", "anon", "shmem"):
                    result[f"{proc}_{phase}_{key}_growth_mib"] = (
                        (peak.get(key, 0) - base.get(key, 0)) / MiB if peak else float("nan"))
    finally:
        if stopped and hub_pid:
            os.kill(hub_pid, signal.SIGCONT)
        rayplex.shutdown()
        shutil.rmtree(logdir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-buffer-mb", type=float, default=8.0,
                        help="the worker's RAYPLEX_MAX_BUFFER_MB")
    parser.add_argument("--volume", type=float, default=12.0,
                        help="records logged while the hub is stopped, in multiples of the bound")
    parser.add_argument("--kinds", nargs="*", default=["text", "image", "scalar"],
                        choices=["text", "image", "scalar"])
    parser.add_argument("--modes", nargs="*", default=["spill", "drop_oldest", "block"],
                        choices=["spill", "drop_oldest", "block"])
    parser.add_argument("--hold-s", type=float, default=10.0,
                        help="idle time with the hub still stopped after the last log call")
    parser.add_argument("--block-flush-timeout-s", type=float, default=5.0,
                        help="RAYPLEX_FLUSH_TIMEOUT_S of the block scenarios (the put waits "
                             "this long once, then drops)")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0,
                        help="how long the worker may flush after SIGCONT")
    parser.add_argument("--long-hold-s", type=float, default=45.0,
                        help="one more text/block run with the hub stopped this long after the "
                             "last log call: shows resends piling up (0: skip)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference runs (same logging, hub running)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    C.start_ray(num_cpus=2)
    bound_mib = args.max_buffer_mb
    plan: list[tuple[str, str, bool, float | None]] = [("none", "spill", True, None)]
    plan += [(kind, mode, True, None) for kind in args.kinds for mode in args.modes]
    if args.long_hold_s > 0:
        plan.append(("text", "block", True, args.long_hold_s))
    if not args.no_reference:
        plan += [(kind, "spill", False, None) for kind in args.kinds]
    runs = []
    for kind, mode, stop_hub, hold in plan:
        r = scenario(args, kind, mode, stop_hub, hold)
        runs.append(r)
        print(f"{kind:6} {mode:11} hub {'stopped' if stop_hub else 'running'} "
              f"hold {r['hold_s']:g} s n={r['records']:,}: worker +"
              f"{r['worker_stopped_rss_growth_mib']:.1f} MiB (private "
              f"{r['worker_stopped_anon_growth_mib']:.1f}), +"
              f"{r['worker_drain_rss_growth_mib']:.1f} MiB draining; node buffer +"
              f"{r['node_buffer_stopped_rss_growth_mib']:.1f}/"
              f"{r['node_buffer_drain_rss_growth_mib']:.1f}; hub +"
              f"{r['hub_drain_rss_growth_mib']:.1f} draining; arrived {r['arrived']:,}, "
              f"dropped {r['dropped_counter']:,}, unaccounted {r['unaccounted']:,}",
              flush=True)
    base = runs[0]["worker_stopped_rss_growth_mib"]
    limit = 2 * bound_mib + max(0.0, base)
    rows = []
    for r in runs:
        r["worker_rss_within_target"] = r["worker_stopped_rss_growth_mib"] <= limit
        r["worker_private_within_target"] = r["worker_stopped_anon_growth_mib"] <= limit
        label = r["kind"] if r["kind"] != "none" else "(nothing)"
        if not r["hub_stopped"]:
            label += " (hub running)"
        elif r["hold_s"] != args.hold_s:
            label += f" (stopped {r['hold_s']:g} s)"
        rows.append([
            label, r["mode"], r["records"],
            r["worker_stopped_rss_growth_mib"], r["worker_stopped_anon_growth_mib"],
            r["worker_stopped_shmem_growth_mib"], r["stats_after_hold"].get("sent", 0),
            r["worker_drain_rss_growth_mib"], r["worker_drain_anon_growth_mib"],
            r["node_buffer_stopped_rss_growth_mib"],
            r["node_buffer_info_while_stopped"]["peak_bytes"] / MiB,
            r["node_buffer_drain_rss_growth_mib"],
            r["node_buffer_info_after"]["peak_bytes"] / MiB,
            r["hub_drain_rss_growth_mib"], r["hub_drain_anon_growth_mib"],
            r["arrived"], r["dropped_counter"], r["unaccounted"],
            "yes" if r["worker_rss_within_target"] else "NO",
        ])
    C.print_table(
        ["kind", "overflow", "records", "worker RSS", "…private", "…shmem", "sends",
         "worker drain RSS", "…private", "NB RSS", "NB counted", "NB drain RSS", "NB counted (drain)",
         "hub drain RSS", "…private", "arrived", "dropped", "unaccounted",
         f"worker ≤ {limit:.1f}"],
        rows, title=f"\npeak growth in MiB over each process's RSS before the hub was stopped; "
                    f"bound {bound_mib:g} MiB, {args.volume:g}× the bound logged",
    )
    stopped_runs = [r for r in runs if r["hub_stopped"] and r["kind"] != "none"]
    notes = [
        f"target: worker growth while the hub is stopped <= 2 x {bound_mib:g} MiB + baseline "
        f"{base:.1f} MiB (the run that logs nothing) = {limit:.1f} MiB; met by total RSS in "
        f"{sum(r['worker_rss_within_target'] for r in stopped_runs)} of {len(stopped_runs)} "
        f"runs, by private memory (RssAnon) in "
        f"{sum(r['worker_private_within_target'] for r in stopped_runs)}",
        "'sends' = the worker's submit attempts so far (each resend after "
        "RAYPLEX_FLUSH_TIMEOUT_S leaves one more copy of the batch in the object store and "
        "in the node buffer while the hub is stopped)",
        "NB counted = the node buffer's own peak of held bytes (its info()['peak_bytes']), "
        "what its RAYPLEX_NODE_BUFFER_MB bound (default 256 MiB) is checked against",
        "the hub does nothing while stopped: its growth is measured while it drains the backlog",
        "shmem = Ray object-store pages the process touched (shared with the other processes "
        "that touched them, counted in each one's RSS)",
        "unaccounted = records - arrived - dropped counter: must be 0 (nothing lost silently)",
    ]
    for note in notes:
        print("note:", note)
    C.write_json("rss_stopped_hub", args, {"bound_mib": bound_mib, "baseline_mib": base,
                                           "worker_limit_mib": limit, "runs": runs}, notes)
    ray.shutdown()


if __name__ == "__main__":
    main()
