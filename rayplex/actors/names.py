"""Names, options and look-ups of rayplex's named actors, in one place: what every module that
creates or finds an actor uses (the hub's and the node buffers' get-or-create in
:mod:`rayplex.actors`, the forwarders in :mod:`rayplex.forward.actor`, the store feed in
:mod:`rayplex.store.feed`). Importing it starts nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from rayplex.config import NAMESPACE
from rayplex.errors import HubNotFoundError

QUERY_GROUP = "queries"
"""The hub's concurrency group (threads of their own, :func:`rayplex.actors.get_or_create_hub`)
on which the node buffers send the read-only requests (:data:`rayplex.actors.requests.QUERIES`)
and the followers ask for committed sizes, so that a query never waits for a write nor a write
for a query."""


def hub_actor_name(hub: str) -> str:
    return f"hub:{hub}"


def node_buffer_name(hub: str, node_id: str) -> str:
    return f"node:{hub}:{node_id}"


def detached(name: str, node_id: str) -> dict[str, Any]:
    """Ray options of a rayplex actor: named ``name`` in namespace ``rayplex``, detached,
    restarting forever, no CPU, pinned to ``node_id``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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


def get_hub(hub: str) -> Any:
    """The running hub of experiment ``hub``.

    Raises:
        HubNotFoundError: if no such hub runs in this Ray cluster.
    """
    import ray

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


def say_to_hub(hub: Any, log: logging.Logger, level: int, message: str) -> None:
    """Log ``message`` on ``log`` here and send it to the hub's own log (``logs/hub.log``)
    without waiting: how a follower of the hub (a forwarder, the store feed) reports problems."""
    log.log(level, message)
    try:  # never wait on the hub for a warning line
        hub.forwarder_line.remote(level, message)
    except Exception as exc:
        log.warning("could not send a line to the hub: %s", exc)


def ray_context(getter: str) -> str:
    """``ray.get_runtime_context().<getter>()`` inside Ray, else ``""`` (a plain object)."""
    ray = sys.modules.get("ray")  # not imported: not inside Ray
    if ray is None:
        return ""
    try:
        if ray.is_initialized():
            return str(getattr(ray.get_runtime_context(), getter)() or "")
    except Exception:  # pragma: no cover - a plain object outside Ray
        pass
    return ""
