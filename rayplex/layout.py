"""The logdir's on-disk layout: every name and path under a logdir, in one module.

This is the contract of the README's "On disk" section, as functions; everything that reads
or writes a logdir (the hub's writer, its claim and control book, the readers, the CLI, the
forwarders, the store) builds its paths here::

    logdir/
      tensorboard/<run dirs>/events.out.tfevents.*   tensorboard_dir
      logs/all.log, logs/<group>/<name>.log          logs_dir, all_log_path
      artifacts/<group>/<name>/...                   artifacts_dir
      params/<group>/<name>.json                     params_dir, params_path
      .rayplex/registry.json                         registry_path
      .rayplex/journal                               journal_path
      .rayplex/owner.json                            owner_path
      .rayplex/lock                                  lock_path
      .rayplex/quarantine/<sender>-<seq>.json        quarantine_dir
      .rayplex/control.json                          control_path
      .rayplex/forward-<tracker>.json                forward_cursor_path
      store/MANIFEST.json, store/*.parquet           store_dir, manifest_path

Pure: no Ray, no other rayplex module. Every function takes the logdir (a ``str`` or a path)
and returns a ``str``.

Example:
    >>> tensorboard_dir("/exp"), registry_path("/exp"), params_path("/exp", "agent", "0")
    ('/exp/tensorboard', '/exp/.rayplex/registry.json', '/exp/params/agent/0.json')
"""

from __future__ import annotations

import os
import re
from typing import Union

StrPath = Union[str, "os.PathLike[str]"]

TENSORBOARD = "tensorboard"
"""``logdir/tensorboard/``: the event files, one directory per run."""
LOGS = "logs"
"""``logdir/logs/``: the text logs."""
ARTIFACTS = "artifacts"
"""``logdir/artifacts/``: pickles, modules, images, videos, figures, files."""
PARAMS = "params"
"""``logdir/params/``: each client's params, merged, as JSON."""
STATE_DIR = ".rayplex"
"""``logdir/.rayplex/``: the hub's own state (registry, journal, lock, control, cursors)."""
STORE_DIR = "store"
"""``logdir/store/``: ``rayplex index``'s columnar store."""
RESERVED_TREES = (TENSORBOARD, LOGS, ARTIFACTS, PARAMS)
"""The top-level trees rayplex writes its data into (no user directory may be one of them)."""

ALL_LOG = "all.log"
"""The combined text log in ``logs/``; its backups are ``all.log.1``, ``all.log.2``, ..."""
REGISTRY_FILE = "registry.json"
LEGACY_REGISTRY_FILE = "registry.pkl"
"""The registry's pickled form of old versions (read once, never written)."""
JOURNAL_FILE = "journal"
OWNER_FILE = "owner.json"
"""``.rayplex/owner.json``: which hub took the lock last (name, actor id, pid)."""
LOCK_FILE = "lock"
STARTED_FILE = "started.json"
QUARANTINE_DIR = "quarantine"
CONTROL_FILE = "control.json"
"""``.rayplex/control.json``: heartbeats (ping) and pending signals."""
FORWARD_CURSOR = "forward-{key}.json"
"""A forwarder's cursor in ``.rayplex/``, by tracker key."""
MANIFEST = "MANIFEST.json"
"""``store/MANIFEST.json``: which segments exist, how far each event file was read."""
MANIFEST_LOG = re.compile(r"^MANIFEST-(\d{8,})\.log$")
"""``store/MANIFEST-<n>.log``: the store's commits since its snapshot (the snapshot names it)."""
ALERTS_FILE = "alerts.jsonl"
"""``logdir/alerts.jsonl``: the watch rules' alerts, one JSON object a line."""
WATCH_FILE = "watch.json"
"""``.rayplex/watch.json``: the watch rules declared on the hub."""


def tensorboard_dir(logdir: StrPath) -> str:
    """``logdir/tensorboard``."""
    return os.path.join(logdir, TENSORBOARD)


def run_dir(logdir: StrPath, run: str) -> str:
    """``logdir/tensorboard/<run>`` (``run`` may hold ``/``).

    Example:
        >>> run_dir("/exp", "agent/0")
        '/exp/tensorboard/agent/0'
    """
    return os.path.join(logdir, TENSORBOARD, run)


def logs_dir(logdir: StrPath) -> str:
    """``logdir/logs``."""
    return os.path.join(logdir, LOGS)


def all_log_path(logdir: StrPath) -> str:
    """``logdir/logs/all.log``, every client's lines.

    Example:
        >>> all_log_path("/exp")
        '/exp/logs/all.log'
    """
    return os.path.join(logdir, LOGS, ALL_LOG)


def artifacts_dir(logdir: StrPath) -> str:
    """``logdir/artifacts``."""
    return os.path.join(logdir, ARTIFACTS)


def params_dir(logdir: StrPath) -> str:
    """``logdir/params``."""
    return os.path.join(logdir, PARAMS)


def params_path(logdir: StrPath, group: str, name: str) -> str:
    """``logdir/params/<group>/<name>.json`` (the caller checks the client id)."""
    return os.path.join(logdir, PARAMS, group, f"{name}.json")


def state_dir(logdir: StrPath) -> str:
    """``logdir/.rayplex``, the hub's own state.

    Example:
        >>> state_dir("/exp")
        '/exp/.rayplex'
    """
    return os.path.join(logdir, STATE_DIR)


def registry_path(logdir: StrPath) -> str:
    """``logdir/.rayplex/registry.json``: the registered groups."""
    return os.path.join(logdir, STATE_DIR, REGISTRY_FILE)


def journal_path(logdir: StrPath) -> str:
    """``logdir/.rayplex/journal``: the hub's write journal."""
    return os.path.join(logdir, STATE_DIR, JOURNAL_FILE)


def owner_path(logdir: StrPath) -> str:
    """``logdir/.rayplex/owner.json``: which hub owns the logdir."""
    return os.path.join(logdir, STATE_DIR, OWNER_FILE)


def started_path(logdir: StrPath) -> str:
    """``logdir/.rayplex/started.json``: when the experiment's first hub started (telemetry's
    steps count seconds from it)."""
    return os.path.join(logdir, STATE_DIR, STARTED_FILE)


def lock_path(logdir: StrPath) -> str:
    """``logdir/.rayplex/lock``: the live hub holds an exclusive flock on it."""
    return os.path.join(logdir, STATE_DIR, LOCK_FILE)


def quarantine_dir(logdir: StrPath) -> str:
    """``logdir/.rayplex/quarantine``: batches the hub could not write."""
    return os.path.join(logdir, STATE_DIR, QUARANTINE_DIR)


def control_path(logdir: StrPath) -> str:
    """``logdir/.rayplex/control.json``: heartbeats and pending signals."""
    return os.path.join(logdir, STATE_DIR, CONTROL_FILE)


def alerts_path(logdir: StrPath) -> str:
    """``logdir/alerts.jsonl``: the alerts, appended through the hub's journal."""
    return os.path.join(logdir, ALERTS_FILE)


def watch_path(logdir: StrPath) -> str:
    """``logdir/.rayplex/watch.json``: the declared watch rules."""
    return os.path.join(logdir, STATE_DIR, WATCH_FILE)


def forward_cursor_path(logdir: StrPath, key: str) -> str:
    """``logdir/.rayplex/forward-<key>.json``: a forwarder's cursor.

    Example:
        >>> forward_cursor_path("/exp", "mlflow")
        '/exp/.rayplex/forward-mlflow.json'
    """
    return os.path.join(logdir, STATE_DIR, FORWARD_CURSOR.format(key=key))


def store_dir(logdir: StrPath) -> str:
    """``logdir/store``: the columnar store."""
    return os.path.join(logdir, STORE_DIR)


def manifest_path(logdir: StrPath) -> str:
    """``logdir/store/MANIFEST.json``."""
    return os.path.join(logdir, STORE_DIR, MANIFEST)
