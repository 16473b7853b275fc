"""Get-or-create functions for rayplex's named actors (importing this module starts nothing).

Every actor lives in the Ray namespace ``rayplex``, is detached, restarts forever and takes no
CPU: ``hub:<experiment>`` (pinned to the node of the driver that called ``rayplex.init``) and
``node:<experiment>:<node id>`` (pinned to its node).
"""

from __future__ import annotations

from typing import Any

from rayplex.actors.names import (
    QUERY_GROUP,
    actor_identity,
    detached,
    get_hub,
    hub_actor_name,
    node_buffer_name,
    say_to_hub,
)
from rayplex.config import NAMESPACE

__all__ = ["QUERY_GROUP", "actor_identity", "detached", "get_hub", "get_or_create_hub",
           "get_or_create_node_buffer", "hub_actor_name", "list_rayplex_actors", "node_buffer_name",
           "say_to_hub"]


def get_or_create_hub(hub: str, logdir: str, node_id: str, log_level: str = "INFO") -> Any:
    """The hub actor of experiment ``hub``, created on ``node_id`` if it does not exist."""
    import ray

    from rayplex.actors.hub import Hub

    # Writes stay on the actor's one default thread; file queries get threads of their own.
    return (
        ray.remote(concurrency_groups={QUERY_GROUP: 2})(Hub)  # type: ignore[call-overload]
        .options(**detached(hub_actor_name(hub), node_id))
        .remote(hub, logdir, log_level)
    )


def get_or_create_node_buffer(hub: str, node_id: str) -> Any:
    """The node buffer of experiment ``hub`` on ``node_id``, created there if needed."""
    import ray

    from rayplex.actors.node_buffer import NodeBuffer

    return (
        ray.remote(NodeBuffer)
        # Senders own the retries (with the same sequence numbers), so Ray replays nothing.
        .options(**{**detached(node_buffer_name(hub, node_id), node_id), "max_task_retries": 0},
                 max_concurrency=10_000)
        .remote(hub, node_id)
    )


def list_rayplex_actors() -> list[str]:
    """Names of every rayplex actor alive in the cluster."""
    import ray

    return sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry.get("namespace") == NAMESPACE
    )
