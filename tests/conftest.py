"""Shared fixtures: one real local Ray for the whole session, a fresh experiment per test,
and readers that go through TensorBoard's own event loader (never through rayplex's)."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import threading
import time
from collections import defaultdict

import pytest

os.environ.setdefault("RAYPLEX_FLUSH_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"RAYPLEX_FLUSH_INTERVAL_S": "0.2"}})
    yield ray
    ray.shutdown()


@pytest.fixture
def experiment(ray_session, tmp_path):
    """A fresh default hub in a fresh logdir; shut down after the test. For tests that restart,
    stop, kill or shut down a hub, or that need a logdir of their own; the others share
    ``module_experiment`` (see ``tests/fixtures.py``)."""
    import rayplex

    hub = rayplex.init(str(tmp_path / "exp"))
    yield hub
    rayplex.shutdown(hub.name)


@pytest.fixture(scope="module")
def module_experiment(ray_session, tmp_path_factory):
    """One default hub for a whole module whose tests each use client ids of their own: starting
    and stopping a hub per test was most of CI's time. A module opts in with
    ``from tests.fixtures import shared_experiment``."""
    import rayplex

    hub = rayplex.init(str(tmp_path_factory.mktemp("module") / "exp"))
    yield hub
    rayplex.shutdown(hub.name)


def event_files(logdir):
    return sorted(glob.glob(os.path.join(logdir, "tensorboard", "**", "events.out.tfevents.*"),
                            recursive=True))


def tb_events(logdir):
    """Every (run, event) under ``logdir/tensorboard`` read with TensorBoard's loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    root = os.path.join(logdir, "tensorboard")
    for path in event_files(logdir):
        run = os.path.relpath(os.path.dirname(path), root)
        for event in EventFileLoader(path).Load():
            yield run, event


def tb_scalars(logdir):
    """``{run: {tag: [(step, value), ...]}}``; accepts both simple_value and migrated tensors."""
    from tensorboard.util import tensor_util

    out = defaultdict(lambda: defaultdict(list))
    for run, event in tb_events(logdir):
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                out[run][value.tag].append((event.step, value.simple_value))
            elif kind == "tensor" and value.metadata.plugin_data.plugin_name == "scalars":
                out[run][value.tag].append(
                    (event.step, float(tensor_util.make_ndarray(value.tensor)))
                )
    return out


def tb_values(logdir):
    """``{run: {tag: [(step, wall_time, Summary.Value), ...]}}`` for any kind."""
    out = defaultdict(lambda: defaultdict(list))
    for run, event in tb_events(logdir):
        for value in event.summary.value:
            out[run][value.tag].append((event.step, event.wall_time, value))
    return out


def returns_within(seconds, fn):
    """Run ``fn`` in a thread and return its result or raise its exception; fail instead of
    hanging if it has not returned after ``seconds``."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn} blocked for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@contextlib.contextmanager
def stalled_hub(hub, limit_s=120.0):
    """Keep the (single-threaded) hub busy, as a slow disk or an overloaded hub would, from
    before the block runs until ``release()`` (yielded) is called or the block ends."""
    import ray

    marks = tempfile.mkdtemp(prefix="rayplex-stall-")
    started, released = os.path.join(marks, "started"), os.path.join(marks, "released")

    def stall(self, started=started, released=released, limit_s=limit_s):
        open(started, "w").close()
        deadline = time.monotonic() + limit_s
        while not os.path.exists(released) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the release mark

    def release():
        open(released, "w").close()

    ref = hub.actor.__ray_call__.remote(stall)
    deadline = time.monotonic() + 60
    while not os.path.exists(started):
        assert time.monotonic() < deadline, "the hub did not start the stall"
        time.sleep(0.01)
    try:
        yield release
    finally:
        release()
        ray.get(ref, timeout=limit_s + 60)
