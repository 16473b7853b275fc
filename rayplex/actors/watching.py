"""The hub's watch rules at work, beside its writes: what :class:`rayplex.actors.hub.Hub`
hands to and takes from its :class:`~rayplex.actors.watchbook.WatchBook`.

:class:`HubWatch` owns the book, the webhook :class:`~rayplex.actors.notify.Notifier` and the
rules file; it turns what the book finds into alerts appended once to ``alerts.jsonl`` through
the hub writer's journal (keyed by occurrence, so a replay after a restart appends nothing),
an ERROR line, the ``"stop"`` signal and the webhooks. A failure while evaluating rules is
logged and counted, never costs a write. The hub calls it with its lock held.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rayplex.actors.control import ControlBook
from rayplex.actors.notify import Notifier
from rayplex.actors.state import load_rules, save_rules
from rayplex.actors.watchbook import WatchBook
from rayplex.actors.writer import HubWriter
from rayplex.config import WATCH_TICK_S, config
from rayplex.layout import alerts_path, watch_path
from rayplex.records import Batch
from rayplex.watch import Alert, alert_to_json, rule_from_json

log = logging.getLogger("rayplex.hub")

__all__ = ["HubWatch"]


class HubWatch:
    """The hub's rules, alerts and webhooks (see the module docstring)."""

    def __init__(self, name: str, logdir: str, writer: HubWriter, control: ControlBook) -> None:
        self.name = name
        self.logdir = logdir
        self.writer = writer
        self.control = control
        self.book = WatchBook(load_rules(watch_path(logdir)))
        self.notifier = Notifier(writer.hub_line)
        self.failures = 0
        self._ticked = time.monotonic()

    # ------------------------------------------------------------------ rules
    def add_rule(self, rule: dict[str, Any]) -> list[str]:
        """Add (or replace, by name) a rule given as :func:`rayplex.watch.rule_to_json` data,
        kept in ``.rayplex/watch.json``; returns the names of the rules watched.

        Raises:
            ValueError: if ``rule`` is not a valid rule.
        """
        self.book.set_rule(rule_from_json(rule))
        rules = list(self.book.rules.values())
        if self.writer.lost() is None:
            try:
                save_rules(watch_path(self.logdir), rules)
            except OSError as exc:
                self.writer.hub_line(logging.WARNING, f"could not save the watch rules (they "
                                     f"hold until the hub restarts): {exc}")
        return sorted(r.name for r in rules)

    # ------------------------------------------------------------- what it sees
    def observe(self, batches: Iterable[Batch], node: str, pids: Mapping[str, int]) -> None:
        """Batches about to be written (before the write: a replay finds its alerts
        journalled)."""
        self._safely(lambda: self.book.observe(batches, node, time.time(), pids))

    def senders(self, node: str, new: dict[str, int], closed: list[str],
                gone: dict[str, int]) -> None:
        """A node buffer's report on the processes logging through it."""
        self._safely(lambda: self.book.senders(node, new, closed, gone, time.time()))

    def tick(self) -> None:
        """The rules that time alone triggers (``silent``, ``step_lag``, ``outlier``), at most
        every ``WATCH_TICK_S``."""
        if self.book.rules and time.monotonic() - self._ticked >= WATCH_TICK_S:
            self._ticked = time.monotonic()
            self._safely(lambda: self.book.tick(time.time(), self.control.heartbeats))

    def info(self) -> dict[str, Any]:
        return {"rules": sorted(self.book.rules), "clients": self.book.counts(),
                "digest_errors": self.book.errors, "failures": self.failures,
                **self.notifier.counters}

    def close(self) -> None:
        self.notifier.close()

    # ----------------------------------------------------------------- alerts
    def _safely(self, evaluate: Callable[[], list[tuple[str, Alert]]]) -> None:
        try:
            self._raise(evaluate())
        except Exception:
            self.failures += 1
            log.exception("hub %s: evaluating the watch rules failed", self.name)

    def _raise(self, found: list[tuple[str, Alert]]) -> None:
        """Append each alert to ``alerts.jsonl`` once (journalled under its key), then its
        ERROR line, its action and its webhooks (queued: never waited for here)."""
        for key, alert in found:
            request_id = f"alert:{key}"
            if self.writer.applied(request_id):
                continue
            path = alerts_path(self.logdir)
            line = (json.dumps(alert_to_json(alert), allow_nan=False) + "\n").encode("utf-8")
            try:
                self.writer.append_request(request_id, path, functools.partial(_append, path, line))
            except OSError as exc:  # LogdirLost too
                log.error("hub %s: could not append an alert (%s): %s", self.name, exc,
                          alert.message)
                continue
            self.writer.hub_line(logging.ERROR, f"alert {alert.message}")
            rule = self.book.rules.get(alert.rule)
            if rule is None:
                continue
            if rule.on_alert == "stop" and alert.client:
                self.control.signal(alert.client, "stop")
            if rule.notify:
                self.notifier.submit(rule.notify, alert)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        if config().fsync:
            os.fsync(f.fileno())
