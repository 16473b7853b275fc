"""The client handle every worker logs through: :class:`Logger`, made by :func:`get_logger`.

A log call validates its arguments here, on the caller's side (a clear exception at the call
site), appends one small tuple to this process's buffer and returns; it never waits on the
network. See :mod:`rayplex.transport` for what happens next.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import ray

from rayplex import media
from rayplex.config import config
from rayplex.errors import RayplexError
from rayplex.groups import split_client_id, validate_tag
from rayplex.transport import SCALAR, VALUE, Transport, existing_transport, transport_for


def _scalar(tag: str, value: Any) -> float:
    """Coerce a number (Python, numpy, 0-d or one-element array, torch scalar) to float."""
    if isinstance(value, (bool, numbers.Real)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
        return float(value.reshape(()))
    item = getattr(value, "item", None)  # torch / jax scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        result = item()
        if isinstance(result, numbers.Real):
            return float(result)
    raise TypeError(
        f"value for tag {tag!r} must be a real number, got {type(value).__name__} ({value!r:.80})"
    )


def _step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        if isinstance(step, float) and step.is_integer():
            return int(step)
        raise TypeError(f"step must be an int, got {type(step).__name__} ({step!r:.40})")
    return int(step)


def _walltime(walltime: Any) -> float:
    if walltime is None:
        return time.time()
    if isinstance(walltime, bool) or not isinstance(walltime, numbers.Real):
        raise TypeError(f"walltime must be a number of seconds, got {type(walltime).__name__}")
    walltime = float(walltime)
    if not math.isfinite(walltime):
        raise ValueError(f"walltime must be finite, got {walltime}")
    return walltime


class Logger:
    """Logs one client's scalars, histograms, text and more into the experiment's hub.

    Make one with :func:`rayplex.get_logger` or receive one from ``@rayplex.logged``. A Logger
    pickles to its names only, so it can be passed into tasks and actors.

    Example:
        >>> import ray, rayplex, tempfile
        >>> _ = ray.init(ignore_reinit_error=True)
        >>> hub = rayplex.init(tempfile.mkdtemp())
        >>> log = rayplex.get_logger("learner/main")
        >>> log.add_scalar("loss", 0.25, step=1)
        >>> log.flush()
    """

    def __init__(self, client_id: str, hub: str, transport: Transport) -> None:
        self.client_id = client_id
        self.hub = hub
        self._transport = transport
        self._put = transport.put
        self._steps: dict[str, int] = {}
        self._tags_ok: set[str] = set()

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_logger, (self.client_id, self.hub))

    def __repr__(self) -> str:
        return f"Logger({self.client_id!r}, hub={self.hub!r})"

    # ------------------------------------------------------------- helpers
    def _check_tag(self, tag: Any) -> None:
        validate_tag(tag)
        self._tags_ok.add(tag)

    def _next_step(self, tag: str, step: Any) -> int:
        if step is None:
            step = self._steps.get(tag, -1) + 1
        elif type(step) is not int:
            step = _step(step)
        self._steps[tag] = step
        return step

    def _put_value(self, tag: str, payload: bytes, step: Any, walltime: Any) -> None:
        if tag not in self._tags_ok:
            self._check_tag(tag)
        self._put((VALUE, self.client_id, tag, self._next_step(tag, step), _walltime(walltime),
                   payload))

    # ---------------------------------------------------------- TensorBoard
    def add_scalar(self, tag: str, value: Any, step: int | None = None,
                   walltime: float | None = None) -> None:
        """Log one scalar. ``step=None`` continues this tag's own count (0, 1, 2, ...).

        Example:
            >>> log.add_scalar("reward", 1.5, step=10)  # doctest: +SKIP

        Raises:
            TypeError: if ``value`` is not a real number or ``step`` not an int.
            ValueError: if ``tag`` is empty, too long, or has NUL or a line break.
        """
        if tag not in self._tags_ok:
            self._check_tag(tag)
        if type(value) is not float:
            value = _scalar(tag, value)
        if step is None:
            step = self._steps.get(tag, -1) + 1
        elif type(step) is not int:
            step = _step(step)
        self._steps[tag] = step
        self._put((SCALAR, self.client_id, tag, step,
                   time.time() if walltime is None else _walltime(walltime), value))

    def add_scalars(self, scalars: Mapping[str, Any], step: int | None = None,
                    walltime: float | None = None) -> None:
        """Log several scalars at one step (each its own tag, as in Tensorplex).

        Example:
            >>> log.add_scalars({"loss": 0.3, "lr": 1e-3}, step=10)  # doctest: +SKIP

        Raises:
            TypeError: if ``scalars`` is not a mapping or a value is not a number.
        """
        if not isinstance(scalars, Mapping):
            raise TypeError(f"add_scalars takes a mapping of tag -> number, got {type(scalars)}")
        checked = [(tag, _scalar(tag, v) if type(v) is not float else v)
                   for tag, v in scalars.items()]
        for tag, _ in checked:
            if tag not in self._tags_ok:
                self._check_tag(tag)
        wt = _walltime(walltime)
        for tag, value in checked:
            self.add_scalar(tag, value, step, wt)

    def add_histogram(self, tag: str, values: Any, step: int | None = None,
                      bins: Any = "tensorflow", walltime: float | None = None,
                      max_bins: int | None = None) -> None:
        """Log the distribution of ``values`` (any array-like of numbers) as a histogram.

        Example:
            >>> log.add_histogram("weights", np.random.randn(1000), step=3)  # doctest: +SKIP

        Raises:
            ValueError: if ``values`` is empty or not numeric.
        """
        self._put_value(tag, media.histogram_value(values, bins, max_bins), step, walltime)

    def add_text(self, tag: str, text: str, step: int | None = None,
                 walltime: float | None = None) -> None:
        """Log a piece of text (Markdown) under ``tag``.

        Raises:
            TypeError: if ``text`` is not a str.
        """
        self._put_value(tag, media.text_value(text), step, walltime)

    # -------------------------------------------------------------- control
    def flush(self, timeout: float | None = None) -> None:
        """Return once everything this process logged before the call is on disk at the hub.

        Raises:
            FlushTimeoutError: if the hub did not acknowledge within ``timeout`` seconds
                (default ``RAYPLEX_FLUSH_TIMEOUT_S``); the data stays buffered and is resent.
        """
        self._transport.flush(timeout)

    def stats(self) -> dict[str, int]:
        """Delivery counters of this process: batches sent, acked, retried, records, queued."""
        return dict(self._transport.counters, queued=len(self._transport.queue))


_loggers: dict[tuple[str, str], Logger] = {}
_loggers_lock = threading.Lock()
_warned_groups: set[tuple[str, str]] = set()


def logger_for_task(client_id: str, hub: str | None = None) -> Logger:
    """Like :func:`get_logger`, but first checks that the hub was not replaced since this
    worker process last used it (worker processes outlive experiments)."""
    hub = hub or config().hub
    transport = existing_transport(hub)
    if transport is not None and not transport._closed and transport.ensure_current_hub():
        forget_loggers(hub)
    return get_logger(client_id, hub)


def get_logger(client_id: str, hub: str | None = None) -> Logger:
    """The Logger of ``client_id`` (``"<group>/<name>"``) in the experiment ``hub``.

    Works in the driver, a task or an actor, anywhere in the Ray cluster: no address needed.
    ``hub`` defaults to ``RAYPLEX_HUB`` or ``"default"``. Calling it twice with the same id in
    one process returns the same Logger.

    Example:
        >>> log = rayplex.get_logger("agent/3")  # doctest: +SKIP

    Raises:
        ValueError: if ``client_id`` is not ``<group>/<name>`` with valid parts (letters,
            digits, ``_ - .``; an integer name in an indexed group).
        HubNotFoundError: if no hub of that name runs: call ``rayplex.init(logdir)`` first.
        RayplexError: if Ray is not initialized in this process.
    """
    split_client_id(client_id)
    hub = hub or config().hub
    key = (hub, client_id)
    logger = _loggers.get(key)
    if logger is not None and not logger._transport._closed:
        return logger
    if not ray.is_initialized():
        raise RayplexError(
            "Ray is not initialized in this process: call ray.init() and then "
            "rayplex.init(logdir) before rayplex.get_logger()"
        )
    with _loggers_lock:
        transport = transport_for(hub)
        if transport.ensure_current_hub():
            forget_loggers(hub)
        else:
            transport.refresh_registry()
        route = transport.route(client_id)  # raises ValueError for a bad id in its group
        group = client_id.split("/", 1)[0]
        if not route.registered and (hub, group) not in _warned_groups:
            _warned_groups.add((hub, group))
            warnings.warn(
                f"rayplex: group {group!r} is not registered with hub {hub!r}; it behaves as a "
                "normal group (register it with hub.register_*_group)",
                stacklevel=2,
            )
        logger = Logger(client_id, hub, transport)
        _loggers[key] = logger
        return logger


def forget_loggers(hub: str) -> None:
    """Drop this process's cached Loggers of ``hub`` (after ``rayplex.shutdown``)."""
    for key in [k for k in _loggers if k[0] == hub]:
        del _loggers[key]
