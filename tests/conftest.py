"""Shared fixtures: one real local Ray for the whole session, a fresh experiment per test,
and readers that go through TensorBoard's own event loader (never through rayplex's)."""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pathlib
import re
import tempfile
import threading
import time
from collections import defaultdict

import pytest

# The suite's timing tunables, rayplex's and Ray's, set before any Ray starts: the raylets, hence
# every actor, and the Python subprocesses the tests start inherit them. Shorter than the
# defaults, never changing what a test asserts.
TEST_TIMING = {
    "RAYPLEX_FLUSH_INTERVAL_S": "0.2",
    # Senders retry at most 1 s apart (default 5 s), so they resume within a second of a killed
    # hub's or node buffer's return; the hub's summary hold and silence bound stay what the 5 s
    # default gives (5 s + two flush intervals; 15 s): with the hold derived from a 1 s back-off
    # (1.4 s), the soak test on a loaded machine saw resends arrive after it and steps
    # summarised twice.
    "RAYPLEX_RETRY_MAX_BACKOFF_S": "1",
    "RAYPLEX_SUMMARY_HOLD_S": "5.4",
    "RAYPLEX_SUMMARY_SILENT_S": "15",
    # Ray Train's controller looks at its workers every 2 s by default (a round's reports, a
    # failed or finished worker group): a Train run's start, restart and end each waited for it.
    # A poll that gets no answer in time is only marked missed (failed after 10 min).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
for _name, _value in TEST_TIMING.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Every Ray worker (a hub, a node buffer, the store feed, a task's worker) and every Python
# subprocess of the suite imports rayplex anew: with PYTHONDONTWRITEBYTECODE set (as on the CI
# machine) each compiled its modules from source again, about 0.3 s of CPU a process. Bytecode
# goes to __pycache__ (ignored by git) and is compiled once.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# Telemetry (a sample every 10 s by default) would add sys/ tags and system/<node> runs to any
# test that outlives one period; tests/test_telemetry.py turns it on for itself.
os.environ.setdefault("RAYPLEX_TELEMETRY_S", "0")


# ------------------------------------------------------------------ pytest-xdist (``-n 2``)
# ``.ci/run`` spreads the tests over two processes, each with a Ray of its own (``ray_session``).
# A test file whose tests share a module-scoped fixture (its one hub, a logdir built once) goes
# whole to one worker, so it is set up once; every other test goes alone to whichever worker is
# free. The files' text says which is which (the controller does not collect the tests);
# tests/test_ci_setup.py checks that against the fixtures the tests really use.
_MODULE_STATE = re.compile(
    r"""scope=["'](module|class|package)["']|shared_experiment|module_experiment""")


def shares_module_state(item: pytest.Item) -> bool:
    """Whether ``item`` uses a fixture set up once per module (or class, or package)."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        fixturedef.scope in ("module", "class", "package")
        for fixturedefs in info.name2fixturedefs.values() for fixturedef in fixturedefs)


@functools.cache
def file_shares_module_state(path: str) -> bool:
    """Whether the test file at ``path`` defines or imports a module-scoped fixture."""
    return bool(_MODULE_STATE.search(pathlib.Path(path).read_text(encoding="utf-8")))


def xdist_scope(rootpath: str, nodeid: str) -> str:
    """The unit of work xdist hands to one worker: the file, or the test alone."""
    path = nodeid.split("::", 1)[0]
    return path if file_shares_module_state(os.path.join(rootpath, path)) else nodeid


def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (xdist's default ``--dist load``) schedules by ``xdist_scope``, the units in
    collection order, in which ``pytest_collection_modifyitems`` put the slow tests first, then
    the files that go whole to one worker, then the tests that go alone (the longest units
    first, so that no long one starts last while the other worker has nothing left); any other
    ``--dist`` is xdist's own."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(str(config.rootpath), nodeid)

    config.option.loadscopereorder = False
    return Scheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike: same collection
        items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                     not file_shares_module_state(str(item.path))))


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # A job runtime_env (the timing tunables, which the workers also inherit from the raylet)
    # keeps the workers Ray starts ahead from hosting the session's first actors: a few seconds
    # slower per session. Without it, the earlier start made the killed-W&B-forwarder test fail
    # 1 run in 3 (README: the W&B forwarder's known gap), so it stays until that gap is fixed.
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {name: os.environ[name] for name in TEST_TIMING}})
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


def wait_for(condition, timeout, what, interval=0.05):
    """Poll ``condition`` until it returns something truthy and return that; fail naming
    ``what`` (and the last value seen) if it has not after ``timeout`` seconds. The one
    deadline loop of the tests: waiting on a condition, never a bare ``time.sleep``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {value!r}")
        time.sleep(interval)  # polling the condition


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
    wait_for(lambda: os.path.exists(started), 60, "the hub to start the stall", interval=0.01)
    try:
        yield release
    finally:
        release()
        ray.get(ref, timeout=limit_s + 60)


def count_decoded(monkeypatch) -> list[tuple[str, int]]:
    """``(key, rows)`` per segment file read: the rows of the row groups a query decodes
    (``key`` "bucket" for pyramid files, "step" for raw ones)."""
    from rayplex.store import query

    decoded: list[tuple[str, int]] = []
    real = query._row_groups

    def counting(meta, filters):
        groups = real(meta, filters)
        decoded.append((filters.key, sum(meta.row_group(g).num_rows for g in groups)))
        return groups

    monkeypatch.setattr(query, "_row_groups", counting)
    return decoded


@contextlib.contextmanager
def compaction_held_at(monkeypatch, logdir, stage):
    """``rayplex.store.compact(logdir)`` in a thread, held at the indexer's ``stage`` (an Event
    in its stage hook) until the block ends; yields the list its result is appended to."""
    import rayplex.store
    import rayplex.store.indexer as indexer

    held, release, merged = threading.Event(), threading.Event(), []
    real = indexer._stage

    def hook(name):
        if name == stage and threading.current_thread() is compaction:
            held.set()
            release.wait(timeout=120)
        real(name)

    monkeypatch.setattr(indexer, "_stage", hook)
    compaction = threading.Thread(target=lambda: merged.append(rayplex.store.compact(logdir)))
    compaction.start()
    try:
        assert held.wait(timeout=120), f"the compaction never reached {stage}"
        yield merged
    finally:
        release.set()
        compaction.join(timeout=120)
