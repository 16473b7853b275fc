"""The forwarder's pure parts, without Ray: bounded reads of whole records, the cursor, the
hub's committed sizes, tracker batching, and Forwarder rounds against a real MLflow store."""

from __future__ import annotations

import glob
import json
import logging
import os
import threading

import numpy as np
import pytest
from tensorboardX.proto.summary_pb2 import Summary

from rayplex.encode import ScalarTemplate, event_record, tag_header
from rayplex.events import EventWriter
from rayplex.forward.follow import Cursor, Point, read_committed
from rayplex.forward.trackers import MLFLOW_MAX_BYTES, MLflow, mlflow_batches, wandb_rows
from rayplex.media import image_value
from rayplex.tfrecord import frame


def scalar_records(tag, steps, wall=1000.0):
    template = ScalarTemplate(tag_header(tag))
    return b"".join(template.record(wall + s, s, float(s) / 4) for s in steps)


def test_a_bounded_read_returns_only_whole_records_and_resumes_where_it_stopped(tmp_path):
    path = str(tmp_path / "events.out.tfevents.1")
    records = [frame(bytes([i]) * (10 + i)) for i in range(20)]
    with open(path, "wb") as f:
        f.write(b"".join(records) + b"\x07torn")
    size = os.path.getsize(path)
    got, offset = [], 0
    while True:
        payloads, new = read_committed(path, offset, size, max_bytes=50)
        if new == offset:
            break
        got += payloads
        offset = new
    assert got == [bytes([i]) * (10 + i) for i in range(20)]
    assert offset == size - len(b"\x07torn")


def test_a_read_never_passes_the_committed_size(tmp_path):
    path = str(tmp_path / "events.out.tfevents.1")
    with open(path, "wb") as f:
        f.write(frame(b"committed") + frame(b"uncommitted"))
    payloads, offset = read_committed(path, 0, len(frame(b"committed")), max_bytes=1 << 20)
    assert payloads == [b"committed"] and offset == len(frame(b"committed"))


def test_the_cursor_round_trips_and_an_unreadable_one_is_set_aside(tmp_path):
    path = str(tmp_path / ".rayplex" / "forward-x.json")
    Cursor({"tensorboard/a/e": 10}, {"a": "run1"}, {"a/b": "d"}).save(path)
    assert Cursor.load(path) == Cursor({"tensorboard/a/e": 10}, {"a": "run1"}, {"a/b": "d"})
    with open(path, "w") as f:
        f.write("{not json")
    assert Cursor.load(path) == Cursor()
    assert os.path.exists(path + ".unreadable")


def test_committed_sizes_wait_for_an_open_transaction_and_exclude_what_it_undid(tmp_path):
    from rayplex.actors.hub import Hub

    hub = Hub("t", str(tmp_path))
    try:
        writer = EventWriter(tmp_path / "tensorboard" / "learner")
        writer.write(scalar_records("main/x", range(3)))
        committed = os.path.getsize(writer.path)
        rel = os.path.relpath(writer.path, tmp_path)
        answers = []
        with hub.lock:  # a transaction: appends, then fails and is cut back
            writer.write(scalar_records("main/x", range(3, 6)))
            asker = threading.Thread(target=lambda: answers.append(hub.committed_sizes()))
            asker.start()
            asker.join(0.3)
            assert not answers, "committed_sizes answered while a transaction was open"
            os.truncate(writer.path, committed)
        asker.join(10)
        assert answers == [{rel: committed}]
        hub.writer.pending_undo[writer.path] = committed - 10  # an undo still to be done
        assert hub.committed_sizes() == {rel: committed - 10}
    finally:
        hub._stop.set()
        writer.close()


def test_committed_sizes_measures_under_the_lock_only_what_changed(tmp_path, monkeypatch):
    # a logdir with many run directories must not hold up writes while a forwarder polls
    from rayplex.actors.hub import Hub

    hub = Hub("t", str(tmp_path))
    writers = [EventWriter(tmp_path / "tensorboard" / f"agent/{i}") for i in range(50)]
    try:
        for w in writers:
            w.write(scalar_records("x", range(2)))
        first = hub.committed_sizes()
        assert len(first) == 50
        writers[7].write(scalar_records("x", range(2, 4)))
        under_lock = []
        real = os.path.getsize

        def counting(path):
            if hub.lock._is_owned():  # this thread holds the writer lock
                under_lock.append(path)
            return real(path)

        monkeypatch.setattr(os.path, "getsize", counting)
        second = hub.committed_sizes()
        assert under_lock == [writers[7].path]
        rel = os.path.relpath(writers[7].path, tmp_path)
        assert second[rel] == real(writers[7].path) > first[rel]
        assert {k: v for k, v in second.items() if k != rel} == {
            k: v for k, v in first.items() if k != rel}
    finally:
        hub._stop.set()
        for w in writers:
            w.close()


def test_mlflow_calls_hold_at_most_1000_metrics_and_1_mb():
    long = "k" * 5000
    points = [Point("r", long, i, 0.0, 1.0) for i in range(500)]
    batches = mlflow_batches(points)
    assert all(len(b) <= 1000 for b in batches)
    assert all(sum(len(p.tag) + 100 for p in b) <= MLFLOW_MAX_BYTES for b in batches)
    assert sum(len(b) for b in batches) == 500 and len(batches) > 1


def test_wandb_rows_keep_every_point_at_its_own_step_even_when_steps_go_back():
    points = [Point("r", "a", 5, 10.0, 1.0), Point("r", "a", 2, 11.0, 2.0),
              Point("r", "b", 5, 9.0, 3.0), Point("r", "a", 5, 12.0, 4.0)]
    rows = wandb_rows(points)
    assert [(r["rayplex_step"], r.get("a"), r.get("b")) for r in rows] == [
        (5, 1.0, 3.0), (2, 2.0, None), (5, 4.0, None)]
    assert rows[0]["_timestamp"] == 9.0


def test_a_failing_tracker_advances_nothing_and_backs_off_then_forwards_scalars_and_images_exactly(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from rayplex.actors.hub import Hub
    from rayplex.forward.core import Forwarder, cursor_path

    logdir = str(tmp_path / "exp")
    hub = Hub("t", logdir)
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    uri = f"sqlite:///{blocker / 'mlruns.db'}"
    lines: list[tuple[int, str]] = []
    writer = EventWriter(os.path.join(logdir, "tensorboard", "learner"))
    try:
        writer.write(scalar_records("main/x", range(5)))
        image = image_value(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
        writer.write(event_record(tag_header("main/img"), 1003.0, 3, image))
        forwarder = Forwarder(logdir, MLflow(tracking_uri=uri, experiment="e", retry_max_s=2),
                              hub.committed_sizes, lambda level, text: lines.append((level, text)))
        waits = [forwarder.step() for _ in range(4)]
        assert waits == [0.5, 1.0, 2.0, 2.0]
        assert forwarder.counters["failures"] == 4 and forwarder.counters["forwarded"] == 0
        assert not os.path.exists(cursor_path(logdir, forwarder.tracker))
        assert [level for level, _ in lines] == [logging.WARNING]  # one warning per outage
        blocker.unlink()
        blocker.mkdir()
        assert forwarder.step() == 0.0
        assert forwarder.counters["forwarded"] == 5 and forwarder.counters["problem"] is None
        assert "accepts data again" in lines[-1][1]
        with open(cursor_path(logdir, forwarder.tracker)) as f:
            cursor = json.load(f)
        assert list(cursor["offsets"].values()) == [os.path.getsize(writer.path)]
        client = mlflow.MlflowClient(tracking_uri=uri)
        run_id = cursor["runs"]["learner"]
        history = sorted((m.step, m.timestamp, m.value)
                         for m in client.get_metric_history(run_id, "main/x"))
        assert history == [(s, (1000 + s) * 1000, s / 4) for s in range(5)]
        png = client.download_artifacts(run_id, "images/main/img/step_000000000003.png",
                                        str(tmp_path / "download"))
        with open(png, "rb") as f:
            assert f.read() == Summary.Value.FromString(image).image.encoded_image_string
        assert forwarder.counters["images"] == 1
        # a database store's artifacts go under the logdir, not ./mlruns of the forwarder's cwd
        assert os.path.isfile(png) and glob.glob(os.path.join(
            logdir, "mlflow-artifacts", "*", "artifacts", "images", "main", "img", "*.png"))
        assert not os.path.exists("mlruns")
        forwarder.close()
    finally:
        hub._stop.set()
        writer.close()
