"""The driver's side of an experiment: :func:`init`, :class:`HubHandle`, :func:`flush`,
:func:`shutdown` and :func:`status`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ray

from rayplex import actors
from rayplex.config import GLOBAL_FLUSH_TIMEOUT_S, HUB_ANSWER_TIMEOUT_S, config
from rayplex.errors import HubNotFoundError, LogdirConflictError, request_error
from rayplex.groups import GroupRegistry, GroupSpec
from rayplex.session import (
    end_session,
    existing_session,
    mark_used,
    remember_registry,
    used_experiments,
)
from rayplex.watch import Rule

log = logging.getLogger("rayplex")



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
        self.uri: str | None = None
        """The logdir on object storage (credentials removed), else ``None``; then
        :attr:`logdir` is its staging directory on the hub's node."""

    def __repr__(self) -> str:
        return f"HubHandle(name={self.name!r}, logdir={self.logdir!r})"

    @classmethod
    def connect(cls, name: str | None = None, timeout: float | None = None) -> HubHandle:
        """The handle of the running experiment ``name`` (default ``RAYPLEX_HUB``), found
        without starting anything: what the compat modules and integrations use to join an
        experiment started elsewhere.

        Raises:
            HubNotFoundError: if no such hub runs, or it does not answer within ``timeout``
                seconds (default ``HUB_ANSWER_TIMEOUT_S``, 10 s).
            ValueError: if ``name`` is not a valid experiment name.
        """
        from rayplex.rules import validate_part

        hub = validate_part(name or config().hub, "experiment name")
        actor = actors.get_hub(hub)
        info = _answer(actor.info.remote(), hub, "info", timeout)
        return cls(hub, str(info["logdir"]), actor)

    @staticmethod
    def live_owner(logdir: str | os.PathLike[str]) -> str | None:
        """The name of the live hub that owns ``logdir`` on this machine, or ``None``; needs
        no Ray and creates nothing.

        Example:
            >>> import tempfile
            >>> HubHandle.live_owner(tempfile.mkdtemp()) is None
            True
        """
        from rayplex.actors.claim import holder

        owner = holder(os.path.realpath(os.path.expanduser(os.fspath(logdir))))
        return None if owner is None else str(owner.get("name", "?"))

    def registry(self, timeout: float | None = None) -> GroupRegistry:
        """The hub's group registry (how client ids route to runs), also remembered for this
        process's loggers.

        Example:
            >>> hub.registry().route("learner/main").registered  # doctest: +SKIP
            True

        Raises:
            HubNotFoundError: if the hub does not answer within ``timeout`` seconds (default
                ``HUB_ANSWER_TIMEOUT_S``, 10 s): a wedged hub never wedges the caller.
        """
        registry, _ = _answer(self.actor.hello.remote(), self.name, "hello", timeout)
        remember_registry(self.name, registry)
        return registry  # type: ignore[no-any-return]

    def register(self, spec: GroupSpec, timeout: float | None = None) -> HubHandle:
        """Add or replace the group ``spec`` (:meth:`register_normal_group` and its siblings
        are this with a spec made for you).

        Raises:
            HubNotFoundError: if the hub does not answer within ``timeout`` seconds (default
                ``HUB_ANSWER_TIMEOUT_S``).
        """
        # so that get_logger here checks against the new groups without asking the hub again
        remember_registry(self.name, _answer(self.actor.register_group.remote(spec), self.name,
                                             "register_group", timeout))
        return self

    def _register(self, spec: GroupSpec) -> HubHandle:
        # register_*_group wait as long as the hub takes (their documented behaviour)
        remember_registry(self.name, ray.get(self.actor.register_group.remote(spec)))
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

    def watch(self, rule: Rule, *, notify: Any = None, on_alert: str | None = None,
              timeout: float | None = None) -> HubHandle:
        """Have the hub watch ``rule`` (made by :mod:`rayplex.watch`: ``nan``, ``threshold``,
        ``silent``, ``step_lag``, ``outlier``, ``crashed``); returns the handle, chainable like
        ``register_*_group``. Kept as data in the logdir: it holds after a hub restart.
        Declaring a rule of the same name again replaces its ``notify`` and ``on_alert``.

        Args:
            notify: A :func:`rayplex.watch.webhook` (or a URL, or a list of them) that each
                alert is POSTed to.
            on_alert: ``"stop"`` also sends the client the ``"stop"`` signal (its next
                ``log.ping()`` returns it).

        Example:
            >>> hub.watch(rayplex.watch.nan("loss"), on_alert="stop")  # doctest: +SKIP

        Raises:
            TypeError, ValueError: for a rule, webhook or action that is not valid.
            HubNotFoundError: if the hub does not answer within ``timeout`` seconds.
        """
        from rayplex.watch import rule_to_json, with_actions

        data = rule_to_json(with_actions(rule, notify, on_alert))
        _answer(self.actor.watch.remote(data), self.name, "watch", timeout)
        return self

    def info(self) -> dict[str, Any]:
        """The hub's counters: clients, records and batches written, duplicates dropped."""
        return dict(ray.get(self.actor.info.remote()))

    def flush(self) -> None:
        """Same as :func:`rayplex.flush` for this experiment."""
        flush(self.name)

    def shutdown(self) -> None:
        """Same as :func:`rayplex.shutdown` for this experiment."""
        shutdown(self.name)

    def signal(self, client: str, sig: str) -> list[str]:
        """Same as :func:`rayplex.signal` for this experiment."""
        return signal(client, sig, self.name)

    def export_json(self, json_dir: str, timeout: float | None = None) -> None:
        """Write every run's committed scalars as ``<logdir>/<json_dir>/<run with / as .>.json``,
        each ``{tag: [[wall_time, step, value], ...]}`` (Tensorplex's export). Flush first for
        what was just logged.

        Raises:
            ValueError: if ``json_dir`` is not a relative directory of valid names, or is in one
                of rayplex's own trees (``tensorboard``, ``logs``, ``artifacts``, ``params``).
            HubNotFoundError: if the hub does not answer within ``timeout`` seconds (default
                ``RAYPLEX_FLUSH_TIMEOUT_S``).
        """
        request_id = f"handle:{uuid.uuid4().hex}"
        ok, result = _answer(self.actor.request.remote(request_id, "export_json", (json_dir,)),
                             self.name, "export_json",
                             config().flush_timeout_s if timeout is None else timeout)
        if not ok:
            raise request_error(*result)


def _answer(ref: Any, name: str, what: str, timeout: float | None) -> Any:
    """``ray.get(ref)`` bounded by ``timeout`` (default ``HUB_ANSWER_TIMEOUT_S``)."""
    limit = HUB_ANSWER_TIMEOUT_S if timeout is None else timeout
    try:
        return ray.get(ref, timeout=limit)
    except ray.exceptions.GetTimeoutError:
        raise HubNotFoundError(f"rayplex hub {name!r} did not answer {what} within "
                               f"{limit:g} s (stopped or overloaded?)") from None
    except ray.exceptions.RayActorError as exc:
        raise HubNotFoundError(f"rayplex hub {name!r} is gone: {exc}") from None


def init(logdir: str | os.PathLike[str], name: str | None = None, *,
         log_level: str = "INFO", forward: Sequence[Any] | None = None,
         filesystem: Any = None) -> HubHandle:
    """Get or create the hub of experiment ``name`` writing under ``logdir``.

    Starts a local Ray if none is initialized. Idempotent for the same logdir. The hub runs
    on this driver's node, so a plain ``logdir`` is a path on this machine. A URI that
    ``pyarrow.fs`` resolves (``s3://bucket/exp``, ``gs://...``, ``file:///...``, with query
    parameters such as ``?endpoint_override=host:port&scheme=http``) or ``logdir`` inside an
    explicit ``filesystem`` (a ``pyarrow.fs.FileSystem``) is a logdir on object storage: the
    hub writes into a staging directory on this node (:func:`rayplex.remote.staging_dir`) and
    an uploader next to it ships immutable objects, each once (:mod:`rayplex.upload`);
    :attr:`HubHandle.uri` names the bucket. The logdir and options are checked here, in the
    driver, before anything starts (a bucket: listed and written, within seconds).

    Example:
        >>> import ray, rayplex, tempfile
        >>> _ = ray.init(address="local", ignore_reinit_error=True)
        >>> hub = rayplex.init(tempfile.mkdtemp(), name="doc")
        >>> hub.shutdown()

    Raises:
        LogdirConflictError: if a hub of that name already writes to another logdir, or another
            live hub owns this logdir.
        ValueError: if ``name`` or ``log_level`` is invalid, ``logdir`` is a ``scheme://``
            that ``pyarrow.fs`` cannot resolve, a bucket that cannot be listed and written
            (wrong credentials, no answer within seconds), a file, or cannot be created.
        TypeError: if ``logdir`` is not a path, or ``forward`` holds something that is not a
            ``rayplex.forward.MLflow`` / ``rayplex.forward.WandB``.
    """
    from rayplex.remote import claimant, hydrate, probe, resolve, staging_dir, take_claim
    from rayplex.rules import validate_part
    from rayplex.textlog import parse_level

    name = validate_part(name or config().hub, "experiment name")
    if not isinstance(logdir, (str, os.PathLike)):
        raise TypeError(f"logdir must be a path, got {type(logdir).__name__}")
    target = resolve(logdir, filesystem)
    try:
        parse_level(log_level)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"log_level {log_level!r} is not a level name such as 'INFO', "
                         "'DEBUG' or 'INFO5'") from exc
    trackers = _check_forward(forward)
    if target is not None:
        probe(target)
        logdir = staging_dir(target)
        claim = claimant(name, logdir)
        take_claim(target, claim)  # one hub per bucket logdir, whichever node it runs on
        hydrate(target, logdir)  # a new node or a cleaned temp dir: start from the bucket
        _set_staged(logdir, trackers)
    path = os.path.realpath(os.path.expanduser(os.fspath(logdir)))
    _check_logdir(path)
    if not ray.is_initialized():
        ray.init()
    _check_owner(path, name)
    node_id = ray.get_runtime_context().get_node_id()
    actor = actors.get_or_create_hub(name, path, node_id, log_level)
    info = _hub_info(actor)
    if info["logdir"] != path:
        raise LogdirConflictError(
            f"rayplex hub {name!r} already writes to {info['logdir']!r}, not {path!r}. Use "
            f"rayplex.init({path!r}, name='<another name>') for a second experiment, or call "
            f"rayplex.shutdown(name={name!r}) first."
        )
    mark_used(name)
    _start_forwarders(name, path, node_id, trackers)
    _start_store_feed(name, path, node_id)
    handle = HubHandle(name, path, actor)
    if target is not None:
        from rayplex.upload import get_or_create_uploader

        cfg = config()
        get_or_create_uploader(name, path, target, node_id, cfg.upload_segment_s,
                               int(cfg.upload_segment_mb * 2**20),
                               int(cfg.staging_max_mb * 2**20), claim)
        handle.uri = target.uri
    return handle


def _set_staged(staging: str, trackers: list[Any]) -> None:
    """Tell the hub and the uploader of a staging directory its bound, its event files'
    rotation and who else reads its event files (they are deleted once up and read)."""
    from rayplex.remote import Staged, set_staged
    from rayplex.store.follower import store_available

    cfg = config()
    set_staged(staging, Staged(int(cfg.staging_max_mb * 2**20),
                               int(cfg.event_rotate_mb * 2**20), cfg.event_rotate_s,
                               bool(cfg.store and store_available()),
                               tuple(t.key for t in trackers)))


def _check_forward(forward: Sequence[Any] | None) -> list[Any]:
    """``forward=`` checked in the driver: trackers of distinct keys."""
    from rayplex.forward import MLflow, WandB

    if forward is None:
        return []
    if isinstance(forward, (MLflow, WandB)):
        forward = [forward]
    trackers = list(forward)
    keys = set()
    for tracker in trackers:
        if not isinstance(tracker, (MLflow, WandB)):
            raise TypeError(f"forward= takes rayplex.forward.MLflow(...) or "
                            f"rayplex.forward.WandB(...) objects, got {tracker!r:.80}")
        if tracker.key in keys:
            raise ValueError(f"forward= names tracker {tracker.key!r} twice")
        keys.add(tracker.key)
    return trackers


def _start_forwarders(name: str, path: str, node_id: str, trackers: list[Any]) -> None:
    from rayplex.forward.actor import get_or_create_forwarder

    handles = [get_or_create_forwarder(name, path, t, node_id) for t in trackers]
    if handles:  # constructed (the tracker itself is reached in the background)
        ray.get([h.info.remote() for h in handles])


def _start_store_feed(name: str, path: str, node_id: str) -> None:
    """The live store feed next to the hub, unless ``RAYPLEX_STORE=0`` or the ``[store]``
    extra is missing."""
    from rayplex.store.follower import store_available

    if config().store and store_available():
        from rayplex.store.feed import get_or_create_store_feed

        get_or_create_store_feed(name, path, node_id)


def _stop_store_feed(name: str, timeout: float) -> None:
    """After the hub closed: index what is left (within ``timeout``), then stop the feed."""
    from rayplex.store.feed import store_feed_name

    try:
        handle = ray.get_actor(store_feed_name(name), namespace="rayplex")
    except ValueError:
        return
    done = _get_all([handle.drain.remote(timeout)], timeout + 10)[0]
    if done is not True:
        log.warning("rayplex: the store of %r did not catch up within %.0f s (%s); its manifest "
                    "keeps its place: rayplex.index(logdir) or the next rayplex.init resumes it",
                    name, timeout, done)
    _get_all([handle.stop.remote()], 70)
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + timeout  # a following init must not get the dying feed back
    while store_feed_name(name) in actors.list_rayplex_actors() and time.monotonic() < deadline:
        time.sleep(0.02)


def _uploader(name: str) -> Any:
    from rayplex.upload import uploader_name

    try:
        return ray.get_actor(uploader_name(name), namespace="rayplex")
    except ValueError:
        return None


def _drain_uploader(name: str, timeout: float) -> list[str]:
    """Upload what the hub committed (logdirs on object storage); what is still pending
    after ``timeout``, as words for the caller's warning."""
    handle = _uploader(name)
    if handle is None:
        return []
    done = _get_all([handle.drain.remote(timeout)], timeout + 10)[0]
    if done is True:
        return []
    info = _get_all([handle.info.remote()], 10)[0]
    pending = (f"{info.get('lag_bytes', '?')} bytes, {info.get('problem') or 'no error'}"
               if isinstance(info, dict) else repr(info))
    return [f"uploader (still pending: {pending})"]


def _stop_uploader(name: str, timeout: float) -> None:
    """After the hub closed and the store feed stopped: upload the rest, stop the uploader."""
    late = _drain_uploader(name, timeout)
    if late:
        log.warning("rayplex: %r did not reach its bucket within %.0f s: %s; the staging "
                    "directory and its upload journal keep it: the next rayplex.init on this "
                    "URI uploads the rest", name, timeout, late[0])
    handle = _uploader(name)
    if handle is not None:
        from rayplex.upload import uploader_name

        _get_all([handle.stop.remote()], 70)
        ray.kill(handle, no_restart=True)
        deadline = time.monotonic() + timeout  # a following init must not get it back
        while (uploader_name(name) in actors.list_rayplex_actors()
               and time.monotonic() < deadline):
            time.sleep(0.02)


def _forwarders(name: str) -> list[Any]:
    return [handle for _, handle in _named_forwarders(name)]


def _named_forwarders(name: str) -> list[tuple[str, Any]]:
    """``(tracker key, actor handle)`` of every live forwarder of experiment ``name``."""
    from rayplex.forward.actor import forwarder_name

    prefix = forwarder_name(name)
    handles = []
    for actor_name in actors.list_rayplex_actors():
        if actor_name.startswith(prefix):
            with contextlib.suppress(ValueError):
                handles.append((actor_name[len(prefix):],
                                ray.get_actor(actor_name, namespace="rayplex")))
    return handles


def _stop_forwarders(name: str, timeout: float) -> None:
    """After the hub closed: forward what is left (within ``timeout``), then stop them."""
    handles = _forwarders(name)
    for done in _get_all([h.drain.remote(timeout) for h in handles], timeout + 10):
        if done is not True:
            log.warning("rayplex: a forwarder of %r did not catch up within %.0f s; its "
                        "cursor keeps its place: rayplex.init(..., forward=[...]) on this "
                        "logdir resumes it", name, timeout)
    # W&B's finish() takes seconds per run on a busy machine: a kill before it returns could
    # leave runs unfinished (their data is written; their summary and exit record are not).
    _get_all([h.stop.remote() for h in handles], 300)
    for handle in handles:
        ray.kill(handle, no_restart=True)


def _get_all(refs: list[Any], timeout: float) -> list[Any]:
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref, timeout=timeout))
        except Exception as exc:
            out.append(exc)
    return out


def _check_logdir(path: str) -> None:
    """The hub creates the logdir; check here that it can, so a mistake is one clear error in
    the driver instead of a dead actor."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"logdir {path!r} exists and is not a directory")
    ancestor = path
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(f"logdir {path!r} cannot be created: {ancestor!r} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"logdir {path!r} cannot be created or written: no permission on "
                         f"{ancestor!r}")


def _hub_info(actor: Any) -> dict[str, Any]:
    """The new (or running) hub's ``info()``. A hub whose logdir another live hub holds fails
    in its constructor (no actor is left behind): that is this driver's
    :class:`LogdirConflictError`, with the hub's own message."""
    try:
        return dict(ray.get(actor.info.remote()))
    except ray.exceptions.RayActorError as exc:
        marker = f"{LogdirConflictError.__name__}: "
        text = str(exc)
        if marker not in text:
            raise
        with contextlib.suppress(Exception):  # dead already; never left behind as a name
            ray.kill(actor, no_restart=True)
        raise LogdirConflictError(text.rsplit(marker, 1)[1].splitlines()[0]) from None


def _check_owner(path: str, name: str) -> None:
    """Refuse early a logdir that another live hub owns (its ``.rayplex/owner.json``); the
    hub's own lock (:mod:`rayplex.actors.claim`) decides a race."""
    from rayplex.actors.claim import read_owner
    from rayplex.layout import state_dir

    owner = read_owner(state_dir(path)) or {}
    if "name" not in owner or "actor" not in owner:
        return  # no owner, or not readable: the hub takes it over
    owner_name, owner_actor = str(owner["name"]), str(owner["actor"])
    if owner_name == name:
        return
    try:
        live = actors.actor_identity(actors.get_hub(owner_name)) == owner_actor
    except HubNotFoundError:
        live = False
    if live:
        raise LogdirConflictError(
            f"logdir {path!r} belongs to the running rayplex hub {owner_name!r}; use "
            f"rayplex.init({path!r}, name={owner_name!r}) to log into it, another logdir, or "
            f"rayplex.shutdown(name={owner_name!r}) first")


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


def _flush_one(name: str, timeout: float) -> list[str]:
    """Flush experiment ``name`` everywhere within about ``timeout`` seconds; returns the
    senders that could not be flushed in time."""
    hub = actors.get_hub(name)
    session = existing_session(name)
    if session is not None and session.closed is None:
        session.flush(timeout)
    buffers = _node_buffers(name)
    late: list[str] = []
    refs = [nb.flush_senders.remote(timeout) for nb in buffers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout + 5)
    for ref in refs:
        if ref in ready:
            try:
                late += ray.get(ref)
            except Exception as exc:
                late.append(f"node buffer ({exc.__class__.__name__})")
        else:
            late.append("node buffer (no answer)")
    ray.get(hub.flush.remote(), timeout=timeout + 5)
    late += _drain_uploader(name, timeout)
    if late:
        log.warning("rayplex: flushed experiment %r, but these senders did not answer within "
                    "%.0f s: %s", name, timeout, ", ".join(sorted(late)))
    return late


def flush(name: str | None = None, timeout: float = GLOBAL_FLUSH_TIMEOUT_S) -> None:
    """Write out everything logged so far: this process (pending ``log()`` rows too), every
    live sender on every node (tasks, actors, other drivers: asked through their node buffer,
    all at once), and the hub. Returns within about ``timeout`` + 5 s; senders that did not
    answer in time are named in a warning. Tasks flush by themselves when they return.

    Example:
        >>> rayplex.flush()  # doctest: +SKIP

    Raises:
        HubNotFoundError: if ``name`` is given and no such hub runs.
    """
    names = [name] if name is not None else [n for n in used_experiments()
                                               if n in _hub_names(None)]
    for hub_name in names:
        _flush_one(hub_name, timeout)


def shutdown(name: str | None = None, timeout: float = GLOBAL_FLUSH_TIMEOUT_S, *,
             all: bool = False) -> None:  # noqa: A002 - the documented keyword
    """Flush, then stop the hub and node buffers of the experiments this process initialised
    or logged to (``name``: that one; ``all=True``: every experiment in the cluster). Loggers
    of a stopped experiment raise :class:`~rayplex.errors.RayplexError` from then on. Safe to
    call twice.

    Example:
        >>> rayplex.shutdown()  # doctest: +SKIP
    """
    if not ray.is_initialized():
        return
    if all:
        names = _hub_names(None)
    elif name is not None:
        names = [name]
    else:
        names = used_experiments()
    for hub_name in names:
        reason = (f"experiment {hub_name!r} was shut down; call rayplex.get_logger again "
                  "after rayplex.init")
        try:
            hub = actors.get_hub(hub_name)
        except HubNotFoundError:
            end_session(hub_name, reason)
            continue
        try:
            _flush_one(hub_name, timeout)
        except Exception as exc:
            log.warning("rayplex: flushing %r before shutdown failed: %s", hub_name, exc)
        end_session(hub_name, reason)
        try:
            ray.get(hub.close.remote(), timeout=timeout)
        except Exception as exc:
            log.warning("rayplex: closing hub %r failed: %s", hub_name, exc)
        for nb in _node_buffers(hub_name):
            ray.kill(nb, no_restart=True)
        _stop_forwarders(hub_name, timeout)
        _stop_store_feed(hub_name, timeout)
        _stop_uploader(hub_name, timeout)
        ray.kill(hub, no_restart=True)
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
            info = ray.get(actors.get_hub(hub_name).info.remote(), timeout=10)
            info["forwarders"] = _get_all([h.info.remote() for h in _forwarders(hub_name)], 10)
            uploader = _uploader(hub_name)
            if uploader is not None:
                info["upload"] = _get_all([uploader.info.remote()], 10)[0]
            result.append(info)
        except Exception as exc:
            result.append({"name": hub_name, "error": repr(exc)})
    return result


def forward_status(name: str | None = None) -> list[dict[str, Any]]:
    """Every forwarder of the live experiments (or of experiment ``name``), one dict each:
    ``hub``, ``tracker`` and its counters — ``forwarded`` and ``images`` (sent once),
    ``refused`` and ``refused_causes`` (what the tracker will never take: counted, reported
    once per cause in ``logs/all.log``, never retried), ``gone_runs`` (runs deleted in the
    tracker), ``failures``, ``retries`` and ``problem`` (an outage, retried with back-off),
    ``lag_bytes``, ``cursor_damaged``. A forwarder that does not answer within 10 s is a dict
    with ``error``. The same counters are in ``rayplex.status()[i]["forwarders"]``.

    Example:
        >>> [(f["tracker"], f["forwarded"], f["refused"]) for f in rayplex.forward_status()]
        ... # doctest: +SKIP
        [('mlflow-1a2b3c4d', 12000, 0)]
    """
    rows: list[dict[str, Any]] = []
    for hub_name in _hub_names(name):
        named = _named_forwarders(hub_name)
        infos = _get_all([handle.info.remote() for _, handle in named], 10)
        for (key, _), info in zip(named, infos, strict=True):
            row = dict(info) if isinstance(info, dict) else {"error": repr(info)}
            rows.append({"hub": hub_name, "tracker": key, **row})
    return rows


def signal(client: str, sig: str, name: str | None = None) -> list[str]:
    """Send signal ``sig`` (``"stop"``, ``"pause"``, any 1-64 of letters, digits, ``_ . -``)
    to ``client``: its next ``logger.ping()`` returns it, once. A signal already pending for
    that client is not queued twice.

    Example:
        >>> rayplex.signal("agent/3", "stop")  # doctest: +SKIP
        ['stop']

    Returns:
        The signals now pending for ``client``, oldest first.

    Raises:
        ValueError: for a bad client id or signal name (checked here, before the hub is asked).
        HubNotFoundError: if the experiment's hub is not running.
    """
    from rayplex.rules import check_client_id, check_signal

    check_client_id(client)
    check_signal(sig)
    hub = actors.get_hub(name or config().hub)
    return list(ray.get(hub.signal.remote(client, sig)))
