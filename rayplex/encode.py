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

import struct
import time

import google_crc32c

_crc = google_crc32c.value
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")
_WALL_TIME = struct.Struct("<Bd")  # field 1 (wire type 1): 0x09, then the double
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    c = _crc(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(event: bytes) -> bytes:
    """Wrap one serialized Event into a TFRecord."""
    header = _U64.pack(len(event))
    return header + _U32.pack(masked_crc(header)) + event + _U32.pack(masked_crc(event))


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


class ScalarTemplate:
    """Pre-computed bytes for one tag, so that each scalar costs a few ``struct.pack`` calls."""

    __slots__ = ("tail",)

    def __init__(self, tag_field: bytes) -> None:
        value_len = len(tag_field) + 5  # + simple_value: key byte and 4-byte float
        summary_len = 1 + len(varint(value_len)) + value_len
        self.tail = (
            b"\x2a" + varint(summary_len) + b"\x0a" + varint(value_len) + tag_field + b"\x15"
        )

    def record(self, wall_time: float, step: int, value: float) -> bytes:
        event = (
            _WALL_TIME.pack(0x09, wall_time)
            + b"\x10"
            + varint(step)
            + self.tail
            + _F32.pack(value)
        )
        header = _U64.pack(len(event))
        return header + _U32.pack(masked_crc(header)) + event + _U32.pack(masked_crc(event))


def scalar_record(tag_field: bytes, wall_time: float, step: int, value: float) -> bytes:
    """A framed event with one ``simple_value`` scalar."""
    return ScalarTemplate(tag_field).record(wall_time, step, value)


def file_version_record(wall_time: float | None = None) -> bytes:
    """The first record of every event file: ``file_version = "brain.Event:2"``."""
    wt = time.time() if wall_time is None else wall_time
    event = _WALL_TIME.pack(0x09, wt) + _len_delimited(0x1A, b"brain.Event:2")
    return frame(event)


def iter_records(blob: bytes):
    """Yield the Event payloads of the TFRecords in ``blob`` (checks nothing; for re-routing)."""
    pos, end = 0, len(blob)
    while pos + 12 <= end:
        (length,) = _U64.unpack_from(blob, pos)
        start = pos + 12
        yield blob[start : start + length]
        pos = start + length + 4
