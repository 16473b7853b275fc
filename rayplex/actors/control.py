"""The hub's control state: each client's last heartbeat and the signals a driver sent it.

Kept as JSON (never pickles) in ``.rayplex/control.json`` by :class:`ControlBook`; the names it
accepts are checked by :func:`rayplex.rules.check_client_id` and
:func:`rayplex.rules.check_signal`.

A signal is handed out once: the first ping of that client after it was sent returns it. Each
ping carries a token of its own, and the book remembers what it answered to the last tokens, so
that a ping Ray replays after a hub restart answers the same signals again instead of losing
them.

Example:
    >>> import tempfile, os
    >>> book = ControlBook(os.path.join(tempfile.mkdtemp(), "control.json"))
    >>> book.signal("agent/3", "stop")
    ['stop']
    >>> book.ping("agent/3", "running", "token-1", {}, now=100.0)
    ['stop']
    >>> book.ping("agent/3", "running", "token-1", {}, now=100.0)  # a replay: same answer
    ['stop']
    >>> book.ping("agent/3", "running", "token-2", {}, now=101.0)
    []
    >>> ControlBook(book.path).heartbeats["agent/3"]["time"]
    101.0
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from rayplex.atomic import atomic_write_bytes
from rayplex.config import CONTROL_MAX_ANSWERS
from rayplex.layout import control_path

log = logging.getLogger("rayplex")



class ControlBook:
    """The hub's heartbeats and pending signals per client, kept as JSON (never pickles).

    Args:
        path: The JSON file (``.rayplex/control.json``); ``None`` keeps it in memory only. An
            unreadable file is reported in the log and replaced: heartbeats are not data worth
            refusing to start for.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.signals: dict[str, list[str]] = {}
        self.answers: dict[str, list[str]] = {}
        if path is not None and os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    state = json.load(f)
                self.heartbeats = {str(k): dict(v) for k, v in state["heartbeats"].items()}
                self.signals = {str(k): [str(s) for s in v] for k, v in state["signals"].items()}
                self.answers = {str(k): [str(s) for s in v] for k, v in state["answers"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("rayplex: %s is unreadable (%s); heartbeats and signals start empty",
                            path, exc)

    def ping(self, client: str, status: str, token: str, info: Mapping[str, Any],
             now: float) -> list[str]:
        """Record that ``client`` is alive with ``status``; return (and forget) its pending
        signals. The same ``token`` again answers the same signals (a replayed call)."""
        if token in self.answers:
            return list(self.answers[token])
        handed = self.signals.pop(client, [])
        self.heartbeats[client] = {**info, "status": status, "time": now}
        self.answers[token] = handed
        while len(self.answers) > CONTROL_MAX_ANSWERS:
            del self.answers[next(iter(self.answers))]
        self.save()
        return list(handed)

    def signal(self, client: str, sig: str) -> list[str]:
        """Queue ``sig`` for the next ping of ``client`` (once: a signal already pending is not
        queued twice); returns what is pending for it."""
        pending = self.signals.setdefault(client, [])
        if sig not in pending:
            pending.append(sig)
            self.save()
        return list(pending)

    def save(self) -> None:
        if self.path is None:
            return
        state = {"heartbeats": self.heartbeats, "signals": self.signals, "answers": self.answers}
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(state, sort_keys=True).encode("utf-8"))


def read_control(logdir: str | os.PathLike[str]) -> ControlBook:
    """The heartbeats and pending signals of an experiment, read from its logdir (empty if
    no client ever pinged).

    Example:
        >>> read_control("/tmp/exp1").heartbeats  # doctest: +SKIP
        {'agent/3': {'status': 'running', 'time': 1764560000.0, 'hostname': 'n1', 'pid': 42}}
    """
    return ControlBook(control_path(logdir))
