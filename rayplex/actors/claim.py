"""One live hub per logdir, taken by the hub itself: an exclusive ``flock`` on
``<logdir>/.rayplex/lock``, held from before the hub reads its journal until it closes.

Of two hubs racing for one logdir exactly one gets the lock; the other's constructor raises
:class:`~rayplex.errors.LogdirConflictError` naming both hubs and the path. The kernel drops
the lock with the process that held it, so a hub that Ray restarts after its process died takes
its logdir back. The lock's descriptor is never inherited: it is opened close-on-exec and closed
in a forked child.

While it holds the lock the hub checks, before it acknowledges a write, that the path still
leads to what it locked: the ``(st_dev, st_ino)`` of the logdir and of the lock file taken at
claim time against a fresh ``os.stat`` of each (two stats, no walk). A logdir deleted or
replaced under the hub (``rm -rf``, another directory moved in its place) makes the claim
*lost*, for good: the hub never writes into files nobody can read again, nor into a directory
that may be another hub's. Closing the hub releases the claim and makes it lost too.

Example:
    >>> import tempfile
    >>> logdir = tempfile.mkdtemp()
    >>> claim = LogdirClaim(logdir, os.path.join(logdir, ".rayplex"), "exp")
    >>> claim.take(); claim.check() is None
    True
    >>> claim.release(); "closed" in claim.check()
    True
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time

from rayplex import layout
from rayplex.atomic import atomic_write_bytes
from rayplex.config import CLAIM_POLL_S, RESTART_WAIT_S, TAKEOVER_WAIT_S
from rayplex.errors import LogdirConflictError
from rayplex.owner import holder, read_owner

__all__ = ["LogdirClaim", "LogdirLost", "holder", "read_owner"]

log = logging.getLogger("rayplex.hub")


_held: set[int] = set()
"""Lock descriptors held by this process; a forked child closes its copies."""


def _close_in_child() -> None:
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class LogdirLost(OSError):
    """This hub may no longer write under its logdir (deleted, replaced, taken, or closed)."""


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class LogdirClaim:
    """The hub's hold on its logdir (see the module docstring)."""

    def __init__(self, logdir: str, state_dir: str, name: str, identity: str = "") -> None:
        self.logdir = logdir
        self.state_dir = state_dir
        self.lock_path = os.path.join(state_dir, layout.LOCK_FILE)
        self.name = name
        self.identity = identity
        self.lost: str | None = None
        """Why this hub may no longer write under its logdir; never cleared."""
        self._fd: int | None = None
        self._ids: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._mutex = threading.RLock()  # the hub's ticker and its calls check it

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> None:
        """Take the lock and write ``owner.json``.

        Raises:
            LogdirConflictError: another live hub holds the lock (after a short wait for a
                holder that is exiting; longer for this hub's own predecessor).
            OSError: the lock file cannot be created (e.g. a read-only disk): retry later.
        """
        with self._mutex:
            self._take()

    def _take(self) -> None:
        if self._fd is not None:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        deadline: float | None = None
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if deadline is None:
                    owner = read_owner(self.state_dir) or {}
                    mine = bool(self.identity) and owner.get("actor") == self.identity
                    deadline = time.monotonic() + (RESTART_WAIT_S if mine else TAKEOVER_WAIT_S)
                if time.monotonic() >= deadline:
                    raise LogdirConflictError(self._conflict()) from None
                time.sleep(CLAIM_POLL_S)  # waiting for the holder to exit (bounded above)
                continue
            except BaseException:
                os.close(fd)
                raise
            try:  # the file locked must still be the one at the path (not unlinked meanwhile)
                ids = (_file_id(os.stat(self.logdir)), _file_id(os.fstat(fd)))
                if _file_id(os.stat(self.lock_path)) == ids[1]:
                    break
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        if deadline is not None:
            log.info("hub %s: took the lock of %s after waiting for its holder to exit",
                     self.name, self.logdir)
        self._fd, self._ids = fd, ids
        _held.add(fd)
        owner = {"name": self.name, "actor": self.identity, "pid": os.getpid()}
        atomic_write_bytes(os.path.join(self.state_dir, layout.OWNER_FILE), json.dumps(owner).encode())

    def _open(self) -> int:
        flags = os.O_RDONLY | os.O_CLOEXEC
        try:
            return os.open(self.lock_path, flags)  # works on a read-only disk too
        except FileNotFoundError:
            return os.open(self.lock_path, flags | os.O_CREAT, 0o644)

    def _conflict(self) -> str:
        owner = read_owner(self.state_dir) or {}
        other = f"{owner.get('name', '?')!r} (pid {owner.get('pid', '?')})"
        return (f"rayplex hub {self.name!r} cannot take logdir {self.logdir!r}: the running hub "
                f"{other} owns it. Use rayplex.init({self.logdir!r}, name="
                f"{owner.get('name', '?')!r}) to log into it, another logdir, or "
                f"rayplex.shutdown(name={owner.get('name', '?')!r}) first")

    def check(self) -> str | None:
        """``None`` while the claim holds: the logdir and the lock file are the ones locked
        (or the lock is not taken yet). Otherwise why not; a loss is final. Two stats."""
        with self._mutex:
            return self._check()

    def _check(self) -> str | None:
        if self.lost is not None or self._ids is None:
            return self.lost
        try:
            now = (_file_id(os.stat(self.logdir)), _file_id(os.stat(self.lock_path)))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                return None  # cannot tell (e.g. permissions): the write itself reports it
            now = None
        if now != self._ids:
            self.lost = (f"logdir {self.logdir!r} of rayplex hub {self.name!r} was deleted or "
                         "replaced while the hub ran; the hub writes nothing more (never into "
                         "deleted files): senders keep what they hold. Shut the experiment "
                         f"down (rayplex.shutdown(name={self.name!r})) and init a new one")
            self.release(self.lost)
        return self.lost

    def release(self, reason: str | None = None) -> None:
        """Give the logdir up (the hub closed): from now on :meth:`check` says why."""
        with self._mutex:
            if self.lost is None:
                self.lost = reason or (f"rayplex hub {self.name!r} closed: it no longer owns "
                                       f"logdir {self.logdir!r}")
            if self._fd is not None:
                _held.discard(self._fd)
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
