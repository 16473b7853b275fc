"""Atomic file replacement, with one durability policy for every file rayplex replaces
(artifacts, hub state, params, quarantined batches, the owner file): a temp file
``.tmp-<32 hex>`` in the same directory, fsync, rename, fsync of the directory.

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
import secrets
from collections.abc import Iterator
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"
"""Names starting with this in a directory rayplex writes are its temp files."""

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(
    os, "O_BINARY", 0)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` by ``data`` so that a reader sees the old or the new file, never a
    mix, even if this process dies in the middle. The file gets the usual ``0o666 & ~umask``.

    Raises:
        OSError: if the directory is not writable or the disk is full (nothing is changed).
    """
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends without an exception (as
    :func:`atomic_write_bytes`, for data written in pieces, e.g. a streamed copy); an
    exception leaves ``path`` as it was and no temp file behind.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "copy.bin")
        >>> with atomic_writer(path) as f:
        ...     _ = f.write(b"a"); _ = f.write(b"b")
        >>> open(path, "rb").read()
        b'ab'
    """
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(16)}")
    fd = os.open(tmp, _FLAGS, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or creation in ``directory`` durable, where the platform allows it."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
