"""Fan-in: how the hub's load grows with the number of logical clients and of nodes.

8 Ray tasks each hold ``clients / 8`` Loggers (indexed group ``fan``: one run directory per
client) and log ``--scalars`` scalars round-robin over them, then ``flush()``. Before the
clock runs, every client logs one scalar ("first contact": the hub opens its event file).
Measured per configuration: end-to-end scalars/s, worker batches that reached the hub per
second, the hub process's CPU time per scalar in the timed phase and per client in the
first-contact phase (psutil on ``HubHandle.info()["pid"]``, before/after).

Two set-ups: one local node, then a simulated 4-node cluster (``ray.cluster_utils.Cluster``,
1 CPU per node, 2 tasks pinned to each node), where each node has its own NodeBuffer.

    python benchmarks/bench_fanin.py                  # ~2 minutes
    python benchmarks/bench_fanin.py --clients 8 64 256 1024 --scalars 50000
    python benchmarks/bench_fanin.py --no-cluster     # single node only
    python benchmarks/bench_fanin.py --no-cluster --watch --clients 256
                            # each configuration twice: no watch rule, then all six kinds
                            # declared (hub CPU per scalar before/after), and the WatchBook's
                            # own cost per scalar measured in this process, in the
                            # typical and the worst case (one scalar per tag per flush)
    python benchmarks/bench_fanin.py --book-only --clients 256   # the WatchBook alone, no Ray
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings

import _common as C
import ray

START_DELAY_S = 1.5
TAGS = ("loss", "reward", "entropy", "lr")


@ray.remote
def fan_worker(task: int, clients_per_task: int, k: int, start_at: float) -> dict:
    import rayplex

    loggers = [rayplex.get_logger(f"fan/{task * clients_per_task + c}")
               for c in range(clients_per_task)]
    n_loggers = len(loggers)
    adds = [lg.add_scalar for lg in loggers]
    now = time.time()
    if start_at > now:
        time.sleep(start_at - now)
    t0 = time.time()
    for j in range(k):
        adds[j % n_loggers](TAGS[j % 4], float(j), j)
    loggers[0].flush()  # a barrier for everything this process logged
    return {"t0": t0, "t1": time.time(), "node": ray.get_runtime_context().get_node_id()}


def watch_rules():
    from rayplex import watch

    return [watch.nan("*"), watch.threshold("loss", above=1e12, for_steps=3), watch.silent(600),
            watch.step_lag("fan", 10**9), watch.outlier("reward", group="fan", z=1e9),
            watch.crashed()]


def run_config(n_clients: int, args, task_options: list[dict], logdir: str,
               watched: bool = False) -> dict:
    import rayplex

    n_tasks = len(task_options)
    if n_clients % n_tasks:
        raise SystemExit(f"--clients values must be multiples of {n_tasks}")
    hub = rayplex.init(logdir)
    hub.register_indexed_group("fan", 8)
    for rule in watch_rules() if watched else []:
        hub.watch(rule)
    per_task = n_clients // n_tasks
    pid = hub.info()["pid"]
    # First contact, outside the clock: every client logs one scalar, which starts each
    # node's NodeBuffer (a new process) and makes the hub open each client's event file.
    cpu_a = C.process_cpu_s(pid)
    ray.get([fan_worker.options(**opt).remote(i, per_task, per_task, 0.0)
             for i, opt in enumerate(task_options)])
    cpu_b = C.process_cpu_s(pid)
    info0 = hub.info()
    start_at = time.time() + START_DELAY_S
    out = ray.get([fan_worker.options(**opt).remote(i, per_task, args.scalars, start_at)
                   for i, opt in enumerate(task_options)])
    cpu_c = C.process_cpu_s(pid)
    info1 = hub.info()
    rayplex.shutdown()
    seconds = max(o["t1"] for o in out) - min(o["t0"] for o in out)
    scalars = args.scalars * n_tasks
    written = C.count_event_dir(os.path.join(logdir, "tensorboard", "fan"))["summaries"]
    written -= n_clients  # the first-contact scalars
    batches = info1["batches_written"] - info0["batches_written"]
    return {
        "clients": n_clients,
        "tasks": n_tasks,
        "nodes": len({o["node"] for o in out}),
        "scalars": scalars,
        "seconds": seconds,
        "scalars_per_s": scalars / seconds,
        "hub_records": info1["records_written"] - info0["records_written"],
        "hub_batches": batches,
        "hub_batches_per_s": batches / seconds,
        "hub_cpu_s": cpu_c - cpu_b,
        "hub_cpu_us_per_scalar": (cpu_c - cpu_b) * 1e6 / scalars,
        "hub_first_contact_ms_per_client": (cpu_b - cpu_a) * 1e3 / n_clients,
        "read_back": written,
        "lost": scalars - written,
    }


def run_series(label: str, args, task_options: list[dict], watched: bool = False) -> list[dict]:
    rows = []
    for n_clients in args.clients:
        reps = []
        for _ in range(args.repeats):
            logdir = C.temp_logdir("fanin")
            try:
                reps.append(run_config(n_clients, args, task_options, logdir, watched))
            finally:
                shutil.rmtree(logdir, ignore_errors=True)
        row = dict(reps[len(reps) // 2])
        for key in ("seconds", "scalars_per_s", "hub_batches_per_s", "hub_cpu_us_per_scalar",
                    "hub_first_contact_ms_per_client"):
            row[key] = C.median([r[key] for r in reps])
        row["setup"] = label
        row["lost_any"] = any(r["lost"] for r in reps)
        row["runs"] = reps
        rows.append(row)
        print(f"  {label}, {n_clients} clients: {row['scalars_per_s']:,.0f} scalars/s, hub "
              f"{row['hub_cpu_us_per_scalar']:.2f} us CPU/scalar, "
              f"{row['hub_batches_per_s']:.1f} batches/s", flush=True)
    return rows


def _book_batches(n_clients: int, per_client_per_tag: int, rounds: int) -> list[list]:
    """What 8 senders send the hub in ``rounds`` flushes: each of ``n_clients`` clients (spread
    over the senders) logs ``per_client_per_tag`` scalars on each of the 4 tags per flush,
    encoded by the worker's own Encoder (so each chunk carries its real digest)."""
    from rayplex.encoder import Encoder
    from rayplex.groups import GroupRegistry, GroupSpec
    from rayplex.items import Scalar

    enc = Encoder(GroupRegistry().with_group(GroupSpec.indexed("fan", 8)))
    per_sender = n_clients // 8
    out = []
    for r in range(rounds):
        batches = []
        for sender in range(8):
            items = [Scalar(f"fan/{sender * per_sender + c}", tag, step, 0.0, float(step))
                     for c in range(per_sender)
                     for step in range(r * per_client_per_tag, (r + 1) * per_client_per_tag)
                     for tag in TAGS]
            batches.append(enc.encode(items, f"s{sender}", r + 2, "e"))
        out.append(batches)
    return out


def _observe_us(rules: list, first: list, rounds: list[list], passes: int) -> float:
    """The WatchBook's observe() CPU per scalar over ``passes`` times ``rounds`` (after a
    first contact)."""
    from rayplex.actors.watchbook import WatchBook

    scalars = passes * sum(c.count for batches in rounds for b in batches for c in b.chunks)
    book = WatchBook(rules)
    book.observe(first, "n", 0.0)  # first contact: clients and tags indexed
    started = time.process_time()
    for _ in range(passes):
        for r, batches in enumerate(rounds):
            book.observe(batches, "n", float(r))
    return (time.process_time() - started) * 1e6 / scalars


def watchbook_cost(n_clients: int, scalars: int) -> list[str]:
    """The WatchBook's own CPU per scalar (observe() on the hub's write path; medians of 15
    runs, no rule and six rules alternating),
    with no rule and with the six, on the batches 8 senders send for ``n_clients`` clients
    logging round-robin over 4 tags: typical (``scalars`` per flush, one digest entry per
    tag and client summing many scalars), and worst (one scalar per tag and client per flush,
    so one digest entry per scalar); plus tick() every WATCH_TICK_S."""
    from rayplex.actors.watchbook import WatchBook

    per_tag = max(1, min(scalars, 160_000) // (n_clients * 4))
    notes = []
    for case, k, rounds in (("typical", per_tag, 4), ("worst", 1, 40)):
        batches = _book_batches(n_clients, k, rounds + 1)
        passes = 1 if k > 1 else 5  # each timing ~0.1 s even on a loaded machine
        pairs = [(_observe_us([], batches[0], batches[1:], passes),
                  _observe_us(watch_rules(), batches[0], batches[1:], passes))
                 for _ in range(15)]
        plain, ruled = C.median([p for p, _ in pairs]), C.median([r for _, r in pairs])
        notes.append(f"WatchBook alone, {n_clients} clients, {case} case ({k} scalar(s) per tag "
                     f"and client per flush): observe no rule {plain:.4f} us/scalar, 6 rules "
                     f"{ruled:.4f} us/scalar, added {ruled - plain:+.4f} us/scalar "
                     f"(goal <= 0.1: {'meets' if ruled - plain <= 0.1 else 'misses'})")
    book = WatchBook(watch_rules())
    for batches in _book_batches(n_clients, 1, 1):
        book.observe(batches, "n", 0.0)
    started = time.process_time()
    for r in range(20):
        book.tick(float(r), {})
    notes.append(f"WatchBook tick, {n_clients} clients, 6 rules: "
                 f"{(time.process_time() - started) / 20 * 1e3:.2f} ms every 0.5 s")
    return notes


def _ray_address_file() -> str:
    return os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")


def single_node(args) -> list[dict]:
    C.start_ray(num_cpus=max(8, os.cpu_count() or 1))
    C.warm_workers(8)
    try:
        rows = run_series("1 node", args, [{"num_cpus": 1}] * 8)
        if args.watch:
            rows += run_series("1 node, 6 watch rules", args, [{"num_cpus": 1}] * 8, True)
        return rows
    finally:
        ray.shutdown()


def four_nodes(args) -> list[dict]:
    from ray.cluster_utils import Cluster

    # Cluster() writes its address to /tmp/ray/ray_current_cluster, which makes any plain
    # ray.init() on this machine join it; put back what was there so nobody else does.
    address_file = _ray_address_file()
    previous = None
    if os.path.exists(address_file):
        with open(address_file) as f:
            previous = f.read()

    def restore() -> None:
        if previous is None:
            if os.path.exists(address_file):
                os.unlink(address_file)
        else:
            with open(address_file, "w") as f:
                f.write(previous)

    here = os.path.dirname(os.path.abspath(__file__))
    cluster = Cluster()
    try:
        for n in range(args.nodes):
            cluster.add_node(num_cpus=1, resources={f"bench_node_{n}": 16},
                             include_dashboard=False)
        restore()
        ray.init(address=cluster.address, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": here}})
        tasks_per_node = 8 // args.nodes
        options = [{"num_cpus": 1 / tasks_per_node, "resources": {f"bench_node_{n}": 1}}
                   for n in range(args.nodes) for _ in range(tasks_per_node)]
        return run_series(f"{args.nodes} nodes", args, options)
    finally:
        ray.shutdown()
        cluster.shutdown()
        restore()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 64, 256],
                        help="logical clients (Loggers) in total; multiples of 8")
    parser.add_argument("--scalars", type=int, default=20_000, help="scalars per task")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration")
    parser.add_argument("--nodes", type=int, default=4, choices=[1, 2, 4, 8],
                        help="nodes of the simulated cluster")
    parser.add_argument("--no-cluster", action="store_true", help="skip the multi-node part")
    parser.add_argument("--watch", action="store_true",
                        help="also run each single-node configuration with all six kinds of "
                             "watch rule declared, and time the WatchBook alone")
    parser.add_argument("--book-only", action="store_true",
                        help="only time the WatchBook alone (no Ray; typical and worst case)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.book_only:
        for n_clients in args.clients:
            for note in watchbook_cost(n_clients, args.scalars * 8):
                print("note:", note)
        return
    notes = [
        "8 tasks in every configuration; clients = Loggers spread evenly over them",
        "hub CPU us/scalar is the timed (steady) phase; first contact (one scalar per client, "
        "the hub creating its run directory and event file) is reported per client",
        "with the NodeBuffer layer (the default). A without-NodeBuffer comparison needs a "
        "switch rayplex does not expose publicly: not measured",
        "hub write calls per second are not exposed by HubHandle.info(); 'batches/s' counts "
        "the worker batches the hub wrote (each node buffer merges several into one call)",
    ]

    rows = single_node(args)
    if not args.no_cluster:
        rows += four_nodes(args)

    C.print_table(
        ["setup", "clients", "nodes", "scalars", "scalars/s", "hub batches/s",
         "hub CPU us/scalar", "hub first-contact ms/client", "read-back"],
        [[r["setup"], r["clients"], r["nodes"], r["scalars"], r["scalars_per_s"],
          r["hub_batches_per_s"], r["hub_cpu_us_per_scalar"], r["hub_first_contact_ms_per_client"],
          "LOST DATA" if r["lost_any"] else "all"] for r in rows],
        title="\nfan-in (medians)",
    )
    if args.watch:
        for n_clients in args.clients:
            plain = [r for r in rows if r["setup"] == "1 node" and r["clients"] == n_clients]
            watched = [r for r in rows if r["setup"] == "1 node, 6 watch rules"
                       and r["clients"] == n_clients]
            if plain and watched:
                delta = watched[0]["hub_cpu_us_per_scalar"] - plain[0]["hub_cpu_us_per_scalar"]
                notes.append(f"{n_clients} clients: hub CPU with 6 watch rules minus without: "
                             f"{delta:+.3f} us/scalar (whole hub process, psutil; noisy)")
            notes += watchbook_cost(n_clients, args.scalars * 8)
    worst = max(r["hub_cpu_us_per_scalar"] for r in rows)
    notes.append(f"target hub CPU <= 2 us/scalar: worst {worst:.2f} us "
                 f"({'meets' if worst <= 2 else 'misses'})")
    for note in notes:
        print("note:", note)
    C.write_json("fanin", args, rows, notes)


if __name__ == "__main__":
    main()
