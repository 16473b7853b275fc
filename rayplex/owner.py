"""Who holds a logdir: the owner record of the live hub holding its lock, probed without Ray.

The hub takes an exclusive ``flock`` on ``<logdir>/.rayplex/lock`` (:mod:`rayplex.actors.claim`)
and records itself in ``owner.json`` beside it. Readers that only ask whether a hub is live
(``rayplex view``'s run states, the readers' "live" check) probe it here: importing
:mod:`rayplex.actors` imports Ray, seconds of a cold ``rayplex view``'s first chart.

Example:
    >>> import tempfile
    >>> holder(tempfile.mkdtemp()) is None
    True
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any

from rayplex import layout

__all__ = ["holder", "read_owner"]


def read_owner(state_dir: str) -> dict[str, Any] | None:
    """What ``owner.json`` says (``None`` if it is missing or unreadable)."""
    try:
        with open(os.path.join(state_dir, layout.OWNER_FILE), encoding="utf-8") as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def holder(logdir: str) -> dict[str, Any] | None:
    """The owner record of the live hub holding ``logdir``'s lock on this machine, or ``None``
    if no live hub holds it. Creates nothing; probes with a shared lock released at once (a
    hub starting meanwhile waits it out)."""
    state_dir = layout.state_dir(logdir)
    try:
        fd = os.open(layout.lock_path(logdir), os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_owner(state_dir) or {"name": "?", "actor": "", "pid": 0}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
