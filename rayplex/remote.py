"""A logdir on object storage, each rule in one place: which ``scheme://`` strings are remote
logdirs and how they resolve (:func:`resolve`, through ``pyarrow.fs``), where a remote logdir
is staged and cached on this node (:func:`staging_dir`, :func:`cache_dir`), how local files
map to objects (:func:`kind_of`, :func:`object_key`, :func:`parse_key`), the upload journal's
format (:class:`UploadJournal`), and reading a bucket back into a local copy (:func:`sync`).

The hub writes a remote logdir exactly as a local one, into a **staging directory** on its
node; the uploader (:mod:`rayplex.upload`) copies it into the bucket as objects that are
never rewritten:

- a **stream** (an event file, a text log, an artifact: files that only grow) goes up in
  segments, each its committed bytes ``[offset, end)`` since the last one: the first under the
  file's own name, the next ones under ``<name>.part-<offset, 16 digits>``. Each segment of an
  event file is itself a valid event file, and the names sort in write order, so TensorBoard
  reading ``gs://`` (or a synced copy) sees every record once;
- an **immutable** file (the store's ``seg-*``/``pyr-*`` Parquet segments and the
  ``src-*.json`` ranges each was read from) goes up once;
- a **state** file (params, the registry, the store's manifest, projector files) is small and
  replaced whole when its bytes change (a PUT is atomic).

The upload journal (``<staging>/.rayplex/uploads.jsonl``, mirrored to the bucket as a stream
of its own) has one JSON line per step: ``{"op": "intent", "key", "src", "off", "end",
"sha"}`` before a PUT, ``{"op": "done", "key"}`` after it. A process killed in between finds
the intent on restart: the object is there with the intended size (done) or it is PUT again
with the same bytes (the same ``src[off:end]``). Credentials never appear in a key, a journal
line, an error or a log line (:func:`redact`).

Example:
    >>> object_key("tensorboard/a/events.out.tfevents.1", 0)
    'tensorboard/a/events.out.tfevents.1'
    >>> object_key("tensorboard/a/events.out.tfevents.1", 4096)
    'tensorboard/a/events.out.tfevents.1.part-0000000000004096'
    >>> parse_key('logs/all.log.part-0000000000000010')
    ('logs/all.log', 10)
    >>> kind_of("store/seg-00000001.parquet"), kind_of("params/agent/0.json")
    ('immutable', 'state')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rayplex import layout
from rayplex.atomic import TEMP_PREFIX
from rayplex.config import CLAIM_LEASE_S, PROBE_TIMEOUT_S, config

__all__ = ["CLAIM", "JOURNAL", "Staged", "Target", "UploadJournal", "cache_dir", "claimant", "hydrate",
           "is_uri", "kind_of", "object_key", "parse_key", "probe", "redact", "release_claim",
           "renew_claim", "resolve", "set_staged", "staged", "staging_dir", "sync", "take_claim"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")
_PART = re.compile(r"^(.*)\.part-(\d{16})$")
_GEN = re.compile(r"^(.*)\.gen-(\d{4,})$")
_ROTATED = re.compile(r"^(.*\.log)\.(\d+)$")
_SEGMENT = re.compile(r"^(?:(seg|pyr)-\d{8,}\.parquet|src-\d{8,}\.json)$")
JOURNAL = f"{layout.STATE_DIR}/uploads.jsonl"
"""The upload journal, relative to the staging directory (and its mirror in the bucket)."""
_SYNCED_GENS = f"{layout.STATE_DIR}/synced-generations.json"
"""In a synced copy: the generation of each file it holds (:func:`sync`)."""
CLAIM = f"{layout.STATE_DIR}/claim.json"
"""In the bucket: which hub writes this logdir, until when (:func:`take_claim`)."""
STAGING_FULL = f"{layout.STATE_DIR}/staging-full"
"""In a staging directory, while it holds more than its bound not yet in the bucket: why (the
uploader writes and removes it; the hub refuses writes while it is there)."""
STAGED = f"{layout.STATE_DIR}/staged.json"
"""In a staging directory: its bound and event-file rotation, and the local followers of its
event files (:func:`set_staged`; written by ``rayplex.init`` before the hub starts)."""
STATE_FILES = frozenset({f"{layout.STATE_DIR}/{layout.REGISTRY_FILE}"})
"""The files of ``.rayplex/`` that go to the bucket (the rest is the hub's private state)."""


def is_uri(logdir: object) -> bool:
    """Whether ``logdir`` is a ``scheme://`` string (a one-letter scheme is a Windows drive).

    Example:
        >>> is_uri("s3://b/x"), is_uri("C://runs"), is_uri("runs:1/x")
        (True, False, False)
    """
    return isinstance(logdir, str) and bool(_SCHEME.match(logdir))


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s'\"]*@")
_SECRET_VALUE = re.compile(
    r"(\b[A-Za-z_]*(?:key|secret|token|password|credential|signature|sas)[A-Za-z_]*=)"
    r"[^&\s'\")]+", re.I)


def redact(text: str) -> str:
    """``text`` (a URI, or an error message quoting one) without credentials: no
    ``user:password@`` after a scheme and no value of a parameter that names a key, secret,
    token or password.

    Example:
        >>> redact("s3://AKIA:s3cr3t@bkt/exp?endpoint_override=h:9&secret_key=zz")
        's3://***@bkt/exp?endpoint_override=h:9&secret_key=***'
    """
    return _SECRET_VALUE.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


@dataclass(frozen=True)
class Target:
    """A resolved remote logdir: the ``pyarrow.fs`` filesystem, the root path in it, and the
    URI as shown to people (:func:`redact`-ed)."""

    fs: Any = field(repr=False)
    root: str
    uri: str

    @property
    def key(self) -> str:
        """What names this logdir on a node: the filesystem type and the root (so one bucket
        path reached through two endpoints' URIs is one staging directory)."""
        return f"{self.fs.type_name}://{self.root}"

    def path(self, key: str) -> str:
        """The filesystem path of object ``key`` (relative to the root)."""
        return f"{self.root}/{key}" if key else self.root


def resolve(logdir: str | os.PathLike[str], filesystem: Any = None) -> Target | None:
    """``None`` for a plain local path; else the :class:`Target` of a ``scheme://`` URI that
    ``pyarrow.fs.FileSystem.from_uri`` resolves (query parameters such as
    ``?endpoint_override=127.0.0.1:9000&scheme=http`` included), or of ``logdir`` inside an
    explicit ``filesystem`` (a ``pyarrow.fs.FileSystem``; a ``scheme://`` prefix is dropped).
    A ``file://`` URI is a remote logdir too (staged and uploaded: the way to try it locally).

    Example:
        >>> resolve("/tmp/exp") is None
        True
        >>> resolve("nosuch://b/x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: logdir 'nosuch://b/x' is not a storage URI pyarrow.fs can open ...

    Raises:
        TypeError: ``filesystem`` is not a ``pyarrow.fs.FileSystem``.
        ValueError: the scheme cannot be resolved (or pyarrow is missing).
    """
    path = os.fspath(logdir)
    if filesystem is None and not is_uri(path):
        return None
    try:
        import pyarrow.fs as pafs
    except ImportError as exc:
        raise ValueError(f"logdir {redact(path)!r} is on object storage, which needs pyarrow: "
                         'pip install "rayplex[store]"') from exc
    if filesystem is not None:
        if not isinstance(filesystem, pafs.FileSystem):
            raise TypeError("filesystem= takes a pyarrow.fs.FileSystem, got "
                            f"{type(filesystem).__name__}")
        root = _SCHEME.sub("", path.split("?", 1)[0]) if is_uri(path) else path
        return Target(filesystem, root.rstrip("/"), redact(path))
    try:
        fs, root = pafs.FileSystem.from_uri(path)
    except Exception as exc:
        raise ValueError(
            f"logdir {redact(path)!r} is not a storage URI pyarrow.fs can open "
            f"({type(exc).__name__}: {redact(str(exc))[:200]}); pass a local directory, a URI "
            "such as s3://bucket/exp, gs://bucket/exp or file:///abs/dir, or filesystem=")\
            from None
    return Target(fs, str(root).rstrip("/"), redact(path))


def _root_dir() -> str:
    return config().staging_dir or os.path.join(tempfile.gettempdir(), "rayplex-staging")


def _slug(target: Target) -> str:
    digest = hashlib.sha256(target.key.encode()).hexdigest()[:16]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", target.root.rstrip("/").rsplit("/", 1)[-1])[-40:]
    return f"{tail or 'root'}-{digest}"


def staging_full(staging: str) -> str | None:
    """Why the hub writing into ``staging`` must refuse writes now (its staging directory
    holds more than ``RAYPLEX_STAGING_MAX_MB`` not yet in the bucket), else ``None``: one
    failed open per write for a logdir that is not full (or not on object storage)."""
    try:
        with open(os.path.join(staging, *STAGING_FULL.split("/")), encoding="utf-8") as f:
            return f.read() or "the staging directory is full"
    except OSError:
        return None


def set_staging_full(staging: str, reason: str | None) -> None:
    """Raise (``reason``) or lower (``None``) the flag :func:`staging_full` reads."""
    from rayplex.atomic import atomic_write_bytes

    path = os.path.join(staging, *STAGING_FULL.split("/"))
    if reason is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        atomic_write_bytes(path, reason.encode())


@dataclass(frozen=True)
class Staged:
    """How the hub and the uploader keep a staging directory small: ``max_bytes`` bounds the
    bytes of its event files, text logs and store (0: no bound); an event file is closed
    past ``rotate_bytes`` or ``rotate_s``; a closed one is deleted once it is in the bucket and
    read by the store feed (``store``) and the forwarders (``forwarders``: their keys)."""

    max_bytes: int = 0
    rotate_bytes: int = 0
    rotate_s: float = 0.0
    store: bool = False
    forwarders: tuple[str, ...] = ()


def set_staged(staging: str, staged: Staged) -> None:
    """Write ``staging``'s :class:`Staged` (read by :func:`staged`)."""
    from rayplex.atomic import atomic_write_bytes

    path = os.path.join(staging, *STAGED.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    body = {"max_bytes": staged.max_bytes, "rotate_bytes": staged.rotate_bytes,
            "rotate_s": staged.rotate_s, "store": staged.store,
            "forwarders": list(staged.forwarders)}
    atomic_write_bytes(path, json.dumps(body, sort_keys=True).encode())


def staged(logdir: str) -> Staged | None:
    """The :class:`Staged` of a staging directory, ``None`` for a logdir that is not one (or
    whose file is unreadable: then nothing is bounded, rotated or deleted)."""
    try:
        with open(os.path.join(logdir, *STAGED.split("/")), "rb") as f:
            body = json.loads(f.read())
        return Staged(int(body["max_bytes"]), int(body["rotate_bytes"]),
                      float(body["rotate_s"]), bool(body["store"]),
                      tuple(str(k) for k in body["forwarders"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def staging_dir(target: Target) -> str:
    """Where the hub writes remote logdir ``target`` on this node:
    ``RAYPLEX_STAGING_DIR`` (default ``<tmp>/rayplex-staging``) ``/<name>-<hash of the URI>``.

    Example:
        >>> import pyarrow.fs
        >>> staging_dir(Target(pyarrow.fs.LocalFileSystem(), "/b/exp", "file:///b/exp"))  # doctest: +ELLIPSIS
        '.../rayplex-staging/exp-...'
    """
    return os.path.join(_root_dir(), _slug(target))


def cache_dir(target: Target) -> str:
    """Where readers on this node keep their synced copy of ``target`` (:func:`sync`)."""
    return os.path.join(_root_dir(), "cache", _slug(target))


def kind_of(rel: str) -> str | None:
    """How the staged file ``rel`` (``/``-separated, relative to the logdir) goes to the
    bucket: ``"stream"``, ``"immutable"``, ``"state"``, or ``None`` (never: the hub's private
    state, temp files, the upload journal, which is mirrored on its own).

    Example:
        >>> [kind_of(p) for p in ("logs/all.log", "artifacts/a/b.pkl", ".rayplex/journal",
        ...                       "store/MANIFEST.json", "store/LOCK", "tensorboard/a/.tmp-1f")]
        ['stream', 'stream', None, 'state', None, None]
    """
    parts = rel.split("/")
    if parts[-1].startswith(TEMP_PREFIX) or _PART.match(parts[-1]) or _GEN.match(parts[-1]):
        return None
    if parts[0] == layout.STATE_DIR:
        return "state" if rel in STATE_FILES else None
    if parts[0] == layout.TENSORBOARD:
        return "stream" if "tfevents" in parts[-1] else "state"
    if parts[0] == layout.LOGS:  # a rotated backup's bytes are already in its log's stream
        return None if _ROTATED.match(parts[-1]) else "stream"
    if parts[0] == layout.ARTIFACTS:
        return "stream"
    if parts[0] == layout.STORE_DIR:  # its segments and manifest (not its lock)
        if len(parts) == 2 and _SEGMENT.match(parts[1]):
            return "immutable"
        if len(parts) == 2 and layout.MANIFEST_LOG.match(parts[1]):
            return "state"  # replaced whole (a PUT is atomic) after the segments it names
        return "state" if rel == f"{layout.STORE_DIR}/{layout.MANIFEST}" else None
    return "state"


def counted(rel: str) -> bool:
    """Whether staged file ``rel`` counts against the staging bound (``RAYPLEX_STAGING_MAX_MB``):
    the event files and text logs (with their rotated backups), which leave the staging
    directory once up, and the store's segments, manifest and log (a segment leaves once up:
    :func:`rayplex.store.indexer.uploaded`); not the artifacts (the hub reads them again: appends,
    copies, moves) or the hub's private state: those stay for the run.

    Example:
        >>> [counted(p) for p in ("logs/all.log.2", "tensorboard/a/events.out.tfevents.1",
        ...                       "artifacts/w.pkl", "store/seg-00000001.parquet", "store/LOCK")]
        [True, True, False, True, False]
    """
    top = rel.split("/", 1)[0]
    if top == layout.STORE_DIR:
        return kind_of(rel) is not None
    return top in (layout.TENSORBOARD, layout.LOGS) and (
        kind_of(rel) == "stream" or rotated_from(rel) is not None)


COUNTED_TREES = (layout.TENSORBOARD, layout.LOGS, layout.STORE_DIR)
"""The top directories of a logdir whose files :func:`counted` may count."""


def tree_sizes(root: str, tops: tuple[str, ...]) -> dict[str, int]:
    """The size of every file under ``root``'s directories ``tops``, by its ``/``-separated
    path relative to ``root`` (one walk; files gone meanwhile left out)."""
    sizes: dict[str, int] = {}
    for top in tops:
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in names:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    sizes[os.path.relpath(path, root).replace(os.sep, "/")] = \
                        os.path.getsize(path)
    return sizes


def counted_bytes(staging: str, sizes: dict[str, int] | None = None) -> int:
    """The bytes of the files of ``staging`` that :func:`counted` counts (from ``sizes``, a
    :func:`tree_sizes` walk covering :data:`COUNTED_TREES`, when given)."""
    if sizes is None:
        sizes = tree_sizes(staging, COUNTED_TREES)
    return sum(size for rel, size in sizes.items() if counted(rel))


def object_key(rel: str, offset: int, gen: int = 0) -> str:
    """The object holding the segment of stream ``rel`` that starts at byte ``offset`` of its
    generation ``gen`` (0, or the n-th time the file was replaced by a new one: its objects are
    new ones, ``<rel>.gen-<n, 4 digits>``, never the old ones rewritten).

    Example:
        >>> object_key("artifacts/w.pkl", 0, 2), object_key("artifacts/w.pkl", 7, 2)
        ('artifacts/w.pkl.gen-0002', 'artifacts/w.pkl.gen-0002.part-0000000000000007')
    """
    name = rel if gen == 0 else f"{rel}.gen-{gen:04d}"
    return name if offset == 0 else f"{name}.part-{offset:016d}"


def parse_gen(name: str) -> tuple[str, int]:
    """``(file, generation)`` of :func:`parse_key`'s file part.

    Example:
        >>> parse_gen("artifacts/w.pkl.gen-0002"), parse_gen("logs/all.log")
        (('artifacts/w.pkl', 2), ('logs/all.log', 0))
    """
    match = _GEN.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def rotated_from(rel: str) -> str | None:
    """The text log whose rotated backup ``rel`` is (``logs/a.log.2`` -> ``logs/a.log``), else
    ``None``. Its bytes went up as part of that log's stream: the bucket holds each text log
    as one stream that is never rotated.

    Example:
        >>> rotated_from("logs/g/a.log.2"), rotated_from("logs/all.log")
        ('logs/g/a.log', None)
    """
    match = _ROTATED.match(rel)
    return match.group(1) if match and rel.startswith(f"{layout.LOGS}/") else None


def continues(rel: str) -> bool:
    """Whether a new file at stream ``rel``'s path continues its stream (a text log after a
    rotation) rather than replacing it (an artifact written again: a new generation)."""
    return rel.startswith(f"{layout.LOGS}/")


def parse_key(key: str) -> tuple[str, int]:
    """``(file, offset)`` of an object key (offset 0 for a whole file or a first segment)."""
    match = _PART.match(key)
    return (match.group(1), int(match.group(2))) if match else (key, 0)


def sha(data: bytes) -> str:
    """The digest the journal keeps of an object's bytes."""
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- journal


@dataclass
class Book:
    """What the journal says: each stream's uploaded end, each state file's uploaded digest,
    the immutables uploaded (and not removed since), and the intents not yet done (in
    order)."""

    ends: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict[str, int]] = field(default_factory=dict)
    """Each stream's local file now: ``{"ino", "base", "gen"}`` (its inode, the offset in the
    stream where it starts, the generation it writes)."""
    states: dict[str, str] = field(default_factory=dict)
    immutables: set[str] = field(default_factory=set)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: int = 0
    bytes: int = 0


class UploadJournal:
    """The append-only upload journal at ``path`` (see the module docstring). ``intend`` and
    ``done`` append one line each, flushed and fsynced; :meth:`load` replays it (a torn last
    line, from a kill mid-write, is ignored)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.book = Book()

    def load(self) -> Book:
        """Replay the journal into a fresh :class:`Book`."""
        book = Book()
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            lines = []
        for raw in lines:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # an empty or torn line
            op = entry.get("op")
            if op == "intent":
                book.pending[entry["key"]] = entry
            elif op == "done" and entry["key"] in book.pending:
                self._apply(book, book.pending.pop(entry["key"]))
            elif op == "adopt":
                self._adopt(book, entry)
            elif op == "removed":
                book.immutables.discard(entry["src"])
                book.states.pop(entry["src"], None)
        self.book = book
        return book

    @staticmethod
    def _adopt(book: Book, entry: dict[str, Any]) -> None:
        src, gen = entry["src"], int(entry["gen"])
        if gen != book.files.get(src, {}).get("gen", 0):
            book.ends[src] = 0  # a new generation: its objects start afresh
        book.files[src] = {"ino": int(entry["ino"]), "base": int(entry["base"]), "gen": gen}

    @staticmethod
    def _apply(book: Book, entry: dict[str, Any]) -> None:
        kind = entry.get("kind", "stream")
        if kind == "stream":
            book.ends[entry["src"]] = max(book.ends.get(entry["src"], 0), int(entry["end"]))
        elif kind == "state":
            book.states[entry["src"]] = entry["sha"]
        else:
            book.immutables.add(entry["src"])
        book.objects += 1
        book.bytes += int(entry["end"]) - int(entry["off"])

    def _append(self, entry: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def intend(self, key: str, kind: str, src: str, off: int, end: int, digest: str,
               **where: int) -> None:
        """Journal that object ``key`` is about to be PUT with ``src[off:end]`` (digest);
        ``where`` (a stream's ``ino`` and ``loff``) says which local bytes those are."""
        entry = {"op": "intent", "key": key, "kind": kind, "src": src, "off": off, "end": end,
                 "sha": digest, **where}
        with self.lock:
            self._append(entry)
            self.book.pending[key] = entry

    def adopt(self, src: str, ino: int, base: int, gen: int) -> None:
        """Journal that stream ``src`` now continues from the local file of inode ``ino``,
        which starts at offset ``base`` of generation ``gen`` (a rotated text log, an artifact
        written again, a staging directory started from the bucket)."""
        entry = {"op": "adopt", "src": src, "ino": ino, "base": base, "gen": gen}
        with self.lock:
            self._append(entry)
            self._adopt(self.book, entry)

    def removed(self, src: str) -> None:
        """Journal that ``src`` left the bucket: an immutable compacted into another segment,
        or a store manifest log that a newer snapshot replaced."""
        with self.lock:
            self._append({"op": "removed", "src": src})
            self.book.immutables.discard(src)
            self.book.states.pop(src, None)

    def done(self, key: str) -> None:
        """Journal that object ``key`` is in the bucket."""
        with self.lock:
            self._append({"op": "done", "key": key})
            self._apply(self.book, self.book.pending.pop(key))


# ----------------------------------------------------------------------------- bucket I/O


def _call(fn: Any, timeout: float, what: str, target: Target) -> Any:
    """``fn()`` in a thread, waited for at most ``timeout`` seconds (a filesystem that retries
    a dead endpoint for minutes must not hang ``init``); errors come back redacted."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="rayplex-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ValueError(f"logdir {target.uri!r}: the storage did not answer {what} within "
                         f"{timeout:.0f} s (endpoint, network or credentials?)")
    if "error" in box:
        exc = box["error"]
        raise ValueError(f"logdir {target.uri!r}: cannot {what} ({type(exc).__name__}: "
                         f"{redact(str(exc))[:300]}); check the credentials (environment, "
                         "config files, instance role or filesystem=) and the bucket") from None
    return box.get("value")


def probe(target: Target, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Check in ``timeout`` seconds that ``target`` can be listed and written: one small
    object (``.rayplex/probe``, always the same bytes) is written, read back and listed.

    Raises:
        ValueError: it cannot (wrong credentials, no bucket, no answer), said without
            credentials.
    """
    import pyarrow.fs as pafs

    def run() -> None:
        path = target.path(f"{layout.STATE_DIR}/probe")
        info = target.fs.get_file_info(path)
        if info.type != pafs.FileType.File:  # written once per logdir: never rewritten
            put(target, f"{layout.STATE_DIR}/probe", b"rayplex\n")
        target.fs.get_file_info(pafs.FileSelector(target.path(layout.STATE_DIR)))

    _call(run, timeout, "list and write the bucket", target)


def put(target: Target, key: str, data: bytes) -> None:
    """PUT ``data`` as object ``key`` (one atomic object)."""
    path = target.path(key)
    parent = path.rsplit("/", 1)[0]
    if target.fs.type_name == "local":
        target.fs.create_dir(parent, recursive=True)
    with target.fs.open_output_stream(path) as f:
        f.write(data)


def delete(target: Target, key: str) -> None:
    """Delete object ``key`` (nothing if it is not there)."""
    with contextlib.suppress(FileNotFoundError):
        target.fs.delete_file(target.path(key))


def object_size(target: Target, key: str) -> int | None:
    """The size of object ``key``, ``None`` if there is none."""
    import pyarrow.fs as pafs

    info = target.fs.get_file_info(target.path(key))
    return int(info.size) if info.type == pafs.FileType.File else None


def list_objects(target: Target) -> dict[str, int]:
    """``{key: size}`` of every object under the root."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(target.root, recursive=True, allow_not_found=True)
    prefix = target.root.rstrip("/") + "/"
    return {info.path[len(prefix):] if info.path.startswith(prefix) else info.path: int(info.size)
            for info in target.fs.get_file_info(selector) if info.type == pafs.FileType.File}


def _files(objects: dict[str, int]) -> Iterator[tuple[str, int, list[tuple[int, str, int]]]]:
    """Objects grouped by file, its latest generation only: ``(file, generation, [(offset,
    key, size), ...] sorted by offset)``."""
    by_file: dict[str, dict[int, list[tuple[int, str, int]]]] = {}
    for key, size in objects.items():
        name, offset = parse_key(key)
        rel, gen = parse_gen(name)
        by_file.setdefault(rel, {}).setdefault(gen, []).append((offset, key, size))
    for rel in sorted(by_file):
        gen = max(by_file[rel])
        yield rel, gen, sorted(by_file[rel][gen])


def sync(target: Target, dest: str) -> dict[str, int]:
    """Bring the bucket's copy of the logdir into the local directory ``dest``, incrementally:
    a stream's new segments are appended (only while they are contiguous), an immutable file
    is fetched once, a state file whenever its size or bytes changed. Returns counts
    (``objects``, ``bytes``). Files are replaced atomically; a reader of ``dest`` sees whole
    files.

    Raises:
        ValueError: the bucket cannot be listed (said without credentials).
    """
    from rayplex.atomic import atomic_write_bytes

    objects = _call(lambda: list_objects(target), PROBE_TIMEOUT_S * 4, "list the bucket",
                    target)
    fetched = {"objects": 0, "bytes": 0}

    def get(key: str) -> bytes:
        with target.fs.open_input_stream(target.path(key)) as f:
            data: bytes = f.read()
        fetched["objects"] += 1
        fetched["bytes"] += len(data)
        return data

    gens_path = os.path.join(dest, *_SYNCED_GENS.split("/"))
    gens: dict[str, int] = json.loads(_read(gens_path)) if os.path.isfile(gens_path) else {}
    seen = set()
    for rel, gen, parts in _files(objects):
        kind = kind_of(rel) if rel != JOURNAL else "stream"
        if rel == f"{layout.STATE_DIR}/probe" or kind is None:
            continue
        seen.add(rel)
        local = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        if gens.get(rel, 0) != gen and os.path.isfile(local):
            os.remove(local)  # written again since: the new generation replaces it
        gens[rel] = gen
        have = os.path.getsize(local) if os.path.isfile(local) else -1
        if kind == "stream":
            have = max(have, 0)
            for offset, key, size in parts:
                if offset < have:
                    continue
                if offset > have:
                    break  # a gap: a later segment before an earlier one arrived
                data = get(key)
                with open(local, "ab") as f:
                    f.write(data)
                have += size
        elif kind == "immutable":
            if have != parts[0][2]:
                atomic_write_bytes(local, get(parts[0][1]))
        else:
            data = get(parts[0][1])
            if have != len(data) or _read(local) != data:
                atomic_write_bytes(local, data)
    store = os.path.join(dest, layout.STORE_DIR)
    for name in os.listdir(store) if os.path.isdir(store) else ():
        rel = f"{layout.STORE_DIR}/{name}"
        if kind_of(rel) == "immutable" and rel not in seen:
            os.remove(os.path.join(store, name))  # compacted away in the bucket too
    atomic_write_bytes(gens_path, json.dumps(gens, sort_keys=True).encode())
    return fetched


def hydrate(target: Target, staging: str) -> int:
    """Prepare the staging directory of a logdir whose bucket already holds one, when this node
    has no upload journal for it (a new node, a cleaned temp directory): copy the bucket into
    ``staging`` (:func:`sync`) and journal every object found as uploaded, so that the hub
    appends after what is there and no object is ever PUT again with other bytes. Returns the
    number of objects found (0: nothing to do).

    Raises:
        ValueError: the bucket cannot be listed (said without credentials).
    """
    journal_path = os.path.join(staging, *JOURNAL.split("/"))
    if os.path.exists(journal_path):
        return 0
    objects = _call(lambda: list_objects(target), PROBE_TIMEOUT_S * 4, "list the bucket",
                    target)
    found = {key: size for key, size in objects.items()
             if kind_of(parse_key(key)[0]) is not None}
    if not found:
        return 0
    sync(target, staging)
    journal = UploadJournal(journal_path)
    book = journal.load()  # the bucket's mirror of its journal, if any
    for rel, gen, parts in _files(found):
        local = os.path.join(staging, *rel.split("/"))
        if not os.path.isfile(local):
            continue
        data = _read(local)
        kind = kind_of(rel)
        last = parts[-1][1]
        if kind == "stream":
            journal.adopt(rel, os.stat(local).st_ino, 0, gen)  # the whole stream, here
        if kind == "stream" and book.ends.get(rel, 0) < len(data):
            off = book.ends.get(rel, 0)
            journal.intend(last, "stream", rel, off, len(data), sha(data[off:]))
            journal.done(last)
        elif kind == "immutable" and rel not in book.immutables:
            journal.intend(rel, "immutable", rel, 0, len(data), sha(data))
            journal.done(rel)
        elif kind == "state" and book.states.get(rel) != sha(data):
            journal.intend(rel, "state", rel, 0, len(data), sha(data))
            journal.done(rel)
    return len(found)


# ----------------------------------------------------------------------------- claim


def claimant(name: str, staging: str) -> dict[str, str]:
    """The identity a hub claims a bucket with: its experiment ``name``, its host and its
    staging directory (``id``: a digest of host and staging directory, so that the same hub
    restarted on the same node keeps its claim, and any other hub is another)."""
    import socket

    host = socket.gethostname()
    digest = hashlib.sha256(f"{host}\0{os.path.realpath(staging)}".encode()).hexdigest()[:16]
    return {"id": digest, "hub": name, "host": host}


def _get_claim(target: Target) -> dict[str, Any] | None:
    try:
        with target.fs.open_input_stream(target.path(CLAIM)) as f:
            claim = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
    return claim if isinstance(claim, dict) else None


def _other(claim: dict[str, Any] | None, me: dict[str, str], now: float) -> str | None:
    """Words for a live claim of another hub, else ``None``."""
    if claim is None or claim.get("id") == me["id"] or float(claim.get("expires", 0)) <= now:
        return None
    return (f"hub {claim.get('hub')!r} on {claim.get('host')!r} (its claim on the bucket is "
            f"renewed until {time.strftime('%H:%M:%S', time.localtime(claim['expires']))})")


def renew_claim(target: Target, me: dict[str, str], lease_s: float = CLAIM_LEASE_S) -> str | None:
    """Renew ``me``'s claim on the logdir in ``target`` (a PUT of :data:`CLAIM` with a new
    expiry) unless another hub's live claim is there: then say whose (and write nothing)."""
    now = time.time()
    other = _other(_get_claim(target), me, now)
    if other is not None:
        return other
    put(target, CLAIM, json.dumps({**me, "expires": now + lease_s}, sort_keys=True).encode())
    return None


def take_claim(target: Target, me: dict[str, str], lease_s: float = CLAIM_LEASE_S,
               settle_s: float = 0.5) -> None:
    """Claim the logdir in ``target`` for ``me``: refused while another hub's claim is live.
    S3 has no compare-and-swap through pyarrow, so the claim is written, then read back after
    ``settle_s``: of two hubs racing, the one whose PUT landed last keeps it (a slower race is
    settled at the next renewal, which the loser finds taken).

    Raises:
        LogdirConflictError: another hub holds a live claim.
        ValueError: the bucket cannot be read or written (said without credentials).
    """
    from rayplex.errors import LogdirConflictError

    def run() -> str | None:
        other = renew_claim(target, me, lease_s)
        if other is None:
            time.sleep(settle_s)
            other = _other(_get_claim(target), me, time.time())
        return other

    other = _call(run, PROBE_TIMEOUT_S + settle_s, "claim the logdir", target)
    if other is not None:
        raise LogdirConflictError(
            f"logdir {target.uri!r} is written by {other}; one hub writes a logdir. Shut it "
            "down first (its claim is released), or wait until its claim expires")


def release_claim(target: Target, me: dict[str, str]) -> None:
    """Give ``me``'s claim up (nothing if it is another hub's)."""
    claim = _get_claim(target)
    if claim is not None and claim.get("id") == me["id"]:
        delete(target, CLAIM)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def readable(logdir: str | os.PathLike[str]) -> str:
    """A logdir a reader can open on this node: a local path as it is; a remote logdir's
    synced local copy (:func:`sync` into :func:`cache_dir`), brought up to date now.

    Raises:
        ValueError: an unresolvable ``scheme://`` or an unreachable bucket.
    """
    target = resolve(logdir)
    if target is None:
        return os.fspath(logdir)
    dest = cache_dir(target)
    os.makedirs(dest, exist_ok=True)
    sync(target, dest)
    if not os.path.isdir(layout.tensorboard_dir(dest)):
        raise FileNotFoundError(f"logdir {target.uri!r} holds no rayplex logdir (yet): no "
                                "tensorboard/ objects under it")
    return dest
