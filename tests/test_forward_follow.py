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

from rayplex.cursor import Cursor
from rayplex.event_bytes import ScalarTemplate, event_record, tag_header
from rayplex.events import EventWriter
from rayplex.forward.follow import Point, read_committed
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
    cursor, damage = Cursor.recover(path)
    assert cursor == Cursor({"tensorboard/a/e": 10}, {"a": "run1"}, {"a/b": "d"})
    assert "second copy" in damage and os.path.exists(path + ".unreadable")
    with open(path, "w") as f:  # valid JSON, but not what was saved: the checksum tells
        f.write(Cursor({"tensorboard/a/e": 99}).to_json().decode().replace("99", "98"))
    with open(path + ".bak", "w") as f:
        f.write("garbage")
    cursor, damage = Cursor.recover(path)
    assert cursor == Cursor() and "starts over" in damage


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


# ----------------------------------------------------------- refusals, cursor damage, runs
# MLflow's file store keeps every row it is sent (its SQL stores drop identical ones), so a
# duplicate shows there: these tests use it.

def _write_params(logdir, client, params):
    path = os.path.join(logdir, "params", f"{client}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(params, f)


def _expected(tag, steps, wall=1000.0):
    return [(s, round((wall + s) * 1000), s / 4) for s in steps]


def _history(client, run_id, key):
    return sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))


def _runs_of(client, run):
    from mlflow.entities import ViewType

    [experiment] = [e for e in client.search_experiments(view_type=ViewType.ALL)
                    if e.name == "e"]
    return [r for r in client.search_runs([experiment.experiment_id], max_results=1000,
                                          run_view_type=ViewType.ALL)
            if r.data.tags.get("rayplex.run") == run]


def _until_caught_up(forwarder, rounds=30):
    """Forward until nothing is left (each step is a round; a failed one is retried at once:
    the back-off is the loop's business, tested separately)."""
    for _ in range(rounds):
        if forwarder.step() > 0 and forwarder.caught_up():
            return
    raise AssertionError(f"not caught up after {rounds} rounds: {forwarder.counters}")


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def test_mlflow_refusals_are_isolated_reported_once_and_never_retried(tmp_path, file_store):
    import mlflow

    from rayplex.actors.hub import Hub
    from rayplex.forward.core import Forwarder
    from rayplex.forward.trackers import mlflow_key

    logdir = str(tmp_path / "exp")
    hub = Hub("t", logdir)
    lines: list[tuple[int, str]] = []
    writers = {run: EventWriter(os.path.join(logdir, "tensorboard", run))
               for run in ("learner", "agent/1", "agent/2", "agent/3")}
    long_tag = "agent/" + "k" * 1000  # rayplex allows 1,024 characters, MLflow keys 250
    try:
        writers["learner"].write(scalar_records("main/x", range(20)))
        writers["agent/1"].write(scalar_records("agent/eval/", range(20))
                                 + scalar_records(long_tag, range(20))
                                 + scalar_records("agent/ok", range(20)))
        writers["agent/2"].write(scalar_records("agent/ok", range(20)))
        writers["agent/3"].write(scalar_records("agent/ok", range(10))
                                 + scalar_records("agent/neg", [0], wall=-10.0)  # refused
                                 + scalar_records("agent/ok", range(10, 20)))
        _write_params(logdir, "learner/main", {"job": {"status": "started"}, "lr": 0.1})
        forwarder = Forwarder(logdir, MLflow(tracking_uri=file_store, experiment="e"),
                              hub.committed_sizes, lambda level, text: lines.append((level, text)))
        _until_caught_up(forwarder)
        client = mlflow.MlflowClient(tracking_uri=file_store)
        [gone] = _runs_of(client, "agent/2")
        client.delete_run(gone.info.run_id)  # in the MLflow UI
        # what the README's job statuses do: job_started() ... job_completed()
        _write_params(logdir, "learner/main", {"job": {"status": "completed"}, "lr": 0.1,
                                               "batch": 64})
        writers["learner"].write(scalar_records("main/x", range(20, 40)))
        writers["agent/2"].write(scalar_records("agent/ok", range(20, 40)))
        writers["agent/3"].write(scalar_records("agent/ok", range(20, 40)))
        _until_caught_up(forwarder)
        calls = forwarder.counters["tracker_calls"]
        for _ in range(3):
            forwarder.step()
        assert forwarder.counters["tracker_calls"] == calls  # nothing is retried

        def history(run, tag):
            [found] = [r for r in _runs_of(client, run) if r.info.lifecycle_stage == "active"]
            return _history(client, found.info.run_id, mlflow_key(tag))

        assert history("learner", "main/x") == _expected("main/x", range(40))
        assert history("agent/1", "agent/eval/") == _expected("", range(20))
        assert history("agent/1", long_tag) == _expected("", range(20))
        assert history("agent/1", "agent/ok") == _expected("", range(20))
        assert history("agent/3", "agent/ok") == _expected("", range(40))
        assert history("agent/3", "agent/neg") == []
        [gone] = _runs_of(client, "agent/2")  # not made again
        assert gone.info.lifecycle_stage == "deleted"
        assert _history(client, gone.info.run_id, "agent/ok") == _expected("", range(20))
        [learner] = _runs_of(client, "learner")
        assert learner.data.params == {"main/job/status": "started", "main/lr": "0.1",
                                       "main/batch": "64"}
        assert learner.data.tags["rayplex.param.main/job/status"] == "completed"
        counters = forwarder.counters
        assert counters["failures"] == 0 and counters["problem"] is None
        assert counters["forwarded"] == 40 + 60 + 20 + 40
        assert counters["refused"] == 1 + 20 and counters["gone_runs"] == ["agent/2"]
        causes = counters["refused_causes"]
        assert sorted(causes.values()) == [1, 20], causes
        errors = [text for level, text in lines if level == logging.ERROR]
        assert len(errors) == 2, errors
        assert any("agent/neg" in e and "INVALID_PARAMETER_VALUE" in e for e in errors)
        assert any("agent/2" in e and "deleted" in e for e in errors)
        forwarder.close()
    finally:
        hub._stop.set()
        for writer in writers.values():
            writer.close()


def test_mlflow_keys_are_valid_and_stable_for_any_tag():
    pytest.importorskip("mlflow")
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from mlflow.utils.validation import _validate_metric_name

    from rayplex.forward.trackers import mlflow_key

    @settings(max_examples=400, deadline=None)
    @given(st.text(st.sampled_from("ab/._- :#é"), min_size=1, max_size=1024))
    def check(tag):
        key = mlflow_key(tag)
        _validate_metric_name(key)
        assert len(key) <= 250 and mlflow_key(tag) == key
        if len(tag) <= 250 and key != tag:
            assert tag.replace("#", "_") == key or "-" in key

    check()
    for tag in ("eval/", "a//b", "./a", "a/..", "..", "/a", "k" * 1024, ".."):
        _validate_metric_name(mlflow_key(tag))
    assert mlflow_key("eval/") != mlflow_key("eval//")
    assert mlflow_key("agent/reward/16-23") == "agent/reward/16-23"


def test_a_draining_forwarder_backs_off_between_failed_rounds(tmp_path):
    pytest.importorskip("mlflow")
    import time

    from rayplex.actors.hub import Hub
    from rayplex.forward.core import Forwarder

    logdir = str(tmp_path / "exp")
    hub = Hub("t", logdir)
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    writer = EventWriter(os.path.join(logdir, "tensorboard", "learner"))
    try:
        writer.write(scalar_records("main/x", range(5)))
        forwarder = Forwarder(logdir, MLflow(tracking_uri=f"sqlite:///{blocker / 'db'}",
                                             experiment="e", retry_max_s=2),
                              hub.committed_sizes, lambda level, text: None)
        waits: list[float] = []
        # the schedule is what is tested, not the sleeping: a tenth of each wait is slept, so
        # that failed rounds slowed by a loaded machine still leave room for several waits
        assert forwarder.drain(6.0, lambda s: (waits.append(s), time.sleep(s / 10))) is False
        # 0.5 s doubling up to retry_max_s; only the waits at the end may be cut short by the
        # deadline (each to what is left of it)
        expected = [min(0.5 * 2**i, 2.0) for i in range(len(waits))]
        full = 0
        while full < len(waits) and waits[full] == expected[full]:
            full += 1
        cut = waits[full:]
        assert full >= 2, waits
        assert all(0 < w < e for w, e in zip(cut, expected[full:], strict=True)), waits
        assert cut == sorted(cut, reverse=True), waits  # what is left only shrinks
        assert forwarder.counters["failures"] <= len(waits) + 1  # one round per wait, no spinning
    finally:
        hub._stop.set()
        writer.close()


def _damage(path):
    with open(path, "wb") as f:
        f.write(b'{"v": 2, "offsets": {"tensorboard/learner/x": 0}, garbage \x00\xff')


def _forward_around_a_damaged_cursor(hub, writer, tracker, lines):
    """Forward 50 points, damage the cursor, write 30 more and forward again with a new
    forwarder; returns that second forwarder (closed)."""
    from rayplex.forward.core import Forwarder, cursor_path

    writer.write(scalar_records("main/x", range(50)))
    first = Forwarder(hub.logdir, tracker, hub.committed_sizes, lambda *a: lines.append(a))
    _until_caught_up(first)
    first.close()
    _damage(cursor_path(hub.logdir, tracker))
    writer.write(scalar_records("main/x", range(50, 80)))
    second = Forwarder(hub.logdir, tracker, hub.committed_sizes, lambda *a: lines.append(a))
    _until_caught_up(second)
    second.close()
    return second


def test_a_damaged_mlflow_cursor_is_reported_and_recovered_without_resending(tmp_path,
                                                                            file_store):
    import mlflow

    from rayplex.actors.hub import Hub
    from rayplex.forward.core import cursor_path

    logdir = str(tmp_path / "exp")
    hub = Hub("t", logdir)
    lines: list[tuple[int, str]] = []
    tracker = MLflow(tracking_uri=file_store, experiment="e")
    writer = EventWriter(os.path.join(logdir, "tensorboard", "learner"))
    try:
        second = _forward_around_a_damaged_cursor(hub, writer, tracker, lines)
        client = mlflow.MlflowClient(tracking_uri=file_store)
        [run] = _runs_of(client, "learner")
        assert _history(client, run.info.run_id, "main/x") == _expected("", range(80))
        assert second.counters["cursor_damaged"] == 1 and second.counters["forwarded"] == 30
        assert [level for level, text in lines if "damaged" in text] == [logging.ERROR]
        assert os.path.exists(cursor_path(logdir, tracker) + ".unreadable")
    finally:
        hub._stop.set()
        writer.close()


def test_a_damaged_wandb_cursor_is_reported_and_recovered_without_resending(tmp_path):
    pytest.importorskip("wandb")
    from rayplex.actors.hub import Hub
    from rayplex.forward.trackers import WandB
    from tests.test_forward_wandb import wandb_contents

    logdir = str(tmp_path / "exp")
    directory = str(tmp_path / "wandb")
    hub = Hub("t", logdir)
    lines: list[tuple[int, str]] = []
    tracker = WandB(project="p", mode="offline", dir=directory)
    writer = EventWriter(os.path.join(logdir, "tensorboard", "learner"))
    try:
        second = _forward_around_a_damaged_cursor(hub, writer, tracker, lines)
        points, _, _ = wandb_contents(directory)
        assert points["learner"]["main/x"] == [(s, s / 4) for s in range(80)]
        assert second.counters["cursor_damaged"] == 1 and second.counters["forwarded"] == 30
        assert [level for level, text in lines if "damaged" in text] == [logging.ERROR]
    finally:
        hub._stop.set()
        writer.close()


class _CreateOnceMore:
    """The real MLflow client, whose ``create_run`` runs twice (as MLflow's HTTP client
    resends a POST whose answer was lost on a loaded server), creates the run and then times
    out, or times out first and creates that run late, while the retry creates another."""

    def __init__(self, client, mode):
        self._client, self._mode = client, mode

    def __getattr__(self, name):
        return getattr(self._client, name)

    def create_run(self, *args, **kwargs):
        if self._mode == "late":
            self._mode = "late-commit"
            raise TimeoutError("read timed out (the server creates the run later)")
        if self._mode == "late-commit":
            self._mode = None
            self._client.create_run(*args, **kwargs)  # the first request, committed late
        created = self._client.create_run(*args, **kwargs)
        if self._mode == "twice":
            return self._client.create_run(*args, **kwargs)
        if self._mode == "timeout":
            self._mode = None
            raise TimeoutError("read timed out (the run was created all the same)")
        return created


@pytest.mark.parametrize("mode", ["twice", "timeout", "late"])
def test_a_client_maps_to_one_mlflow_run_whatever_run_creation_does(tmp_path, file_store, mode):
    import mlflow

    from rayplex.actors.hub import Hub
    from rayplex.forward.core import Forwarder

    logdir = str(tmp_path / "exp")
    hub = Hub("t", logdir)
    writer = EventWriter(os.path.join(logdir, "tensorboard", "agent", "1"))
    try:
        writer.write(scalar_records("agent/x", range(30)))
        forwarder = Forwarder(logdir, MLflow(tracking_uri=file_store, experiment="e"),
                              hub.committed_sizes, lambda *a: None)
        connection = forwarder._connect()
        connection.client = _CreateOnceMore(connection.client, mode)
        _until_caught_up(forwarder)
        forwarder.close()
        client = mlflow.MlflowClient(tracking_uri=file_store)
        runs = _runs_of(client, "agent/1")
        active = [r for r in runs if r.info.lifecycle_stage == "active"]
        assert len(active) == 1, [(r.info.run_id, r.info.lifecycle_stage) for r in runs]
        assert _history(client, active[0].info.run_id, "agent/x") == _expected("", range(30))
        for extra in runs:
            if extra is not active[0]:
                assert extra.data.tags["rayplex.duplicate_of"] == active[0].info.run_id
                assert not extra.data.metrics
    finally:
        hub._stop.set()
        writer.close()


@pytest.mark.parametrize("given, expected", [
    ("sqlite:///runs.db", "sqlite:///{cwd}/runs.db"),
    ("sqlite:////abs/runs.db", "sqlite:////abs/runs.db"),
    ("mlruns", "{cwd}/mlruns"),
    ("./sub/mlruns", "{cwd}/sub/mlruns"),
    ("file:mlruns", "file://{cwd}/mlruns"),
    ("file:///abs/mlruns", "file:///abs/mlruns"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    (None, None),
])
def test_a_relative_tracking_uri_means_the_drivers_directory_not_the_forwarders(
        given, expected, tmp_path, monkeypatch):
    # the forwarder actor runs in a directory of Ray's choosing: a relative path given on
    # the driver is resolved where it was written
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    spec = MLflow(tracking_uri=given, artifact_location="art" if given else None)
    assert spec.tracking_uri == (None if expected is None else expected.format(cwd=cwd))
    assert spec.artifact_location == (os.path.join(cwd, "art") if given else None)


def test_a_relative_wandb_dir_means_the_drivers_directory(tmp_path, monkeypatch):
    from rayplex.forward.trackers import WandB

    monkeypatch.chdir(tmp_path)
    assert WandB(project="p", dir="wb").dir == os.path.join(os.getcwd(), "wb")
    assert WandB(project="p", dir="/abs/wb").dir == "/abs/wb"
    assert WandB(project="p").dir is None
    assert WandB(project="p", dir="wb").key == WandB(project="p").key  # the actor's name stays
