"""rayplex: distributed logging on Ray into one TensorBoard logdir.

Example:
    >>> import ray, rayplex
    >>> ray.init()  # doctest: +SKIP
    >>> hub = rayplex.init("/tmp/exp1")  # doctest: +SKIP
    >>> rayplex.get_logger("learner/main").add_scalar("loss", 0.3, step=1)  # doctest: +SKIP
    >>> rayplex.shutdown()  # doctest: +SKIP
"""

from typing import TYPE_CHECKING, Any

from rayplex.errors import (
    ExperimentClosedError,
    FlushTimeoutError,
    HubNotFoundError,
    HubWriteError,
    LogdirConflictError,
    RayplexError,
)

if TYPE_CHECKING:
    from rayplex import forward, watch
    from rayplex.decorators import current_logger, logged
    from rayplex.handle import HubHandle, flush, forward_status, init, shutdown, signal, status
    from rayplex.logger import Logger, LogHandler, get_logger
    from rayplex.read import list_artifacts, read_params, read_scalars
    from rayplex.store import index, read_series, sql
    from rayplex.terminal import Color, percent
    from rayplex.watch import Alert, alerts


_LAZY = {
    **dict.fromkeys(("current_logger", "logged"), "rayplex.decorators"),
    **dict.fromkeys(("HubHandle", "flush", "forward_status", "init", "shutdown", "signal",
                     "status"), "rayplex.handle"),
    **dict.fromkeys(("Logger", "LogHandler", "get_logger"), "rayplex.logger"),
    **dict.fromkeys(("list_artifacts", "read_params", "read_scalars"), "rayplex.read"),
    **dict.fromkeys(("index", "read_series", "sql"), "rayplex.store"),
    **dict.fromkeys(("Color", "percent"), "rayplex.terminal"),
    **dict.fromkeys(("Alert", "alerts"), "rayplex.watch"),
    "forward": "rayplex", "watch": "rayplex",
}
"""Public names and the modules that define them, imported on first use: a process that only
reads (``read_series``, ``sql``, ``read_scalars``, the CLI's readers) does not pay for Ray
(about a second), and every actor process of rayplex (the hub, a node buffer, the store feed,
a forwarder), which imports this package before its own module, does not pay for the readers,
the store and the forwarders it never uses."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rayplex' has no attribute {name!r}")
    import importlib

    if module == "rayplex":  # a subpackage: importing it sets the attribute
        value = importlib.import_module(f"rayplex.{name}")
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
