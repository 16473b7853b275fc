"""Following what the hub committed: a durable cursor and bounded reads of event files.

The forwarder never reads a byte the hub could still undo. The hub answers
:meth:`rayplex.actors.hub.Hub.committed_sizes` under its writer lock, when no transaction is
open, so every size it gives ends on a committed record; a failed write is cut back before the
lock is released, and a restarted hub cuts back before it answers. The forwarder reads only
below those sizes, and only whole, CRC-valid records.

The cursor (``.rayplex/forward-<tracker>.json``) holds, per event file, the byte offset up to
which the tracker has *accepted* everything; it is replaced atomically after each accepted
round, never before, and then copied to ``forward-<tracker>.json.bak``; both carry a checksum,
so a damaged cursor is detected and its copy used instead. A crash between the tracker's accept
and the cursor write resends that round (same steps, values and wall times).

Example:
    >>> import os, tempfile
    >>> from rayplex.tfrecord import frame
    >>> d = tempfile.mkdtemp()
    >>> path = os.path.join(d, "events.out.tfevents.1")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(frame(b"a") + frame(b"bc") + b"torn")
    >>> read_committed(path, 0, os.path.getsize(path), max_bytes=1 << 20)
    ([b'a', b'bc'], 35)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from rayplex.atomic import atomic_write_bytes
from rayplex.layout import TENSORBOARD
from rayplex.tfrecord import RECORD_OVERHEAD, iter_records, open_regular, tensorboardx

log = logging.getLogger("rayplex.forward")

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
    def recover(cls, path: str) -> tuple[Cursor, str | None]:
        """The saved cursor and, if it was damaged, what happened.

        A damaged cursor file (not JSON, wrong checksum, wrong shape) is set aside as
        ``.unreadable`` and its second copy is used; only if both are damaged does forwarding
        start over (the trackers then de-duplicate only as the Guarantees say).
        """
        try:
            return cls._read(path), None
        except FileNotFoundError:
            damage = None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            damage = f"{type(exc).__name__}: {str(exc)[:200]}"
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


def read_committed(path: str, start: int, end: int, max_bytes: int) -> tuple[list[bytes], int]:
    """The payloads of the whole, CRC-valid records in ``path`` between byte ``start`` and
    ``end`` (a committed size), reading at most about ``max_bytes`` (one record more if a
    single record is larger).

    Returns:
        ``(payloads, offset)``: the offset just after the last record returned.

    Raises:
        OSError: if the file cannot be read.
    """
    if end <= start:
        return [], start
    want = min(end - start, max_bytes)
    with open_regular(path) as f:
        f.seek(start)
        blob = f.read(want)
        if len(blob) >= 8 and want < end - start:  # one record larger than the budget
            length = int.from_bytes(blob[:8], "little")
            need = length + RECORD_OVERHEAD
            if need > len(blob) and start + need <= end:
                blob += f.read(need - len(blob))
    payloads = list(iter_records(blob))
    used = sum(len(p) + RECORD_OVERHEAD for p in payloads)
    return payloads, start + used


@dataclass(frozen=True)
class Point:
    """One scalar as the event file holds it."""

    run: str
    tag: str
    step: int
    wall_time: float
    value: float


@dataclass(frozen=True)
class Image:
    """One encoded image (PNG/GIF bytes) of an image summary."""

    run: str
    tag: str
    step: int
    wall_time: float
    data: bytes


def decode(run: str, payloads: list[bytes]) -> tuple[list[Point], list[Image]]:
    """Scalars and images of the event records ``payloads`` of run ``run`` (other kinds and
    records that are not ``Event`` protos are skipped)."""
    from google.protobuf.message import DecodeError

    Event = tensorboardx("proto.event_pb2").Event
    from rayplex.logdir_codec import scalar_of  # the one place that knows a scalar's encodings

    points: list[Point] = []
    images: list[Image] = []
    for payload in payloads:
        try:
            event: Any = Event.FromString(payload)
        except DecodeError:
            continue
        if not event.HasField("summary"):
            continue
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if kind == "image":
                images.append(Image(run, value.tag, int(event.step), float(event.wall_time),
                                    bytes(value.image.encoded_image_string)))
                continue
            scalar = scalar_of(value)
            if scalar is not None:
                points.append(Point(run, value.tag, int(event.step), float(event.wall_time),
                                    scalar))
    return points, images


def event_files(logdir: str, sizes: dict[str, int]) -> list[tuple[str, str, int]]:
    """``(relative path, run, committed size)`` of the event files in ``sizes`` (as the hub
    answers them: paths relative to the logdir), in a stable order."""
    out = []
    for rel, size in sorted(sizes.items()):
        parts = rel.split("/")
        if len(parts) < 3 or parts[0] != TENSORBOARD or "tfevents" not in parts[-1]:
            continue
        out.append((rel, "/".join(parts[1:-1]), size))
    return out
