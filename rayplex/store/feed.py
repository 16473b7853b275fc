"""The store feed actor: one per experiment, named ``store:<hub>`` in namespace ``rayplex``,
detached, restarting forever, on the hub's node (it reads the hub's files). A plain class;
:func:`get_or_create_store_feed` makes it an actor. A thread of its own runs
:class:`rayplex.store.follower.StoreFollower` rounds, another its compactions (so that new
points never wait behind a merge); a restarted actor resumes from the store's manifest.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import ray

from rayplex.actors import QUERY_GROUP, detached, get_hub, say_to_hub
from rayplex.config import HUB_CALL_TIMEOUT_S
from rayplex.store.follower import StoreFollower

log = logging.getLogger("rayplex.store")



def store_feed_name(hub: str) -> str:
    return f"store:{hub}"


class StoreFeedActor:
    """Feeds ``logdir/store/`` with what the hub of experiment ``hub`` commits."""

    def __init__(self, hub: str, logdir: str) -> None:
        self.hub = get_hub(hub)
        self.follower = StoreFollower(logdir, self._committed, self._say)
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.follower.run, args=(self._stop,),
                                      name="rayplex-store-feed", daemon=True)
        self._compaction = threading.Thread(target=self.follower.run_compaction,
                                            args=(self._stop,), name="rayplex-store-compaction",
                                            daemon=True)
        self._loop.start()
        self._compaction.start()

    def _committed(self) -> Mapping[str, int]:
        # On the hub's query threads: the call never waits in line with (or delays) writes.
        ref = self.hub.committed_sizes.options(concurrency_group=QUERY_GROUP).remote()
        return dict(ray.get(ref, timeout=HUB_CALL_TIMEOUT_S))

    def _say(self, level: int, message: str) -> None:
        say_to_hub(self.hub, log, level, message)

    def info(self) -> dict[str, Any]:
        """The counters (rounds, points, segments, failures, problem, last_commit) and pid."""
        return {**self.follower.counters, "pid": os.getpid()}

    def drain(self, timeout: float) -> bool:
        """Index everything the hub committed so far; True when done in ``timeout``."""
        return self.follower.drain(timeout)

    def stop(self) -> None:
        """Stop the loops (after the current round and compaction)."""
        self._stop.set()
        self._loop.join(timeout=60)
        self._compaction.join(timeout=60)


def get_or_create_store_feed(hub: str, logdir: str, node_id: str) -> Any:
    """The store feed of experiment ``hub``, created on ``node_id`` if it does not exist."""
    return (
        ray.remote(StoreFeedActor)
        .options(**{**detached(store_feed_name(hub), node_id), "max_task_retries": 0},
                 max_concurrency=4)
        .remote(hub, logdir)
    )
