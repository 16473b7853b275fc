"""Exceptions raised by rayplex.

::

    RayplexError
     ├── HubNotFoundError        no hub with that name: call rayplex.init(logdir) first
     ├── LogdirConflictError     that name writes to another logdir, or another live hub owns it
     ├── FlushTimeoutError       the hub did not acknowledge within the flush timeout
     └── HubWriteError           the hub cannot write (disk full, permissions): data kept, retried

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


class FlushTimeoutError(RayplexError, TimeoutError):
    """``flush()`` gave up waiting for the hub's acknowledgement."""


class HubWriteError(RayplexError, OSError):
    """The hub could not write what this process sent (e.g. no space left on its disk).

    The data is kept by the sender and resent until the hub can write it.
    """
