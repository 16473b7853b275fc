"""The driver's side of an experiment: :func:`init`, :class:`HubHandle`, :func:`flush`,
:func:`shutdown` and :func:`status`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import ray

from rayplex import actors
from rayplex.config import config
from rayplex.errors import HubNotFoundError, LogdirConflictError
from rayplex.groups import GroupSpec
from rayplex.logger import forget_loggers
from rayplex.transport import drop_transport, existing_transport

log = logging.getLogger("rayplex")

_GLOBAL_FLUSH_TIMEOUT_S = 30.0


class HubHandle:
    """A driver-side handle on a running hub; returned by :func:`rayplex.init`.

    Example:
        >>> hub = rayplex.init("/tmp/exp1")  # doctest: +SKIP
        >>> hub.register_indexed_group("agent", 8).register_normal_group("learner")  # doctest: +SKIP
    """

    def __init__(self, name: str, logdir: str, actor: Any) -> None:
        self.name = name
        self.logdir = logdir
        self.actor = actor
        """The hub's Ray ``ActorHandle`` (for operators and tests)."""

    def __repr__(self) -> str:
        return f"HubHandle(name={self.name!r}, logdir={self.logdir!r})"

    def _register(self, spec: GroupSpec) -> HubHandle:
        ray.get(self.actor.register_group.remote(spec))
        transport = existing_transport(self.name)
        if transport is not None:
            transport.refresh_registry()
        return self

    def register_normal_group(self, name: str) -> HubHandle:
        """Clients ``<name>/<x>`` share run ``tensorboard/<name>``; tag ``<x>/<tag>``.

        Raises:
            ValueError: if ``name`` is not a valid group name.
        """
        return self._register(GroupSpec.normal(name))

    def register_indexed_group(self, name: str, bin_size: int) -> HubHandle:
        """Clients ``<name>/<int>`` get run ``tensorboard/<name>/<int>``; ``bin_size`` of them
        overlay in one chart (tag ``<name>/<tag>/<lo>-<hi>``).

        Raises:
            ValueError: if ``name`` is invalid or ``bin_size < 1``.
            TypeError: if ``bin_size`` is not an int.
        """
        return self._register(GroupSpec.indexed(name, bin_size))

    def register_combined_group(self, name: str, bin_fn: Callable[[str], str]) -> HubHandle:
        """Clients ``<name>/<x>`` get run ``tensorboard/<name>/<x>``; ``bin_fn(x)`` names the
        chart they are overlaid in (tag ``<name>/<tag>/<bin_fn(x)>``).

        Raises:
            ValueError: if ``name`` is invalid.
            TypeError: if ``bin_fn`` is not callable.
        """
        return self._register(GroupSpec.combined(name, bin_fn))

    def info(self) -> dict[str, Any]:
        """The hub's counters: clients, records and batches written, duplicates dropped."""
        return ray.get(self.actor.info.remote())

    def flush(self) -> None:
        """Same as :func:`rayplex.flush` for this experiment."""
        flush(self.name)

    def shutdown(self) -> None:
        """Same as :func:`rayplex.shutdown` for this experiment."""
        shutdown(self.name)


def init(logdir: str | os.PathLike[str], name: str | None = None, *,
         log_level: str = "INFO") -> HubHandle:
    """Get or create the hub of experiment ``name`` writing under ``logdir``.

    Starts a local Ray if none is initialized. Idempotent for the same logdir. The hub runs
    on this driver's node, so ``logdir`` is a path on this machine.

    Example:
        >>> import ray, rayplex, tempfile
        >>> _ = ray.init(ignore_reinit_error=True)
        >>> hub = rayplex.init(tempfile.mkdtemp(), name="doc")
        >>> hub.shutdown()

    Raises:
        LogdirConflictError: if a hub of that name already writes to another logdir.
        ValueError: if ``name`` is not a valid experiment name.
    """
    from rayplex.rules import validate_part

    name = validate_part(name or config().hub, "experiment name")
    if not isinstance(logdir, (str, os.PathLike)):
        raise TypeError(f"logdir must be a path, got {type(logdir).__name__}")
    path = os.path.abspath(os.path.expanduser(os.fspath(logdir)))
    if not ray.is_initialized():
        ray.init()
    node_id = ray.get_runtime_context().get_node_id()
    actor = actors.get_or_create_hub(name, path, node_id, log_level)
    info = ray.get(actor.info.remote())
    if info["logdir"] != path:
        raise LogdirConflictError(
            f"rayplex hub {name!r} already writes to {info['logdir']!r}, not {path!r}. Use "
            f"rayplex.init({path!r}, name='<another name>') for a second experiment, or call "
            f"rayplex.shutdown(name={name!r}) first."
        )
    return HubHandle(name, path, actor)


def _hub_names(name: str | None) -> list[str]:
    if name is not None:
        return [name]
    prefix = actors.hub_actor_name("")
    return [n[len(prefix):] for n in actors.list_rayplex_actors() if n.startswith(prefix)]


def _node_buffers(name: str) -> list[Any]:
    prefix = actors.node_buffer_name(name, "")
    handles = []
    for actor_name in actors.list_rayplex_actors():
        if actor_name.startswith(prefix):
            with contextlib.suppress(ValueError):
                handles.append(ray.get_actor(actor_name, namespace="rayplex"))
    return handles


def _flush_one(name: str, timeout: float) -> None:
    hub = actors.get_hub(name)
    transport = existing_transport(name)
    if transport is not None:
        transport.flush(timeout)
    senders = ray.get(hub.get_actor_senders.remote())
    refs = {sender: handle._rayplex_flush.remote(timeout) for sender, handle in senders.items()}
    for sender, ref in refs.items():
        try:
            ray.get(ref, timeout=timeout)
        except ray.exceptions.RayActorError:
            hub.forget_sender.remote(sender)  # the actor is gone; what it flushed is on disk
        except Exception as exc:
            log.warning("rayplex: could not flush actor sender %s: %s", sender[:8], exc)
    ray.get([nb.flush.remote() for nb in _node_buffers(name)], timeout=timeout)
    ray.get(hub.flush.remote(), timeout=timeout)


def flush(name: str | None = None, timeout: float = _GLOBAL_FLUSH_TIMEOUT_S) -> None:
    """Write out everything logged so far: this process, every live ``@rayplex.logged`` actor,
    every node buffer and the hub. Tasks flush by themselves when they return.

    Example:
        >>> rayplex.flush()  # doctest: +SKIP

    Raises:
        HubNotFoundError: if ``name`` is given and no such hub runs.
    """
    for hub_name in _hub_names(name if name is not None else None):
        _flush_one(hub_name, timeout)


def shutdown(name: str | None = None, timeout: float = _GLOBAL_FLUSH_TIMEOUT_S) -> None:
    """Flush everything, then stop the hub and node buffers of ``name`` (default: every
    experiment whose transport this process used, or the default one). Safe to call twice.

    Example:
        >>> rayplex.shutdown()  # doctest: +SKIP
    """
    if not ray.is_initialized():
        return
    names = [name] if name is not None else _hub_names(None)
    for hub_name in names:
        try:
            hub = actors.get_hub(hub_name)
        except HubNotFoundError:
            drop_transport(hub_name)
            forget_loggers(hub_name)
            continue
        try:
            _flush_one(hub_name, timeout)
        except Exception as exc:
            log.warning("rayplex: flushing %r before shutdown failed: %s", hub_name, exc)
        try:
            ray.get(hub.close.remote(), timeout=timeout)
        except Exception as exc:
            log.warning("rayplex: closing hub %r failed: %s", hub_name, exc)
        for nb in _node_buffers(hub_name):
            ray.kill(nb, no_restart=True)
        ray.kill(hub, no_restart=True)
        drop_transport(hub_name)
        forget_loggers(hub_name)
        _wait_until_gone(hub_name, timeout)


def _wait_until_gone(hub_name: str, timeout: float) -> None:
    """``ray.kill`` returns at once; wait until the names are free so that a following
    ``rayplex.init`` with the same name never gets a dying actor back."""
    import time

    names = (actors.hub_actor_name(hub_name), actors.node_buffer_name(hub_name, ""))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [n for n in actors.list_rayplex_actors()
                 if n == names[0] or n.startswith(names[1])]
        if not alive:
            return
        time.sleep(0.02)
    log.warning("rayplex: actors of %r still alive %.0f s after shutdown", hub_name, timeout)


def status() -> list[dict[str, Any]]:
    """Every live hub in the cluster with its logdir and counters.

    Example:
        >>> [h["logdir"] for h in rayplex.status()]  # doctest: +SKIP
    """
    result = []
    for hub_name in _hub_names(None):
        try:
            result.append(ray.get(actors.get_hub(hub_name).info.remote(), timeout=10))
        except Exception as exc:
            result.append({"name": hub_name, "error": repr(exc)})
    return result
