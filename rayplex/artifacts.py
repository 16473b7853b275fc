"""Pure-Python artifact store backing ``logdir/artifacts/`` (no Ray involved).

The hub process owns one :class:`ArtifactStore` rooted at ``logdir/artifacts``
and performs every artifact write through it. Callers compose the relative
path (``<group>/<name>/<user path>``); the store only guarantees that

* every path is validated by :func:`safe_relpath` and, after following any
  symlinks already on disk, resolves strictly inside the root and inside its own
  client's directory (its first two components, ``<group>/<name>``, reached without a
  symlink) -- otherwise :class:`ValueError` is raised *before* anything is read,
  created, listed or removed: a symlink in one client's directory never lets a call act
  in another's;
* queries (:meth:`ArtifactStore.glob`) visit each entry once and are bounded in entries
  and seconds (``RAYPLEX_QUERY_MAX_ENTRIES``, ``RAYPLEX_QUERY_TIMEOUT_S``);
* whole-file writes (:meth:`ArtifactStore.write_bytes`) are atomic: a reader sees either the old or
  the new contents, never a mixture. Data goes to a hidden temp file
  ``.tmp-<32 hex>`` in the target directory, is fsync'ed, then
  :func:`os.replace`'d over the target, and the directory is fsync'ed;
* appends (:meth:`ArtifactStore.append_chunk`) use a crash-safe,
  length-prefixed record framing (see :func:`encode_chunk`), so a torn final
  record never damages earlier ones.

On-disk formats:
    * Plain artifacts are stored byte-for-byte as given.
    * Chunk files (``append_chunk``) are a concatenation of records::

          +----------------------+-----------------+-------------------+
          | length: uint64 LE    | payload         | crc: uint32 LE    |
          | (8 bytes)            | (length bytes)  | (4 bytes)         |
          +----------------------+-----------------+-------------------+

      where ``crc = zlib.crc32(length_bytes + payload)``. There is no file
      header; an empty file holds zero chunks.
    * Temp files are named ``.tmp-<32 lowercase hex>``. They are never listed
      and the ``.tmp-`` prefix is reserved: no user path component may start
      with it.

Threat model: the store defends against hostile *path strings* and against
symlinks (or hard links, for appends) that already exist inside the store
when a call is made. It assumes it is the only writer below its root; it is
not hardened against a concurrent attacker swapping directories for symlinks
between the check and the write (TOCTOU).

Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = ArtifactStore(tmp.name)
    >>> _ = store.write_bytes("train/run1/notes.txt", b"hello")
    >>> store.read_bytes("train/run1/notes.txt")
    b'hello'
    >>> _ = store.append_chunk("train/run1/metrics.pkl", b"a")
    >>> _ = store.append_chunk("train/run1/metrics.pkl", b"b")
    >>> store.read_chunks("train/run1/metrics.pkl")
    [b'a', b'b']
    >>> [info.path for info in store.list("train")]
    ['train/run1/metrics.pkl', 'train/run1/notes.txt']
    >>> tmp.cleanup()
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fnmatch
import os
import re
import shutil
import stat
import struct
import threading
import time
import unicodedata
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rayplex.atomic import TEMP_PREFIX as ATOMIC_TEMP_PREFIX
from rayplex.atomic import atomic_write_bytes, atomic_writer, fsync_dir
from rayplex.config import ARTIFACT_COPY_BUFSIZE, config

__all__ = [
    "CLIENT_DEPTH",
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "TEMP_PREFIX",
    "ArtifactInfo",
    "ArtifactStore",
    "TornChunkWarning",
    "decode_chunks",
    "encode_chunk",
    "safe_relpath",
]

#: Maximum length of one path component, in UTF-8 bytes (typical NAME_MAX).
MAX_COMPONENT_BYTES = 255
#: Maximum length of a normalised relative path, in UTF-8 bytes.
MAX_PATH_BYTES = 1024
#: A path's first ``CLIENT_DEPTH`` components name its client's directory (``<group>/<name>``):
#: whatever a path reaches through symlinks must stay inside that directory.
CLIENT_DEPTH = 2
#: Prefix of the store's temp files (``rayplex.atomic``); reserved, never valid in user paths.
TEMP_PREFIX = ATOMIC_TEMP_PREFIX

_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_RECORD_OVERHEAD = _LEN.size + _CRC.size  # 12 bytes
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


class TornChunkWarning(UserWarning):
    """A chunk file ends in a truncated or corrupt record, which was ignored."""


@dataclass(frozen=True)
class ArtifactInfo:
    """One file in the store, as reported by :meth:`ArtifactStore.list`.

    Attributes:
        path: Normalised POSIX path relative to the store root.
        size: Size in bytes.
        mtime: Modification time, seconds since the epoch.
    """

    path: str
    size: int
    mtime: float


def safe_relpath(path: str) -> str:
    """Validate a user-supplied relative artifact path and normalise it.

    Normalisation splits on ``/`` and drops empty and ``.`` components, so
    ``"a//./b/"`` becomes ``"a/b"``. Backslashes are *rejected* rather than
    treated as separators: silently reinterpreting ``a\\b`` would make the
    same string mean different files on different platforms.

    Args:
        path: Relative path using ``/`` as separator.

    Returns:
        The normalised path: non-empty, ``/``-separated, with no empty, ``.``
        or ``..`` components and no leading or trailing slash.

    Raises:
        ValueError: If ``path`` is not a ``str``; is empty; is absolute
            (``/x``, ``C:\\x``, ``C:x``, ``\\\\server\\x``); contains a
            backslash, NUL or another control character (Unicode category
            ``Cc``), or a ``..`` component; has a component starting with the
            reserved temp prefix ``.tmp-``; is not encodable as UTF-8; has a
            component longer than 255 UTF-8 bytes; is longer than 1024 UTF-8
            bytes after normalisation; or normalises to nothing (``"./."``).
            Each case has its own message.

    Example:
        >>> safe_relpath("group/name//./plots/loss.png")
        'group/name/plots/loss.png'
        >>> try:
        ...     safe_relpath("a/../../etc/passwd")
        ... except ValueError as exc:
        ...     print(exc)
        artifact path must not contain '..' components: 'a/../../etc/passwd'
    """
    if not isinstance(path, str):
        raise ValueError(f"artifact path must be a str, not {type(path).__name__}")
    if not path:
        raise ValueError("artifact path must not be empty; give a file name such as 'out.pkl'")
    if "\x00" in path:
        raise ValueError(f"artifact path must not contain NUL characters: {_show(path)}")
    for ch in path:
        if unicodedata.category(ch) == "Cc":
            raise ValueError(
                f"artifact path must not contain control character U+{ord(ch):04X}: {_show(path)}"
            )
    if path.startswith(("/", "\\")) or _DRIVE_RE.match(path):
        raise ValueError(
            f"artifact path must be relative to the artifact root, not absolute: {_show(path)}"
        )
    if "\\" in path:
        raise ValueError(
            f"artifact path must use '/' as separator; backslashes are not allowed: {_show(path)}"
        )
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"artifact path is not encodable as UTF-8 (lone surrogate?): {_show(path)}"
        ) from None

    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise ValueError(f"artifact path must not contain '..' components: {_show(path)}")
        if part.startswith(TEMP_PREFIX):
            raise ValueError(
                f"artifact path components must not start with the reserved prefix "
                f"{TEMP_PREFIX!r}: {_show(path)}"
            )
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise ValueError(
                f"artifact path component is longer than {MAX_COMPONENT_BYTES} UTF-8 bytes: "
                f"{_show(part)}"
            )
        parts.append(part)
    if parts and _DRIVE_RE.match(parts[0]):  # "./C:" normalises to a drive-relative path
        raise ValueError(
            f"artifact path must be relative to the artifact root, not absolute: {_show(path)}"
        )
    if not parts:
        raise ValueError(
            f"artifact path names no file (only '.' components and slashes): {_show(path)}"
        )
    normalised = "/".join(parts)
    if len(normalised.encode("utf-8")) > MAX_PATH_BYTES:
        raise ValueError(
            f"artifact path is longer than {MAX_PATH_BYTES} UTF-8 bytes after normalisation: "
            f"{_show(normalised)}"
        )
    return normalised


def encode_chunk(payload: bytes) -> bytes:
    """Frame one payload as a chunk-file record.

    The record is ``uint64-LE length + payload + uint32-LE crc32``, the crc
    covering the 8 length bytes followed by the payload.

    Args:
        payload: The bytes to frame (typically one pickled object).

    Returns:
        The framed record, ``len(payload) + 12`` bytes long.

    Example:
        >>> encode_chunk(b"hi").hex()
        '020000000000000068691880357e'
    """
    header = _LEN.pack(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(header)) & 0xFFFFFFFF
    return header + payload + _CRC.pack(crc)


def decode_chunks(data: bytes) -> tuple[list[bytes], int, str | None]:
    """Parse a chunk file's contents, stopping at the first bad record.

    Args:
        data: Entire contents of a chunk file.

    Returns:
        ``(chunks, good_end, problem)``: the payloads of all intact leading
        records, the byte offset just past the last intact record, and
        ``None`` if the whole input was intact or otherwise a description of
        the truncated/corrupt record found at ``good_end``.

    Example:
        >>> blob = encode_chunk(b"a") + encode_chunk(b"b")
        >>> decode_chunks(blob)
        ([b'a', b'b'], 26, None)
        >>> decode_chunks(blob[:-3])[:2]
        ([b'a'], 13)
    """
    view = memoryview(data)
    size = len(view)
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        remaining = size - offset
        if remaining < _RECORD_OVERHEAD:
            return chunks, offset, f"truncated record header at byte {offset}"
        (length,) = _LEN.unpack_from(view, offset)
        if length > remaining - _RECORD_OVERHEAD:
            return (
                chunks,
                offset,
                f"record at byte {offset} declares {length} payload bytes but only "
                f"{remaining - _RECORD_OVERHEAD} remain",
            )
        start = offset + _LEN.size
        end = start + length
        (stored_crc,) = _CRC.unpack_from(view, end)
        actual_crc = zlib.crc32(view[start:end], zlib.crc32(view[offset:start])) & 0xFFFFFFFF
        if stored_crc != actual_crc:
            return chunks, offset, f"crc mismatch in record at byte {offset}"
        chunks.append(bytes(view[start:end]))
        offset = end + _CRC.size
    return chunks, offset, None


def _show(text: str, limit: int = 80) -> str:
    """``repr`` of ``text``, shortened so that error messages stay readable."""
    if len(text) > limit:
        return repr(text[:limit]) + f"... ({len(text)} characters)"
    return repr(text)


def _as_bytes(data: bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"artifact data must be bytes-like, got {type(data).__name__}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    pieces: list[bytes] = []
    while True:
        piece = os.read(fd, ARTIFACT_COPY_BUFSIZE)
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)


class _GlobPattern:
    """A glob pattern as a small automaton over path components, so that a walk can match
    each entry once and prune directories where nothing can match any more.

    States are indices into the pattern's components (runs of ``**`` collapsed to one);
    ``**`` matches zero or more components, ``*``/``?``/``[...]`` match within one; as in
    :func:`glob.glob`, a name that starts with ``.`` is matched only by a component that
    starts with ``.``.

    Example:
        >>> p = _GlobPattern("**/**/ckpt/*.pkl")
        >>> p.components
        ('**', 'ckpt', '*.pkl')
        >>> s = p.step(p.start, "a")
        >>> p.matches(p.step(p.step(s, "ckpt"), "1.pkl")), p.matches(p.step(s, "ckpt"))
        (True, False)
        >>> p.step(p.start, ".git")
        frozenset()
    """

    def __init__(self, pattern: str) -> None:
        components: builtins.list[str] = []
        for part in pattern.split("/"):
            if not (part == "**" and components and components[-1] == "**"):
                components.append(part)
        self.components = tuple(components)
        self._regex = [None if c == "**" else re.compile(fnmatch.translate(c))
                       for c in components]
        self.start = self._closure({0})

    def _closure(self, states: set[int]) -> frozenset[int]:
        out = set(states)
        for i in sorted(states):
            j = i
            while j < len(self.components) and self.components[j] == "**":
                j += 1
                out.add(j)
        return frozenset(out)

    def step(self, states: frozenset[int], name: str) -> frozenset[int]:
        """The states after one more component ``name`` (empty: no match below it)."""
        hidden = name.startswith(".")
        after: set[int] = set()
        for i in states:
            if i == len(self.components):
                continue
            regex = self._regex[i]
            if regex is None:
                if not hidden:
                    after.add(i)
            elif (not hidden or self.components[i].startswith(".")) and regex.match(name):
                after.add(i + 1)
        return self._closure(after)

    def matches(self, states: frozenset[int]) -> bool:
        """Whether the path that led to ``states`` matches the whole pattern."""
        return len(self.components) in states

    def descends(self, states: frozenset[int]) -> bool:
        """Whether anything below the path that led to ``states`` can still match."""
        return any(i < len(self.components) for i in states)


class ArtifactStore:
    """Filesystem artifact store rooted at ``logdir/artifacts``.

    All methods take paths relative to the root (validated with
    :func:`safe_relpath`). The root directory is created lazily on the first
    write. The store is safe to share between threads of one process; it
    assumes no other process writes below its root.

    Args:
        root: The store's root directory (normally ``logdir/artifacts``). It is
            made absolute but symlinks in it are kept (they are resolved when
            checking containment).

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> store = ArtifactStore(tmp.name)
        >>> _ = store.write_bytes("g/n/a.bin", b"\\x00\\x01")
        >>> store.read_bytes("g/n/a.bin")
        b'\\x00\\x01'
        >>> tmp.cleanup()
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(os.path.abspath(os.fspath(root)))
        self._lock = threading.Lock()
        # Chunk files whose tail we have verified: abs path -> (dev, ino, size, mtime_ns).
        self._verified_chunk_files: dict[str, tuple[int, int, int, int]] = {}

    @property
    def root(self) -> Path:
        """Absolute path of the store root."""
        return self._root

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self._root)!r})"

    # ------------------------------------------------------------------ paths

    def _resolve_norm(self, rel: str) -> tuple[str, Path]:
        norm = safe_relpath(rel)
        target = self._root / norm
        self._confine(norm, os.path.realpath(target))
        return norm, target

    def _resolve_entry(self, rel: str) -> tuple[str, Path]:
        """As :meth:`_resolve_norm`, but the last component is not followed: the entry itself
        (a symlink is removed, never what it points to)."""
        norm = safe_relpath(rel)
        target = self._root / norm
        self._confine(norm, os.path.join(os.path.realpath(target.parent), target.name))
        return norm, target

    def _confine(self, norm: str, real: str) -> None:
        """Refuse ``norm`` unless ``real`` (where it leads on disk) is inside the root and
        inside ``norm``'s own client directory as reached without a symlink."""
        root_real = os.path.realpath(self._root)
        if real == root_real or os.path.commonpath([root_real, real]) != root_real:
            raise ValueError(
                f"artifact path {norm!r} resolves outside the artifact root {str(self._root)!r} "
                "through a symlink on disk; remove the symlink or choose another path"
            )
        home = self._home(norm, root_real)
        if home is not None and os.path.commonpath([home[1], real]) != home[1]:
            raise ValueError(
                f"artifact path {norm!r} resolves outside its client's directory {home[0]!r} "
                "through a symlink on disk; a client's calls act on its own directory only "
                "(remove the symlink, or read another client's file with client=...)"
            )

    @staticmethod
    def _home(norm: str, root_real: str) -> tuple[str, str] | None:
        """``(client directory, its real path without following links)`` of ``norm``; None
        for a path above client directories (``"group"``)."""
        parts = norm.split("/")
        if len(parts) < CLIENT_DEPTH:
            return None
        return "/".join(parts[:CLIENT_DEPTH]), os.path.join(root_real, *parts[:CLIENT_DEPTH])

    def _confined(self, norm: str) -> bool:
        """Whether ``norm`` (relative to the root) stays inside its client's directory."""
        try:
            self._confine(norm, os.path.realpath(self._root / norm))
        except ValueError:
            return False
        return True

    def resolve(self, rel: str) -> Path:
        """Validate ``rel`` and return its absolute location inside the root.

        Symlinks already present on disk (in directory components or as the
        final component) are followed for the containment check; nothing is
        created.

        Args:
            rel: Path relative to the root.

        Returns:
            ``root / safe_relpath(rel)`` (lexical; symlinks are not replaced by
            their targets in the returned path).

        Raises:
            ValueError: If ``rel`` is invalid or its real path, after
                following symlinks, is not strictly inside the root's real
                path.

        Example:
            >>> store = ArtifactStore("/srv/logdir/artifacts")
            >>> store.resolve("g/n//plots/./a.png").as_posix()
            '/srv/logdir/artifacts/g/n/plots/a.png'
        """
        return self._resolve_norm(rel)[1]

    # ----------------------------------------------------------------- writes

    def _atomic_write(self, target: Path, payload: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_bytes(target, payload)
        finally:
            self._verified_chunk_files.pop(str(target), None)

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Atomically create or replace an artifact with ``data``.

        Args:
            rel: Path relative to the root; parent directories are created.
            data: The new contents (any bytes-like object).

        Returns:
            The artifact's absolute path (as :meth:`resolve`).

        Raises:
            ValueError: If ``rel`` is invalid or escapes the root.
            TypeError: If ``data`` is not bytes-like.
            OSError: On filesystem errors; the previous contents, if any, are
                left intact and no temp file remains.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> store.write_bytes("g/n/x.txt", b"v1").name
            'x.txt'
            >>> _ = store.write_bytes("g/n/x.txt", b"v2")
            >>> store.read_bytes("g/n/x.txt")
            b'v2'
            >>> tmp.cleanup()
        """
        payload = _as_bytes(data)
        _, target = self._resolve_norm(rel)
        self._atomic_write(target, payload)
        return target

    def append_chunk(self, rel: str, data: bytes) -> Path:
        """Append one framed chunk (e.g. one pickled object) to a chunk file.

        This backs ML-Logger-style ``save_pkl(..., append=True)``. The record
        format is described in :func:`encode_chunk`; read the chunks back with
        :meth:`read_chunks`. Each append is a single ``O_APPEND`` write
        followed by fsync. If the file ends in a torn/corrupt record (e.g. a
        previous writer was killed mid-append), that tail is truncated away
        with a :class:`TornChunkWarning` before appending, so new chunks stay
        readable; intact earlier chunks are never touched.

        Args:
            rel: Path relative to the root; the file and its parent
                directories are created if missing.
            data: One chunk's payload (any bytes-like object; may be empty).

        Returns:
            The chunk file's absolute path (as :meth:`resolve`).

        Raises:
            ValueError: If ``rel`` is invalid, escapes the root, or
                names a file with more than one hard link.
            TypeError: If ``data`` is not bytes-like.

        Example:
            >>> import pickle, tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> for step in range(3):
            ...     _ = store.append_chunk("g/n/log.pkl", pickle.dumps({"step": step}))
            >>> [pickle.loads(c) for c in store.read_chunks("g/n/log.pkl")]
            [{'step': 0}, {'step': 1}, {'step': 2}]
            >>> tmp.cleanup()
        """
        return self.append_chunks(rel, [data])

    def append_chunks(self, rel: str, chunks: Sequence[bytes]) -> Path:
        """Append several framed chunks in one write (as :meth:`append_chunk` each, in order):
        all of them or, if this fails, none.

        Raises:
            As :meth:`append_chunk`.
        """
        record = b"".join(encode_chunk(_as_bytes(data)) for data in chunks)
        norm, target = self._resolve_norm(rel)
        key = str(target)
        with self._lock:
            target.parent.mkdir(parents=True, exist_ok=True)
            created = not os.path.lexists(target)
            fd = os.open(
                target, os.O_RDWR | os.O_CREAT | os.O_APPEND | _O_CLOEXEC | _O_BINARY, 0o666
            )
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"chunk file {norm!r} is not a regular file")
                if st.st_nlink > 1:
                    raise ValueError(
                        f"refusing to append to {norm!r}: it has {st.st_nlink} hard links"
                    )
                size = st.st_size
                fingerprint = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if self._verified_chunk_files.get(key) != fingerprint:
                    self._verified_chunk_files.pop(key, None)
                    os.lseek(fd, 0, os.SEEK_SET)
                    _, good_end, problem = decode_chunks(_read_all(fd))
                    if problem is not None and good_end == 0:
                        raise ValueError(
                            f"refusing to append to {norm!r}: it was not written with "
                            "append=True (it holds no appended chunk); save to another path"
                        )
                    if problem is not None:
                        warnings.warn(
                            TornChunkWarning(
                                f"chunk file {norm!r}: {problem}; truncating "
                                f"{size - good_end} trailing bytes before appending"
                            ),
                            stacklevel=2,
                        )
                        os.ftruncate(fd, good_end)
                        size = good_end
                try:
                    _write_all(fd, record)
                    os.fsync(fd)
                except BaseException:
                    # Roll back a partial record so the file stays well-formed.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
                st = os.fstat(fd)
                self._verified_chunk_files[key] = (
                    st.st_dev,
                    st.st_ino,
                    st.st_size,
                    st.st_mtime_ns,
                )
            except BaseException:
                self._verified_chunk_files.pop(key, None)
                raise
            finally:
                os.close(fd)
        if created:
            fsync_dir(target.parent)
        return target

    # ------------------------------------------------------------------ reads

    def _read_norm(self, rel: str) -> tuple[str, bytes]:
        norm, target = self._resolve_norm(rel)
        try:
            with open(target, "rb") as fh:
                return norm, fh.read()
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such artifact", norm) from None
        except NotADirectoryError:
            raise FileNotFoundError(errno.ENOENT, "no such artifact", norm) from None
        except IsADirectoryError:
            raise IsADirectoryError(errno.EISDIR, "artifact path is a directory", norm) from None

    def read_bytes(self, rel: str) -> bytes:
        """Return an artifact's full contents.

        Args:
            rel: Path relative to the root.

        Returns:
            The file's bytes.

        Raises:
            ValueError: If ``rel`` is invalid or escapes the root.
            FileNotFoundError: If there is no such artifact; ``filename`` (and
                the message) is the normalised relative path.
            IsADirectoryError: If ``rel`` names a directory.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> store.read_bytes("g/n/missing.txt")
            Traceback (most recent call last):
            ...
            FileNotFoundError: [Errno 2] no such artifact: 'g/n/missing.txt'
            >>> tmp.cleanup()
        """
        return self._read_norm(rel)[1]

    def read_chunks(self, rel: str) -> list[bytes]:
        """Return all chunks appended with :meth:`append_chunk`, in order.

        Reading stops at the first truncated or corrupt record (e.g. a torn
        final append), emitting a :class:`TornChunkWarning`; all intact
        records before it are returned.

        Args:
            rel: Path relative to the root.

        Returns:
            The chunk payloads, oldest first.

        Raises:
            ValueError: If ``rel`` is invalid or escapes the root.
            FileNotFoundError: If there is no such artifact.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> _ = store.append_chunk("g/n/c.pkl", b"first")
            >>> store.read_chunks("g/n/c.pkl")
            [b'first']
            >>> tmp.cleanup()
        """
        norm, data = self._read_norm(rel)
        chunks, good_end, problem = decode_chunks(data)
        if problem is not None:
            warnings.warn(
                TornChunkWarning(
                    f"chunk file {norm!r}: {problem}; ignoring {len(data) - good_end} "
                    f"trailing bytes, returning {len(chunks)} intact chunks"
                ),
                stacklevel=2,
            )
        return chunks

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        """List artifacts under ``prefix``, sorted by path.

        ``prefix`` is a path prefix in whole components: ``""`` lists the whole
        store, ``"g/n"`` lists everything below directory ``g/n`` (and if
        ``g/n`` is itself a file, just that file). It is not a string prefix:
        ``"g/ru"`` does not match ``g/run1``.

        Temp files (``.tmp-*``), non-regular files, entries whose names are not
        valid artifact paths, and symlinks resolving outside the root or their
        client's directory are skipped. Symlinked directories are never descended into; symlinked
        files inside the root are reported with their target's size/mtime.

        Args:
            prefix: Directory (or file) path relative to the root, or ``""``.

        Returns:
            :class:`ArtifactInfo` entries sorted by ``path``; empty if nothing
            exists under ``prefix``.

        Raises:
            ValueError: If a non-empty ``prefix`` is invalid or escapes
                the root.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> _ = store.write_bytes("g/b.txt", b"bb")
            >>> _ = store.write_bytes("g/a.txt", b"a")
            >>> [(i.path, i.size) for i in store.list("g")]
            [('g/a.txt', 1), ('g/b.txt', 2)]
            >>> tmp.cleanup()
        """
        if prefix == "":
            top = self._root
        else:
            _, top = self._resolve_norm(prefix)

        infos: list[ArtifactInfo] = []

        def consider(full: str) -> None:
            if os.path.basename(full).startswith(TEMP_PREFIX):
                return
            rel = os.path.relpath(full, self._root).replace(os.sep, "/")
            try:
                if safe_relpath(rel) != rel:
                    return
            except ValueError:
                return
            try:
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    if not self._confined(rel):
                        return
                    st = os.stat(full)
            except OSError:  # vanished, dangling link, loop...
                return
            if stat.S_ISREG(st.st_mode):
                infos.append(ArtifactInfo(path=rel, size=st.st_size, mtime=st.st_mtime))

        if os.path.isdir(top):
            for dirpath, _dirnames, filenames in os.walk(top, followlinks=False):
                for name in filenames:
                    consider(os.path.join(dirpath, name))
        elif os.path.lexists(top):
            consider(str(top))
        infos.sort(key=lambda info: info.path)
        return infos

    # --------------------------------------------------------- file operations

    def append_bytes(self, rel: str, data: bytes) -> Path:
        """Append raw ``data`` to a plain file (JSON lines, ``error.log``), creating it.

        Unlike :meth:`append_chunk` nothing frames the bytes: the file is the concatenation of
        every append, readable as text. Each append is one ``O_APPEND`` write followed by fsync;
        the hub journals the size before it so that a torn append is cut away on restart.

        Args:
            rel: Path relative to the root; parent directories are created.
            data: The bytes to append (any bytes-like object).

        Returns:
            The file's absolute path (as :meth:`resolve`).

        Raises:
            ValueError: If ``rel`` is invalid, escapes the root, is not a regular file or has
                more than one hard link.
            TypeError: If ``data`` is not bytes-like.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> for line in (b'{"a": 1}\\n', b'{"a": 2}\\n'):
            ...     _ = store.append_bytes("g/n/rows.jsonl", line)
            >>> store.read_bytes("g/n/rows.jsonl")
            b'{"a": 1}\\n{"a": 2}\\n'
            >>> tmp.cleanup()
        """
        payload = _as_bytes(data)
        norm, target = self._resolve_norm(rel)
        with self._lock:
            target.parent.mkdir(parents=True, exist_ok=True)
            created = not os.path.lexists(target)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_CLOEXEC | _O_BINARY,
                         0o666)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"artifact {norm!r} is not a regular file")
                if st.st_nlink > 1:
                    raise ValueError(
                        f"refusing to append to {norm!r}: it has {st.st_nlink} hard links")
                try:
                    _write_all(fd, payload)
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, st.st_size)
                    raise
            finally:
                os.close(fd)
            self._verified_chunk_files.pop(str(target), None)
        if created:
            fsync_dir(target.parent)
        return target

    def remove(self, rel: str) -> bool:
        """Remove a file or a whole directory; a missing path is not an error.

        A directory is first renamed to a hidden temp name in its parent (one atomic step:
        readers see it whole or gone), then deleted. A symlink is removed itself, never what it
        points to.

        Args:
            rel: Path relative to the root.

        Returns:
            Whether anything was there.

        Raises:
            ValueError: If ``rel`` is invalid, or its parent directory lies (through a
                symlink) outside the root or its client's directory.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> _ = store.write_bytes("g/n/d/a.txt", b"a")
            >>> store.remove("g/n/d"), store.remove("g/n/d"), store.list("g")
            (True, False, [])
            >>> tmp.cleanup()
        """
        _, target = self._resolve_entry(rel)
        try:
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            return False
        with self._lock:
            if stat.S_ISDIR(st.st_mode):
                doomed = target.parent / f"{TEMP_PREFIX}{os.urandom(16).hex()}"
                os.rename(target, doomed)
                fsync_dir(target.parent)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                os.unlink(target)
                fsync_dir(target.parent)
            self._forget(target)
        return True

    def move(self, src: str, to: str) -> Path:
        """Rename a file or directory inside the store (one atomic :func:`os.rename`).

        As :func:`shutil.move`: if ``to`` is an existing directory, ``src`` moves into it; an
        existing file at the destination is replaced by a file.

        Args:
            src: Existing path relative to the root.
            to: New path relative to the root; parent directories are created.

        Returns:
            The new absolute path.

        Raises:
            ValueError: If a path is invalid or escapes the root, or ``to`` is inside ``src``.
            FileNotFoundError: If ``src`` does not exist.
            FileExistsError: If a directory would replace a file, or a directory exists at the
                destination.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> _ = store.write_bytes("g/n/a.txt", b"a")
            >>> _ = store.move("g/n/a.txt", "g/n/b.txt")
            >>> [i.path for i in store.list("g")]
            ['g/n/b.txt']
            >>> tmp.cleanup()
        """
        (src_norm, source), (to_norm, target) = self._move_paths(src, to)
        if to_norm == src_norm:
            return target
        if to_norm.startswith(src_norm + "/"):
            raise ValueError(f"cannot move {src_norm!r} into itself ({to_norm!r})")
        source_is_dir = os.path.isdir(source) and not os.path.islink(source)
        if os.path.lexists(target) and (source_is_dir or os.path.isdir(target)):
            raise FileExistsError(errno.EEXIST, "destination exists", to_norm)
        with self._lock:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            fsync_dir(target.parent)
            if target.parent != source.parent:
                fsync_dir(source.parent)
            self._forget(source)
            self._forget(target)
        return target

    def move_target(self, src: str, to: str) -> Path:
        """Where :meth:`move` would put ``src`` (inside ``to`` if that is a directory).

        Raises:
            ValueError: If a path is invalid or escapes the root.
            FileNotFoundError: If ``src`` does not exist.
        """
        return self._move_paths(src, to)[1][1]

    def _move_paths(self, src: str, to: str) -> tuple[tuple[str, Path], tuple[str, Path]]:
        src_norm, source = self._existing(src)
        to_norm, target = self._resolve_norm(to)
        if os.path.isdir(target) and not os.path.islink(target):
            to_norm, target = self._resolve_norm(f"{to_norm}/{source.name}")
        return (src_norm, source), (to_norm, target)

    def duplicate(self, src: str, to: str, exists_ok: bool = True) -> Path:
        """Copy a file or a directory tree inside the store.

        A file is copied to a temp file and renamed into place (atomic). A directory is built
        under a temp name and renamed into place when ``to`` does not exist yet; with
        ``exists_ok`` its files are merged into an existing directory one atomic file at a time.
        Symlinks inside ``src`` are copied as the files they point to, and only if those are
        inside the store; temp files are skipped.

        Args:
            src: Existing file or directory, relative to the root.
            to: The copy's path, relative to the root (not "into" an existing directory).
            exists_ok: Merge into an existing directory ``to`` (as ML-Logger's default).

        Returns:
            The copy's absolute path.

        Raises:
            ValueError: If a path is invalid or escapes the root, or ``to`` is inside ``src``.
            FileNotFoundError: If ``src`` does not exist.
            FileExistsError: If ``to`` is an existing directory and ``exists_ok`` is false.
            IsADirectoryError: If ``src`` is a file and ``to`` an existing directory.

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> _ = store.write_bytes("g/n/d/a.txt", b"a")
            >>> _ = store.duplicate("g/n/d", "g/n/e")
            >>> store.read_bytes("g/n/e/a.txt")
            b'a'
            >>> tmp.cleanup()
        """
        src_norm, source = self._existing(src)
        to_norm, target = self._resolve_norm(to)
        if to_norm == src_norm or to_norm.startswith(src_norm + "/"):
            raise ValueError(f"cannot duplicate {src_norm!r} into itself ({to_norm!r})")
        if not (os.path.isdir(source) and not os.path.islink(source)):
            if os.path.isdir(target):
                raise IsADirectoryError(errno.EISDIR, "destination is a directory", to_norm)
            with self._lock:
                self._copy_file(source, target, src_norm)
            return target
        exists = os.path.lexists(target)
        if exists and not exists_ok:
            raise FileExistsError(errno.EEXIST, "destination exists", to_norm)
        if exists and not os.path.isdir(target):
            raise FileExistsError(errno.EEXIST, "destination exists and is a file", to_norm)
        with self._lock:
            if exists:
                self._copy_tree(source, target, src_norm)
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.parent / f"{TEMP_PREFIX}{os.urandom(16).hex()}"
            try:
                staging.mkdir()
                self._copy_tree(source, staging, src_norm)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync_dir(target.parent)
        return target

    def glob(self, pattern: str, wd: str = "", max_entries: int | None = None,
             timeout_s: float | None = None) -> builtins.list[str]:
        """Files and directories matching a :mod:`glob` pattern (``**`` recurses), relative to
        ``wd`` and sorted, as ML-Logger's ``glob`` answers (and :func:`glob.glob` with
        ``recursive=True``: ``*`` and ``**`` skip names that start with ``.``).

        The walk visits each entry once, whatever the pattern (``**/**/**/x`` is ``**/x``),
        descends only where the pattern can still match, and never into a symlinked
        directory. Temp files and anything whose real path is outside the root or its
        client's directory are left out; a ``wd`` that does not exist matches nothing.

        Args:
            pattern: A relative pattern such as ``"**/*.pkl"`` (no absolute path, no ``..``).
            wd: The directory the pattern and the answers are relative to (``""``: the root).
            max_entries: The most entries the walk may visit; default
                ``RAYPLEX_QUERY_MAX_ENTRIES``.
            timeout_s: The longest the walk may take; default ``RAYPLEX_QUERY_TIMEOUT_S``.

        Raises:
            ValueError: If ``pattern`` or ``wd`` is absolute, has ``..`` or is otherwise
                invalid, if ``wd`` leads outside its client's directory, or if the walk
                passes ``max_entries`` or ``timeout_s`` (the message says which).

        Example:
            >>> import tempfile
            >>> tmp = tempfile.TemporaryDirectory()
            >>> store = ArtifactStore(tmp.name)
            >>> _ = store.write_bytes("g/n/ckpt/a.pkl", b"")
            >>> _ = store.write_bytes("g/n/b.txt", b"")
            >>> store.glob("**/*.pkl", wd="g/n"), store.glob("*", wd="g/n")
            (['ckpt/a.pkl'], ['b.txt', 'ckpt'])
            >>> tmp.cleanup()
        """
        matcher = _GlobPattern(safe_relpath(pattern))
        prefix = safe_relpath(wd) if wd else ""
        base = self._resolve_norm(prefix)[1] if prefix else self._root
        if not os.path.isdir(base):
            return []
        cfg = config()
        budget = cfg.query_max_entries if max_entries is None else max_entries
        seconds = cfg.query_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + seconds
        found: builtins.list[str] = []
        visited = 0
        stack: builtins.list[tuple[str, frozenset[int]]] = [("", matcher.start)]
        while stack:
            rel_dir, states = stack.pop()
            try:
                entries = builtins.list(os.scandir(os.path.join(base, rel_dir)))
            except OSError:  # vanished or not a directory any more
                continue
            for entry in entries:
                visited += 1
                if visited > budget:
                    raise ValueError(
                        f"glob {pattern!r} visited more than {budget} entries; narrow the "
                        "pattern or wd (or raise RAYPLEX_QUERY_MAX_ENTRIES)")
                if time.monotonic() > deadline:
                    raise ValueError(
                        f"glob {pattern!r} ran longer than its bound of {seconds:g} s; "
                        "narrow the pattern or wd (or raise RAYPLEX_QUERY_TIMEOUT_S)")
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                after = matcher.step(states, entry.name)
                if not after:
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                full = f"{prefix}/{rel}" if prefix else rel
                if entry.is_symlink():
                    if matcher.matches(after) and self._confined(full):
                        found.append(rel)
                    continue
                if matcher.matches(after):
                    found.append(rel)
                if matcher.descends(after) and entry.is_dir(follow_symlinks=False):
                    stack.append((rel, after))
        return sorted(found)

    def _existing(self, rel: str) -> tuple[str, Path]:
        norm, target = self._resolve_norm(rel)
        if not os.path.lexists(target):
            raise FileNotFoundError(errno.ENOENT, "no such artifact", norm)
        return norm, target

    def _forget(self, target: Path) -> None:
        prefix = str(target)
        for key in [k for k in self._verified_chunk_files
                    if k == prefix or k.startswith(prefix + os.sep)]:
            del self._verified_chunk_files[key]

    def _inside(self, path: str, src_norm: str) -> bool:
        """Whether ``path`` (absolute, below ``src_norm``'s directory) leads inside the root
        and inside ``src_norm``'s client directory."""
        rel = os.path.relpath(path, self._root).replace(os.sep, "/")
        try:
            self._confine(src_norm, os.path.realpath(path))
            return self._confined(rel)
        except ValueError:
            return False

    def _copy_file(self, source: str | Path, target: Path, src_norm: str) -> None:
        """Copy ``source`` (followed if a link inside its client's directory) to ``target``
        atomically."""
        if not self._inside(os.fspath(source), src_norm):
            raise ValueError(f"refusing to copy {os.fspath(source)!r}: it points outside the "
                             "artifact root or its client's directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as fin, atomic_writer(target) as fout:
            shutil.copyfileobj(fin, fout, ARTIFACT_COPY_BUFSIZE)
        self._forget(target)

    def _copy_tree(self, source: Path, target: Path, src_norm: str) -> None:
        for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
            out = target / os.path.relpath(dirpath, source)
            out.mkdir(parents=True, exist_ok=True)
            for name in filenames:
                full = os.path.join(dirpath, name)
                if name.startswith(TEMP_PREFIX) or not self._inside(full, src_norm):
                    continue
                if not os.path.isfile(full):  # FIFOs, devices, dangling links
                    continue
                self._copy_file(full, out / name, src_norm)
