"""The scalars of a run of TFRecords (a chunk of an event file), decoded in bulk.

The indexer reads tens of millions of records; decoding them one by one in Python costs
about 10 µs each. Here a whole chunk is handled with numpy:

1. **Framing.** Record boundaries are found by stepping over runs of records of equal length
   at once (rayplex's hub writes a tag's scalars with one template, so most neighbours have the
   same length), with a per-record walk where lengths vary. Every header and payload checksum
   is verified (CRC-32C over all records of one length at once); the chunk ends at the first
   torn or broken record, as :func:`rayplex.tfrecord.iter_records` ends.
2. **The fast path.** A payload that is byte for byte what :class:`rayplex.event_bytes.ScalarTemplate`
   writes (``wall_time``, ``step``, one ``Summary.Value`` with a ``simple_value``: tensorboardX
   and ``torch.utils.tensorboard`` write the same bytes for a scalar at a step > 0) is decoded
   from its columns: the tail between the step and the float names the tag, and is checked
   against :func:`rayplex.event_bytes.scalar_tail` of that tag (one codec for both directions).
3. **The general path.** Every other record (step 0, several values, tensor-valued scalars of
   the ``scalars`` plugin, other events) is parsed by protobuf (the ``tensorboard`` package's
   compiled ``Event``, upb) and its scalars taken by :func:`rayplex.logdir_codec.scalar_of`, exactly as
   :func:`rayplex.read_scalars` takes them. A record that is intact but not an ``Event`` is
   skipped, as there.

Example:
    >>> from rayplex.event_bytes import scalar_record, tag_header
    >>> blob = b"".join(scalar_record(tag_header("loss"), 1.5, s, s / 4) for s in range(1, 4))
    >>> chunk = decode_chunk(blob)
    >>> chunk.used == len(blob), chunk.tags, chunk.step.tolist(), chunk.value.tolist()
    (True, ['loss'], [1, 2, 3], [0.25, 0.5, 0.75])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rayplex.config import INDEX_SHIFTED_CRC_MAX_BYTES
from rayplex.event_bytes import scalar_tail, tag_header
from rayplex.tfrecord import MASK_DELTA, masked_crc

__all__ = ["Chunk", "decode_chunk", "frame_records"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
Other = tuple[int, str, str, int, float]
"""A value that is not a scalar: ``(record, tag, kind, step, wall_time)``."""
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_HEADER, _FOOTER = 12, 4
_PROBE = 16


def _crc_tables() -> npt.NDArray[np.uint32]:
    """CRC-32C (Castagnoli) lookup tables for slicing by 4."""
    poly = 0x82F63B78
    base = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        base[i] = c
    tables = np.zeros((4, 256), np.uint32)
    tables[0] = base
    for k in range(1, 4):
        tables[k] = (tables[k - 1] >> np.uint32(8)) ^ base[tables[k - 1] & 0xFF]
    return tables


_T = _crc_tables()


def _crcs(rows: U8) -> npt.NDArray[np.uint32]:
    """CRC-32C of each row of an ``(n, length)`` uint8 matrix, slicing by 4."""
    n, length = rows.shape
    crc = np.full(n, 0xFFFFFFFF, np.uint32)
    words = length // 4
    if words:
        w = np.ascontiguousarray(rows[:, :words * 4]).view("<u4")
        t0, t1, t2, t3 = _T
        for j in range(words):
            c = crc ^ w[:, j]
            crc = t3[c & 0xFF] ^ t2[(c >> 8) & 0xFF] ^ t1[(c >> 16) & 0xFF] ^ t0[c >> 24]
    for j in range(words * 4, length):
        crc = _T[0][(crc ^ rows[:, j]) & 0xFF] ^ (crc >> np.uint32(8))
    return crc ^ np.uint32(0xFFFFFFFF)


_SHIFTED: dict[int, npt.NDArray[np.uint32]] = {}


def _shifted(length: int) -> npt.NDArray[np.uint32]:
    """``(length, 256)``: row ``j``, column ``b`` is the CRC-32C register (no initial value,
    no final xor) after a ``length``-byte message that is zero but for ``b`` at byte ``j``."""
    table = _SHIFTED.get(length)
    if table is None:
        table = np.empty((length, 256), np.uint32)
        reg = _T[0].copy()  # b at the last byte
        for j in range(length - 1, -1, -1):
            table[j] = reg
            reg = _T[0][reg & 0xFF] ^ (reg >> np.uint32(8))  # one more zero byte after it
        if len(_SHIFTED) < 64:
            _SHIFTED[length] = table
    return table


def _masked_crcs(rows: U8) -> npt.NDArray[np.uint32]:
    """TFRecord's masked CRC-32C of each row of an ``(n, length)`` uint8 matrix.

    CRC-32C is affine over GF(2): ``crc(m) = crc(m0) ^ reg(m ^ m0)`` with ``reg`` linear, the
    XOR of one table entry per byte. Rows of one record length differ from the first in a few
    bytes (the wall time, step and value of a scalar; the tag's bytes are the same), so only
    those columns are looked up."""
    n, length = rows.shape
    if n < 4 or length > INDEX_SHIFTED_CRC_MAX_BYTES:
        crc = _crcs(rows)
    else:
        base = rows[0]
        varying = np.flatnonzero((rows != base).any(axis=0))
        if len(varying) * 2 > length:
            crc = _crcs(rows)
        else:
            table = _shifted(length)
            crc = np.full(n, _crcs(rows[:1])[0], np.uint32)
            for j in varying.tolist():
                crc ^= table[j][rows[:, j] ^ base[j]]
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(MASK_DELTA)


def _period(lengths: list[int]) -> list[int]:
    """The shortest cycle of record lengths (at most 8) that the last 8 of ``lengths`` follow,
    aligned to its end: the lengths the next records have if the cycle goes on; empty if
    none."""
    n = len(lengths)
    for p in range(1, min(8, n - 8) + 1):
        if all(lengths[i] == lengths[i - p] for i in range(n - 8, n)):
            return lengths[-p:]
    return []


def _predict(buf: U8, pos: int, cycle: list[int], lengths: dict[int, int]) -> tuple[I64, int]:
    """Starts of the records from ``pos`` on while their lengths go on repeating ``cycle``, and
    the offset after the last:
    every header at the predicted offsets is checked (its length and header checksum), a
    window of cycles at once, the window doubling while all match (a cycle that breaks soon,
    as at the end of one of many small files joined, costs what it covered, not the rest of
    the buffer); ends at the first that does not match, or at a record ``buf`` does not hold
    whole."""
    n = len(buf)
    sizes = np.array(cycle, np.int64) + _HEADER + _FOOTER
    period = int(sizes.sum())
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    crcs = np.array([lengths[k] for k in cycle], np.uint32)
    found: list[I64] = []
    window = _WINDOW
    while True:
        left = (n - pos) // period + 1
        reps = min(left, window)
        starts = (pos + np.arange(reps, dtype=np.int64)[:, None] * period + offsets).ravel()
        want = np.tile(np.array(cycle, np.int64), reps)
        inside = starts + _HEADER <= n
        starts, want = starts[inside], want[inside]
        heads = np.lib.stride_tricks.sliding_window_view(buf, _HEADER)[starts]
        length = np.ascontiguousarray(heads[:, :8]).view("<u8").ravel().astype(np.int64)
        stored = np.ascontiguousarray(heads[:, 8:]).view("<u4").ravel()
        ok = (length == want) & (stored == np.tile(crcs, reps)[inside])
        bad = np.flatnonzero(~ok)
        take = int(bad[0]) if len(bad) else len(starts)
        ends = starts[:take] + want[:take] + _HEADER + _FOOTER
        whole = int(np.searchsorted(ends, n, side="right"))  # whole records only
        found.append(starts[:whole])
        if whole:
            pos = int(ends[whole - 1])
        if whole < len(starts) or reps == left:
            break
        window *= 2
    return np.concatenate(found), pos


_WINDOW = 64
"""Cycles of record lengths whose headers :func:`_predict` checks at first (doubling)."""


def _walk(blob: bytes, pos: int, limit: int, lengths: dict[int, int]) -> tuple[list[int], int]:
    """Record starts from ``pos`` on, one by one (at most ``limit``), learning their lengths
    (``{length: masked header CRC}``); returns them and the offset after the last."""
    n, out = len(blob), list[int]()
    while len(out) < limit and n - pos >= _HEADER:
        header = blob[pos:pos + 8]
        length = _U64.unpack(header)[0]
        crc = _U32.unpack_from(blob, pos + 8)[0]
        if crc != masked_crc(header) or pos + length + _HEADER + _FOOTER > n:
            break
        lengths[length] = crc
        out.append(pos)
        pos += length + _HEADER + _FOOTER
    return out, pos


def _scan(buf: U8, pos: int, lengths: dict[int, int]) -> tuple[I64, I64]:
    """Offsets ``>= pos`` that hold an intact header of one of ``lengths``, and the lengths."""
    n = len(buf)
    if n - pos < _HEADER or not lengths:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    known = np.array(sorted(lengths), np.uint64)
    first = np.zeros(256, bool)
    first[(known & np.uint64(0xFF)).astype(np.int64)] = True
    cand = np.flatnonzero(first[buf[pos:n - _HEADER + 1]]) + pos
    heads = np.lib.stride_tricks.sliding_window_view(buf, _HEADER)[cand]
    length = np.ascontiguousarray(heads[:, :8]).view("<u8").ravel()
    where = np.minimum(np.searchsorted(known, length), len(known) - 1)
    crcs = np.array([lengths[int(k)] for k in known], np.uint32)
    stored = np.ascontiguousarray(heads[:, 8:]).view("<u4").ravel()
    ok = (known[where] == length) & (crcs[where] == stored)
    return cand[ok], length[ok].astype(np.int64)


def frame_records(blob: bytes) -> tuple[I64, I64]:
    """``(starts, lengths)`` of the whole records at the start of ``blob`` whose headers are
    intact (payload checksums are not checked here). Stops at the first record that is torn
    (``blob`` ends inside it) or whose header checksum fails.

    Where the lengths of the records just walked repeat a short cycle, the headers at the
    offsets the cycle predicts are checked all at once, up to the first that breaks it.
    Otherwise headers of the record lengths met so far are searched for all at once; a chain
    of them, each record ending where the next begins, is taken whole. Where the chain breaks (a length
    not met before, or a header-like pattern inside a payload) records are walked one by one
    for a stretch, and the search resumes.

    Example:
        >>> from rayplex.tfrecord import frame
        >>> starts, lengths = frame_records(frame(b"ab") + frame(b"cde") + frame(b"f")[:5])
        >>> starts.tolist(), lengths.tolist()
        ([0, 18], [2, 3])
    """
    buf = np.frombuffer(blob, np.uint8)
    n = len(blob)
    known: dict[int, int] = {}
    starts: list[I64] = []
    pos = 0
    while n - pos >= _HEADER:
        walked, after = _walk(blob, pos, _PROBE, known)
        starts.append(np.array(walked, np.int64))
        if len(walked) < _PROBE:
            break
        pos = after
        walked_lengths = [b - a - _HEADER - _FOOTER for a, b in zip(walked, [*walked[1:], after],
                                                                    strict=True)]
        cycle = _period(walked_lengths)
        if cycle:  # records whose lengths repeat a short cycle (a run's tags, in turn)
            predicted, after = _predict(buf, pos, cycle, known)
            if len(predicted):
                starts.append(predicted)
                pos = after
                continue
        cand, length = _scan(buf, pos, known)
        end = cand + length + _HEADER + _FOOTER
        if not len(cand) or cand[0] != pos:
            continue
        chained = (cand[1:] == end[:-1])
        broken = np.flatnonzero(~chained)
        take = int(broken[0]) + 1 if len(broken) else len(cand)
        take = int(np.searchsorted(end[:take], n, side="right"))  # whole records only
        starts.append(cand[:take])
        if take == 0:
            break
        pos = int(end[take - 1])
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    out = np.concatenate(starts)
    return out, _lengths_at(buf, out)


def _lengths_at(buf: U8, starts: I64) -> I64:
    if not len(starts):
        return np.zeros(0, np.int64)
    heads = np.lib.stride_tricks.sliding_window_view(buf, 8)[starts]
    return np.ascontiguousarray(heads).view("<u8").ravel().astype(np.int64)


@dataclass
class Chunk:
    """The scalars of the whole, CRC-valid records at the start of a chunk, in reading order.

    Attributes:
        used: Bytes of those records (the chunk's next unread offset).
        ends: End offset of each of those records.
        record: Index of the record each scalar came from.
        tags: Tag names; ``tag`` indexes them.
        tag, step, wall_time, value: One entry per scalar.
        others: The values that are not scalars (histograms, images, text...), as
            ``(record, tag, kind, step, wall_time)`` in reading order; ``kind`` as
            :func:`rayplex.logdir_codec.kind_of` names it.
    """

    used: int
    ends: I64
    record: I64
    tags: list[str]
    tag: I64
    step: I64
    wall_time: F64
    value: F64
    others: list[Other] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.step)

    def split(self, records: int) -> tuple[Chunk, Chunk]:
        """The scalars of the first ``records`` records, and of the others (offsets of the
        second counted from its own start)."""
        k = int(np.searchsorted(self.record, records))
        used = int(self.ends[records - 1]) if records else 0
        j = next((i for i, other in enumerate(self.others) if other[0] >= records),
                 len(self.others))
        head = Chunk(used, self.ends[:records], self.record[:k], self.tags, self.tag[:k],
                     self.step[:k], self.wall_time[:k], self.value[:k], self.others[:j])
        rest = Chunk(self.used - used, self.ends[records:] - used, self.record[k:] - records,
                     self.tags, self.tag[k:], self.step[k:], self.wall_time[k:], self.value[k:],
                     [(o[0] - records, o[1], o[2], o[3], o[4]) for o in self.others[j:]])
        return head, rest


def _varint_steps(cols: U8) -> tuple[I64, I64]:
    """Step and varint length of the varints at the start of each row (length 0: none that
    ends within 10 bytes)."""
    width = min(cols.shape[1], 10)
    ended = cols[:, :width] < 0x80
    any_end = ended.any(axis=1)
    size = np.where(any_end, ended.argmax(axis=1) + 1, 0).astype(np.int64)
    acc = np.zeros(len(cols), np.uint64)
    longest = int(size.max()) if len(size) else 0
    for i in range(longest):
        part = (cols[:, i].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * i)
        acc |= part if i == 0 else np.where(i < size, part, np.uint64(0))
    return acc.view(np.int64), size


_TEMPLATE_TAGS: dict[bytes, str | None] = {}


def _template_tag(tail: bytes) -> str | None:
    """The tag whose :func:`scalar_tail` is ``tail``, or None if ``tail`` is no such tail."""
    if tail in _TEMPLATE_TAGS:
        return _TEMPLATE_TAGS[tail]
    tag = None
    try:  # tail = 0x2a len 0x0a len 0x0a len TAG 0x15: the tag is what lies after the 3rd key
        pos = 0
        for _ in range(3):
            pos += 1
            while tail[pos] >= 0x80:
                pos += 1
            pos += 1
        candidate = tail[pos:-1].decode("utf-8")
        if scalar_tail(tag_header(candidate)) == tail:
            tag = candidate
    except (IndexError, UnicodeDecodeError):
        pass
    if len(_TEMPLATE_TAGS) < 65_536:
        _TEMPLATE_TAGS[tail] = tag
    return tag


_EVENT: Any = None


def _general(payload: bytes) -> tuple[int, float, list[tuple[str, float]],
                                      list[tuple[str, str]]] | None:
    """``(step, wall_time, [(tag, scalar), ...], [(tag, kind), ...])`` of an ``Event``
    (protobuf): its scalars and its other values; None if it is not one."""
    global _EVENT
    from google.protobuf.message import DecodeError

    from rayplex.logdir_codec import kind_of, scalar_of

    if _EVENT is None:
        from tensorboard.compat.proto.event_pb2 import Event

        _EVENT = Event
    try:
        event = _EVENT.FromString(payload)
    except DecodeError:
        return None
    out, others = [], []
    for value in event.summary.value:
        scalar = scalar_of(value)
        if scalar is not None:
            out.append((value.tag, scalar))
        else:
            others.append((value.tag, kind_of(value)))
    return event.step, event.wall_time, out, others


class _Collector:
    def __init__(self) -> None:
        self.tags: dict[str, int] = {}
        self.parts: dict[str, list[Any]] = {f: [] for f in
                                            ("record", "tag", "step", "wall_time", "value")}

    def tag_id(self, tag: str) -> int:
        return self.tags.setdefault(tag, len(self.tags))

    def add(self, record: Any, tag: Any, step: Any, wall_time: Any, value: Any) -> None:
        for name, part in (("record", record), ("tag", tag), ("step", step),
                           ("wall_time", wall_time), ("value", value)):
            self.parts[name].append(part)


_SAMPLE, _FEW = 256, 16


def _distinct(tails: U8) -> tuple[I64, I64]:
    """``(first, inverse)`` of the rows of a uint8 matrix: the index of one row of each
    distinct value, and each row's distinct value. A few values (a run's tags), seen in the
    first rows, are matched by comparing 8 bytes at a time, which costs less than sorting
    every row."""
    n, width = tails.shape
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), np.uint8)
    padded[:, :width] = tails
    keys = padded.view("<u8")
    seen: dict[bytes, int] = {}
    for i, row in enumerate(padded[:_SAMPLE]):
        seen.setdefault(row.tobytes(), i)
    if len(seen) <= _FEW:
        inverse = np.full(n, -1, np.int64)
        for u, at in enumerate(seen.values()):
            key = keys[at]
            same = keys[:, 0] == key[0]
            for w in range(1, words):
                same &= keys[:, w] == key[w]
            inverse[same] = u
        if (inverse >= 0).all():
            return np.array(list(seen.values()), np.int64), inverse
    void = np.ascontiguousarray(tails).view(np.dtype((np.void, width))).ravel()
    _, first, inverse = np.unique(void, return_index=True, return_inverse=True)
    return first.astype(np.int64), inverse.ravel().astype(np.int64)


def _fast(mat: U8, rec: I64, length: int, out: _Collector) -> I64:
    """Decode the template records among ``rec`` (their payloads the rows of ``mat``, all
    ``length`` bytes); return the indices of the others."""
    if length < 1 + 8 + 1 + 1 + 7 + 4:
        return rec
    ok = (mat[:, 0] == 0x09) & (mat[:, 9] == 0x10)
    step, size = _varint_steps(mat[:, 10:])
    ok &= size > 0
    rest = []
    for k in np.unique(size[ok]):
        k = int(k)
        sel = np.flatnonzero(ok & (size == k))
        tail_at, tail_end = 10 + k, length - 4
        if tail_end - tail_at < 7:
            rest.append(rec[sel])
            continue
        rows: Any = slice(None) if len(sel) == len(mat) else sel  # all: views, not copies
        tails = mat[rows, tail_at:tail_end]
        first, inverse = _distinct(tails)
        tag_of = np.full(len(first), -1, np.int64)
        for u in range(len(first)):
            tag = _template_tag(tails[first[u]].tobytes())
            if tag is not None:
                tag_of[u] = out.tag_id(tag)
        tag_ids = tag_of[inverse]
        good = tag_ids >= 0
        if good.all():
            g: Any = rows
        else:
            rest.append(rec[sel[~good]])
            g, tag_ids = sel[good], tag_ids[good]
        wall = np.ascontiguousarray(mat[g, 1:9]).view("<f8").ravel()
        value = np.ascontiguousarray(mat[g, length - 4:]).view("<f4").ravel().astype(np.float64)
        out.add(rec[g], tag_ids, step[g], wall, value)
    rest.append(rec[~ok])
    return np.concatenate(rest) if rest else np.zeros(0, np.int64)


def _rows(buf: U8, starts: I64, width: int) -> U8:
    """The ``width`` bytes at each of ``starts`` (a copy, one row each)."""
    if not len(starts):
        return np.zeros((0, width), np.uint8)
    rows: U8 = np.lib.stride_tricks.sliding_window_view(buf, width)[starts]
    return rows


def decode_chunk(blob: bytes) -> Chunk:
    """The scalars of the whole, CRC-valid records at the start of ``blob``; stops at the first
    torn or broken record (``used`` says where)."""
    starts, lengths = frame_records(blob)
    buf = np.frombuffer(blob, np.uint8)
    count = len(starts)
    groups = []
    # payload checksums, all records of one length at once; cut at the first bad one
    for length in np.unique(lengths).tolist():
        rec = np.flatnonzero(lengths == length)
        mat = _rows(buf, starts[rec] + _HEADER, length + _FOOTER)
        stored = np.ascontiguousarray(mat[:, length:]).view("<u4").ravel()
        bad = np.flatnonzero(_masked_crcs(mat[:, :length]) != stored)
        if len(bad):
            count = min(count, int(rec[bad[0]]))
        groups.append((length, rec, mat))
    starts, lengths = starts[:count], lengths[:count]
    ends = starts + lengths + _HEADER + _FOOTER
    out = _Collector()
    general: list[I64] = []
    for length, rec, mat in groups:
        keep = rec < count
        general.append(_fast(mat[keep, :length], rec[keep], length, out))
    others: list[Other] = []
    for r in np.sort(np.concatenate(general)).tolist() if general else []:
        start = int(starts[r]) + _HEADER
        event = _general(blob[start:start + int(lengths[r])])
        if event is None:
            continue
        step, wall, scalars, rest = event
        others.extend((r, tag, kind, step, wall) for tag, kind in rest)
        if not scalars:
            continue
        m = len(scalars)
        out.add(np.full(m, r, np.int64), np.array([out.tag_id(t) for t, _ in scalars], np.int64),
                np.full(m, step, np.int64), np.full(m, wall, np.float64),
                np.array([v for _, v in scalars], np.float64))
    cols = {name: np.concatenate(parts) if parts else np.zeros(0, dtype)
            for (name, parts), dtype in zip(out.parts.items(), (np.int64, np.int64, np.int64,
                                                                np.float64, np.float64),
                                            strict=True)}
    order = np.argsort(cols["record"], kind="stable")
    if len(order) and not (np.diff(cols["record"]) >= 0).all():
        cols = {name: col[order] for name, col in cols.items()}
    used = int(ends[-1]) if count else 0
    return Chunk(used, ends, cols["record"], list(out.tags), cols["tag"], cols["step"],
                 cols["wall_time"], cols["value"], others)
