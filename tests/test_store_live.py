"""The live store feed with real Ray: every scalar the hub commits lands in ``logdir/store/``
exactly once while the experiment runs, across SIGKILLs of the feed; off with RAYPLEX_STORE=0
and without the ``[store]`` extra."""

from __future__ import annotations

import collections
import os
import random
import signal
import sys
import time

import pytest
import ray

import rayplex
from rayplex.config import reload_config
from rayplex.read import _scalar_rows, stored_scalars
from rayplex.store.feed import store_feed_name
from rayplex.store.follower import event_limits, store_available
from rayplex.store.format import Layout, Manifest
from tests.conftest import compaction_held_at, tb_scalars

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")


@ray.remote(num_cpus=0.1, max_retries=0)
@rayplex.logged("agent/{i}")
def _agent(i, steps, stop_file, logger=None):
    """Two tags a step (a repeated step every 97 steps, a step logged out of order every 50),
    a store_metrics summary every 25 steps; until ``steps`` or ``stop_file`` exists."""
    step = 0
    while step < steps and not (step % 20 == 0 and os.path.exists(stop_file)):
        logger.add_scalars({"loss": 1.0 / (step + 1), "reward": float(i * 100_000 + step)},
                           step=step)
        if step % 97 == 0:
            logger.add_scalar("loss", -1.0, step=step)  # the same step twice
        if step % 50 == 49:
            logger.add_scalar("late", float(step), step=step - 40)  # out of order
        logger.store_metrics(ret=float(step % 7 + i))
        if step % 25 == 0:
            logger.log_metrics_summary(step=step)
        time.sleep(0.004)  # paced: logging spans the kills without piling up points
        step += 1
    return step


def _feed():
    return ray.get_actor(store_feed_name("default"), namespace="rayplex")


def _feed_pid(deadline_s=300.0, other_than=None):
    """The feed's pid once it answers (a restarted one: a pid other than ``other_than``). Ray
    starts a new worker process for it: on a machine shared by many test sessions that took
    over a minute, hence the long deadline (it returns as soon as the feed answers)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            pid = ray.get(_feed().info.remote(), timeout=10)["pid"]
            if pid != other_than:
                return pid
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the store feed did not come back within {deadline_s} s")


def _event_points(logdir):
    """Every scalar of the event files, read back with TensorBoard's loader."""
    out = collections.Counter()
    for run, tags in tb_scalars(logdir).items():
        for tag, points in tags.items():
            out.update((run, tag, step, value) for step, value in points)
    return out


def _store_points(logdir):
    """Every point of the store's committed segments (read with pyarrow, segment by segment)."""
    import pyarrow.parquet as pq

    layout = Layout.of(logdir)
    out = collections.Counter()
    for segment in Manifest.load(layout).segments:
        table = pq.read_table(layout.store / segment.raw, columns=["run", "tag", "step", "value"])
        out.update(zip(*(table.column(c).to_pylist() for c in ("run", "tag", "step", "value")),
                       strict=True))
    return out


def _compare(logdir):
    events, stored = _event_points(logdir), _store_points(logdir)
    lost = sum((events - stored).values())
    duplicated = sum((stored - events).values())
    return sum(events.values()), lost, duplicated


@pytest.mark.slow
def test_sigkilled_feed_loses_and_duplicates_nothing(experiment, tmp_path, capsys):
    experiment.register_indexed_group("agent", 2)
    stop = str(tmp_path / "stop")
    workers = [_agent.remote(i, 8_000, stop) for i in range(3)]
    rng = random.Random(23)
    pid = _feed_pid()
    kills = 0
    for _ in range(6):
        time.sleep(rng.uniform(0.05, 1.0))  # a random point of the feed's round
        os.kill(pid, signal.SIGKILL)
        kills += 1
        pid = _feed_pid(other_than=pid)
    open(stop, "w").close()
    steps = ray.get(workers)
    rayplex.shutdown(experiment.name)  # drains the feed
    points, lost, duplicated = _compare(experiment.logdir)
    with capsys.disabled():
        print(f"\nstore kill test: kills={kills} points={points} lost={lost} "
              f"duplicated={duplicated} steps={steps}")
    assert kills == 6 and points > 3 * 2 * 50
    assert (lost, duplicated) == (0, 0)
    assert {run for run, *_ in _store_points(experiment.logdir)} >= {"agent/0", "agent/summary"}
    with stored_scalars(experiment.logdir) as tables:
        assert tables is not None  # current after shutdown: read_scalars answers from it
    rows = list(_scalar_rows(experiment.logdir, None, None, None))
    rows.sort(key=lambda r: (r.run, r.tag, r.step, r.wall_time))
    assert list(rayplex.read_scalars(experiment.logdir)) == rows


def test_store_is_fed_while_the_experiment_runs(experiment):
    log = rayplex.get_logger("learner/main")
    for step in range(2_000):
        log.add_scalar("loss", 1.0 / (step + 1), step=step)
    rayplex.flush()
    hub = rayplex.actors.get_hub(experiment.name)
    committed = event_limits(ray.get(hub.committed_sizes.remote()))
    layout = Layout.of(experiment.logdir)
    deadline = time.monotonic() + 60  # no shutdown: the feed catches up on its own
    while time.monotonic() < deadline:
        cursors = Manifest.load(layout).cursors if layout.manifest.exists() else {}
        if all(cursors.get(key, 0) >= size for key, size in committed.items()):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"store cursors {cursors} never reached {committed}")
    got = rayplex.sql(experiment.logdir, "SELECT count(*) AS n FROM scalars "
                                         "WHERE run = 'learner' AND tag = 'main/loss'")
    assert int(got["n"][0]) == 2_000
    info = ray.get(_feed().info.remote())
    assert info["points"] >= 2_000 and info["failures"] == 0


def _feed_running():
    return store_feed_name("default") in rayplex.actors.list_rayplex_actors()


def test_rayplex_store_0_turns_the_feed_off(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPLEX_STORE", "0")
    reload_config()
    try:
        hub = rayplex.init(str(tmp_path / "exp"))
        rayplex.get_logger("learner/main").add_scalar("x", 1.0, step=0)
        assert not _feed_running()
        rayplex.shutdown(hub.name)
    finally:
        monkeypatch.delenv("RAYPLEX_STORE")
        reload_config()
    assert not (tmp_path / "exp" / "store").exists()
    assert len(tb_scalars(str(tmp_path / "exp"))["learner"]["main/x"]) == 1


def test_no_feed_without_the_store_extra(ray_session, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb", None)  # as if not installed
    assert not store_available()
    hub = rayplex.init(str(tmp_path / "exp"))
    rayplex.get_logger("learner/main").add_scalar("x", 1.0, step=0)
    assert not _feed_running()
    rayplex.shutdown(hub.name)
    assert not (tmp_path / "exp" / "store").exists()
    assert len(tb_scalars(str(tmp_path / "exp"))["learner"]["main/x"]) == 1


def test_shutdown_stops_the_feed(ray_session, tmp_path):
    hub = rayplex.init(str(tmp_path / "exp"))
    assert _feed_pid() > 0
    rayplex.get_logger("learner/main").add_scalar("x", 2.0, step=3)
    rayplex.shutdown(hub.name)
    assert not _feed_running()
    assert _compare(str(tmp_path / "exp")) == (1, 0, 0)


def test_follower_reads_only_what_is_committed_as_a_plain_object(tmp_path):
    """StoreFollower without Ray: ``committed`` is a plain function over real event files."""
    from tensorboardX import SummaryWriter

    from rayplex.store.follower import StoreFollower

    logdir = tmp_path / "exp"
    with SummaryWriter(str(logdir / "tensorboard" / "learner")) as w:
        for step in range(10):
            w.add_scalar("main/loss", float(step), step)
    (path,) = (logdir / "tensorboard" / "learner").iterdir()
    key = f"tensorboard/learner/{path.name}"
    full = path.stat().st_size
    sizes = {key: full - 1}  # the hub has not committed the last record yet
    lines = []
    follower = StoreFollower(str(logdir), lambda: sizes, lambda level, text: lines.append(text))
    assert follower.round() is True
    assert follower.counters["points"] == 9  # the uncommitted record is not read
    assert follower.round() is False  # nothing new committed
    sizes[key] = full
    assert follower.drain(30) is True
    assert follower.counters["points"] == 10
    assert _store_points(str(logdir)) == _event_points(str(logdir))

    def broken():
        raise ConnectionError("hub restarting")

    follower.committed = broken
    follower._done = None
    assert follower.attempt() is None and follower.attempt() is None
    assert follower.counters["failures"] == 2 and len(lines) == 1  # said once
    follower.committed = lambda: sizes
    assert follower.attempt() is True and follower.counters["problem"] is None
    assert follower.attempt() is False and follower.counters["points"] == 10  # nothing twice


def test_a_feed_round_goes_on_while_a_compaction_is_held_midway(tmp_path, monkeypatch):
    """Plain objects, no Ray. A compaction held between writing its merged segment and
    committing it (an Event in the indexer's stage hook): a round of the feed indexes and
    commits new points meanwhile (readable at once, not waiting for the merge); then the
    compaction commits: every point once, no segment file left that the manifest does not list.
    The feed's rounds never compact; its compaction step (``StoreFollower.compact``) does."""
    import threading

    from tensorboardX import SummaryWriter

    from rayplex.config import COMPACT_MIN
    from rayplex.store.follower import StoreFollower
    from rayplex.store.format import SEGMENT_FILE

    logdir = tmp_path / "exp"
    runs = logdir / "tensorboard" / "learner"
    files = iter(range(100))

    def write(first: int, n: int = 50) -> None:
        with SummaryWriter(str(runs), filename_suffix=f".{next(files):03d}") as w:
            for step in range(first, first + n):
                w.add_scalar("main/loss", float(step), step)

    def committed() -> dict[str, int]:
        return {f"tensorboard/learner/{p.name}": p.stat().st_size for p in runs.iterdir()}

    follower = StoreFollower(str(logdir), committed)
    for k in range(COMPACT_MIN):
        write(50 * k)
        assert follower.round() is True
    layout = Layout.of(logdir)
    assert len(Manifest.load(layout).segments) == COMPACT_MIN  # the rounds did not compact

    indexing = threading.Thread(target=follower.round)
    try:
        with compaction_held_at(monkeypatch, logdir, "compact-written") as merged:
            write(10_000)
            indexing.start()
            indexing.join(timeout=60)  # a deadline, not a timing: a round held by the merge hangs
            assert not indexing.is_alive(), (
                "the feed's round waited for the compaction in progress")
            assert ("learner", "main/loss", 10_049, 10_049.0) in _store_points(str(logdir))
    finally:
        if indexing.ident:  # started: it ends once the merge is released
            indexing.join(timeout=120)
    assert merged == [COMPACT_MIN]
    assert _store_points(str(logdir)) == _event_points(str(logdir))  # none lost, none twice
    manifest = Manifest.load(layout)
    assert len(manifest.segments) == 2  # the merged one and the round's
    listed = {name for seg in manifest.segments for name in seg.files}
    assert {p.name for p in layout.store.iterdir() if SEGMENT_FILE.match(p.name)} == listed
    for k in range(COMPACT_MIN):  # the feed's own compaction step merges the rounds' segments
        write(20_000 + 50 * k)
        assert follower.round() is True
    assert follower.grown.is_set()  # what wakes the feed's compaction thread
    assert follower.compact() == COMPACT_MIN + 2  # with the merged one (still small) and the
    assert follower.counters["compacted"] == COMPACT_MIN + 2  # round's during the merge
    assert _store_points(str(logdir)) == _event_points(str(logdir))
