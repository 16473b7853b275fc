"""Atomic file replacement, with one durability policy for every file rayplex replaces
(hub state, params, quarantined batches): temp file in the same directory, fsync, rename,
fsync of the directory.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "state.json")
    >>> atomic_write_bytes(path, b"{}")
    >>> open(path, "rb").read()
    b'{}'
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a reader sees the old or the new file, never a
    mix, even if this process dies in the middle.

    Raises:
        OSError: if the directory is not writable or the disk is full (nothing is changed).
    """
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
