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

import logging
from dataclasses import dataclass
from typing import Any

from rayplex.layout import TENSORBOARD
from rayplex.tfrecord import RECORD_OVERHEAD, iter_records, open_regular, tensorboardx

log = logging.getLogger("rayplex.forward")

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
