"""Event-record bytes: framing, the per-record template and the vectorised encoder."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rayplex.event_bytes import (
    ScalarTemplate,
    file_version_record,
    iter_records,
    masked_crc,
    scalar_records,
    tag_header,
)
from rayplex.events import EventWriter


def test_records_read_back_with_tensorboards_loader(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    writer = EventWriter(tmp_path)
    template = ScalarTemplate(tag_header("a/b"))
    writer.write(template.record(1.5, 3, 0.25) + template.record(2.5, -7, 1e39))
    writer.close()
    events = list(EventFileLoader(writer.path).Load())
    assert events[0].file_version == "brain.Event:2"
    got = [(e.step, e.wall_time, e.summary.value[0].tag, e.summary.value[0].tensor.float_val[0])
           for e in events[1:]]
    assert got == [(3, 1.5, "a/b", 0.25), (-7, 2.5, "a/b", float("inf"))]


def test_the_masked_crc_is_tfrecords():
    assert masked_crc(b"") == 0xA282EAD8  # crc32c("") == 0, masked


_tags = st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=4)
_step = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_value = st.floats(allow_nan=True, allow_infinity=True)
_wall = st.floats(min_value=0, max_value=4e9)


@given(_tags, st.lists(st.tuples(st.integers(0, 3), _wall, _step, _value), max_size=60))
@settings(max_examples=150, deadline=None)
def test_vectorised_scalars_are_byte_identical_to_one_at_a_time(tags, rows):
    templates = [ScalarTemplate(tag_header(t)) for t in tags]
    rows = [(i % len(tags), w, s, v) for i, w, s, v in rows]
    expected = b"".join(templates[i].record(w, s, v) for i, w, s, v in rows)
    got = scalar_records([t.tail for t in templates], np.array([r[0] for r in rows], np.int64),
                         np.array([r[1] for r in rows], np.float64),
                         np.array([r[2] for r in rows], np.int64),
                         np.array([r[3] for r in rows], np.float64))
    assert got == expected
    assert len(list(iter_records(got))) == len(rows)


def test_file_version_record_frames_one_event():
    assert len(list(iter_records(file_version_record(0.0)))) == 1
