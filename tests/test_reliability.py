"""Faults: the hub and node buffers are killed mid-run; nothing is lost or duplicated."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest
import ray

import rayplex
from rayplex.actors import list_rayplex_actors
from rayplex.items import SCALAR_NBYTES
from rayplex.textlog import parse_line
from tests.conftest import event_files, stalled_hub, tb_events

MAX_STEPS = 200_000


@ray.remote(num_cpus=0.1, max_retries=0)
@rayplex.logged("agent/{i}")
def _steady(i, stop_file, logger=None):
    """Log until the test says stop (a file on this machine); return how many steps."""
    step = 0
    while step < MAX_STEPS and not (step % 50 == 0 and os.path.exists(stop_file)):
        logger.add_scalar("x", i * MAX_STEPS + step, step=step)
        if step % 100 == 0:
            logger.info("worker %d step %d", i, step)
        if step % 10 == 0:
            time.sleep(0.004)
        step += 1
    return step


def _wait_for_progress(hub, above, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            info = ray.get(hub.actor.info.remote(), timeout=10)
            if info["records_written"] > above:
                return info["records_written"]
        except ray.exceptions.RayError:
            pass
        time.sleep(0.05)
    raise AssertionError("the hub made no progress")


@pytest.mark.slow
def test_killing_the_hub_three_times_and_a_node_buffer_loses_and_duplicates_nothing(
        experiment, tmp_path):
    experiment.register_indexed_group("agent", 4)
    workers = 16
    stop_file = str(tmp_path / "stop")
    refs = [_steady.remote(i, stop_file) for i in range(workers)]
    _wait_for_progress(experiment, 0)
    for kill in range(4):  # the workers keep logging throughout: every kill hits live traffic
        if kill == 2:
            buffers = [n for n in list_rayplex_actors() if n.startswith("node:default:")]
            ray.kill(ray.get_actor(buffers[0], namespace="rayplex"), no_restart=False)
        else:
            ray.kill(experiment.actor, no_restart=False)
        _wait_for_progress(experiment, 0)  # counters restart with the hub: any progress
    open(stop_file, "w").close()
    steps = ray.get(refs, timeout=300)
    assert all(0 < n < MAX_STEPS for n in steps)
    rayplex.flush()

    seen = Counter()
    for run, event in tb_events(experiment.logdir):
        for value in event.summary.value:
            if value.tag.startswith("agent/x/"):
                seen[(run, event.step, round(float(value.tensor.float_val[0])))] += 1
    expected = {(f"agent/{i}", s, i * MAX_STEPS + s) for i in range(workers) for s in range(steps[i])}
    assert set(seen) == expected, f"missing {len(expected - set(seen))}, extra {len(set(seen) - expected)}"
    assert max(seen.values()) == 1, "duplicates"

    with open(os.path.join(experiment.logdir, "logs", "all.log")) as f:
        lines = Counter(p.message for p in map(parse_line, f) if p and p.client.startswith("agent/"))
    want = {f"worker {i} step {s}" for i in range(workers) for s in range(0, steps[i], 100)}
    assert set(lines) == want and max(lines.values()) == 1
    assert len(event_files(experiment.logdir)) > workers  # restarts opened new files


def test_a_restarted_hub_keeps_routing_and_deduplicating(experiment):
    experiment.register_indexed_group("agent", 4)
    log = rayplex.get_logger("agent/5")
    log.add_scalar("x", 1.0, step=0)
    log.flush()
    ray.kill(experiment.actor, no_restart=False)
    log.add_scalar("x", 2.0, step=1)
    log.flush()
    info = ray.get(experiment.actor.info.remote())
    assert info["logdir"] == experiment.logdir
    from tests.conftest import tb_scalars

    assert tb_scalars(experiment.logdir)["agent/5"]["agent/x/4-7"] == [(0, 1.0), (1, 2.0)]


BOUND = 600_000  # bytes: 2,000 scalars at SCALAR_NBYTES (300 B) each


def _logger_with_bound(client, policy):
    from rayplex.buffer import Buffer

    log = rayplex.get_logger(client)
    session = log._session
    old = session.buffer
    session.buffer = Buffer(BOUND, policy, "", 120.0, "test", wake=session._wake.set,
                            wake_bytes=BOUND // 4, fixed_nbytes=SCALAR_NBYTES)
    session._route_puts()  # Loggers put through their session, straight into its buffer
    assert not len(old)
    return log, session


def _held(session):
    counters = session.buffer.counters
    return counters["queued_bytes"] + counters["in_flight_bytes"]


@pytest.mark.parametrize("policy", ["spill", "block"])
def test_a_stalled_hub_keeps_the_worker_buffer_bounded_and_loses_nothing(experiment, policy):
    log, session = _logger_with_bound("learner/stall", policy)
    peak = 0
    with stalled_hub(experiment) as release:
        if policy == "block":  # the loop blocks on a full buffer: end the stall once it is
            def release_when_full():
                while _held(session) < BOUND - 2 * SCALAR_NBYTES:
                    time.sleep(0.01)  # polling the buffer
                release()

            threading.Thread(target=release_when_full, daemon=True).start()
        for step in range(20_000):
            log.add_scalar("x", float(step), step=step)
            peak = max(peak, _held(session))
    assert peak <= BOUND + SCALAR_NBYTES
    log.flush(timeout=120)
    from tests.conftest import tb_scalars

    points = tb_scalars(experiment.logdir)["learner"]["stall/x"]
    assert points == [(s, float(s)) for s in range(20_000)]
    if policy == "spill":
        stats = log.stats()
        assert stats["spilled"] > 0 and stats["replayed"] == stats["spilled"]
        assert stats["dropped"] == 0


def test_drop_oldest_drops_and_counts_instead_of_growing(experiment):
    log, session = _logger_with_bound("learner/drop", "drop_oldest")
    with stalled_hub(experiment):
        for step in range(20_000):
            log.add_scalar("x", float(step), step=step)
            assert _held(session) <= BOUND + SCALAR_NBYTES
    log.flush(timeout=120)
    stats = log.stats()
    from tests.conftest import tb_scalars

    written = len(tb_scalars(experiment.logdir)["learner"]["drop/x"])
    assert stats["dropped"] > 0 and written + stats["dropped"] == 20_000


def test_a_disk_error_at_the_hub_reaches_flush_and_the_data_is_kept(experiment):
    blocker = os.path.join(experiment.logdir, "tensorboard", "diskerr")
    with open(blocker, "w") as f:  # a file where the run directory must go: writes fail
        f.write("in the way")
    log = rayplex.get_logger("diskerr/0")
    log.add_scalar("x", 1.0, step=0)
    with pytest.raises(rayplex.HubWriteError, match="cannot write"):
        log.flush(timeout=30)
    os.unlink(blocker)  # the operator fixes the disk
    log.flush(timeout=60)
    from tests.conftest import tb_scalars

    assert tb_scalars(experiment.logdir)["diskerr"]["0/x"] == [(0, 1.0)]
    assert ray.get(experiment.actor.info.remote())["logdir"] == experiment.logdir


@ray.remote(max_retries=0)
@rayplex.logged("agent/{i}")
def _crash_after_flush(i, logger=None):
    logger.add_scalar("before", 1.0, step=0)
    logger.flush()
    logger.add_scalar("after", 2.0, step=0)  # never flushed: may be lost, nothing else is
    os._exit(1)


def test_a_worker_crash_keeps_what_it_flushed_and_others_are_unaffected(experiment):
    experiment.register_indexed_group("agent", 4)
    with pytest.raises(ray.exceptions.RayError):
        ray.get(_crash_after_flush.remote(1))
    ray.get(_steady_short.remote(2))
    from tests.conftest import tb_scalars

    scalars = tb_scalars(experiment.logdir)
    assert scalars["agent/1"]["agent/before/0-3"] == [(0, 1.0)]
    assert scalars["agent/2"]["agent/y/0-3"] == [(s, float(s)) for s in range(50)]


@ray.remote(max_retries=0)
@rayplex.logged("agent/{i}")
def _steady_short(i, logger=None):
    for s in range(50):
        logger.add_scalar("y", float(s), step=s)


_OTHER_DRIVER = """
import sys, ray, rayplex
ray.init(address=sys.argv[1], namespace="other-driver")
rayplex.init(sys.argv[2], name=sys.argv[3])
log = rayplex.get_logger("learner/first", hub=sys.argv[3])
log.add_scalar("x", 1.0, step=0)
log.flush()
# exits without rayplex.shutdown()
"""


def test_a_hub_outlives_its_driver_and_a_later_driver_can_shut_it_down(ray_session, tmp_path):
    import subprocess
    import sys

    name = "orphan"
    logdir = str(tmp_path / "orphan")
    address = ray.get_runtime_context().gcs_address
    subprocess.run([sys.executable, "-c", _OTHER_DRIVER, address, logdir, name], check=True,
                   timeout=120, capture_output=True)
    hubs = {h["name"]: h for h in rayplex.status()}
    assert hubs[name]["logdir"] == logdir and hubs[name]["clients"] >= 1
    log = rayplex.get_logger("learner/second", hub=name)
    log.add_scalar("x", 2.0, step=0)
    rayplex.shutdown(name=name)
    assert name not in {h["name"] for h in rayplex.status()}
    from tests.conftest import tb_scalars

    scalars = tb_scalars(logdir)["learner"]
    assert scalars["first/x"] == [(0, 1.0)] and scalars["second/x"] == [(0, 2.0)]
