"""Bytes of TensorBoard event records, built by hand for speed (no I/O here).

An event file is a sequence of TFRecords: ``len (u64 LE) | masked crc32c(len) | Event proto |
masked crc32c(Event)``. An ``Event`` here is ``wall_time`` (field 1, double), ``step``
(field 2, int64) and a ``Summary`` (field 5) holding one ``Summary.Value`` whose tag is field 1.

Encoders in :mod:`rayplex.media` return a ``Summary.Value`` *without* its tag; the tag is
prepended here once routing is known, which is valid protobuf (fields may come in any order).

Example:
    >>> rec = scalar_record(tag_header("loss"), 1.0, 3, 0.5)
    >>> len(rec) > 16
    True
"""

from __future__ import annotations

import math
import struct
import time

import google_crc32c
import numpy as np

# Framing and reading live in rayplex.tfrecord; frame and iter_records are re-exported here.
from rayplex.tfrecord import MASK_DELTA
from rayplex.tfrecord import frame as frame
from rayplex.tfrecord import iter_records as iter_records
from rayplex.tfrecord import masked_crc as masked_crc

_crc = google_crc32c.value
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")
_SIMPLE_VALUE = struct.Struct("<Bf")  # simple_value: field 2 (wire type 5): 0x15, then the float
_WALL_TIME = struct.Struct("<Bd")  # field 1 (wire type 1): 0x09, then the double
_MASK_DELTA = MASK_DELTA


def varint(n: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values take ten bytes, as protobuf does."""
    if 0 <= n < 0x80:
        return bytes((n,))
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_delimited(field_key: int, payload: bytes) -> bytes:
    return bytes((field_key,)) + varint(len(payload)) + payload


def tag_header(tag: str) -> bytes:
    """The ``Summary.Value.tag`` field for ``tag``; cache it per tag."""
    return _len_delimited(0x0A, tag.encode("utf-8"))


def event_record(tag_field: bytes, wall_time: float, step: int, value_rest: bytes) -> bytes:
    """A framed event holding one value: ``value_rest`` is a ``Summary.Value`` without tag."""
    value = tag_field + value_rest
    summary = _len_delimited(0x0A, value)
    event = _WALL_TIME.pack(0x09, wall_time) + b"\x10" + varint(step) + _len_delimited(0x2A, summary)
    return frame(event)


def scalar_tail(tag_field: bytes) -> bytes:
    """The bytes of a scalar event between its step and its float value, for one tag: the
    ``Summary`` and ``Summary.Value`` headers, the tag, and the ``simple_value`` key."""
    value_len = len(tag_field) + 5  # + simple_value: key byte and 4-byte float
    summary_len = 1 + len(varint(value_len)) + value_len
    return b"\x2a" + varint(summary_len) + b"\x0a" + varint(value_len) + tag_field + b"\x15"


def simple_value(value: float) -> bytes:
    """A ``Summary.Value`` without tag holding ``simple_value`` (float32, as TensorBoard keeps
    scalars; beyond its range: ±inf, like :class:`ScalarTemplate`).

    Example:
        >>> simple_value(0.5)
        b'\\x15\\x00\\x00\\x00?'
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> simple_value(-3.25) == Summary.Value(simple_value=-3.25).SerializeToString()
        True
        >>> Summary.Value.FromString(simple_value(1e39)).simple_value
        inf
    """
    try:
        return _SIMPLE_VALUE.pack(0x15, value)
    except OverflowError:
        return _SIMPLE_VALUE.pack(0x15, math.copysign(math.inf, value))


class ScalarTemplate:
    """Pre-computed bytes for one tag, so that each scalar costs one ``struct.pack`` and one CRC.

    The record length only depends on the length of the step's varint, so the TFRecord header
    (length and its CRC) and the packing format are cached per varint length.
    """

    __slots__ = ("tail", "_layouts")

    def __init__(self, tag_field: bytes) -> None:
        self.tail = scalar_tail(tag_field)
        self._layouts: dict[int, tuple[bytes, struct.Struct]] = {}

    @classmethod
    def from_tail(cls, tail: bytes) -> ScalarTemplate:
        """A template from a :func:`scalar_tail` computed before."""
        template = cls.__new__(cls)
        template.tail, template._layouts = tail, {}
        return template

    def _layout(self, step_len: int) -> tuple[bytes, struct.Struct]:
        size = 1 + 8 + 1 + step_len + len(self.tail) + 4
        header = _U64.pack(size)
        layout = (header + _U32.pack(masked_crc(header)),
                  struct.Struct(f"<BdB{step_len}s{len(self.tail)}sf"))
        self._layouts[step_len] = layout
        return layout

    def record(self, wall_time: float, step: int, value: float) -> bytes:
        step_bytes = bytes((step,)) if 0 <= step < 0x80 else varint(step)
        layout = self._layouts.get(len(step_bytes)) or self._layout(len(step_bytes))
        try:
            event = layout[1].pack(0x09, wall_time, 0x10, step_bytes, self.tail, value)
        except OverflowError:  # beyond float32, as TensorBoard stores it: ±inf
            event = layout[1].pack(0x09, wall_time, 0x10, step_bytes, self.tail,
                                   math.copysign(math.inf, value))
        c = _crc(event)
        return layout[0] + event + _U32.pack((((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def scalar_record(tag_field: bytes, wall_time: float, step: int, value: float) -> bytes:
    """A framed event with one ``simple_value`` scalar."""
    return ScalarTemplate(tag_field).record(wall_time, step, value)


def file_version_record(wall_time: float | None = None) -> bytes:
    """The first record of every event file: ``file_version = "brain.Event:2"``."""
    wt = time.time() if wall_time is None else wall_time
    event = _WALL_TIME.pack(0x09, wt) + _len_delimited(0x1A, b"brain.Event:2")
    return frame(event)


_STEP_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _varint_lengths(steps: np.ndarray) -> np.ndarray:
    """Protobuf varint length of each int64 step (negative steps take ten bytes)."""
    unsigned = steps.astype(np.uint64)  # two's complement, as protobuf encodes int64
    return (np.searchsorted(_STEP_LIMITS, unsigned, side="right") + 1).astype(np.int64)


def _varint_bytes(steps: np.ndarray, length: int) -> np.ndarray:
    """``(n, length)`` uint8 varints of steps that all take ``length`` bytes."""
    unsigned = steps.astype(np.uint64)
    shifts = np.arange(length, dtype=np.uint64) * np.uint64(7)
    groups = (unsigned[:, None] >> shifts[None, :]) & np.uint64(0x7F)
    groups[:, :-1] |= np.uint64(0x80)
    return groups.astype(np.uint8)


def scalar_records(tails: list[bytes], tail_index: np.ndarray, wall_times: np.ndarray,
                   steps: np.ndarray, values: np.ndarray) -> bytes:
    """Framed scalar events for many records at once, in order; byte-identical to
    :meth:`ScalarTemplate.record` for each (``tails[i]`` is a template's ``tail``).

    The layout is filled with numpy per (varint length, tag) group; only the CRC of each
    record is a Python-level call.
    """
    n = len(steps)
    if n == 0:
        return b""
    tail_index = np.asarray(tail_index, dtype=np.int64)
    steps = np.asarray(steps, dtype=np.int64)
    tail_lens = np.array([len(t) for t in tails], dtype=np.int64)
    step_lens = _varint_lengths(steps)
    event_lens = 1 + 8 + 1 + step_lens + tail_lens[tail_index] + 4
    sizes = 12 + event_lens + 4
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    with np.errstate(over="ignore"):
        values32 = np.asarray(values, dtype=np.float64).astype("<f4")
    wall = np.asarray(wall_times, dtype="<f8")
    groups = step_lens * len(tails) + tail_index
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        step_len, tail_i = int(step_lens[rows[0]]), int(tail_index[rows[0]])
        tail = np.frombuffer(tails[tail_i], dtype=np.uint8)
        event_len = 1 + 8 + 1 + step_len + len(tail) + 4
        header = _U64.pack(event_len)
        block = np.empty((len(rows), 12 + event_len), dtype=np.uint8)
        block[:, :12] = np.frombuffer(header + _U32.pack(masked_crc(header)), dtype=np.uint8)
        block[:, 12] = 0x09
        block[:, 13:21] = wall[rows].view(np.uint8).reshape(-1, 8)
        block[:, 21] = 0x10
        block[:, 22:22 + step_len] = _varint_bytes(steps[rows], step_len)
        at = 22 + step_len
        block[:, at:at + len(tail)] = tail
        block[:, at + len(tail):] = values32[rows].view(np.uint8).reshape(-1, 4)
        positions = starts[rows][:, None] + np.arange(12 + event_len)[None, :]
        out[positions] = block
    crcs = np.empty(n, dtype=np.uint32)
    raw = out.tobytes()  # the CRC extension takes bytes only
    crcs[:] = [_crc(raw[start + 12:end - 4])
               for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]
    masked = (((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(_MASK_DELTA))
    crc_positions = (ends - 4)[:, None] + np.arange(4)[None, :]
    out[crc_positions] = masked.astype("<u4").view(np.uint8).reshape(-1, 4)
    return out.tobytes()
