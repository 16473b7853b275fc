"""TFRecord framing and reading (rayplex.tfrecord), as plain objects."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayplex import tfrecord
from rayplex.tfrecord import (
    RECORD_OVERHEAD,
    NotRegularFileError,
    frame,
    iter_records,
    masked_crc,
    open_regular,
    read_records,
)
from tests.conftest import returns_within

_payloads = st.lists(st.binary(max_size=300), max_size=12)


def test_a_record_matches_tensorflows_layout_byte_for_byte():
    payload = b"event"
    length = struct.pack("<Q", len(payload))
    expected = (length + struct.pack("<I", masked_crc(length)) + payload
                + struct.pack("<I", masked_crc(payload)))
    assert frame(payload) == expected
    assert masked_crc(b"") == 0xA282EAD8  # crc32c("") == 0, masked


@given(_payloads)
@settings(max_examples=200, deadline=None)
def test_framed_payloads_read_back_in_order(payloads):
    blob = b"".join(frame(p) for p in payloads)
    assert list(iter_records(blob)) == payloads
    assert len(blob) == sum(len(p) + RECORD_OVERHEAD for p in payloads)


@given(_payloads, st.data())
@settings(max_examples=200, deadline=None)
def test_a_torn_tail_yields_exactly_the_whole_records_before_it(payloads, data):
    blob = b"".join(frame(p) for p in payloads)
    cut = data.draw(st.integers(0, len(blob)))
    whole, end = [], 0
    for p in payloads:
        end += len(p) + RECORD_OVERHEAD
        if end > cut:
            break
        whole.append(p)
    assert list(iter_records(blob[:cut])) == whole


@given(st.lists(st.binary(max_size=64), min_size=1, max_size=6), st.data())
@settings(max_examples=200, deadline=None)
def test_a_corrupted_byte_ends_reading_at_the_record_that_holds_it(payloads, data):
    blob = bytearray(b"".join(frame(p) for p in payloads))
    where = data.draw(st.integers(0, len(blob) - 1))
    blob[where] ^= data.draw(st.integers(1, 255))
    before, start = 0, 0
    for p in payloads:
        if where < start + len(p) + RECORD_OVERHEAD:
            break
        start += len(p) + RECORD_OVERHEAD
        before += 1
    assert list(iter_records(bytes(blob))) == payloads[:before]


def test_a_bogus_length_beyond_the_data_stops_reading_without_allocating_it(tmp_path):
    length = struct.pack("<Q", 2**62)
    bogus = length + struct.pack("<I", masked_crc(length)) + b"x" * 8
    blob = frame(b"ok") + bogus
    assert list(iter_records(blob)) == [b"ok"]
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(blob)
    assert list(read_records(path)) == [b"ok"]


def test_reading_a_file_gives_what_reading_its_bytes_gives(tmp_path, monkeypatch):
    monkeypatch.setattr(tfrecord, "EVENT_READ_CHUNK_BYTES", 7)  # records straddle many reads
    payloads = [b"a" * n for n in (0, 1, 5, 30, 100)] + [os.urandom(1000)]
    blob = b"".join(frame(p) for p in payloads) + frame(b"torn")[:-3]
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(blob)
    assert list(read_records(path)) == list(iter_records(blob)) == payloads


def test_a_record_larger_than_a_read_chunk_is_read_whole(tmp_path):
    big = os.urandom(3 * (1 << 20) + 5)
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(frame(b"first") + frame(big) + frame(b"last"))
    assert list(read_records(path)) == [b"first", big, b"last"]


def test_records_appended_after_the_file_was_opened_are_not_read(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    path.write_bytes(frame(b"one") + frame(b"two"))
    records = read_records(path)
    assert next(records) == b"one"
    with open(path, "ab") as f:
        f.write(frame(b"three"))
    assert list(records) == [b"two"]


def test_a_fifo_named_like_an_event_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "events.out.tfevents.1.h.1.r"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        returns_within(10.0, lambda: list(read_records(fifo)))


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(NotRegularFileError, match="directory"):
        open_regular(tmp_path)


def test_a_symlink_to_a_regular_file_is_read(tmp_path):
    target = tmp_path / "real"
    target.write_bytes(frame(b"x"))
    link = tmp_path / "events.out.tfevents.1"
    link.symlink_to(target)
    assert list(read_records(link)) == [b"x"]


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_records(tmp_path / "nope"))
