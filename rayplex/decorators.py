"""``@rayplex.logged``: give every Ray task or actor its own Logger, with zero configuration.

Example:
    >>> @ray.remote
    ... @rayplex.logged("agent/{i}")
    ... def rollout(i, logger=None):
    ...     logger.add_scalar("reward", 1.0, step=0)  # doctest: +SKIP
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from rayplex.errors import NoCurrentLoggerError
from rayplex.logger import Logger, logger_for_task

T = TypeVar("T")
log = logging.getLogger("rayplex")

_current: contextvars.ContextVar[Logger | None] = contextvars.ContextVar(
    "rayplex_current_logger", default=None
)
_actor_logger: Logger | None = None


def current_logger() -> Logger:
    """The Logger of the ``@rayplex.logged`` task or actor running in this process.

    Example:
        >>> @ray.remote
        ... @rayplex.logged("agent/{i}")
        ... def rollout(i):
        ...     rayplex.current_logger().add_scalar("reward", 1.0)  # doctest: +SKIP

    Raises:
        NoCurrentLoggerError: outside a ``@rayplex.logged`` task or actor (a ``RuntimeError``).
    """
    logger = _current.get() or _actor_logger
    if logger is None:
        raise NoCurrentLoggerError(
            "rayplex.current_logger() is only available inside a @rayplex.logged task or actor; "
            "elsewhere use rayplex.get_logger(client_id)"
        )
    return logger


def _client_id(template: str, arguments: Mapping[str, Any], target: str) -> str:
    try:
        return template.format(**arguments)
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"@rayplex.logged({template!r}) on {target}: cannot format the client id from the "
            f"call's arguments {sorted(arguments)}: {exc!r}"
        ) from exc


def _flush_quietly(logger: Logger) -> None:
    try:
        logger.flush()
    except Exception as exc:  # a slow hub must not turn a finished task into a failed one
        log.warning("rayplex: could not flush %s when the task ended: %s", logger.client_id, exc)


def logged(template: str, *, hub: str | None = None, logger_arg: str = "logger",
           capture_logging: bool = False) -> Callable[[T], T]:
    """Decorate a function or class (below ``@ray.remote``) so it runs with its own Logger.

    The client id is ``template.format(**arguments)`` over the call's bound arguments, with
    defaults applied (for a class, the arguments of ``__init__``). A function or ``__init__``
    that declares a ``logger`` parameter (``logger_arg``) receives the Logger there; otherwise
    :func:`current_logger` returns it. A task's Logger is flushed when it returns or raises;
    an actor's is flushed by ``rayplex.flush()`` / ``rayplex.shutdown()`` and at exit.

    Example:
        >>> @ray.remote
        ... @rayplex.logged("eval/{name}")
        ... class Evaluator:
        ...     def __init__(self, name, logger=None):
        ...         self.logger = logger  # doctest: +SKIP

    Raises:
        TypeError: if ``template`` is not a str, or if applied on top of ``@ray.remote``
            (put ``@rayplex.logged`` below it) or to something that is not a function or class.
    """
    if not isinstance(template, str):
        raise TypeError(f"@rayplex.logged takes a client id template str, got {template!r}")

    def decorate(target: T) -> T:
        if hasattr(target, "remote") and hasattr(target, "options"):
            raise TypeError(
                "@rayplex.logged must be applied before @ray.remote: write\n"
                "    @ray.remote\n    @rayplex.logged(...)\n    def f(...): ...\n"
                "(decorators apply bottom-up, so @rayplex.logged goes below @ray.remote)"
            )
        if inspect.isclass(target):
            return _wrap_class(target, template, hub, logger_arg, capture_logging)  # type: ignore[return-value]
        if callable(target):
            return _wrap_function(target, template, hub, logger_arg, capture_logging)  # type: ignore[return-value]
        raise TypeError(f"@rayplex.logged decorates functions and classes, not {target!r}")

    return decorate


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The user's own signature: Ray's tracing hook adds a ``_ray_trace_ctx`` parameter to the
    ``__signature__`` of the functions it wraps, which the real function does not accept."""
    signature = inspect.signature(fn)
    if "_ray_trace_ctx" in signature.parameters:
        params = [p for n, p in signature.parameters.items() if n != "_ray_trace_ctx"]
        signature = signature.replace(parameters=params)
    return signature


def _call_logged(fn: Callable[..., Any], template: str, hub: str | None, logger_arg: str,
                 capture_logging: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    signature = _signature(fn)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    logger = logger_for_task(_client_id(template, bound.arguments, f"{fn.__qualname__}{signature}"),
                        hub=hub)
    if logger_arg in signature.parameters and bound.arguments.get(logger_arg) is None:
        bound.arguments[logger_arg] = logger
    token = _current.set(logger)
    undo = _capture(logger) if capture_logging else None
    try:
        return fn(*bound.args, **bound.kwargs)
    finally:
        if undo is not None:
            undo()
        _current.reset(token)
        _flush_quietly(logger)


def _wrap_function(fn: Callable[..., Any], template: str, hub: str | None, logger_arg: str,
                   capture_logging: bool) -> Callable[..., Any]:
    # The wrapper travels to workers by value: it must only reference picklable things and
    # module-level functions (pickled by reference), never the ContextVar itself.
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _call_logged(fn, template, hub, logger_arg, capture_logging, args, kwargs)

    return wrapper


def _init_logged(init: Callable[..., Any], self: Any, template: str, hub: str | None,
                 logger_arg: str, capture_logging: bool, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
    global _actor_logger
    signature = _signature(init)
    self_name = next(iter(signature.parameters), "self")
    bound = signature.bind(self, *args, **kwargs)
    bound.apply_defaults()
    arguments = {k: v for k, v in bound.arguments.items() if k != self_name}
    target = f"{type(self).__qualname__}.__init__{signature}"
    logger = logger_for_task(_client_id(template, arguments, target), hub=hub)
    _actor_logger = logger
    if capture_logging:
        _capture(logger)
    if logger_arg in signature.parameters and bound.arguments.get(logger_arg) is None:
        bound.arguments[logger_arg] = logger
    self._rayplex_logger = logger
    init(*bound.args, **bound.kwargs)


def _wrap_class(cls: type, template: str, hub: str | None, logger_arg: str,
                capture_logging: bool) -> type:
    init = cls.__init__  # type: ignore[misc]

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _init_logged(init, self, template, hub, logger_arg, capture_logging, args, kwargs)

    def _rayplex_flush(self: Any, timeout: float | None = None) -> None:
        self._rayplex_logger.flush(timeout)

    namespace = {"__init__": __init__, "_rayplex_flush": _rayplex_flush,
                 "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                 "__doc__": cls.__doc__}
    return type(cls.__name__, (cls,), namespace)


def _capture(logger: Logger) -> Callable[[], None] | None:
    """Forward the root logger's records to ``logger`` (Loggerplex); returns an undo function."""
    handler_factory = getattr(logger, "log_handler", None)
    if handler_factory is None:
        return None
    handler = handler_factory()
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    wanted = logger._session.log_level
    if root.level > wanted:
        root.setLevel(wanted)  # records below the root's level would never reach the handler

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(old_level)

    return undo
