"""Get-or-create functions for rayplex's named actors (importing this module starts nothing).

Every actor lives in the Ray namespace ``rayplex``, is detached, restarts forever and takes no
CPU: ``hub:<experiment>`` (pinned to the node of the driver that called ``rayplex.init``) and
``node:<experiment>:<node id>`` (pinned to its node).
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayplex.config import NAMESPACE
from rayplex.errors import HubNotFoundError


def hub_actor_name(hub: str) -> str:
    return f"hub:{hub}"


def node_buffer_name(hub: str, node_id: str) -> str:
    return f"node:{hub}:{node_id}"


def _detached(name: str, node_id: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "lifetime": "detached",
        "num_cpus": 0,
        "max_restarts": -1,
        "max_task_retries": -1,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
    }


def get_or_create_hub(hub: str, logdir: str, node_id: str, log_level: str = "INFO") -> Any:
    """The hub actor of experiment ``hub``, created on ``node_id`` if it does not exist."""
    from rayplex.actors.hub import QUERY_GROUP, Hub

    # Writes stay on the actor's one default thread; file queries get threads of their own.
    return (
        ray.remote(concurrency_groups={QUERY_GROUP: 2})(Hub)  # type: ignore[call-overload]
        .options(**_detached(hub_actor_name(hub), node_id))
        .remote(hub, logdir, log_level)
    )


def get_hub(hub: str) -> Any:
    """The running hub of experiment ``hub``.

    Raises:
        HubNotFoundError: if no such hub runs in this Ray cluster.
    """
    try:
        return ray.get_actor(hub_actor_name(hub), namespace=NAMESPACE)
    except ValueError:
        raise HubNotFoundError(
            f"no rayplex hub named {hub!r} is running in this Ray cluster: call "
            f"rayplex.init(logdir{'' if hub == 'default' else f', name={hub!r}'}) in the driver "
            "first (or set RAYPLEX_HUB to the name of a running experiment)"
        ) from None


def actor_identity(handle: Any) -> str:
    """The unique id of the actor behind ``handle`` (stable across its restarts, new for a new
    actor of the same name): what ties a Logger to one experiment. Ray has no public accessor
    on a handle, so this is the one place that reads ``_actor_id``."""
    return str(handle._actor_id.hex())


def get_or_create_node_buffer(hub: str, node_id: str) -> Any:
    """The node buffer of experiment ``hub`` on ``node_id``, created there if needed."""
    from rayplex.actors.node_buffer import NodeBuffer

    return (
        ray.remote(NodeBuffer)
        # Senders own the retries (with the same sequence numbers), so Ray replays nothing.
        .options(**{**_detached(node_buffer_name(hub, node_id), node_id), "max_task_retries": 0},
                 max_concurrency=10_000)
        .remote(hub, node_id)
    )


def list_rayplex_actors() -> list[str]:
    """Names of every rayplex actor alive in the cluster."""
    return sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry.get("namespace") == NAMESPACE
    )
