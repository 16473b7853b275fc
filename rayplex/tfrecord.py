"""TFRecord framing and reading: the one place that knows how a record is laid out on disk.

An event file is a sequence of TFRecords::

    length (u64 LE) | masked crc32c(length) (u32 LE) | payload | masked crc32c(payload) (u32 LE)

The writer frames with :func:`frame`; every reader (the hub re-routing a chunk, ``rayplex.read``,
the CLI, the benchmarks) parses with :func:`iter_records` or :func:`read_records`. Reading stops
quietly at the first record that is incomplete or fails a checksum: that is how the tail of a
file looks while a writer is appending to it or after it crashed, and no later record can be
trusted to start where a broken one says.

:func:`read_records` opens only regular files (:func:`open_regular`): a FIFO, socket or device
that happens to be named like an event file is refused at once instead of blocking the reader.
Nothing here needs Ray, protobuf or TensorBoard; :func:`tensorboardx` is how every module gets
tensorboardX's protobufs and summary builders for the records' payloads.

Example:
    >>> blob = frame(b"one") + frame(b"two")
    >>> list(iter_records(blob))
    [b'one', b'two']
    >>> list(iter_records(blob[:-1]))  # a torn last record ends the stream quietly
    [b'one']
"""

from __future__ import annotations

import importlib
import importlib.abc
import os
import stat
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import BinaryIO, Union

import google_crc32c

from rayplex.config import EVENT_READ_CHUNK_BYTES

__all__ = [
    "MASK_DELTA",
    "NotRegularFileError",
    "RECORD_OVERHEAD",
    "frame",
    "iter_records",
    "masked_crc",
    "open_regular",
    "read_records",
    "tensorboardx",
]

PathLike = Union[str, "os.PathLike[str]"]

MASK_DELTA = 0xA282EAD8
"""Added to the rotated CRC-32C to mask it, as TFRecord does."""
RECORD_OVERHEAD = 16
"""Bytes a record adds around its payload: 8 (length) + 4 (its crc) + 4 (payload crc)."""

_crc: Callable[[bytes], int] = google_crc32c.value
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_HEADER = 12
_FOOTER = 4


class NotRegularFileError(OSError):
    """A path that should be a regular file is a FIFO, socket, device or directory."""


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``.

    Example:
        >>> hex(masked_crc(b""))
        '0xa282ead8'
    """
    c = _crc(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    """Wrap one payload (a serialized ``Event``) into a TFRecord.

    Example:
        >>> record = frame(b"abc")
        >>> len(record) == len(b"abc") + RECORD_OVERHEAD
        True
    """
    header = _U64.pack(len(payload))
    return header + _U32.pack(masked_crc(header)) + payload + _U32.pack(masked_crc(payload))


def _record_end(buf: bytes, pos: int, max_length: int) -> int:
    """The end offset of the intact record at ``pos``; 0 if ``buf`` ends before the record
    does (more bytes may complete it); -1 if the record is broken (a checksum fails, or its
    length exceeds ``max_length``, which also keeps a bogus length from being allocated)."""
    if len(buf) - pos < _HEADER:
        return 0
    if masked_crc(buf[pos : pos + 8]) != _U32.unpack_from(buf, pos + 8)[0]:
        return -1
    length: int = _U64.unpack_from(buf, pos)[0]
    if length > max_length:
        return -1
    end = pos + _HEADER + length + _FOOTER
    if len(buf) < end:
        return 0
    if masked_crc(buf[pos + _HEADER : end - _FOOTER]) != _U32.unpack_from(buf, end - _FOOTER)[0]:
        return -1
    return end


def iter_records(blob: bytes) -> Iterator[bytes]:
    """Yield the payloads of the TFRecords in ``blob``, in order.

    Every checksum is verified. Iteration stops quietly at the first record that is torn
    (``blob`` ends inside it) or broken (a checksum fails); what follows it is not read.

    Args:
        blob: Concatenated TFRecords, e.g. a chunk encoded by a worker or a whole event file.

    Yields:
        Each intact record's payload.

    Example:
        >>> bad = bytearray(frame(b"second"))
        >>> bad[-1] ^= 1  # corrupt its payload checksum
        >>> list(iter_records(frame(b"first") + bytes(bad) + frame(b"third")))
        [b'first']
    """
    pos = 0
    while True:
        end = _record_end(blob, pos, len(blob))
        if end <= 0:
            return
        yield blob[pos + _HEADER : end - _FOOTER]
        pos = end


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: PathLike) -> BinaryIO:
    """Open ``path`` for binary reading only if it is a regular file (symlinks are followed).

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the opened descriptor,
    so a FIFO with no writer, a terminal or a device is refused at once instead of blocking, and
    a file swapped for something else between a directory listing and the open is caught too.

    Args:
        path: The file.

    Returns:
        A binary file object (blocking reads), positioned at the start.

    Raises:
        NotRegularFileError: If ``path`` is a FIFO, socket, device or directory.
        OSError: If it cannot be opened (e.g. ``FileNotFoundError``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     fifo = os.path.join(tmp, "events.out.tfevents.1")
        ...     os.mkfifo(fifo)
        ...     open_regular(fifo)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        rayplex.tfrecord.NotRegularFileError: '...events.out.tfevents.1' is a FIFO, not a regular file
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_RDONLY | nonblock | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(
                f"{os.fspath(path)!r} is {_kind(mode)}, not a regular file")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_records(path: PathLike) -> Iterator[bytes]:
    """Yield the payloads of the TFRecords of one file, reading it in chunks.

    Only the bytes present when the file is opened are read (a writer appending meanwhile is
    not chased). Reading stops quietly at a torn or broken record, as :func:`iter_records` does.

    Args:
        path: A regular file, e.g. ``events.out.tfevents.*``.

    Yields:
        Each intact record's payload, in file order.

    Raises:
        NotRegularFileError: If ``path`` is a FIFO, socket, device or directory.
        OSError: If the file cannot be opened or read.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "events.out.tfevents.1")
        ...     with open(path, "wb") as f:
        ...         _ = f.write(frame(b"a") + frame(b"bc") + b"torn")
        ...     list(read_records(path))
        [b'a', b'bc']
    """
    with open_regular(path) as file:
        remaining = os.fstat(file.fileno()).st_size
        size = remaining
        buffer = b""
        pos = 0
        while True:
            end = _record_end(buffer, pos, size)
            if end > 0:
                yield buffer[pos + _HEADER : end - _FOOTER]
                pos = end
                continue
            if end < 0 or remaining <= 0:
                return
            want = EVENT_READ_CHUNK_BYTES
            if len(buffer) - pos >= 8:  # read a large record whole instead of chunk by chunk
                length: int = _U64.unpack_from(buffer, pos)[0]
                want = max(want, _HEADER + length + _FOOTER - (len(buffer) - pos))
            chunk = file.read(min(want, remaining))
            if not chunk:  # the file shrank since it was opened
                return
            remaining -= len(chunk)
            buffer = buffer[pos:] + chunk
            pos = 0


class _NoTorchForTensorboardXWriter(importlib.abc.MetaPathFinder):
    """Refuses ``import torch`` to the module code of ``tensorboardX.writer`` (and only to it,
    in whatever thread): the writer imports torch only to name a type in its annotations
    (``numpy_compatible``) and does without it when the import fails."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname == "torch":
            frame = sys._getframe(1)
            while frame is not None:
                if (frame.f_code.co_name == "<module>"
                        and frame.f_globals.get("__name__") == "tensorboardX.writer"):
                    raise ImportError("torch is not imported for tensorboardX's annotations")
                frame = frame.f_back  # type: ignore[assignment]
        return None


def tensorboardx(module: str) -> ModuleType:
    """``tensorboardX.<module>`` (``"summary"``, ``"proto.event_pb2"``, ...). Importing any part
    of tensorboardX runs its package, which imports torch when it is installed, seconds of CPU
    in every process that logs an image, text, a histogram or params or reads an event file,
    though nothing of torch is used then; here tensorboardX's writer goes without it (torch
    is still imported by whoever uses it, and by tensorboardX when it is handed a tensor)."""
    name = f"tensorboardX.{module}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    if not any(isinstance(f, _NoTorchForTensorboardXWriter) for f in sys.meta_path):
        # kept once installed: removing a finder while another thread's import walks
        # sys.meta_path could make it skip the next one; inserting one only repeats one
        sys.meta_path.insert(0, _NoTorchForTensorboardXWriter())
    return importlib.import_module(name)
