"""The uploader: copies a remote logdir's staging directory into its bucket, each object
exactly once (the rules and the journal's format are :mod:`rayplex.remote`'s).

:class:`Uploader` is a plain object (no Ray): ``committed()`` says how far each growing file
is committed (the hub's ``committed_files``), and one :meth:`Uploader.round` ships, when a
segment is due (``RAYPLEX_UPLOAD_SEGMENT_S`` old or ``RAYPLEX_UPLOAD_SEGMENT_MB`` large, or
at once when asked to drain), every committed byte not yet in the bucket, then the new
immutable files, then the state files whose bytes changed, then the journal's new lines.
The :class:`UploaderActor` (named ``upload:<hub>``, detached, restarting forever, on the
hub's node, started by ``rayplex.init``) runs rounds on a thread of its own, off the hub's
write path; a restarted one resumes from the journal.

Example:
    >>> up = Uploader("/tmp/staging", target, lambda: {})  # doctest: +SKIP
    >>> up.drain(30)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import ray

from rayplex import remote
from rayplex.actors import QUERY_GROUP, detached, get_hub, say_to_hub
from rayplex.config import HUB_CALL_TIMEOUT_S, STORE_BACKOFF_MAX_S, STORE_IDLE_POLL_S
from rayplex.layout import MANIFEST, STORE_DIR
from rayplex.nested import drain

__all__ = ["Uploader", "UploaderActor", "get_or_create_uploader", "uploader_name"]

log = logging.getLogger("rayplex.upload")

Say = Callable[[int, str], None]
MANIFEST_REL = f"{STORE_DIR}/{MANIFEST}"


def uploader_name(hub: str) -> str:
    return f"upload:{hub}"


class Uploader:
    """Ships the staging directory ``staging`` to ``target`` (see the module docstring).

    :attr:`counters`: objects and bytes uploaded, rounds, failures, the last problem,
    ``diverged`` (a growing file found shorter than what was uploaded: it is not uploaded
    again), ``lag_bytes``/``lag_s`` (committed but not in the bucket yet) and
    ``staging_bytes``.
    """

    def __init__(self, staging: str, target: remote.Target,
                 committed: Callable[[], Mapping[str, int]], say: Say | None = None, *,
                 segment_s: float = 30.0, segment_bytes: int = 16 * 2**20) -> None:
        self.staging = os.path.abspath(staging)
        self.target = target
        self.committed = committed
        self.say = say or (lambda level, message: log.log(level, message))
        self.segment_s = segment_s
        self.segment_bytes = segment_bytes
        self.lock = threading.Lock()
        self.journal = remote.UploadJournal(os.path.join(self.staging, remote.JOURNAL))
        self.book = self.journal.load()
        self.mirrored: int | None = None
        self.waiting_since: float | None = None
        self.backoff_s = 0.0
        self._diverged: set[str] = set()
        self.counters: dict[str, Any] = {
            "objects": self.book.objects, "bytes": self.book.bytes, "rounds": 0,
            "failures": 0, "problem": None, "diverged": 0, "lag_bytes": 0, "lag_s": 0.0,
            "staging_bytes": 0, "last_upload": None}

    # ----------------------------------------------------------------- one round
    def round(self, force: bool = False) -> bool:
        """Ship what is due; False if nothing was (then, after a forced round, the bucket holds
        everything committed before the round began)."""
        with self.lock:
            self._finish_pending()
            states = self._changed_states()
            immutables = self._new_immutables(states)
            streams = self._stream_ranges()
            waiting = sum(end - off for _, off, end in streams)
            self.counters["lag_bytes"] = waiting
            self.counters["staging_bytes"] = _tree_bytes(self.staging)
            if not (streams or immutables or states):
                self.waiting_since = None
                self.counters["lag_s"] = 0.0
                return self._mirror_journal()
            now = time.monotonic()
            self.waiting_since = self.waiting_since or now
            self.counters["lag_s"] = round(now - self.waiting_since, 3)
            if not (force or waiting >= self.segment_bytes
                    or now - self.waiting_since >= self.segment_s):
                return False
            for rel, off, end in streams:
                self._ship("stream", rel, off, end, _read_range(self._local(rel), off, end))
            for rel in immutables:
                try:
                    data = _read_range(self._local(rel), 0, None)
                except FileNotFoundError:
                    continue  # compacted away since the walk: the manifest no longer needs it
                self._ship("immutable", rel, 0, len(data), data)
            for rel, data in states:
                if rel == MANIFEST_REL and not self._segments_up(data):
                    continue  # its segments are not all up yet: the next round sends it
                self._ship("state", rel, 0, len(data), data)
            self._mirror_journal()
            self.waiting_since = None
            self.counters["rounds"] += 1
            self.counters["lag_s"] = 0.0
            self.counters["lag_bytes"] = 0
            self.counters["last_upload"] = time.time()
            return True

    def _local(self, rel: str) -> str:
        return os.path.join(self.staging, *rel.split("/"))

    def _ship(self, kind: str, rel: str, off: int, end: int, data: bytes) -> None:
        if len(data) != end - off:
            raise OSError(f"{rel} is shorter than its committed size {end}")
        key = remote.object_key(rel, off) if kind == "stream" else rel
        if kind == "state" and key in self.book.pending:
            self._finish_pending()  # never two intents for one state object
        self.journal.intend(key, kind, rel, off, end, remote.sha(data))
        remote.put(self.target, key, data)
        self.journal.done(key)
        self.counters["objects"] += 1
        self.counters["bytes"] += len(data)

    def _finish_pending(self) -> None:
        """After a crash: an intent whose object is there with its size is done; else PUT the
        same bytes again (the same range of the same file: its digest is checked)."""
        for key, entry in list(self.book.pending.items()):
            size = int(entry["end"]) - int(entry["off"])
            if remote.object_size(self.target, key) == size:
                self.journal.done(key)
                continue
            try:
                data = _read_range(self._local(entry["src"]), int(entry["off"]),
                                   int(entry["end"]))
            except OSError:
                data = b""
            if len(data) != size or remote.sha(data) != entry["sha"]:
                # A state file replaced since: its new bytes go up in this round instead.
                if entry.get("kind") != "state":
                    self.counters["diverged"] += 1
                    self.say(logging.WARNING, f"uploader: {entry['src']} changed under an "
                             "interrupted upload; not uploaded again")
                self.book.pending.pop(key)
                continue
            remote.put(self.target, key, data)
            self.journal.done(key)
            self.counters["objects"] += 1
            self.counters["bytes"] += size

    def _stream_ranges(self) -> list[tuple[str, int, int]]:
        out = []
        for rel, size in sorted(self.committed().items()):
            if remote.kind_of(rel) != "stream":
                continue
            done = self.book.ends.get(rel, 0)
            if size > done:
                out.append((rel, done, int(size)))
            elif size < done and rel not in self._diverged:
                self._diverged.add(rel)
                self.counters["diverged"] += 1
                self.say(logging.WARNING, f"uploader: {rel} is shorter ({size} bytes) than "
                         f"what the bucket holds ({done}); its objects are kept as they are")
        return out

    def _walk(self) -> list[str]:
        rels = []
        for dirpath, _, filenames in os.walk(self.staging):
            for name in filenames:
                path = os.path.join(dirpath, name)
                rels.append(os.path.relpath(path, self.staging).replace(os.sep, "/"))
        return sorted(rels)

    def _new_immutables(self, states: list[tuple[str, bytes]]) -> list[str]:
        """The store segments the manifest snapshot names that are not up yet (never the
        small ones compaction already merged away: the live store writes one every round)."""
        manifest = next((data for rel, data in states if rel == MANIFEST_REL), None)
        return [rel for rel in _segment_files(manifest) if rel not in self.book.immutables]

    def _changed_states(self) -> list[tuple[str, bytes]]:
        out = []
        for rel in self._walk():
            if remote.kind_of(rel) != "state":
                continue
            try:
                data = _read_range(self._local(rel), 0, None)
            except OSError:
                continue
            if self.book.states.get(rel) != remote.sha(data):
                out.append((rel, data))
        return out

    def _segments_up(self, manifest: bytes) -> bool:
        return all(rel in self.book.immutables for rel in _segment_files(manifest))

    def _mirror_journal(self) -> bool:
        """Ship the journal's new lines as a segment of its own (its place in the bucket is
        found by listing, once per process)."""
        if self.mirrored is None:
            self.mirrored = sum(size for key, size in remote.list_objects(self.target).items()
                                if remote.parse_key(key)[0] == remote.JOURNAL)
        path = self._local(remote.JOURNAL)
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        if size <= self.mirrored:
            return False
        data = _read_range(path, self.mirrored, size)
        remote.put(self.target, remote.object_key(remote.JOURNAL, self.mirrored), data)
        self.mirrored = size
        return False

    # ----------------------------------------------------------------- loops
    def attempt(self, force: bool = False) -> bool | None:
        """:meth:`round` with error handling: ``None`` if it failed (the bucket is down, the
        hub restarting): the next waits :attr:`backoff_s`, nothing is lost."""
        try:
            busy = self.round(force)
        except Exception as exc:
            self.counters["failures"] += 1
            now = time.monotonic()
            self.waiting_since = self.waiting_since or now
            self.counters["lag_s"] = round(now - self.waiting_since, 3)
            problem = f"{type(exc).__name__}: {remote.redact(str(exc))[:300]}"
            if self.counters["problem"] is None:
                self.say(logging.WARNING, f"uploader: a round failed ({problem}); the bucket "
                         "falls behind, nothing is lost; retrying with back-off")
            self.counters["problem"] = problem
            self.backoff_s = min(STORE_BACKOFF_MAX_S, max(0.1, self.backoff_s * 2))
            return None
        if self.counters["problem"] is not None:
            self.say(logging.WARNING, "uploader: rounds succeed again")
            self.counters["problem"] = None
        self.backoff_s = 0.0
        return busy

    def drain(self, timeout: float) -> bool:
        """Ship everything committed so far; True when the bucket has it within ``timeout``.
        One forced round that succeeds is enough (it ships all that was committed when it
        began): workers that keep logging never hold a drain up."""
        return drain(lambda: None if self.attempt(force=True) is None else False,
                     lambda: self.backoff_s, timeout)

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set."""
        while not stop.is_set():
            busy = self.attempt()
            stop.wait(self.backoff_s if busy is None else STORE_IDLE_POLL_S * 5)


def _segment_files(manifest: bytes | None) -> list[str]:
    """The store files (``store/seg-N.parquet``, ``store/pyr-N.parquet``) a manifest names."""
    from rayplex.store.format import Segment

    if not manifest:
        return []
    try:
        segments = [Segment(**seg) for seg in json.loads(manifest)["segments"]]
    except (ValueError, KeyError, TypeError):
        return []  # torn or foreign: not shipped as a manifest either (see _segments_up)
    return [f"{STORE_DIR}/{name}" for seg in segments for name in (seg.raw, seg.pyr)]


def _read_range(path: str, off: int, end: int | None) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read() if end is None else f.read(end - off)


def _tree_bytes(root: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
    return total


class UploaderActor:
    """Uploads the staging directory of experiment ``hub`` (see the module docstring)."""

    def __init__(self, hub: str, staging: str, target: remote.Target, segment_s: float,
                 segment_bytes: int) -> None:
        self.hub = get_hub(hub)
        self.uploader = Uploader(staging, target, self._committed, self._say,
                                 segment_s=segment_s, segment_bytes=segment_bytes)
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.uploader.run, args=(self._stop,),
                                      name="rayplex-upload", daemon=True)
        self._loop.start()

    def _committed(self) -> Mapping[str, int]:
        ref = self.hub.committed_files.options(concurrency_group=QUERY_GROUP).remote()
        return dict(ray.get(ref, timeout=HUB_CALL_TIMEOUT_S))

    def _say(self, level: int, message: str) -> None:
        say_to_hub(self.hub, log, level, message)

    def info(self) -> dict[str, Any]:
        """The counters and the pid."""
        return {**self.uploader.counters, "uri": self.uploader.target.uri, "pid": os.getpid()}

    def drain(self, timeout: float) -> bool:
        """Upload everything committed so far; True when done in ``timeout``."""
        return self.uploader.drain(timeout)

    def stop(self) -> None:
        """Stop the loop (after its current round)."""
        self._stop.set()
        self._loop.join(timeout=60)


def get_or_create_uploader(hub: str, staging: str, target: remote.Target, node_id: str,
                           segment_s: float, segment_bytes: int) -> Any:
    """The uploader of experiment ``hub``, created on ``node_id`` if it does not exist."""
    return (
        ray.remote(UploaderActor)
        .options(**{**detached(uploader_name(hub), node_id), "max_task_retries": 0},
                 max_concurrency=4)
        .remote(hub, staging, target, segment_s, segment_bytes)
    )
