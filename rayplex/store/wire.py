"""The scalars of one serialized ``Event``, decoded straight from the protobuf wire format.

The indexer reads millions of records; building a protobuf ``Event`` for each (and importing
tensorboardX, which imports torch when it is installed) would dominate its time. This decoder
reads only ``wall_time``, ``step`` and each summary value's ``tag`` and ``simple_value``. A value
that holds a ``tensor`` of the ``scalars`` plugin (other tools' files, or TensorBoard's
migration) is handed to the protobuf path, :func:`rayplex.read._scalar_of`, so both readers
agree on what a scalar is.

Example:
    >>> from tensorboardX.proto.event_pb2 import Event
    >>> from tensorboardX.proto.summary_pb2 import Summary
    >>> event = Event(step=-3, wall_time=1.5,
    ...               summary=Summary(value=[Summary.Value(tag="loss", simple_value=0.25)]))
    >>> event_scalars(event.SerializeToString())
    (-3, 1.5, [('loss', 0.25)])
"""

from __future__ import annotations

import struct

__all__ = ["event_scalars"]

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_VALUE_ONEOF = {2, 3, 4, 5, 6, 8}  # Summary.Value's oneof `value`: simple_value ... tensor


class _Malformed(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint too long")


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field, wire type, a, b)``: a varint's value in ``a``; a fixed or length-delimited
    field's bytes at ``buf[a:b]``."""
    out = []
    while pos < end:
        key, pos = _varint(buf, pos)
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _varint(buf, pos)
            out.append((field, 0, value, 0))
            continue
        if kind == 1:
            start, pos = pos, pos + 8
        elif kind == 5:
            start, pos = pos, pos + 4
        elif kind == 2:
            length, start = _varint(buf, pos)
            pos = start + length
        else:
            raise _Malformed(f"wire type {kind}")
        if pos > end:
            raise _Malformed("field runs past its message")
        out.append((field, kind, start, pos))
    return out


def _plugin_name(buf: bytes, start: int, end: int) -> str:
    for field, kind, a, b in _fields(buf, start, end):  # SummaryMetadata
        if field == 1 and kind == 2:  # plugin_data
            for f2, k2, a2, b2 in _fields(buf, a, b):
                if f2 == 1 and k2 == 2:  # plugin_name
                    return buf[a2:b2].decode("utf-8")
    return ""


def _value(buf: bytes, start: int, end: int) -> tuple[str, float] | None:
    tag, which, simple, plugin = "", 0, 0.0, ""
    for field, kind, a, b in _fields(buf, start, end):
        if field == 1 and kind == 2:
            tag = buf[a:b].decode("utf-8")
        elif field in _VALUE_ONEOF:
            which = field
            if field == 2 and kind == 5:
                simple = _FLOAT.unpack_from(buf, a)[0]
        elif field == 9 and kind == 2:
            plugin = _plugin_name(buf, a, b)
    if which == 2:
        return tag, simple
    if which == 8 and plugin == "scalars":
        from google.protobuf.message import DecodeError
        from tensorboardX.proto.summary_pb2 import Summary

        from rayplex.read import _scalar_of

        try:
            scalar = _scalar_of(Summary.Value.FromString(buf[start:end]))
        except DecodeError:
            raise _Malformed("bad tensor value") from None
        return None if scalar is None else (tag, scalar)
    return None


def event_scalars(payload: bytes) -> tuple[int, float, list[tuple[str, float]]] | None:
    """``(step, wall_time, [(tag, value), ...])`` of a serialized ``Event``; None if it is not a
    valid Event (the record is skipped, as :func:`rayplex.read.iter_events` skips it).

    Example:
        >>> event_scalars(b"\\x0f") is None   # wire type 7 does not exist
        True
    """
    try:
        step, wall_time, values = 0, 0.0, []
        for field, kind, a, b in _fields(payload, 0, len(payload)):
            if field == 1 and kind == 1:
                wall_time = _DOUBLE.unpack_from(payload, a)[0]
            elif field == 2 and kind == 0:
                step = a - (1 << 64) if a >= 1 << 63 else a
            elif field == 5 and kind == 2:
                for f2, k2, a2, b2 in _fields(payload, a, b):
                    if f2 == 1 and k2 == 2:
                        value = _value(payload, a2, b2)
                        if value is not None:
                            values.append(value)
        return step, wall_time, values
    except (_Malformed, IndexError, struct.error, UnicodeDecodeError):
        return None
