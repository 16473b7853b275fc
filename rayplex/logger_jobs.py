"""ML-Logger's job bookkeeping on :class:`rayplex.Logger`: errors, job status, git, heartbeats.

(ML-Logger calls a job a "run"; in rayplex a run is a TensorBoard directory, so here it is a
job.)

Where things are kept:

* a captured error goes to the client's text log (ERROR, with the traceback) and is appended
  to the artifact ``error.log`` (ML-Logger's default name);
* the job status is a ``job`` namespace in the client's params
  (``params/<group>/<name>.json``), next to what ``log_params`` stored, so that
  :meth:`JobsMixin.get_exps` and ``rayplex ls`` read both at once;
* heartbeats (``ping``) and the signals a driver sent (``hub.signal(client, "stop")``) are hub
  state, kept as JSON in ``.rayplex/control.json`` by :class:`rayplex.actors.control.ControlBook`.

A signal is handed out once: the first ping of that client after it was sent returns it. Each
ping carries a token of its own, and the hub remembers what it answered to the last tokens, so
that a ping Ray replays after a hub restart answers the same signals again instead of losing
them.

"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import subprocess
import threading
import traceback
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rayplex.config import GIT_TIMEOUT_S
from rayplex.nested import flatten, jsonable

if TYPE_CHECKING:
    import pandas

    from rayplex.artifact_client import ArtifactClient
    from rayplex.session import Session

__all__ = ["JOB_STATUSES", "JobsMixin"]

log = logging.getLogger("rayplex")

JOB_STATUSES = {"created": "createTime", "requested": "requestTime", "started": "startTime",
                "running": "runTime", "paused": "pauseTime", "completed": "completionTime",
                "errored": "errorTime"}
"""ML-Logger's job life cycle: status -> the key of its UTC time in the ``job`` params."""

_MAX_STATUS = 200


def _check_status(status: Any) -> str:
    if not isinstance(status, str):
        raise TypeError(f"ping status must be a str such as 'running', got {type(status).__name__}")
    if not status or len(status) > _MAX_STATUS or not status.isprintable():
        raise ValueError(f"ping status must be 1-{_MAX_STATUS} printable characters, got "
                         f"{status[:80]!r}")
    return status


def _utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _git(directory: str | os.PathLike[str], *args: str) -> str | None:
    """The output of ``git <args>`` in ``directory``, or None when git says no (not a
    repository, no tags) or is not installed. No shell: paths are never interpreted."""
    try:
        done = subprocess.run(["git", *args], cwd=os.fspath(directory), capture_output=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace")


class _KeepAlive(threading.Thread):
    """Pings every ``interval`` seconds with the last status; keeps the signals it receives
    for the next :meth:`JobsMixin.ping` to return (as ML-Logger's background duplex)."""

    def __init__(self, owner: JobsMixin, status: str, interval: float) -> None:
        super().__init__(name=f"rayplex-ping-{owner.client_id}", daemon=True)
        self.owner = owner
        self.status = status
        self.interval = interval
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                signals = self.owner._ping_hub(self.status)
            except Exception as exc:  # the experiment is gone: stop pinging, say why once
                log.info("rayplex: %s stopped pinging: %s", self.owner.client_id, exc)
                return
            with self.lock:
                self.received.extend(signals)

    def take(self) -> list[str]:
        with self.lock:
            taken, self.received = self.received, []
        return taken


class JobsMixin:
    """Job status, captured errors, git state and heartbeats of one client (ML-Logger's verbs,
    kept on the Logger for drop-in use; see docs/migration.md)."""

    _keep_alive: _KeepAlive | None = None

    client_id: str
    _session: Session  # hub requests: params, experiments, pings
    _artifacts: ArtifactClient  # error.log, index.diff

    if TYPE_CHECKING:  # the Logger's text log
        def error(self, msg: Any, *args: Any, **kw: Any) -> None: ...
        def warning(self, msg: Any, *args: Any, **kw: Any) -> None: ...

    # ------------------------------------------------------------------ errors
    @contextlib.contextmanager
    def capture_error(self, file: str = "error.log", reraise: bool = False) -> Iterator[None]:
        """A context that logs an exception raised in it and, as ML-Logger, swallows it.

        The traceback goes to this client's text log (ERROR) and is appended to the artifact
        ``file``. ``reraise=True`` raises it again after logging. ``KeyboardInterrupt`` and
        ``SystemExit`` are not caught.

        Example:
            >>> with log.capture_error():  # doctest: +SKIP
            ...     train()

        Raises:
            ValueError: if ``file`` is not a valid artifact path (before the block runs).
        """
        self._artifacts.path(file)
        try:
            yield
        except Exception as exc:
            text = traceback.format_exc()
            self.error("Exception occurred: %s", exc, exc_info=exc)
            self._artifacts.append_bytes(file, f"Exception occurred {exc}\n{text}\n".encode())
            if reraise:
                raise

    # -------------------------------------------------------------- job status
    def _job(self, status: str, job: Mapping[str, Any] | None,
             namespaces: Mapping[str, Any]) -> dict[str, Any]:
        if job is not None and not isinstance(job, Mapping):
            raise TypeError(f"job must be a mapping, got {type(job).__name__}")
        for key, value in namespaces.items():
            if not isinstance(value, Mapping):
                raise TypeError(f"job_{status}({key}=...) takes a mapping, got "
                                f"{type(value).__name__}")
        entry = {**dict(job or {}), "status": status, JOB_STATUSES[status]: _utcnow()}
        params = {"job": entry, **namespaces}
        return dict(self._session.call("save_params", self.client_id, jsonable(params)))

    def job_created(self, job: Mapping[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """Set this client's job status to ``created`` (see :meth:`job_started`)."""
        return self._job("created", job, params)

    def job_requested(self, job: Mapping[str, Any] | None = None,
                      **params: Any) -> dict[str, Any]:
        """Set this client's job status to ``requested`` (see :meth:`job_started`)."""
        return self._job("requested", job, params)

    def job_started(self, job: Mapping[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """Set this client's job status to ``started``: params ``job.status`` and
        ``job.startTime`` (UTC, ISO 8601), merged with ``job`` and any other namespaces given
        (as ``log_params``). Shown by ``rayplex ls`` and :meth:`get_exps`. It does not add an
        HParams session (``log_params`` does).

        Example:
            >>> log.job_started(job={"queue": "gpu"}, Args={"lr": 0.1})  # doctest: +SKIP

        Returns:
            Everything stored in this client's params so far.

        Raises:
            TypeError: if ``job`` or a namespace is not a mapping.
        """
        return self._job("started", job, params)

    def job_running(self, job: Mapping[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """Set this client's job status to ``running`` (``job.runTime``)."""
        return self._job("running", job, params)

    def job_paused(self, job: Mapping[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """Set this client's job status to ``paused`` (``job.pauseTime``)."""
        return self._job("paused", job, params)

    def job_completed(self, job: Mapping[str, Any] | None = None,
                      **params: Any) -> dict[str, Any]:
        """Set this client's job status to ``completed`` (``job.completionTime``)."""
        return self._job("completed", job, params)

    def job_errored(self, job: Mapping[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        """Set this client's job status to ``errored`` (``job.errorTime``)."""
        return self._job("errored", job, params)

    # -------------------------------------------------------------- experiments
    def get_exps(self, *patterns: str, as_dataframe: bool = True) -> pandas.DataFrame | list[
            dict[str, Any]]:
        """Every client whose id matches a pattern (:mod:`fnmatch`; none: all), one row each:
        ``client``, its params flattened with dots (``Args.lr``, ``job.status``) and its last
        heartbeat (``ping.status``, ``ping.time`` in seconds since the epoch).

        Example:
            >>> log.get_exps("agent/*")[["client", "job.status"]]  # doctest: +SKIP

        Returns:
            A pandas DataFrame sorted by client (or the rows as dicts with
            ``as_dataframe=False``).

        Raises:
            TypeError: if a pattern is not a str.
        """
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise TypeError(f"get_exps takes client-id patterns such as 'agent/*', got "
                                f"{pattern!r}")
        found = self._session.call("read_experiments", list(patterns) or ["*"])
        rows = []
        for client in sorted(found):
            params, heartbeat = found[client]
            row: dict[str, Any] = {"client": client, "job.status": None}
            row.update(flatten(params, sep="."))  # ML-Logger's dotted columns
            row["ping.status"] = heartbeat.get("status") if heartbeat else None
            row["ping.time"] = heartbeat.get("time") if heartbeat else None
            rows.append(row)
        if not as_dataframe:
            return rows
        import pandas as pd

        return pd.DataFrame(rows, columns=None if rows else ["client", "job.status",
                                                              "ping.status", "ping.time"])

    @property
    def hostname(self) -> str:
        """This worker's fully qualified host name (ML-Logger's ``hostname -f``)."""
        return socket.getfqdn()

    # --------------------------------------------------------------------- git
    def diff(self, diff_directory: str | os.PathLike[str] = ".", diff_filename: str = "index.diff",
             ref: str = "HEAD", verbose: bool = False) -> str | None:
        """Store ``git diff <ref> --binary`` of ``diff_directory`` as the artifact
        ``diff_filename`` (ML-Logger's ``index.diff``) and return it; outside a git repository
        (or without git) log a warning, store nothing and return None.

        Example:
            >>> patch = log.diff()  # doctest: +SKIP

        Raises:
            ValueError: if ``diff_filename`` is not a valid artifact path.
        """
        self._artifacts.path(diff_filename)
        if not isinstance(ref, str) or ref.startswith("-"):
            raise ValueError(f"ref must be a git revision such as 'HEAD', got {ref!r}")
        if verbose:
            print(f"git -C {os.fspath(diff_directory)!r} diff {ref} --binary")
        patch = _git(diff_directory, "diff", ref, "--binary")
        if patch is None:
            self.warning("not storing the git diff: %s is not in a git repository (or git is "
                         "missing)", os.path.realpath(diff_directory))
            return None
        self._artifacts.save_text(patch, diff_filename)
        return patch

    def git_rev(self, branch: str = "HEAD", directory: str | os.PathLike[str] = ".") -> str | None:
        """The commit hash ``branch`` names (None outside a repository)."""
        if branch.startswith("-"):
            raise ValueError(f"branch must be a git revision, got {branch!r}")
        out = _git(directory, "rev-parse", branch)
        return None if out is None else out.strip()

    def git_tags(self, directory: str | os.PathLike[str] = ".") -> str | None:
        """``git describe --tags`` (None outside a repository or without tags)."""
        out = _git(directory, "describe", "--tags")
        return None if out is None else out.strip()

    def rev_info(self, directory: str | os.PathLike[str] = ".") -> dict[str, str | None]:
        """``{"hash": ..., "branch": ...}`` as ML-Logger's ``rev_info`` (branch as
        ``git symbolic-ref HEAD`` says it: ``refs/heads/main``)."""
        branch = _git(directory, "symbolic-ref", "HEAD")
        return {"hash": self.git_rev("HEAD", directory),
                "branch": None if branch is None else branch.strip()}

    def log_git(self, directory: str | os.PathLike[str] = ".",
                diff_filename: str = "index.diff") -> dict[str, Any]:
        """Capture the code's git state: the revision, branch and tags as params ``git.*``
        and ``git diff HEAD`` as the artifact ``diff_filename`` (:meth:`diff`).

        Example:
            >>> log.log_git()["git"]["revision"]  # doctest: +SKIP
            '3f2c...'

        Returns:
            The client's params after the merge.
        """
        branch = _git(directory, "rev-parse", "--abbrev-ref", "HEAD")
        git = {"revision": self.git_rev("HEAD", directory),
               "branch": None if branch is None else branch.strip(),
               "tags": self.git_tags(directory)}
        self.diff(directory, diff_filename)
        return dict(self._session.call("save_params", self.client_id, {"git": git}))

    # --------------------------------------------------------------- heartbeat
    def _ping_hub(self, status: str) -> list[str]:
        info = {"hostname": socket.gethostname(), "pid": os.getpid()}
        token = uuid.uuid4().hex
        return [str(s) for s in self._session.call("ping", self.client_id, status, token, info)]

    def ping(self, status: str = "running", interval: float | None = None) -> list[str]:
        """Tell the hub this client is alive (``rayplex ls`` shows the status and when it was
        last seen) and return the signals a driver sent it since the last ping, oldest first
        (``rayplex.signal("agent/3", "stop")``); each signal is returned once.

        With ``interval`` a background thread also pings every ``interval`` seconds with the
        last status, and the signals it receives are returned by the next call.

        Example:
            >>> if "stop" in log.ping("running", interval=60):  # doctest: +SKIP
            ...     break

        Raises:
            TypeError, ValueError: for a status that is not 1-200 printable characters or an
                interval that is not a positive number.
        """
        status = _check_status(status)
        if interval is not None and (isinstance(interval, bool)
                                     or not isinstance(interval, (int, float)) or
                                     not interval > 0):
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        signals = self._ping_hub(status)
        keep_alive = self._keep_alive
        earlier = keep_alive.take() if keep_alive is not None else []
        if keep_alive is not None:
            keep_alive.status = status
            if interval is not None:
                keep_alive.interval = float(interval)
        elif interval is not None:
            self._keep_alive = _KeepAlive(self, status, float(interval))
            self._keep_alive.start()
        return earlier + signals
