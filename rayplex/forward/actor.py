"""The forwarder actor: one per experiment and tracker, named ``forward:<hub>:<tracker key>``
in namespace ``rayplex``, detached, restarting forever, on the hub's node (it reads the hub's
files). A plain class; :func:`get_or_create_forwarder` makes it an actor. Its loop runs
:class:`rayplex.forward.core.Forwarder` rounds in a thread of its own, and a watch thread
reports tracker calls that hang.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from rayplex.actors import detached, get_hub, say_to_hub
from rayplex.config import FORWARD_WATCH_PERIOD_S, HUB_CALL_TIMEOUT_S
from rayplex.forward.core import Forwarder
from rayplex.forward.trackers import Tracker

log = logging.getLogger("rayplex.forward")



def forwarder_name(hub: str, key: str = "") -> str:
    return f"forward:{hub}:{key}"


class ForwarderActor:
    """Follows the hub of experiment ``hub`` writing ``logdir`` and feeds ``tracker``."""

    def __init__(self, hub: str, logdir: str, tracker: Tracker) -> None:
        self.hub = get_hub(hub)
        self.forwarder = Forwarder(logdir, tracker, self._committed, self._say)
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, name="rayplex-forward", daemon=True)
        self._watch = threading.Thread(target=self._watching, name="rayplex-forward-watch",
                                       daemon=True)
        self._loop.start()
        self._watch.start()

    def _committed(self) -> dict[str, int]:
        return dict(ray.get(self.hub.committed_sizes.remote(), timeout=HUB_CALL_TIMEOUT_S))

    def _say(self, level: int, message: str) -> None:
        say_to_hub(self.hub, log, level, message)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.forwarder.step()
            if wait:
                self._stop.wait(wait)

    def _watching(self) -> None:
        while not self._stop.wait(FORWARD_WATCH_PERIOD_S):
            self.forwarder.watch()

    def info(self) -> dict[str, Any]:
        """The counters: forwarded, retries, failures, slow_calls, tracker_calls, lag..."""
        return dict(self.forwarder.counters)

    def drain(self, timeout: float) -> bool:
        """Forward everything the hub committed so far, here and now (rounds are serialised
        with the loop's; a failed one is retried with back-off); True when done, False if
        ``timeout`` passed first."""
        return self.forwarder.drain(timeout)

    def stop(self) -> None:
        """Stop the loop and finish the tracker's runs."""
        self._stop.set()
        self._loop.join(timeout=60)
        with self.forwarder.lock:  # after a round a timed-out drain may still be running
            self.forwarder.close()


def get_or_create_forwarder(hub: str, logdir: str, tracker: Tracker, node_id: str) -> Any:
    """The forwarder of experiment ``hub`` to ``tracker``, created on ``node_id`` if needed."""
    return (
        ray.remote(ForwarderActor)
        .options(**{**detached(forwarder_name(hub, tracker.key), node_id), "max_task_retries": 0},
                 max_concurrency=4)
        .remote(hub, logdir, tracker)
    )
