"""A forwarder's durable cursor (``.rayplex/forward-<tracker>.json`` and its second copy
``.bak``), its codec in one place: the forwarder (:mod:`rayplex.forward`) writes and recovers
it, the uploader (:mod:`rayplex.upload`) reads it to know which closed event files every
forwarder has read (with the same checksum and the same fallback to the second copy).

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "forward-x.json")
    >>> Cursor(offsets={"a/events.out.tfevents.1": 40}).save(path)
    >>> with open(path, "r+b") as f:  # torn: its second copy is used
    ...     _ = f.truncate(10)
    >>> Cursor.recover(path, set_aside=False)[0].offsets
    {'a/events.out.tfevents.1': 40}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from rayplex.atomic import atomic_write_bytes

__all__ = ["BACKUP_SUFFIX", "CURSOR_VERSION", "Cursor"]

CURSOR_VERSION = 2
BACKUP_SUFFIX = ".bak"
"""The cursor's second copy, ``forward-<tracker>.json.bak``, written after the first."""


@dataclass
class Cursor:
    """What one tracker has accepted: byte offsets per event file (relative to the logdir),
    the tracker's run ids per rayplex run, a digest of the params forwarded per client, and
    the runs the tracker refuses for good (``{run: why}``: deleted in MLflow)."""

    offsets: dict[str, int] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    gone: dict[str, str] = field(default_factory=dict)

    def _body(self) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "offsets": self.offsets, "runs": self.runs,
                "params": self.params, "gone": self.gone}

    def to_json(self) -> bytes:
        """The cursor as JSON with a ``sha256`` of its content (damage is detected)."""
        body = self._body()
        return json.dumps({**body, "sha256": _digest(body)}, sort_keys=True).encode("utf-8")

    def save(self, path: str) -> None:
        """Replace the cursor file atomically, then its second copy (``path + ".bak"``): at
        any moment at least one of them holds the latest cursor or the one before it.

        Raises:
            OSError: if it cannot be written (the previous cursor stays).
        """
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = self.to_json()
        atomic_write_bytes(path, data)
        atomic_write_bytes(path + BACKUP_SUFFIX, data)

    @classmethod
    def load(cls, path: str) -> Cursor:
        """The saved cursor (see :meth:`recover`), or an empty one if there is none.

        Example:
            >>> Cursor.load("/nonexistent/forward-x.json")
            Cursor(offsets={}, runs={}, params={}, gone={})
        """
        return cls.recover(path)[0]

    @classmethod
    def recover(cls, path: str, set_aside: bool = True) -> tuple[Cursor, str | None]:
        """The saved cursor and, if it was damaged, what happened.

        A damaged cursor file (not JSON, wrong checksum, wrong shape) is set aside as
        ``.unreadable`` (unless ``set_aside`` is false: a reader that does not own the file,
        the uploader) and its second copy is used; only if both are damaged does forwarding
        start over (the trackers then de-duplicate only as the Guarantees say).
        """
        try:
            return cls._read(path), None
        except FileNotFoundError:
            damage = None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            damage = f"{type(exc).__name__}: {str(exc)[:200]}"
            if set_aside:
                with contextlib.suppress(OSError):
                    os.replace(path, path + ".unreadable")
        try:
            backup = cls._read(path + BACKUP_SUFFIX)
        except FileNotFoundError:
            if damage is None:
                return cls(), None
            return cls(), (f"cursor {path} is damaged ({damage}) and has no second copy: "
                           "forwarding starts over")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return cls(), (f"cursor {path} is damaged ({damage or 'missing'}) and so is its "
                           f"second copy ({type(exc).__name__}: {str(exc)[:200]}): forwarding "
                           "starts over")
        return backup, (f"cursor {path} is damaged ({damage or 'missing'}); recovered from its "
                        "second copy: nothing is resent")

    @classmethod
    def _read(cls, path: str) -> Cursor:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        if not isinstance(data, dict) or data.get("v") not in (1, CURSOR_VERSION):
            raise ValueError(f"not a version {CURSOR_VERSION} cursor")
        if data["v"] == CURSOR_VERSION:
            check = data.pop("sha256", None)
            if check != _digest(data):
                raise ValueError("checksum mismatch")
        offsets = {str(k): int(v) for k, v in data["offsets"].items()}
        runs = {str(k): str(v) for k, v in data["runs"].items()}
        params = {str(k): str(v) for k, v in data["params"].items()}
        gone = {str(k): str(v) for k, v in data.get("gone", {}).items()}
        return cls(offsets, runs, params, gone)


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()
