"""The forwarding loop, as a plain object (no Ray): one tracker, one cursor.

Each round asks the hub what it committed, reads at most ``max_bytes`` of new whole records,
sends them to the tracker, and only then saves the cursor. A failing round advances nothing
and is retried with exponential back-off (by the loop and by :meth:`Forwarder.drain` alike).
What the tracker refuses for good (:class:`~rayplex.forward.trackers.Refused`: the items a
permanent MLflow error names, or every item of a run deleted in MLflow) is counted, reported
once per cause and passed over, so it never holds up the rest; a call that runs longer than the tracker's
``slow_call_s`` is reported while it runs (:meth:`Forwarder.watch`), so an outage shows within
``slow_call_s`` + one watch period even when every call hangs (MLflow waits 20 s on a locked
SQLite file before it fails).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from rayplex.config import (
    FORWARD_IDLE_POLL_S,
    FORWARD_MAX_BYTES,
    FORWARD_MAX_CAUSES,
    FORWARD_START_BACKOFF_S,
)
from rayplex.cursor import Cursor
from rayplex.forward.follow import (
    Image,
    Point,
    decode,
    event_files,
    read_committed,
)
from rayplex.forward.trackers import Connection, Refused, RunGone, Tracker, run_tags
from rayplex.groups import NORMAL, registry_from_json
from rayplex.layout import forward_cursor_path, registry_path
from rayplex.logdir_codec import read_bounded
from rayplex.nested import Backoff, drain, flatten_text

log = logging.getLogger("rayplex.forward")



def cursor_path(logdir: str, tracker: Tracker) -> str:
    """``<logdir>/.rayplex/forward-<tracker key>.json``."""
    return forward_cursor_path(logdir, tracker.key)


class Forwarder:
    """Forwards what the hub committed under ``logdir`` to ``tracker``.

    Args:
        logdir: The experiment's logdir.
        tracker: An :class:`~rayplex.forward.MLflow` or :class:`~rayplex.forward.WandB`.
        committed: Returns the hub's committed sizes (``Hub.committed_sizes``).
        say: Writes a warning line into ``logs/all.log`` (through the hub).
    """

    def __init__(self, logdir: str, tracker: Tracker, committed: Callable[[], dict[str, int]],
                 say: Callable[[int, str], None], max_bytes: int = FORWARD_MAX_BYTES) -> None:
        self.logdir = logdir
        self.tracker = tracker
        self.committed = committed
        self.say = say
        self.max_bytes = max_bytes
        self.backoff_max_s = float(tracker.retry_max_s)
        self._backoff = Backoff(FORWARD_START_BACKOFF_S, self.backoff_max_s)
        self.path = cursor_path(logdir, tracker)
        self.cursor, damage = Cursor.recover(self.path)
        self.connection: Connection | None = None
        self.counters: dict[str, Any] = {
            "tracker": tracker.key, "polls": 0, "forwarded": 0, "images": 0, "rounds": 0, "retries": 0,
            "failures": 0, "slow_calls": 0, "tracker_calls": 0, "lag_bytes": 0,
            "behind_s": 0.0, "problem": None, "last_forwarded": None, "corrupt_files": 0,
            "refused": 0, "refused_causes": {}, "gone_runs": sorted(self.cursor.gone),
            "cursor_damaged": 0,
        }
        if damage is not None:
            self.counters["cursor_damaged"] = 1
            self.say(logging.ERROR, f"forwarder {tracker.key}: {damage}")
        self.backoff_s = 0.0
        self._behind_since: float | None = None
        self._reported_call: float | None = None
        self._corrupt: set[str] = set()
        self._kinds: dict[str, str] = {}
        self._kinds_stamp: int | None = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ rounds
    def round(self) -> bool:
        """One round. Returns True if it forwarded something (call again at once).

        Raises:
            Exception: what the tracker or the hub raised (nothing was advanced).
        """
        with self.lock:
            self.counters["polls"] += 1
            sizes = self.committed()
            files = event_files(self.logdir, sizes)
            lag = sum(max(0, size - self.cursor.offsets.get(rel, 0)) for rel, _, size in files)
            self._note_lag(lag)
            connection = self._connect()  # at once: a tracker that is down is reported early
            budget = self.max_bytes
            offsets: dict[str, int] = {}
            file_run: dict[str, str] = {}
            points: dict[str, list[Point]] = {}
            images: dict[str, list[Image]] = {}
            for rel, run, size in files:
                start = self.cursor.offsets.get(rel, 0)
                if budget <= 0 or size <= start or rel in self._corrupt:
                    continue
                payloads, end = read_committed(os.path.join(self.logdir, rel), start, size,
                                               budget)
                if end == start:
                    self._corrupt.add(rel)
                    self.counters["corrupt_files"] += 1
                    self.say(logging.ERROR, f"forwarder {self.tracker.key}: {rel} has a broken "
                             f"record at byte {start} below the committed size {size}; not "
                             "forwarding that file further")
                    continue
                budget -= end - start
                offsets[rel] = end
                file_run[rel] = run
                p, i = decode(run, payloads)
                if p:
                    points.setdefault(run, []).extend(p)
                if i:
                    images.setdefault(run, []).extend(i)
            params = self._changed_params()
            if not offsets and not params:
                return False
            try:
                for run in dict.fromkeys([*points, *images, *params]):
                    refused = self._send(connection, run, points.get(run, []),
                                         images.get(run, []), params.get(run, ({}, {}))[0])
                    # accepted: a failure further on resends only the runs after this one
                    self.cursor.offsets.update({rel: end for rel, end in offsets.items()
                                                if file_run[rel] == run})
                    if run in params:
                        self.cursor.params.update(params[run][1])
                    if run not in self.cursor.gone:
                        self.counters["forwarded"] += len(points.get(run, [])) - sum(
                            r.count for r in refused if r.kind == "metric")
                        self.counters["images"] += len(images.get(run, [])) - sum(
                            r.count for r in refused if r.kind == "image")
                    self._refused(run, refused)
                    self._sync_calls()
                self.cursor.offsets.update(offsets)  # files without anything to forward
            finally:
                self.cursor.save(self.path)
            self.counters["rounds"] += 1
            self.counters["last_forwarded"] = time.time()
            self._note_lag(sum(max(0, size - self.cursor.offsets.get(rel, 0))
                               for rel, _, size in files))
            return True

    def _connect(self) -> Connection:
        if self.connection is None:
            self.connection = self.tracker.connect(self.logdir)
        return self.connection

    def _send(self, connection: Connection, run: str, points: list[Point], images: list[Image],
              params: dict[str, str]) -> list[Refused]:
        """Send one run's share of a round; returns what the tracker refused for good (all of
        it when the run is gone: it is then skipped from now on)."""
        if run not in self.cursor.gone:
            try:
                run_id = self._run_id(connection, run)
                refused = connection.log_params(run_id, params) if params else []
                if points or images:
                    refused += connection.log(run_id, points, images)
                return refused
            except RunGone as exc:
                self.cursor.gone[run] = str(exc)[:500]
                self.cursor.runs.pop(run, None)
                self.counters["gone_runs"] = sorted(self.cursor.gone)
        count = len(points) + len(images) + len(params)
        return [Refused("run", run, count, self.cursor.gone[run])] if count else []

    def _refused(self, run: str, refused: list[Refused]) -> None:
        """Count what the tracker refused; one ERROR line per new cause."""
        if not refused:
            return
        causes = dict(self.counters["refused_causes"])  # a new dict: info() may be copying
        for item in refused:
            self.counters["refused"] += item.count
            cause = (f"run {run}: not forwarded ({item.error})" if item.kind == "run" else
                     f"run {run}: {item.kind} {item.key!r}: {item.error.split(':', 1)[0]}")
            if cause not in causes and len(causes) >= FORWARD_MAX_CAUSES:
                cause = "other"
            first = cause not in causes
            causes[cause] = causes.get(cause, 0) + item.count
            if first:
                detail = "" if item.kind == "run" else f" ({item.error})"
                self.say(logging.ERROR, f"forwarder {self.tracker.key}: the tracker refuses "
                         f"for good {cause}{detail}; never retried, counted in "
                         "refused_causes, everything else is still forwarded")
        self.counters["refused_causes"] = causes

    def _run_id(self, connection: Connection, run: str) -> str:
        run_id = self.cursor.runs.get(run)
        if run_id is None or (self.tracker.key.startswith("wandb-")
                              and run_id not in getattr(connection, "runs", {})):
            run_id = connection.open_run(run, run_tags(run, self.logdir))
            self.cursor.runs[run] = run_id
        return run_id

    def _changed_params(self) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
        """``{run: (flat params to send, {client: digest})}`` for clients whose params
        changed since they were last forwarded."""
        from rayplex.read import read_params

        try:
            every = read_params(self.logdir)
        except (FileNotFoundError, ValueError):
            return {}
        kinds = self._group_kinds()
        out: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        for client, params in every.items():
            digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=repr)
                                  .encode()).hexdigest()
            if self.cursor.params.get(client) == digest:
                continue
            group, name = client.split("/", 1)
            shared = kinds.get(group, NORMAL) == NORMAL
            run = group if shared else client
            flat = flatten_text(params, f"{name}/" if shared else "")
            entry = out.setdefault(run, ({}, {}))
            entry[0].update(flat)
            entry[1][client] = digest
        return out

    def _group_kinds(self) -> dict[str, str]:
        """``{group: kind}`` from the hub's registry file (read again when it changes)."""
        path = registry_path(self.logdir)
        try:
            stamp = os.stat(path).st_mtime_ns
            if stamp != self._kinds_stamp:
                registry = registry_from_json(json.loads(read_bounded(path)))
                self._kinds = {name: spec.kind for name, spec in registry.groups.items()}
                self._kinds_stamp = stamp
        except (OSError, ValueError, RecursionError):
            pass  # no registry yet, or being replaced: every group counts as normal for now
        return self._kinds

    def _note_lag(self, lag: int) -> None:
        self.counters["lag_bytes"] = lag
        now = time.time()
        if lag <= 0:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = now
        self.counters["behind_s"] = 0.0 if self._behind_since is None else now - \
            self._behind_since

    # ---------------------------------------------------------- loop and health
    def step(self) -> float:
        """One round with error handling; returns how long to wait before the next one."""
        busy = self.attempt()
        if busy is None:
            return self.backoff_s
        return 0.0 if busy else FORWARD_IDLE_POLL_S

    def attempt(self) -> bool | None:
        """One round with error handling: whether it forwarded something, ``None`` if it
        failed (then wait ``backoff_s``, which doubles up to ``retry_max_s``)."""
        try:
            busy = self.round()
        except Exception as exc:
            self.counters["failures"] += 1
            problem = f"{type(exc).__name__}: {str(exc)[:300]}"
            first = self.counters["problem"] is None
            self.counters["problem"] = problem
            self.backoff_s = self._backoff.next()
            if first:
                self.say(logging.WARNING, f"forwarder {self.tracker.key}: the tracker failed "
                         f"({problem}); forwarding is delayed, nothing is lost; retrying with "
                         "back-off")
            self.counters["retries"] += 1
            self._sync_calls()
            return None
        self._sync_calls()
        if self.counters["problem"] is not None:
            was, self.counters["problem"] = self.counters["problem"], None
            self.say(logging.WARNING, f"forwarder {self.tracker.key}: the tracker accepts data "
                     f"again (earlier: {was})")
        self._backoff.reset()
        self.backoff_s = 0.0
        return busy

    def drain(self, timeout: float, wait: Callable[[float], Any] = time.sleep) -> bool:
        """Forward everything committed so far, retrying failed rounds with the same back-off
        as the loop; True when done, False if ``timeout`` passed first."""
        return drain(self.attempt, lambda: self.backoff_s, timeout, wait)

    def _sync_calls(self) -> None:
        if self.connection is not None:
            self.counters["tracker_calls"] = self.connection.calls

    def watch(self, now: float | None = None) -> None:
        """Report a tracker call running longer than ``slow_call_s`` (once per call)."""
        connection = self.connection
        started = connection.call_started if connection is not None else None
        if started is None or started == self._reported_call:
            return
        running = (time.monotonic() if now is None else now) - started
        if running >= self.tracker.slow_call_s:
            self._reported_call = started
            self.counters["slow_calls"] += 1
            self.say(logging.WARNING, f"forwarder {self.tracker.key}: a tracker call has been "
                     f"running for {running:.0f} s (tracker unreachable or locked?); "
                     "forwarding is delayed, nothing is lost")

    def caught_up(self) -> bool:
        """Whether everything the hub committed has been forwarded."""
        return self.counters["lag_bytes"] == 0 and self.counters["problem"] is None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self._sync_calls()
            self.connection = None
