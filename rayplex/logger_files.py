"""The worker side's file rules for the artifact store: path checks, tar archives, JSON lines.

Pure functions used by :class:`rayplex.artifact_client.ArtifactClient` (the one object behind
the Logger's file calls) and by the ML-Logger compat layer. Every path is relative to the
client's own directory ``artifacts/<group>/<name>/`` and goes through
:func:`rayplex.artifacts.safe_relpath`; ML-Logger's absolute (``/x``) and server-root (``//x``)
paths and its cloud targets (``s3://``, ``gs://``, ``file://``) are refused by design:
everything stays under the logdir.

Directories travel as tar archives built and unpacked on the worker: :func:`pack_dir` and
:func:`unpack_tar`, which checks every member and the unpacked size before it writes anything,
and moves the extracted tree into place only when all of it passed.

Example:
    >>> import io, os, tempfile
    >>> src = tempfile.mkdtemp()
    >>> for name in ("a.txt", "b.pyc"):
    ...     _ = open(os.path.join(src, name), "w").write(name)
    >>> data = pack_dir(src, excludes=["*.pyc"])
    >>> dest = tempfile.mkdtemp()
    >>> unpack_tar(data, dest)
    ['a.txt']
    >>> sorted(os.listdir(dest))
    ['a.txt']
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from typing import Any

from rayplex.artifacts import TEMP_PREFIX, safe_relpath
from rayplex.config import config

__all__ = ["check_path", "join_keys", "json_default", "jsonl_line", "pack_dir", "unpack_tar"]

_REFUSED_SCHEMES = ("s3://", "gs://", "file://", "http://", "https://")
_TAR_MODES = {"tar": "w", "gztar": "w:gz", "bztar": "w:bz2", "xztar": "w:xz"}


def check_path(path: Any, what: str = "path") -> str:
    """``path`` if it names something under a client's directory, else a ValueError that says
    why: absolute and ``//`` server-root paths and cloud buckets are refused by design.

    Example:
        >>> check_path("ckpt/model.pt")
        'ckpt/model.pt'
        >>> check_path("//home/user/.ssh/id_rsa")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: path '//home/user/.ssh/id_rsa': absolute and '//' server-root paths are ...

    Raises:
        TypeError: if ``path`` is not a str.
        ValueError: as above, or for any path :func:`safe_relpath` refuses.
    """
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a str, got {type(path).__name__}")
    if path.startswith(("/", "\\")):
        raise ValueError(f"{what} {path!r}: absolute and '//' server-root paths are refused by "
                         "design (everything stays under the logdir); give a path relative to "
                         "this client's directory")
    if path.lower().startswith(_REFUSED_SCHEMES):
        raise ValueError(f"{what} {path!r}: cloud buckets and URLs are not supported (for now); "
                         "everything stays under the logdir")
    safe_relpath(path)
    return path


def join_keys(keys: Iterable[Any], path: str | None = None) -> str:
    """ML-Logger's ``pJoin``: the non-empty keys joined by ``/``."""
    parts = [k for k in (*keys, path) if k]
    if not parts:
        raise ValueError("no path given: name a file such as 'metrics.json'")
    for part in parts:
        check_path(part)
    return check_path(posixpath.join(*parts))


def _excluded(rel: str, excludes: Iterable[str]) -> bool:
    name = posixpath.basename(rel)
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in excludes)


def pack_dir(dir_path: str | os.PathLike[str], excludes: Iterable[str] = (),
             archive: str = "tar") -> bytes:
    """A tar archive (in memory) of everything under ``dir_path``, member names relative to
    it. ``excludes`` are :mod:`fnmatch` patterns matched against each relative path and each
    name; an excluded directory leaves out its whole tree (``".git"``). Symlinks are stored as
    links, as :func:`shutil.make_archive` does.

    Raises:
        NotADirectoryError: if ``dir_path`` is not a directory.
        ValueError: for an archive format other than tar, gztar, bztar, xztar.
    """
    mode = _TAR_MODES.get(archive)
    if mode is None:
        raise ValueError(f"archive must be one of {sorted(_TAR_MODES)}, got {archive!r}")
    root = os.path.abspath(os.fspath(dir_path))
    if not os.path.isdir(root):
        raise NotADirectoryError(f"upload_dir: {root!r} is not a directory")
    patterns = [excludes] if isinstance(excludes, str) else list(excludes)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir
            keep = []
            for name in sorted(dirnames):
                rel = posixpath.join(rel_dir, name)
                if _excluded(rel, patterns):
                    continue
                full = os.path.join(dirpath, name)
                tar.add(full, arcname=rel, recursive=False)
                if not os.path.islink(full):  # a linked directory is stored as the link
                    keep.append(name)
            dirnames[:] = keep
            for name in sorted(filenames):
                rel = posixpath.join(rel_dir, name)
                if not _excluded(rel, patterns):
                    tar.add(os.path.join(dirpath, name), arcname=rel, recursive=False)
    return buf.getvalue()


def _parts(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]


def _check_member(member: tarfile.TarInfo, links: set[str]) -> None:
    """Refuse a member that could write outside the destination or is not a plain entry;
    ``links`` are the normalised names of the archive's symlink members: nothing may be
    written through one, and no link may point through one (so that every check on names is
    a check on where things land)."""
    name = member.name
    shown = f"tar member {name!r}"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"{shown}: absolute member names are refused")
    parts = _parts(name)
    if ".." in parts:
        raise ValueError(f"{shown}: '..' in a member name is refused")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ValueError(f"{shown}: only files, directories and links inside the archive are "
                         "extracted (no devices or FIFOs)")
    for depth in range(1, len(parts)):
        if "/".join(parts[:depth]) in links:
            raise ValueError(f"{shown}: it lies below the link member "
                             f"{'/'.join(parts[:depth])!r}; nothing is written through a link")
    if member.issym() or member.islnk():
        link = member.linkname
        if link.startswith(("/", "\\")):
            raise ValueError(f"{shown}: links to absolute paths are refused ({link!r})")
        base = posixpath.dirname("/".join(parts)) if member.issym() else ""
        joined = posixpath.join(base, link.replace("\\", "/"))
        resolved = posixpath.normpath(joined)
        if resolved == ".." or resolved.startswith("../"):
            raise ValueError(f"{shown}: a link leading outside the destination is refused "
                             f"({link!r})")
        target = _parts(joined)
        for depth in range(1, len(target) + 1):
            if "/".join(target[:depth]) in links and depth < len(target):
                raise ValueError(f"{shown}: a link through the link member "
                                 f"{'/'.join(target[:depth])!r} is refused ({link!r})")


def _checked_members(tar: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    """Every member, checked, before anything is written; stops reading (and refuses) as soon
    as the files would unpack to more than ``max_bytes``."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        total += member.size if member.isfile() else 0
        if total > max_bytes:
            raise ValueError(
                f"the archive unpacks to more than {max_bytes} bytes (at member "
                f"{member.name!r}); pass a larger max_bytes to download_dir or set "
                "RAYPLEX_MAX_UNPACK_MB")
        members.append(member)
    links = {"/".join(_parts(m.name)) for m in members if m.issym()}
    for member in members:
        _check_member(member, links)
    return members


def unpack_tar(data: bytes, to: str | os.PathLike[str], max_bytes: int | None = None
               ) -> list[str]:
    """Extract a tar archive (any compression) into directory ``to``; return the member names.

    Every member is checked before anything is written: absolute names, ``..``, links that
    lead outside ``to`` or through another link member, devices and FIFOs raise ValueError
    naming the member, and so does an archive whose files add up to more than ``max_bytes``
    (default :attr:`rayplex.config.Config.max_unpack_mb`, ``RAYPLEX_MAX_UNPACK_MB``). The
    archive is then extracted into a hidden staging directory (with :mod:`tarfile`'s ``data``
    filter as a second guard) and moved into place only when all of it passed: a refused
    archive leaves nothing behind, and nothing is moved through a symlink already in ``to``.

    Raises:
        ValueError: for a member as above, an archive past ``max_bytes``, or data that is not
            a tar archive.
    """
    limit = config().max_unpack_bytes if max_bytes is None else int(max_bytes)
    if limit < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes!r}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = _checked_members(tar, limit)
            return _extract(tar, members, to)
    except tarfile.FilterError as exc:
        raise ValueError(f"refused to extract: {exc}") from None
    except tarfile.TarError as exc:
        raise ValueError(f"not a tar archive: {exc}") from None


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo],
             to: str | os.PathLike[str]) -> list[str]:
    dest = os.path.abspath(os.fspath(to))
    anchor = dest
    while not os.path.isdir(anchor):
        anchor = os.path.dirname(anchor)
    staging = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=anchor)
    try:
        tar.extractall(staging, members=members, filter="data")
        if os.path.lexists(dest):
            _merge(staging, dest, members)
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.rename(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [m.name for m in members]


def _merge(staging: str, dest: str, members: list[tarfile.TarInfo]) -> None:
    """Move what was extracted into the existing ``dest``: every place is checked first (no
    write through a symlink already there), then each entry is renamed into place."""
    if not os.path.isdir(dest) or os.path.islink(dest):
        raise ValueError(f"refused to extract: {dest!r} exists and is not a directory")
    real_dest = os.path.realpath(dest)
    names = ["/".join(_parts(m.name)) for m in members if _parts(m.name)]
    for name in names:
        where = os.path.join(dest, *name.split("/"))
        parent = os.path.realpath(os.path.dirname(where))
        if os.path.commonpath([real_dest, parent]) != real_dest:
            raise ValueError(f"refused to extract: tar member {name!r} would be written "
                             f"through a symlink in {dest!r}")
        if os.path.isdir(os.path.join(staging, name)) and not os.path.islink(
                os.path.join(staging, name)) and os.path.lexists(where) and (
                os.path.islink(where) or not os.path.isdir(where)):
            raise ValueError(f"refused to extract: tar member {name!r} is a directory and "
                             f"{where!r} is not")
    for name in names:
        source = os.path.join(staging, *name.split("/"))
        where = os.path.join(dest, *name.split("/"))
        if os.path.isdir(source) and not os.path.islink(source):
            os.makedirs(where, exist_ok=True)
        elif os.path.lexists(source):
            os.makedirs(os.path.dirname(where), exist_ok=True)
            os.replace(source, where)


def jsonl_line(data: Any) -> bytes:
    """One JSON line as :meth:`rayplex.artifact_client.ArtifactClient.log_jsonl` appends it
    (``None`` is ``{}``).

    Example:
        >>> jsonl_line({"step": 1}).decode().rstrip()
        '{"step": 1}'
    """
    return (json.dumps({} if data is None else data, default=json_default) + "\n").encode()


def json_default(value: Any) -> Any:
    """Numpy scalars and arrays as plain numbers and lists; anything else is an error."""
    item = getattr(value, "tolist", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r:.80}")
