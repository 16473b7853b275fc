"""Webhooks for alerts, off the hub's write path.

The hub hands each alert to :meth:`Notifier.submit`, which only queues it (never blocks; beyond
``WEBHOOK_QUEUE`` waiting alerts it drops and counts). A thread of its own POSTs them: JSON in
Slack's incoming-webhook shape (``{"text": message}``) plus the alert's fields and
``suppressed``; at most one POST per webhook, rule and client per ``repeat_s`` (the webhook's
own, else ``RAYPLEX_ALERT_REPEAT_S``), the repeats in between counted in the next one; each POST
tried ``WEBHOOK_ATTEMPTS`` times with back-off, then dropped with a warning. A webhook server
that hangs or refuses costs this thread time, never the hub's writes.

A plain object, no Ray (tests/test_watch.py drives it against a local HTTP server).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from rayplex.config import WEBHOOK_ATTEMPTS, WEBHOOK_QUEUE, WEBHOOK_TIMEOUT_S, config
from rayplex.watch import Alert, Webhook, alert_to_json

__all__ = ["Notifier", "payload"]

log = logging.getLogger("rayplex.hub")


def payload(alert: Alert, suppressed: int) -> dict[str, Any]:
    """The JSON a webhook receives for ``alert`` after ``suppressed`` repeats were held back.

    Example:
        >>> a = Alert("nan(loss)", "agent", "agent/3", "n1", 42, 7, float("nan"), None, 1.0,
        ...           "nan(loss): agent/3: loss = nan at step 7")
        >>> p = payload(a, 2)
        >>> p["text"], p["suppressed"], p["value"]
        ('rayplex alert: nan(loss): agent/3: loss = nan at step 7 (2 repeats suppressed)', 2, 'nan')
    """
    more = f" ({suppressed} repeats suppressed)" if suppressed else ""
    return {"text": f"rayplex alert: {alert.message}{more}", **alert_to_json(alert),
            "suppressed": suppressed}


class Notifier:
    """Queues alerts for webhooks and POSTs them from a daemon thread.

    Args:
        say: Called with ``(level, message)`` when a POST is finally dropped (the hub writes it
            to ``logs/all.log``).
        attempts, backoff_s, timeout_s: Tries per POST, the first back-off (doubled after each
            failure) and each try's timeout.
    """

    def __init__(self, say: Callable[[int, str], None] | None = None,
                 attempts: int = WEBHOOK_ATTEMPTS, backoff_s: float = 0.5,
                 timeout_s: float = WEBHOOK_TIMEOUT_S) -> None:
        self.attempts, self.backoff_s, self.timeout_s = attempts, backoff_s, timeout_s
        self._queue: queue.Queue[tuple[Webhook, Alert] | None] = queue.Queue(WEBHOOK_QUEUE)
        self._say = say
        self._last: dict[tuple[str, str, str], float] = {}
        self._suppressed: dict[tuple[str, str, str], int] = {}
        self.counters = {"posted": 0, "suppressed": 0, "failed": 0, "dropped": 0}
        self._thread = threading.Thread(target=self._run, name="rayplex-webhooks", daemon=True)
        self._thread.start()

    def submit(self, hooks: tuple[Webhook, ...], alert: Alert) -> None:
        """Queue ``alert`` for each of ``hooks``; never blocks."""
        for hook in hooks:
            try:
                self._queue.put_nowait((hook, alert))
            except queue.Full:
                self.counters["dropped"] += 1

    def close(self) -> None:
        """Stop the thread after what it is sending now."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            hook, alert = item
            key = (hook.url, alert.rule, alert.client)
            repeat = config().alert_repeat_s if hook.repeat_s is None else hook.repeat_s
            now = time.monotonic()
            last = self._last.get(key)
            if last is not None and now - last < repeat:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                self.counters["suppressed"] += 1
                continue
            self._last[key] = now
            self._post(hook.url, payload(alert, self._suppressed.pop(key, 0)))

    def _post(self, url: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(url, data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    answer.read()
                self.counters["posted"] += 1
                return
            except Exception as exc:  # refused, hung, 4xx/5xx: try again later
                error = exc
            if attempt < self.attempts:
                time.sleep(delay)  # this thread's own back-off; no write waits on it
                delay *= 2
        self.counters["failed"] += 1
        text = f"webhook {url[:80]}: dropped an alert after {self.attempts} attempts: {error}"
        if self._say is not None:
            self._say(logging.WARNING, text)
        else:
            log.warning(text)
