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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ray

from rayplex import remote
from rayplex.actors import QUERY_GROUP, detached, get_hub, say_to_hub
from rayplex.config import CLAIM_LEASE_S, HUB_CALL_TIMEOUT_S, STORE_BACKOFF_MAX_S, STORE_IDLE_POLL_S
from rayplex.cursor import Cursor
from rayplex.layout import MANIFEST, MANIFEST_LOG, STORE_DIR, TENSORBOARD, forward_cursor_path
from rayplex.nested import drain

__all__ = ["Uploader", "UploaderActor", "get_or_create_uploader", "uploader_name"]

log = logging.getLogger("rayplex.upload")

Say = Callable[[int, str], None]
MANIFEST_REL = f"{STORE_DIR}/{MANIFEST}"


class _ClaimLost(OSError):
    """Another hub holds the bucket's claim: this uploader uploads nothing."""


@dataclass(frozen=True)
class Step:
    """One step of a stream's plan: ship ``[off, end)`` of stream ``rel`` (generation
    ``gen``), which are bytes ``[loff, ...)`` of the local file of inode ``ino``; or, with
    ``adopt``, journal that this file continues the stream from ``off`` on."""

    rel: str
    off: int
    end: int
    loff: int
    ino: int
    gen: int
    adopt: bool = False


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
                 segment_s: float = 30.0, segment_bytes: int = 16 * 2**20,
                 max_bytes: int = 0, claim: dict[str, str] | None = None,
                 open_files: Callable[[], Iterable[str]] | None = None) -> None:
        self.staging = os.path.abspath(staging)
        self.target = target
        self.committed = committed
        self.say = say or (lambda level, message: log.log(level, message))
        self.segment_s = segment_s
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.claim = claim
        self.open_files = open_files
        self.renewed = time.monotonic()  # rayplex.init took the claim just before
        self.full = remote.staging_full(self.staging) is not None
        self.lock = threading.Lock()
        self.journal = remote.UploadJournal(os.path.join(self.staging, remote.JOURNAL))
        self.book = self.journal.load()
        self.mirrored: int | None = None
        self.waiting_since: float | None = None
        self.backoff_s = 0.0
        self._diverged: set[str] = set()
        self._store_dropped_at = -1  # book.objects when the store's uploaded segments last left
        self.counters: dict[str, Any] = {
            "objects": self.book.objects, "bytes": self.book.bytes, "rounds": 0,
            "failures": 0, "problem": None, "diverged": 0, "lag_bytes": 0, "lag_s": 0.0,
            "staging_bytes": 0, "last_upload": None, "removed": 0, "dropped": 0, "deleted": 0,
            "staging_full": self.full}

    # ----------------------------------------------------------------- one round
    def round(self, force: bool = False) -> bool:
        """Ship what is due; False if nothing was (then, after a forced round, the bucket holds
        everything committed before the round began)."""
        with self.lock:
            self._renew()
            self._finish_pending()
            tree = self._scan()
            states = self._changed_states(tree)
            immutables = self._new_immutables(states)
            streams = self._stream_plan()
            waiting = sum(step.end - step.off for step in streams)
            self.counters["lag_bytes"] = waiting
            self.counters["staging_bytes"] = sum(tree.values())
            if not (streams or immutables or states):
                self.waiting_since = None
                self.counters["lag_s"] = 0.0
                self._tidy(tree)
                return self._mirror_journal()
            now = time.monotonic()
            self.waiting_since = self.waiting_since or now
            self.counters["lag_s"] = round(now - self.waiting_since, 3)
            if not (force or waiting >= self.segment_bytes
                    or now - self.waiting_since >= self.segment_s):
                return False
            for step in streams:
                if step.adopt:
                    self.journal.adopt(step.rel, step.ino, step.off, step.gen)
                else:
                    self._ship_stream(step)
            self._drop_backups({step.rel for step in streams})
            for rel in immutables:
                try:
                    data = _read_range(self._local(rel), 0, None)
                except FileNotFoundError:
                    continue  # compacted away since the walk: the manifest no longer needs it
                self._ship("immutable", rel, 0, len(data), data)
            for rel, data in states:
                if rel == MANIFEST_REL and not self._segments_up(data):
                    continue  # its segments are not all up yet: the next round sends it
                if _is_manifest_log(rel) and not self._log_segments_up(rel, data):
                    continue  # not its snapshot's log, or its segments are not all up yet
                self._ship("state", rel, 0, len(data), data)
            self._tidy(tree)
            self._mirror_journal()
            self.waiting_since = None
            self.counters["rounds"] += 1
            self.counters["lag_s"] = 0.0
            self.counters["lag_bytes"] = 0
            self.counters["last_upload"] = time.time()
            return True

    def _renew(self) -> None:
        """Renew the bucket claim every quarter lease; raise (no upload) if another hub
        holds it now."""
        if self.claim is None or time.monotonic() - self.renewed < CLAIM_LEASE_S / 4:
            return
        other = remote.renew_claim(self.target, self.claim)
        if other is not None:
            raise _ClaimLost(f"the bucket is claimed by {other}: not uploading")
        self.renewed = time.monotonic()

    def release(self) -> bool:
        """Give the bucket claim up if everything is up (else keep it until it expires: the
        rest is uploaded by the next ``rayplex.init`` of this logdir on this node)."""
        with self.lock:
            if self.claim is None or self.book.pending or self.counters["lag_bytes"]:
                return False
            remote.release_claim(self.target, self.claim)
            return True

    def _local(self, rel: str) -> str:
        return os.path.join(self.staging, *rel.split("/"))

    def _ship_stream(self, step: Step) -> None:
        data = _read_inode(self._candidates(step.rel), step.ino, step.loff,
                           step.loff + step.end - step.off)
        if data is None:
            raise OSError(f"{step.rel}: its file (inode {step.ino}) is gone")
        self._ship("stream", step.rel, step.off, step.end, data, step.gen,
                   ino=step.ino, loff=step.loff)

    def _ship(self, kind: str, rel: str, off: int, end: int, data: bytes, gen: int = 0,
              **where: int) -> None:
        if len(data) != end - off:
            raise OSError(f"{rel} is shorter than its committed size {end}")
        key = remote.object_key(rel, off, gen) if kind == "stream" else rel
        if kind == "state" and key in self.book.pending:
            self._finish_pending()  # never two intents for one state object
        self.journal.intend(key, kind, rel, off, end, remote.sha(data), **where)
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
            data: bytes | None
            if "ino" in entry:  # a stream's range, in whichever file has that inode now
                loff = int(entry["loff"])
                data = _read_inode(self._candidates(entry["src"]), int(entry["ino"]), loff,
                                   loff + size)
            else:
                try:
                    data = _read_range(self._local(entry["src"]), int(entry["off"]),
                                       int(entry["end"]))
                except OSError:
                    data = None
            if data is None or len(data) != size or remote.sha(data) != entry["sha"]:
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

    def _candidates(self, rel: str) -> list[str]:
        """The local files that may hold stream ``rel``'s bytes: its path and, for a text log,
        its rotated backups (``<rel>.1``, ``<rel>.2``, ...)."""
        path = self._local(rel)
        if not remote.continues(rel):
            return [path]
        folder, name = os.path.split(path)
        try:
            names = os.listdir(folder)
        except OSError:
            return [path]
        return [path] + [os.path.join(folder, n) for n in sorted(names)
                         if remote.rotated_from(f"{rel.rsplit('/', 1)[0]}/{n}") == rel]

    def _drop_backups(self, rels: set[str]) -> None:
        """Delete the rotated backups of text logs ``rels`` whose bytes are all in the bucket
        (every backup but the file the stream continues from): the staging directory keeps
        only what the bucket does not have yet."""
        for rel in sorted(rels):
            have = self.book.files.get(rel)
            if have is None or not remote.continues(rel):
                continue
            for path in self._candidates(rel)[1:]:
                try:  # (a rotation between this stat and the remove needs two in a row)
                    if os.stat(path).st_ino != have["ino"]:
                        os.remove(path)
                        self.counters["dropped"] += 1
                except OSError:
                    continue

    def _tidy(self, tree: Mapping[str, int]) -> None:
        """After shipping: compacted segments leave the bucket, and what the bucket holds
        leaves a staging directory (closed event files, store segments); ``tree`` is the
        round's walk of the staging directory (:meth:`_scan`)."""
        self._retire()
        self._drop_events(tree)
        self._drop_store()

    def _drop_store(self) -> None:
        """Delete from a staging directory the store segments the bucket holds (they are never
        compacted again: :func:`rayplex.store.indexer.uploaded`)."""
        if (self._store_dropped_at == self.book.objects or remote.staged(self.staging) is None
                or not os.path.isfile(self._local(MANIFEST_REL))):
            return  # nothing went up since the last time (the store's lock is not taken)
        from rayplex.store.indexer import uploaded

        up = self.book.immutables
        self.counters["deleted"] += uploaded(self.staging,
                                             lambda name: f"{STORE_DIR}/{name}" in up)
        self._store_dropped_at = self.book.objects

    def _drop_events(self, tree: Mapping[str, int]) -> None:
        """Delete from a staging directory (:func:`rayplex.remote.staged`) the event files that
        the hub closed (``open_files`` does not name them: a closed file is never reopened),
        whose every byte is in the bucket and which every local reader of event files has read
        to its end: the store feed (its manifest's cursors) and each forwarder (its cursor)."""
        stage = remote.staged(self.staging)
        if self.open_files is None or stage is None:
            return
        open_now = set(self.open_files())
        read = self._followers(stage)
        if read is None:
            return
        shipping = {entry["src"] for entry in self.book.pending.values()}
        for rel in tree:
            have = self.book.files.get(rel)
            if (not rel.startswith(f"{TENSORBOARD}/") or remote.kind_of(rel) != "stream"
                    or rel in open_now or rel in shipping or have is None):
                continue
            path = self._local(rel)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_ino != have["ino"] or self.book.ends.get(rel, 0) - have["base"]
                    != st.st_size or any(cursors.get(key, 0) < st.st_size
                                         for key, cursors in read(rel))):
                continue
            os.remove(path)
            self.counters["deleted"] += 1

    def _followers(self, stage: remote.Staged
                   ) -> Callable[[str], list[tuple[str, Mapping[str, int]]]] | None:
        """For an event file, each local follower's cursor key and cursors; ``None`` if the
        store's manifest cannot be read (then nothing is deleted)."""
        maps: list[tuple[bool, Mapping[str, int]]] = []
        if stage.store:
            from rayplex.store.format import Layout, Manifest

            try:
                maps.append((True, Manifest.load(Layout.of(self.staging)).cursors))
            except Exception:
                return None
        for key in stage.forwarders:
            # read as the forwarder recovers it (its second copy if damaged; none, or both
            # damaged: empty, so nothing it follows is deleted), never set aside: it is its file
            cursor, _ = Cursor.recover(forward_cursor_path(self.staging, key), set_aside=False)
            maps.append((False, cursor.offsets))
        prefix = TENSORBOARD + "/"
        return lambda rel: [(rel[len(prefix):] if store else rel, cursors)
                            for store, cursors in maps]

    def _stream_plan(self) -> list[Step]:
        """What to ship of each stream, in order: committed bytes not up yet and, when a file
        was rotated (a text log: its backups' bytes not up yet, oldest first, then the new
        file continues the stream) or replaced (an artifact written again: a new generation
        of objects), the adoption of the new file. Nothing is journaled here (a round that is
        not due ships nothing)."""
        out: list[Step] = []
        for rel, size in sorted(self.committed().items()):
            if remote.kind_of(rel) != "stream":
                continue
            try:
                ino = os.stat(self._local(rel)).st_ino
            except OSError:
                continue
            done = self.book.ends.get(rel, 0)
            have = self.book.files.get(rel)
            if have is None and done == 0:
                have = {"ino": -1, "base": 0, "gen": 0}  # a new stream
            elif have is None:  # a journal from before inodes were kept: this file is it
                have = {"ino": ino, "base": 0, "gen": 0}
                out.append(Step(rel, 0, 0, 0, ino, 0, adopt=True))
            base, gen = have["base"], have["gen"]
            if have["ino"] == ino and size >= done - base:
                pass
            elif not remote.continues(rel):  # replaced: a new generation
                gen, base, done = (gen + 1 if have["ino"] != -1 else 0), 0, 0
                out.append(Step(rel, 0, 0, 0, ino, gen, adopt=True))
            else:
                done, base = self._rotated(rel, have, ino, size, done, out)
            if size > done - base:
                out.append(Step(rel, done, base + size, done - base, ino, gen))
        return out

    def _rotated(self, rel: str, have: dict[str, int], ino: int, size: int, done: int,
                 out: list[Step]) -> tuple[int, int]:
        """Plan a rotated text log: the rest of the file last shipped (now a backup), the
        backups after it whole, oldest first; then adopt the current file. Returns the
        stream's end and the current file's base."""
        chain = _chain(self._candidates(rel))
        inos = [i for i, _ in chain]
        known = have["ino"] if not (have["ino"] == ino and size < done - have["base"]) else -1
        if known in inos[:-1]:
            k = inos.index(known)
            old = chain[k][1]
            if old > done - have["base"]:
                out.append(Step(rel, done, have["base"] + old, done - have["base"], known,
                                have["gen"]))
                done = have["base"] + old
            rest = chain[k + 1:-1]
        else:
            if have["ino"] != -1 and rel not in self._diverged:
                self._diverged.add(rel)
                self.say(logging.INFO, f"uploader: {rel} was rotated past its last backup; "
                         "its bytes not uploaded before are not in the bucket")
            rest = chain[:-1]
        for backup_ino, backup_size in rest:
            out.append(Step(rel, done, done, 0, backup_ino, have["gen"], adopt=True))
            if backup_size:
                out.append(Step(rel, done, done + backup_size, 0, backup_ino, have["gen"]))
            done += backup_size
        out.append(Step(rel, done, done, 0, ino, have["gen"], adopt=True))
        return done, done

    def _scan(self) -> dict[str, int]:
        """The one walk of the staging directory a round: each file's size by its path
        (``/``-separated, relative), in name order (files gone meanwhile left out)."""
        tree: dict[str, int] = {}
        for dirpath, _, filenames in os.walk(self.staging):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                tree[os.path.relpath(path, self.staging).replace(os.sep, "/")] = size
        return dict(sorted(tree.items()))

    def _new_immutables(self, states: list[tuple[str, bytes]]) -> list[str]:
        """The store segments the manifest (its snapshot and log) names that are not up yet
        (never the small ones compaction already merged away: the live store writes one every
        round)."""
        if not any(rel == MANIFEST_REL or _is_manifest_log(rel) for rel, _ in states):
            return []
        snapshot = self._snapshot()
        if snapshot is None:
            return []
        return [rel for rel in self._store_files(snapshot) or []
                if rel not in self.book.immutables]

    def _snapshot(self) -> bytes | None:
        """The local store manifest's snapshot (``store/MANIFEST.json``), None if absent."""
        try:
            return _read_range(self._local(MANIFEST_REL), 0, None)
        except OSError:
            return None

    def _store_files(self, snapshot: bytes, log: bytes | None = None) -> list[str] | None:
        """The store files ``snapshot`` names with the log it names applied (``log``: those
        bytes of it rather than the file's); ``None`` if torn."""
        if log is None:
            name = _log_name(snapshot)
            try:
                log = b"" if name is None else _read_range(self._local(name), 0, None)
            except OSError:
                log = b""  # replaced by a newer snapshot meanwhile: the next round
        return _segment_files(snapshot, log)

    def _log_segments_up(self, rel: str, log: bytes) -> bool:
        """Whether ``rel`` is the log the local snapshot names and every segment its records
        name is up (a reader of the bucket then finds every file it names)."""
        snapshot = self._snapshot()
        if snapshot is None or _log_name(snapshot) != rel:
            return False
        names = self._store_files(snapshot, log)
        return names is not None and all(name in self.book.immutables for name in names
                                         if not _is_src(name))

    def _changed_states(self, tree: Mapping[str, int]) -> list[tuple[str, bytes]]:
        out = []
        for rel in tree:
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
        names = _segment_files(manifest)
        return names is not None and all(rel in self.book.immutables for rel in names
                                         if not _is_src(rel))

    def _retire(self) -> None:
        """Delete from the bucket the store segments that the manifest in the bucket no
        longer names (compaction merged them into one that is up, with that manifest): a
        reader sees each point once and the bucket does not grow with every compaction."""
        data = self._snapshot()
        if data is None:
            return
        keep = self._store_files(data)
        if keep is None or self.book.states.get(MANIFEST_REL) != remote.sha(data):
            return  # the manifest in the bucket is not this one: the next round
        old_logs = {rel for rel in self.book.states if _is_manifest_log(rel)} - {_log_name(data)}
        for rel in sorted(self.book.immutables - set(keep)) + sorted(old_logs):
            remote.delete(self.target, rel)
            self.journal.removed(rel)
            self.counters["removed"] += 1

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
            self._gate(failed=True)
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
        self._gate(failed=False)
        if self.counters["problem"] is not None:
            self.say(logging.WARNING, "uploader: rounds succeed again")
            self.counters["problem"] = None
        self.backoff_s = 0.0
        return busy

    def _gate(self, failed: bool) -> None:
        """Hold the hub's writes (:func:`rayplex.remote.set_staging_full`) while more than
        :attr:`max_bytes` committed bytes wait for the bucket; let them go below 90 % of it.
        After a failed round the wait is estimated from the hub's committed sizes."""
        if self.max_bytes <= 0:
            if self.full:  # left by a run with a bound: no bound now
                self.full = False
                remote.set_staging_full(self.staging, None)
            return
        if failed:
            try:
                self.counters["lag_bytes"] = self._waiting()
            except Exception:
                return  # the hub is restarting: the next round measures
        waiting = int(self.counters["lag_bytes"])
        if not self.full and waiting > self.max_bytes:
            self.full = True
            remote.set_staging_full(self.staging, (
                f"the staging directory holds {waiting} bytes not yet in the bucket, more than "
                f"RAYPLEX_STAGING_MAX_MB ({self.max_bytes} bytes); writes resume as the "
                "uploader catches up"))
            self.say(logging.WARNING, f"uploader: {waiting} bytes wait for the bucket, more "
                     f"than the bound {self.max_bytes}: the hub refuses writes until they are "
                     "up (the senders keep the data and retry)")
        elif self.full and waiting < self.max_bytes * 0.9:
            self.full = False
            remote.set_staging_full(self.staging, None)
            self.say(logging.WARNING, "uploader: the bucket caught up; the hub writes again")
        self.counters["staging_full"] = self.full

    def _waiting(self) -> int:
        """Committed stream bytes not yet in the bucket (what a round would ship of them)."""
        with self.lock:
            return sum(step.end - step.off for step in self._stream_plan())

    def drain(self, timeout: float) -> bool:
        """Ship everything committed so far; True when the bucket has it within ``timeout``.
        One forced round that succeeds is enough (it ships all that was committed when it
        began): workers that keep logging never hold a drain up."""
        return drain(lambda: None if self.attempt(force=True) is None else False,
                     lambda: self.backoff_s, timeout)

    def run(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set; while backing off from a failed round, the staging
        bound is measured every second (the hub must stop writing soon after it is hit)."""
        while not stop.is_set():
            busy = self.attempt()
            if busy is not None:
                stop.wait(STORE_IDLE_POLL_S * 5)
                continue
            until = time.monotonic() + self.backoff_s
            while not stop.wait(max(0.0, min(1.0, until - time.monotonic()))):
                if time.monotonic() >= until:
                    break
                self._gate(failed=True)


def _segment_files(manifest: bytes | None, log: bytes = b"") -> list[str] | None:
    """The store files (``store/seg-N.parquet``, ``store/pyr-N.parquet`` and, unless the
    manifest holds its ranges itself, ``store/src-N.json``) a manifest snapshot names, with
    the intact records of ``log`` (its log) applied; ``None`` for a torn or foreign snapshot
    (never shipped: see ``_segments_up``). A manifest goes up once its Parquet files are up
    (a reader needs them); a ``src`` file goes up with them when it is there (a rebuild or a
    compaction on another node needs it), and leaves the bucket with them."""
    from rayplex.store.format import Segment

    if manifest is None:
        return []
    try:
        if log:
            from rayplex.store.format import Manifest

            whole = Manifest.from_json(manifest)
            whole.replay(log)
            segments = list(whole.segments)
        else:
            segments = [Segment(**seg) for seg in json.loads(manifest)["segments"]]
    except (ValueError, KeyError, TypeError):
        return None
    return [f"{STORE_DIR}/{name}" for seg in segments
            for name in (seg.files if not seg.sources else (seg.raw, seg.pyr))]


def _is_src(rel: str) -> bool:
    """A segment's ranges file, which no reader of the bucket needs."""
    return rel.endswith(".json")


def _log_name(snapshot: bytes) -> str | None:
    """``store/MANIFEST-<n>.log``, the log a manifest snapshot names, or None."""
    try:
        name = json.loads(snapshot).get("log")
    except (ValueError, AttributeError):
        return None
    return f"{STORE_DIR}/{name}" if isinstance(name, str) else None


def _is_manifest_log(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 2 and parts[0] == STORE_DIR and bool(MANIFEST_LOG.match(parts[1]))


def _read_inode(paths: list[str], ino: int, off: int, end: int) -> bytes | None:
    """``[off, end)`` of the first of ``paths`` whose inode is ``ino`` (checked on the open
    file, so a rename in between cannot swap it), ``None`` if none is."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_ino != ino:
                    continue
                f.seek(off)
                return f.read(end - off)
        except OSError:
            continue
    return None


def _chain(paths: list[str]) -> list[tuple[int, int]]:
    """``(inode, size)`` of a text log's files, oldest first (``<log>.N`` ... ``<log>.1``,
    then ``<log>``: ``paths`` as :meth:`Uploader._candidates` lists them), listed again when
    a rotation moved a file during the listing."""
    order = paths[:1] + sorted(paths[1:], key=lambda p: -int(p.rsplit(".", 1)[1]))
    chain: list[tuple[int, int]] = []
    for _ in range(3):
        chain = []
        for path in order[1:] + order[:1]:
            try:
                st = os.stat(path)
            except OSError:
                continue
            chain.append((int(st.st_ino), int(st.st_size)))
        if len({i for i, _ in chain}) == len(chain):
            break
    return chain


def _read_range(path: str, off: int, end: int | None) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read() if end is None else f.read(end - off)


class UploaderActor:
    """Uploads the staging directory of experiment ``hub`` (see the module docstring)."""

    def __init__(self, hub: str, staging: str, target: remote.Target, segment_s: float,
                 segment_bytes: int, max_bytes: int = 0,
                 claim: dict[str, str] | None = None) -> None:
        self.hub = get_hub(hub)
        self.uploader = Uploader(staging, target, self._committed, self._say,
                                 segment_s=segment_s, segment_bytes=segment_bytes,
                                 max_bytes=max_bytes, claim=claim, open_files=self._open_files)
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.uploader.run, args=(self._stop,),
                                      name="rayplex-upload", daemon=True)
        self._loop.start()

    def _committed(self) -> Mapping[str, int]:
        ref = self.hub.committed_files.options(concurrency_group=QUERY_GROUP).remote()
        return dict(ray.get(ref, timeout=HUB_CALL_TIMEOUT_S))

    def _open_files(self) -> list[str]:
        ref = self.hub.open_event_files.options(concurrency_group=QUERY_GROUP).remote()
        return list(ray.get(ref, timeout=HUB_CALL_TIMEOUT_S))

    def _say(self, level: int, message: str) -> None:
        say_to_hub(self.hub, log, level, message)

    def info(self) -> dict[str, Any]:
        """The counters and the pid."""
        return {**self.uploader.counters, "uri": self.uploader.target.uri, "pid": os.getpid()}

    def drain(self, timeout: float) -> bool:
        """Upload everything committed so far; True when done in ``timeout``."""
        return self.uploader.drain(timeout)

    def stop(self) -> None:
        """Stop the loop (after its current round); give the bucket claim up if all is up."""
        self._stop.set()
        self._loop.join(timeout=60)
        try:
            self.uploader.release()
        except Exception as exc:  # the claim then expires by itself
            log.warning("uploader: could not release the bucket claim: %s",
                        remote.redact(str(exc))[:200])


def get_or_create_uploader(hub: str, staging: str, target: remote.Target, node_id: str,
                           segment_s: float, segment_bytes: int, max_bytes: int = 0,
                           claim: dict[str, str] | None = None) -> Any:
    """The uploader of experiment ``hub``, created on ``node_id`` if it does not exist."""
    return (
        ray.remote(UploaderActor)
        .options(**{**detached(uploader_name(hub), node_id), "max_task_retries": 0},
                 max_concurrency=4)
        .remote(hub, staging, target, segment_s, segment_bytes, max_bytes, claim)
    )
