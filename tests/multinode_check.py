"""A 3-node ``ray.cluster_utils.Cluster`` run of store_metrics, checked against numpy.

Run by tests/test_multinode.py in a subprocess (a Cluster needs its own driver); prints one
JSON line with what it checked and exits non-zero on any mismatch.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import ray
from ray.cluster_utils import Cluster

import rayplex
from rayplex.actors import list_rayplex_actors

NODES = 3
WORKERS_PER_NODE = 2
STEPS = 3


@ray.remote(num_cpus=0)
def _where() -> str:
    return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=0)
@rayplex.logged("agent/{i}")
def _work(i, logger=None):
    rng = np.random.default_rng(i)
    out = {}
    for step in range(STEPS):
        values = rng.normal(i, 2.0, 30 + i)
        logger.store_metrics(reward=values.tolist())
        logger.log_metrics_summary(step=step)
        out[step] = values.tolist()
    return ray.get_runtime_context().get_node_id(), out


def main(logdir: str) -> int:
    cluster = Cluster()
    for k in range(NODES):
        cluster.add_node(num_cpus=1, resources={f"node{k}": 1}, include_dashboard=False)
    ray.init(address=cluster.address)
    try:
        hub = rayplex.init(logdir)
        hub.register_indexed_group("agent", 4)
        refs = [
            _work.options(resources={f"node{k}": 0.01}).remote(k * WORKERS_PER_NODE + j)
            for k in range(NODES) for j in range(WORKERS_PER_NODE)
        ]
        results = ray.get(refs)
        rayplex.flush()
        nodes_used = {node for node, _ in results}
        buffers = [n for n in list_rayplex_actors() if n.startswith("node:default:")]
        buffer_nodes = [n.rsplit(":", 1)[1] for n in buffers]
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(f"{logdir}/tensorboard/agent/summary")
        acc.Reload()
        problems = []
        if len(nodes_used) != NODES:
            problems.append(f"tasks ran on {len(nodes_used)} nodes, wanted {NODES}")
        if sorted(buffer_nodes) != sorted(nodes_used):
            problems.append(f"node buffers {buffer_nodes} != nodes used {nodes_used}")
        for step in range(STEPS):
            union = np.concatenate([np.asarray(r[step]) for _, r in results])
            for stat, expect in (("mean", union.mean()), ("std", union.std()),
                                 ("min", union.min()), ("max", union.max()),
                                 ("count", union.size)):
                got = {e.step: e.value for e in acc.Scalars(f"reward/{stat}")}[step]
                if not np.isclose(got, expect, rtol=1e-5, atol=1e-4):
                    problems.append(f"step {step} {stat}: {got} != {expect}")
        print(json.dumps({"nodes": len(nodes_used), "buffers": len(buffers),
                          "problems": problems}))
        rayplex.shutdown()
        return 1 if problems else 0
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
