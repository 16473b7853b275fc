"""Tensorplex's API on rayplex: change ``from tensorplex import ...`` to
``from rayplex.compat.tensorplex import ...`` and the rest of the code stays as it is.

Tensorplex (github.com/StanfordVL/Tensorplex) has a long-running server script and client
scripts that reach it by host and port over ZeroMQ. Here the "server" is a rayplex experiment
(a hub actor in the Ray cluster) and the clients are :class:`rayplex.Logger` objects; Ray finds
the hub, so ``host`` and ``port`` are accepted and ignored. What maps to what:

=======================================  ==================================================
Tensorplex                               rayplex
=======================================  ==================================================
``Tensorplex(root, max_processes=4)``    ``rayplex.init(root)`` when the server starts
                                         (``max_processes`` is ignored: workers encode)
``.register_normal_group(...)`` etc.     ``HubHandle.register_normal_group(...)`` etc.
``.start_server(port)``                  blocks until Ctrl-C / SIGTERM, then
                                         ``rayplex.shutdown()`` (everything flushed)
``TensorplexClient(id, host, port)``     ``rayplex.get_logger(id)``
``add_scalar(tag, v, global_step)``      ``Logger.add_scalar(tag, v, step)``
``Loggerplex(folder, ...)``              ``rayplex.init(folder)`` (the same experiment)
``LoggerplexClient(id, host, port)``     ``rayplex.get_logger(id)``; an id without ``/``
                                         (``"agent2"``) becomes ``loggerplex/agent2``
``client.info("a", 1)``                  ``Logger.info("a 1")`` (print-style message)
=======================================  ==================================================

On disk, the runs land in ``<root_folder>/tensorboard/`` (``tensorboard --logdir
<root_folder>`` shows them) and the Loggerplex lines in ``<folder>/logs/<group>/<name>.log``
and ``<folder>/logs/all.log``. Tensorplex and Loggerplex servers share one experiment: give
them the same folder, or start only one of them (either serves both kinds of clients).

Every class here calls ``ray.init()`` itself when Ray is not initialised in the process,
honouring ``RAY_ADDRESS``; a client with no Ray running yet and no ``RAY_ADDRESS`` connects to
the cluster on this machine (``address="auto"``) as soon as one appears. A client started before
its server waits for the server's hub, at most ``RAYPLEX_HUB_WAIT_S`` seconds (default 60),
then raises :class:`~rayplex.errors.HubNotFoundError`. A client process needs no clean-up:
everything it logged is flushed when its script ends.

Differences kept on purpose: ``global_step=None`` continues the tag's own count (0, 1, 2, ...)
instead of writing every point at step 0; an unregistered group is routed as a normal group
with a warning instead of being refused; ``print_done()`` flushes and prints ``done`` lines in
the client's terminal, not the server's.

Example:
    >>> from rayplex.compat.tensorplex import Tensorplex, TensorplexClient
    >>> server = Tensorplex("/tmp/tplex").register_indexed_group("agent", 8)  # doctest: +SKIP
    >>> server.start_server(port=8008)  # blocks; in another process:  # doctest: +SKIP
    >>> client = TensorplexClient("agent/3", host="localhost", port=8008)  # doctest: +SKIP
    >>> client.add_scalar("reward", 1.0, 0)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray

import rayplex
from rayplex.config import (
    TENSORPLEX_GROUPS_SETTLE_S,
    TENSORPLEX_GROUPS_WAIT_S,
    TENSORPLEX_POLL_S,
    config,
)
from rayplex.errors import HubNotFoundError
from rayplex.groups import GroupSpec
from rayplex.handle import HubHandle
from rayplex.logger import Logger
from rayplex.rules import split_client_id
from rayplex.textlog import FINE_LEVELS, parse_level

__all__ = ["LOGGERPLEX_GROUP", "Loggerplex", "LoggerplexClient", "Tensorplex",
           "TensorplexClient", "live_owner", "loggerplex_client_id", "tensorplex_level"]

LOGGERPLEX_GROUP = "loggerplex"
"""The group of a Loggerplex id without ``/``: ``"agent2"`` logs as ``loggerplex/agent2``
(``logs/loggerplex/agent2.log``). The servers register it as a normal group."""

_GROUPS_WAIT_S = TENSORPLEX_GROUPS_WAIT_S
_GROUPS_SETTLE_S = TENSORPLEX_GROUPS_SETTLE_S
_POLL_S = TENSORPLEX_POLL_S

_ready: set[tuple[str, str | None]] = set()
"""(hub, group) pairs this process already waited for."""


def hub_wait_s() -> float:
    """How long a client waits for its server's hub (``RAYPLEX_HUB_WAIT_S``, default 60 s)."""
    return config().hub_wait_s


def live_owner(folder: str | os.PathLike[str]) -> str | None:
    """The name of the live rayplex hub that owns ``folder`` on this machine, or ``None``:
    what a server script checks before it clears its folder (a server restarted after a
    crash finds its hub, and its clients, still writing there). Needs no Ray; creates nothing.

    Example:
        >>> import tempfile
        >>> live_owner(tempfile.mkdtemp()) is None
        True
    """
    return HubHandle.live_owner(folder)


def _init_ray_for_client(deadline: float) -> None:
    """Join the Ray cluster (``RAY_ADDRESS``, else the one on this machine), waiting until
    ``deadline`` for one to appear: a client may be started before its server."""
    address = os.environ.get("RAY_ADDRESS") or "auto"
    while True:
        try:
            ray.init(address=address, ignore_reinit_error=True)
            return
        except ConnectionError as exc:
            if time.monotonic() >= deadline:
                raise HubNotFoundError(
                    f"no Ray cluster to join at {address!r}: start the server script first "
                    "(Tensorplex(...).start_server(port)), or set RAY_ADDRESS to its cluster"
                ) from exc
            time.sleep(_POLL_S)


def _connect(experiment: str | None, group: str | None = None) -> str:
    """Make sure Ray runs here and the experiment's hub is up (waiting for it, bounded) with
    its server's groups (``group``, the client's, when the server registers it); return the
    hub's name."""
    name = experiment or config().hub
    wait = hub_wait_s()
    deadline = time.monotonic() + wait
    if not ray.is_initialized():
        _init_ray_for_client(deadline)
    if (name, group) in _ready:
        return name
    while True:
        try:
            hub = HubHandle.connect(name, timeout=max(_POLL_S, deadline - time.monotonic()))
            break
        except HubNotFoundError:
            if time.monotonic() >= deadline:
                raise HubNotFoundError(
                    f"no rayplex hub {name!r} appeared in this Ray cluster within {wait:g} s: "
                    "start the server script first (Tensorplex(root).start_server(port) or "
                    "Loggerplex(folder).start_server(port)), or wait longer with "
                    "RAYPLEX_HUB_WAIT_S") from None
            time.sleep(_POLL_S)
    # The hub's name is taken before its constructor has run, and the server registers its
    # groups right after, one call each (slowly on a loaded machine): wait for the client's
    # group, or for the server's groups to settle (a group the server does not register), so
    # that this client routes with them from its first call (a later change is handled by the
    # session anyway).
    until: float | None = None
    seen: frozenset[str] = frozenset()
    changed = 0.0
    while True:
        try:  # registry() also hands it to get_logger, to check ids against these groups
            registry = hub.registry(timeout=max(_POLL_S, deadline - time.monotonic()))
        except HubNotFoundError:  # not up within the wait, or restarting: the session retries
            break
        now = time.monotonic()
        if until is None:
            until = min(deadline, now + _GROUPS_WAIT_S)
        groups = frozenset(registry.groups)
        if groups != seen:
            seen, changed = groups, now
        settled = bool(groups) and now - changed >= _GROUPS_SETTLE_S
        if (group in groups if group is not None else bool(groups)) or settled or now >= until:
            break
        time.sleep(_POLL_S)
    _ready.add((name, group))
    return name


def _block_until_stopped(what: str, hub: HubHandle) -> None:
    """Block like Tensorplex's server loop; on Ctrl-C or SIGTERM flush everything and shut the
    experiment down."""
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: Ctrl-C is KeyboardInterrupt
            previous[sig] = signal.signal(sig, _stop)
    print(f"{what} serving experiment {hub.name!r} in {hub.logdir} (view with: tensorboard "
          f"--logdir {hub.logdir}); Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"{what}: flushing and shutting down experiment {hub.name!r}", flush=True)
        rayplex.shutdown(hub.name)


class Tensorplex:
    """The server side: the experiment whose runs land in ``<root_folder>/tensorboard/``.

    Groups are registered as in Tensorplex (chainable); nothing starts until
    :meth:`start_server` (or :meth:`start`).

    Example:
        >>> tplex = Tensorplex("/tmp/tplex", max_processes=4)
        >>> _ = (tplex.register_normal_group("learner")
        ...          .register_indexed_group("agent", 8)
        ...          .register_combined_group("ablation", lambda name: name[:2]))
        >>> [spec.kind for spec in tplex.groups]
        ['normal', 'indexed', 'combined']

    Raises:
        TypeError: if ``root_folder`` is not a path.
    """

    def __init__(self, root_folder: str | os.PathLike[str], max_processes: int = 4, *,
                 experiment: str | None = None) -> None:
        if not isinstance(root_folder, (str, os.PathLike)):
            raise TypeError(f"root_folder must be a path, got {type(root_folder).__name__}")
        self.root_folder = os.path.expanduser(os.fspath(root_folder))
        self.max_processes = max_processes
        """Accepted for compatibility; rayplex encodes in the workers, not in server processes."""
        self.experiment = experiment
        self.groups: list[GroupSpec] = []
        self.hub: HubHandle | None = None

    def _add(self, spec: GroupSpec) -> Tensorplex:
        self.groups.append(spec)
        if self.hub is not None:
            self.hub.register(spec)
        return self

    def register_normal_group(self, name: str) -> Tensorplex:
        """Clients ``<name>/<x>`` share run ``<name>``, tags ``<x>/<tag>`` (one curve a chart).

        Raises:
            ValueError: if ``name`` is not a valid group name.
        """
        return self._add(GroupSpec.normal(name))

    def register_indexed_group(self, name: str, bin_size: int) -> Tensorplex:
        """Clients ``<name>/<int>``, ``bin_size`` curves overlaid per chart.

        Raises:
            ValueError: if ``name`` is invalid or ``bin_size < 1``.
            TypeError: if ``bin_size`` is not an int.
        """
        return self._add(GroupSpec.indexed(name, bin_size))

    def register_combined_group(self, name: str,
                                tag_to_bin_name: Callable[[str], str]) -> Tensorplex:
        """Clients ``<name>/<x>`` overlaid in the chart ``tag_to_bin_name(x)``.

        Raises:
            ValueError: if ``name`` is invalid.
            TypeError: if ``tag_to_bin_name`` is not callable.
        """
        return self._add(GroupSpec.combined(name, tag_to_bin_name))

    def start(self) -> HubHandle:
        """Start (or join) the experiment and register the groups, without blocking.

        Raises:
            LogdirConflictError: if the experiment already runs with another folder.
        """
        if self.hub is None:
            if not ray.is_initialized():
                ray.init()  # honours RAY_ADDRESS, as rayplex.init does
            # Loggerplex clients it serves keep info1..9 lines, as Loggerplex's default does
            hub = rayplex.init(self.root_folder, self.experiment, log_level="INFO9")
            hub.register_normal_group(LOGGERPLEX_GROUP)
            for spec in self.groups:
                hub.register(spec)
            self.hub = hub
        return self.hub

    def start_server(self, port: int | None = None, host: str | None = None) -> None:
        """Start and block until Ctrl-C or SIGTERM; then flush everything and shut the
        experiment down. ``port`` and ``host`` are ignored: clients find the hub through Ray.
        """
        _block_until_stopped("Tensorplex server", self.start())

    def proxy(self, client_id: str) -> TensorplexClient:
        """A client in this process (Tensorplex's local proxy)."""
        return TensorplexClient(client_id, experiment=self.start().name)


class TensorplexClient:
    """A Tensorplex client: ``add_*`` calls routed by its group, as Tensorplex routes them.

    Example:
        >>> client = TensorplexClient("agent/3", host="localhost", port=8008)  # doctest: +SKIP
        >>> client.add_scalars({"reward": 1.0, ".sec/x": 2.0}, 10)  # doctest: +SKIP

    Raises:
        ValueError: if ``client_id`` is not ``<group>/<name>`` (an integer name in an indexed
            group).
        HubNotFoundError: if the server's hub did not appear within ``RAYPLEX_HUB_WAIT_S``.
    """

    _ids: set[str] = set()
    """Every client made in this process (for ``print_done``)."""

    def __init__(self, client_id: str, host: str | None = None, port: int | None = None, *,
                 experiment: str | None = None) -> None:
        split_client_id(client_id)
        self.client_id = client_id
        self.host, self.port = host, port
        self.experiment = _connect(experiment, client_id.partition("/")[0])
        self.logger: Logger = rayplex.get_logger(client_id, self.experiment)
        TensorplexClient._ids.add(client_id)

    def __repr__(self) -> str:
        return f"TensorplexClient({self.client_id!r})"

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None) -> None:
        """One scalar (see :meth:`rayplex.Logger.add_scalar`)."""
        self.logger.add_scalar(tag, scalar_value, global_step, walltime)

    def add_scalars(self, tag_scalar_dict: Mapping[str, Any], global_step: int | None = None,
                    walltime: float | None = None) -> None:
        """Several ``add_scalar`` at one step (Tensorplex's meaning, not tensorboardX's)."""
        self.logger.add_scalars(tag_scalar_dict, global_step, walltime)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None,
                      bins: Any = "tensorflow", walltime: float | None = None,
                      max_bins: int | None = None) -> None:
        """A histogram of ``values``."""
        self.logger.add_histogram(tag, values, global_step, bins, walltime, max_bins)

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None,
                  walltime: float | None = None, dataformats: str = "CHW") -> None:
        """One image; C×H×W by default, as in tensorboardX."""
        self.logger.add_image(tag, img_tensor, global_step, walltime, dataformats)

    def add_text(self, tag: str, text_string: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        """A piece of text (Markdown)."""
        self.logger.add_text(tag, text_string, global_step, walltime)

    def add_audio(self, tag: str, snd_tensor: Any, global_step: int | None = None,
                  sample_rate: int = 44100, walltime: float | None = None) -> None:
        """Audio samples in [-1, 1]."""
        self.logger.add_audio(tag, snd_tensor, global_step, sample_rate, walltime)

    def add_embedding(self, mat: Any, metadata: Sequence[Any] | None = None,
                      label_img: Any = None, global_step: int | None = None,
                      tag: str = "default", metadata_header: Sequence[Any] | None = None) -> None:
        """Points for TensorBoard's projector (see :meth:`rayplex.Logger.add_embedding`)."""
        self.logger.add_embedding(mat, metadata, label_img, global_step, tag, metadata_header)

    def export_json(self, json_dir: str) -> None:
        """Tensorplex's export: every run's scalars, written after a flush as
        ``<root_folder>/<json_dir>/<run with / as .>.json``, each ``{tag: [[wall_time, step,
        value], ...]}``.

        Raises:
            ValueError: if ``json_dir`` is not a relative directory of valid names, or is in
                one of rayplex's own trees (``tensorboard``, ``logs``, ``artifacts``,
                ``params``).
        """
        self.logger.flush()
        HubHandle.connect(self.logger.hub).export_json(json_dir)

    def flush(self) -> None:
        """Everything this process logged is on disk when this returns."""
        self.logger.flush()

    def print_done(self) -> None:
        """Flush, then print ``<run> done`` for each run this process's clients wrote to
        (Tensorplex prints its ``done`` list in the server's terminal)."""
        self.logger.flush()
        registry = HubHandle.connect(self.experiment).registry()  # the hub's, after the flush
        for run in sorted({registry.route(c).run for c in TensorplexClient._ids}):
            print(run, "done", flush=True)


# ------------------------------------------------------------------------------- Loggerplex


def tensorplex_level(level: str | int) -> int:
    """A Tensorplex level as a rayplex threshold that keeps the same lines.

    Tensorplex numbers its finer levels above their base (``INFO7`` = 27), rayplex below
    (``INFO7`` = 13), so ``"info"`` becomes ``INFO9`` (info and info1..9 kept, debug* dropped,
    as in Tensorplex) and ``"debug"`` becomes ``DEBUG9`` (everything kept); other levels are
    the same.

    Example:
        >>> tensorplex_level("info"), tensorplex_level(logging.DEBUG), tensorplex_level("error")
        (11, 1, 40)

    Raises:
        ValueError: for an unknown level name.
    """
    number = parse_level(level)
    return {logging.INFO: FINE_LEVELS["INFO9"], logging.DEBUG: FINE_LEVELS["DEBUG9"]}.get(
        number, number)


def _message(args: Sequence[Any], sep: str = " ") -> str:
    """Tensorplex's print-style message: the arguments joined by ``sep``."""
    return sep.join(str(a) for a in args)


_FMT_KEYS = ("exc_info", "stack_info", "extra")


def _format(msg: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """Tensorplex's ``...fmt`` message: ``str.format`` with the positional and keyword
    arguments (but not the logging ones)."""
    fmt_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k not in _FMT_KEYS}
    return str(msg).format(*args, **fmt_kwargs)


class Loggerplex:
    """The Loggerplex server: the experiment whose ``logs/`` holds every client's lines.

    ``overwrite``, ``format``, ``time_format`` and ``show_level`` are accepted and ignored
    (rayplex's line format is fixed: ISO time, level, client, ...); ``level`` is the
    experiment's log level, translated by :func:`tensorplex_level` (lines below it are dropped
    where they are logged).

    Example:
        >>> server = Loggerplex("/tmp/tplex", level="info")
        >>> server.start_server(port=6379)  # blocks  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike[str], overwrite: bool = False,
                 level: str | int = "info", format: str | None = None,  # noqa: A002
                 time_format: str | None = "hms", show_level: bool = True, *,
                 debug: bool = False, experiment: str | None = None) -> None:
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path, got {type(folder).__name__}")
        self.folder = os.path.expanduser(os.fspath(folder))
        self.level = logging.getLevelName(tensorplex_level("debug" if debug else level))
        self.experiment = experiment
        self.hub: HubHandle | None = None

    def start(self) -> HubHandle:
        """Start (or join) the experiment without blocking."""
        if self.hub is None:
            if not ray.is_initialized():
                ray.init()
            hub = rayplex.init(self.folder, self.experiment, log_level=self.level)
            hub.register_normal_group(LOGGERPLEX_GROUP)
            self.hub = hub
        return self.hub

    def start_server(self, port: int | None = None, host: str | None = None) -> None:
        """Start and block until Ctrl-C or SIGTERM, then flush and shut down."""
        _block_until_stopped("Loggerplex server", self.start())

    def proxy(self, client_id: str) -> LoggerplexClient:
        """A client in this process (Loggerplex's local proxy)."""
        return LoggerplexClient(client_id, experiment=self.start().name)


def loggerplex_client_id(client_id: str) -> str:
    """The rayplex client id of a Loggerplex id: unchanged with a ``/``, else in
    :data:`LOGGERPLEX_GROUP`.

    Example:
        >>> loggerplex_client_id("agent2"), loggerplex_client_id("agent/2")
        ('loggerplex/agent2', 'agent/2')

    Raises:
        TypeError: if ``client_id`` is not a str.
    """
    if not isinstance(client_id, str):
        raise TypeError(f"client_id must be a str, got {type(client_id).__name__}")
    return client_id if "/" in client_id else f"{LOGGERPLEX_GROUP}/{client_id}"


class LoggerplexClient:
    """A Loggerplex client with Tensorplex's logger methods: print-style ``info("a", 1)``,
    ``str.format``-style ``infofmt("{} of {}", 1, 2)``, ``info1``..``info9`` and
    ``debug1``..``debug9`` (and their ``fmt`` forms), ``section``, ``exception(msg, exc=e)``.

    Lines go to ``logs/<group>/<name>.log`` and ``logs/all.log``;
    ``enable_local_logger=True`` also prints them here (``LEVEL> message``).

    Example:
        >>> log = LoggerplexClient("agent2", host="localhost", port=6379)  # doctest: +SKIP
        >>> log.info("client", 2); log.info7fmt("step {:>5d}", 10)  # doctest: +SKIP

    Raises:
        ValueError: if the mapped client id is invalid.
        HubNotFoundError: if the server's hub did not appear within ``RAYPLEX_HUB_WAIT_S``.
    """

    def __init__(self, client_id: str, host: str | None = None, port: int | None = None, *,
                 enable_local_logger: bool = False, local_logger_stream: Any = "stdout",
                 local_logger_level: str | int = "info", local_logger_format: str | None = None,
                 local_logger_time_format: str | None = None,
                 experiment: str | None = None) -> None:
        mapped = loggerplex_client_id(client_id)
        split_client_id(mapped)
        self.client_id = mapped
        self.host, self.port = host, port
        hub = _connect(experiment, mapped.partition("/")[0])
        with warnings.catch_warnings():
            if mapped.startswith(LOGGERPLEX_GROUP + "/"):  # the servers register it
                warnings.filterwarnings("ignore", message=".*group 'loggerplex' is not regist")
            self.logger: Logger = rayplex.get_logger(mapped, hub)
        self.local: logging.Logger | None = None
        if enable_local_logger:
            self.local = _local_logger(mapped, local_logger_stream,
                                       tensorplex_level(local_logger_level),
                                       local_logger_time_format)

    def __repr__(self) -> str:
        return f"LoggerplexClient({self.client_id!r})"

    def _send(self, level: int, message: str, exc_info: Any = None,
              stack_info: bool = False) -> None:
        self.logger.log_text(level, message, exc_info=exc_info, stack_info=stack_info)
        if self.local is not None:
            self.local.log(level, "%s", message, exc_info=exc_info, stack_info=stack_info)

    def log(self, level: int | str, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """A print-style line at ``level`` (a number or a name such as ``"INFO5"``)."""
        self._send(parse_level(level), _message(args, sep), **kwargs)

    def logfmt(self, level: int | str, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A ``str.format`` line at ``level``."""
        message = _format(msg, args, kwargs)
        self._send(parse_level(level), message, **kwargs)

    def debug(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """A print-style DEBUG line: ``debug("x", 1)`` logs ``x 1``."""
        self.log(logging.DEBUG, *args, sep=sep, **kwargs)

    def info(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """A print-style INFO line: ``info("loss", 0.3, sep="=")`` logs ``loss=0.3``."""
        self.log(logging.INFO, *args, sep=sep, **kwargs)

    def warning(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """A print-style WARNING line."""
        self.log(logging.WARNING, *args, sep=sep, **kwargs)

    def error(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """A print-style ERROR line."""
        self.log(logging.ERROR, *args, sep=sep, **kwargs)

    def critical(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """A print-style CRITICAL line."""
        self.log(logging.CRITICAL, *args, sep=sep, **kwargs)

    def debugfmt(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A ``str.format`` DEBUG line: ``debugfmt("{:0>3d}", 7)`` logs ``007``."""
        self.logfmt(logging.DEBUG, msg, *args, **kwargs)

    def infofmt(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A ``str.format`` INFO line: ``infofmt("{} of {n}", 1, n=2)`` logs ``1 of 2``."""
        self.logfmt(logging.INFO, msg, *args, **kwargs)

    def warningfmt(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A ``str.format`` WARNING line."""
        self.logfmt(logging.WARNING, msg, *args, **kwargs)

    def errorfmt(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A ``str.format`` ERROR line."""
        self.logfmt(logging.ERROR, msg, *args, **kwargs)

    def criticalfmt(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A ``str.format`` CRITICAL line."""
        self.logfmt(logging.CRITICAL, msg, *args, **kwargs)

    def section(self, *msg: Any, level: int | str = logging.INFO, sep: str = "=",
                repeat: int = 20, **kwargs: Any) -> None:
        """A separator line with ``msg`` in the middle: ``section("eval", sep="-")`` logs
        ``---------- eval ----------``."""
        text = _message(msg) if msg else ""
        bar = sep * (repeat // 2)
        self._send(parse_level(level), f"{bar} {text} {bar}" if text else bar + bar, **kwargs)

    def exception(self, *args: Any, exc: BaseException | None = None, sep: str = " ",
                  **kwargs: Any) -> None:
        """An ERROR line with the traceback of ``exc`` (default: the exception being handled).

        Raises:
            TypeError: if ``exc`` is given and is not an exception.
        """
        if exc is not None and not isinstance(exc, BaseException):
            raise TypeError(f"exc must be an exception, got {type(exc).__name__}")
        kwargs.pop("exc_info", None)
        self._send(logging.ERROR, _message(args, sep), exc_info=exc if exc is not None else True,
                   **kwargs)

    def flush(self) -> None:
        """Everything this process logged is on disk when this returns."""
        self.logger.flush()


def _fine(level: int, name: str) -> Callable[..., None]:
    def method(self: LoggerplexClient, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        self.log(level, *args, sep=sep, **kwargs)
    method.__name__ = name.lower()
    method.__doc__ = f"A print-style line at rayplex's finer level {name}."
    return method


def _fine_fmt(level: int, name: str) -> Callable[..., None]:
    def method(self: LoggerplexClient, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.logfmt(level, msg, *args, **kwargs)
    method.__name__ = name.lower() + "fmt"
    method.__doc__ = f"A ``str.format`` line at rayplex's finer level {name}."
    return method


def _section_at(level: int, name: str) -> Callable[..., None]:
    def method(self: LoggerplexClient, *msg: Any, sep: str = "=", repeat: int = 20,
               **kwargs: Any) -> None:
        self.section(*msg, level=level, sep=sep, repeat=repeat, **kwargs)
    method.__name__ = f"{name}section"
    method.__doc__ = f"A separator line at level {name.upper()} (see ``section``)."
    return method


for _name, _level in FINE_LEVELS.items():
    setattr(LoggerplexClient, _name.lower(), _fine(_level, _name))
    setattr(LoggerplexClient, _name.lower() + "fmt", _fine_fmt(_level, _name))
for _name in ("debug", "info", "warning", "error", "critical"):
    setattr(LoggerplexClient, f"{_name}section", _section_at(getattr(logging, _name.upper()), _name))


def _local_logger(client_id: str, stream: Any, level: int, time_format: str | None) -> logging.Logger:
    """Tensorplex's local echo: ``[time ]LEVEL> message`` on stdout or stderr."""
    local = logging.getLogger(f"loggerplex.local.{client_id}")
    local.propagate = False
    local.setLevel(level)
    for handler in list(local.handlers):
        local.removeHandler(handler)
    if isinstance(stream, str):
        if stream not in ("out", "stdout", "err", "stderr"):
            raise ValueError(f"local_logger_stream {stream!r}: use 'stdout' or 'stderr'")
        stream = sys.stdout if stream in ("out", "stdout") else sys.stderr
    handler = logging.StreamHandler(stream)
    datefmt = {"hms": "%H:%M:%S", "hm": "%H:%M", "dhms": "%m-%d %H:%M:%S",
               "dhm": "%m-%d %H:%M"}.get(time_format or "", time_format)
    prefix = "%(asctime)s " if time_format else ""
    handler.setFormatter(logging.Formatter(prefix + "%(levelname)s> %(message)s", datefmt))
    local.addHandler(handler)
    return local
