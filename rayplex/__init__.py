"""rayplex: distributed logging on Ray into one TensorBoard logdir.

Example:
    >>> import ray, rayplex
    >>> ray.init()  # doctest: +SKIP
    >>> hub = rayplex.init("/tmp/exp1")  # doctest: +SKIP
    >>> rayplex.get_logger("learner/main").add_scalar("loss", 0.3, step=1)  # doctest: +SKIP
    >>> rayplex.shutdown()  # doctest: +SKIP
"""

from rayplex import forward, watch
from rayplex.decorators import current_logger, logged
from rayplex.errors import (
    ExperimentClosedError,
    FlushTimeoutError,
    HubNotFoundError,
    HubWriteError,
    LogdirConflictError,
    RayplexError,
)
from rayplex.handle import HubHandle, flush, forward_status, init, shutdown, signal, status
from rayplex.logger import Logger, LogHandler, get_logger
from rayplex.read import list_artifacts, read_params, read_scalars
from rayplex.store import index, read_series, sql
from rayplex.terminal import Color, percent
from rayplex.watch import Alert, alerts


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one home)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rayplex")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"


__version__ = _version()

__all__ = [
    "Alert",
    "Color",
    "ExperimentClosedError",
    "FlushTimeoutError",
    "HubHandle",
    "HubNotFoundError",
    "HubWriteError",
    "LogHandler",
    "LogdirConflictError",
    "Logger",
    "RayplexError",
    "alerts",
    "current_logger",
    "flush",
    "forward",
    "forward_status",
    "get_logger",
    "index",
    "init",
    "list_artifacts",
    "logged",
    "percent",
    "read_params",
    "read_scalars",
    "read_series",
    "shutdown",
    "signal",
    "sql",
    "status",
    "watch",
]
