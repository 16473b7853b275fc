"""Exceptions raised by rayplex.

::

    RayplexError
     ├── HubNotFoundError        no hub with that name: call rayplex.init(logdir) first
     ├── LogdirConflictError     that name writes to another logdir, or another live hub owns it
     ├── ExperimentClosedError   the Logger's experiment was shut down: get a new Logger
     ├── FlushTimeoutError       the hub did not acknowledge within the flush timeout
     ├── HubWriteError           the hub cannot write (disk full, permissions): data kept, retried
     ├── NoCurrentLoggerError    rayplex.current_logger() outside a @rayplex.logged task or actor
     ├── TensorBoardNotInstalledError   `rayplex board` without TensorBoard
     └── BoardStartError         TensorBoard exited, or did not answer, before it was ready

Invalid arguments raise the built-in ``ValueError`` / ``TypeError`` at the call site.
"""

from __future__ import annotations


class RayplexError(RuntimeError):
    """Base class of every rayplex-specific error."""


class HubNotFoundError(RayplexError):
    """No hub is running under the requested name in this Ray cluster."""


class LogdirConflictError(RayplexError):
    """``rayplex.init`` asked for a logdir other than the one the running hub of that name
    writes to, or for a logdir that another live hub owns (it holds ``.rayplex/lock``)."""


class ExperimentClosedError(RayplexError):
    """A log call, ``flush()`` or file call of a Logger whose experiment was shut down (here,
    elsewhere, or replaced by a new hub of that name). What it logged before is on disk or
    counted in ``stats()["dropped"]``; call :func:`rayplex.get_logger` again after
    :func:`rayplex.init`."""


class FlushTimeoutError(RayplexError, TimeoutError):
    """``flush()`` gave up waiting for the hub's acknowledgement."""


class HubWriteError(RayplexError, OSError):
    """The hub could not write what this process sent (e.g. no space left on its disk).

    The data is kept by the sender and resent until the hub can write it.
    """


class NoCurrentLoggerError(RayplexError):
    """:func:`rayplex.current_logger` was called outside a ``@rayplex.logged`` task or actor.

    A ``RuntimeError`` (through :class:`RayplexError`), as it was before it had a name.
    """


class TensorBoardNotInstalledError(RayplexError):
    """Neither the ``tensorboard`` Python package nor a ``tensorboard`` program was found."""


class BoardStartError(RayplexError):
    """TensorBoard exited, or did not answer, before it was ready; the message ends with its output."""


CALLER_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
    FileExistsError, PermissionError)
"""The errors a hub request answers by name (the caller's mistake: a bad path, a missing file),
raised again as themselves at the call site by :func:`request_error`; any other ``OSError`` of
the hub's is a :class:`HubWriteError` there. The one table both sides use."""

_BY_NAME: dict[str, type[Exception]] = {cls.__name__: cls for cls in CALLER_ERRORS}


def request_error(kind: str, message: str) -> Exception:
    """The exception to raise at the call site for a hub request's answer ``(kind, message)``.

    Example:
        >>> request_error("FileNotFoundError", "nope.pkl")
        FileNotFoundError('nope.pkl')
        >>> type(request_error("OSError", "No space left on device")).__name__
        'HubWriteError'
        >>> type(request_error("KeyError", "x")).__name__
        'RayplexError'
    """
    if kind == "OSError":
        return HubWriteError(message)
    return _BY_NAME.get(kind, RayplexError)(message)
