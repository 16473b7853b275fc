"""Watch rules with real Ray and real processes: a NaN is an alert by the time its flush returns
(and stops the worker that pings), a SIGSTOPped worker is silent, a SIGKILLed ``@logged`` task
is crashed, step lag and outliers name the one member of a 16-worker group, a hanging webhook
does not slow the hub's writes, and an alert survives a hub restart exactly once.

One hub for the module (each test its own group, each rule scoped to it); the restart test has
a hub of its own. Latencies measured here are printed (``-s``) for the closing note."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import ray

import rayplex
from rayplex import watch
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


def alerts_of(hub, group):
    return [a for a in rayplex.alerts(hub.logdir) if a.group == group]


def error_lines(hub, text):
    with open(os.path.join(hub.logdir, "logs", "all.log"), encoding="utf-8") as f:
        return [line for line in f if "ERROR" in line and text in line]


@ray.remote(num_cpus=0, max_retries=0)
def nan_then_ping(deadline_s: float) -> dict:
    log = rayplex.get_logger("nanwatch/0")
    for step in range(5):
        log.add_scalar("loss", 1.0 / (step + 1), step=step)
    log.add_scalar("loss", math.nan, step=5)
    log.flush()
    flushed = time.time()
    stop_deadline = time.monotonic() + deadline_s
    while time.monotonic() < stop_deadline:  # the worker's own loop: it ends on "stop"
        if "stop" in log.ping("running"):
            return {"flushed": flushed, "stopped": time.time(), "pid": os.getpid(),
                    "node": ray.get_runtime_context().get_node_id()}
        time.sleep(0.05)  # the training step this worker would take
    return {"flushed": flushed, "stopped": None}


def test_a_nan_is_an_alert_when_its_flush_returns_and_stops_the_worker(module_experiment):
    hub = module_experiment.watch(watch.nan("loss", group="nanwatch"), on_alert="stop")
    assert hub is module_experiment  # chainable
    out = ray.get(nan_then_ping.remote(30.0), timeout=120)
    (alert,) = wait_for(lambda: alerts_of(hub, "nanwatch"), 10, "the NaN alert")
    latency = alert.wall_time - out["flushed"]
    print(f"\nNaN alert: {latency:+.3f} s after the flush returned; the worker stopped "
          f"{out['stopped'] - out['flushed']:.2f} s after its flush")
    assert latency < 2.0
    assert (alert.rule, alert.client, alert.step, alert.node) == (
        "nan(loss, group=nanwatch)", "nanwatch/0", 5, out["node"])
    assert math.isnan(alert.value) and alert.pid in (None, out["pid"])
    assert out["stopped"] is not None  # its ping got "stop", handed out once
    assert len(error_lines(hub, "nanwatch/0")) == 1


@ray.remote(num_cpus=0)
class Pinger:
    def __init__(self, client: str) -> None:
        self.log = rayplex.get_logger(client)
        self.log.add_scalar("x", 1.0, step=1)
        self.log.flush()
        self.log.ping("running", interval=0.3)  # a heartbeat while it lives

    def where(self) -> tuple[int, str]:
        return os.getpid(), ray.get_runtime_context().get_node_id()


def test_a_stopped_worker_is_silent_naming_its_pid_and_node(module_experiment):
    seconds = 2.0
    module_experiment.watch(watch.silent(seconds, group="quiet"))
    pinger = Pinger.remote("quiet/0")
    pid, node = ray.get(pinger.where.remote(), timeout=60)
    # alive and pinging: no alert for well past `seconds`
    wait_for(lambda: ray.get(module_experiment.actor.client_states.remote()).get(
        "quiet/0") == "running", 10, "the client known as running")
    os.kill(pid, signal.SIGSTOP)
    stopped = time.time()
    try:
        (alert,) = wait_for(lambda: alerts_of(module_experiment, "quiet"), seconds + 5 + 5,
                            "the silent alert")
    finally:
        os.kill(pid, signal.SIGCONT)
        ray.kill(pinger)
    print(f"\nsilent({seconds:g}): alert {alert.wall_time - stopped:.2f} s after SIGSTOP")
    assert alert.wall_time - stopped <= seconds + 5
    assert (alert.client, alert.pid, alert.node) == ("quiet/0", pid, node)
    assert alert.wall_time - stopped >= seconds - 0.5  # not before it was silent for `seconds`


@ray.remote(num_cpus=0, max_retries=0)
@rayplex.logged("crash/{i}")
def doomed(i: int, pid_file: str, logger=None) -> None:
    logger.add_scalar("loss", 0.5, step=1)
    logger.flush()
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(600)  # killed by the test long before


def test_a_killed_logged_task_is_crashed_within_10_s(module_experiment, tmp_path):
    module_experiment.watch(watch.crashed(group="crash"))
    pid_file = str(tmp_path / "pid")
    ref = doomed.remote(0, pid_file)
    pid = int(wait_for(lambda: os.path.exists(pid_file) and Path(pid_file).read_text(), 60,
                       "the task's pid"))
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    (alert,) = wait_for(lambda: alerts_of(module_experiment, "crash"), 15, "the crashed alert")
    print(f"\ncrashed: alert {alert.wall_time - killed:.2f} s after SIGKILL")
    assert alert.wall_time - killed <= 10
    assert (alert.client, alert.pid, alert.rule) == ("crash/0", pid, "crashed(group=crash)")
    with pytest.raises(ray.exceptions.RayError):
        ray.get(ref, timeout=60)


@ray.remote(num_cpus=1)  # two at a time in Ray's reused worker processes: few to start
@rayplex.logged("lag/{i}")
def paced(i: int, iterations: int, logger=None) -> int:
    """One worker of the group: worker 11 advances one step every third iteration (a third
    of the others' rate); worker 4's loss is far from the others'."""
    step = 0
    for it in range(iterations):
        if i != 11 or it % 3 == 0:
            step += 1
            logger.add_scalar("loss", (100.0 if i == 4 else 1.0 + 0.01 * (i % 5)), step=step)
    logger.flush()
    return step


def test_step_lag_and_outlier_name_one_member_of_16_and_no_other(module_experiment):
    hub = module_experiment.register_indexed_group("lag", 4)
    steps = ray.get([paced.remote(i, 300) for i in range(16)], timeout=300)
    assert steps[11] == 100 and set(steps[:11] + steps[12:]) == {300}
    # declared once every worker's steps are in: decided by the step numbers, not by timing
    declared = time.time()
    hub.watch(watch.step_lag("lag", 50)).watch(watch.outlier("loss", group="lag"))
    found = wait_for(lambda: len(alerts_of(hub, "lag")) >= 2 and alerts_of(hub, "lag"), 10,
                     "the step-lag and outlier alerts")
    print(f"\nstep_lag/outlier: alerts {max(a.wall_time for a in found) - declared:.2f} s after "
          "the rules were declared")
    assert sorted((a.rule, a.client, a.step, a.median) for a in found if a.rule.startswith("step")
                  ) == [("step_lag(lag, 50)", "lag/11", 100, 300.0)]
    (far,) = [a for a in found if a.rule.startswith("outlier")]
    assert (far.client, far.value) == ("lag/4", 100.0)
    assert far.median == pytest.approx(1.02)
    assert len(found) == 2


@ray.remote(num_cpus=0)
def burst(client: str, rounds: int, per_round: int) -> float:
    """Alternate finite and NaN rounds (a new alert every other flush); seconds taken."""
    log = rayplex.get_logger(client)
    started = time.perf_counter()
    for r in range(rounds):
        for s in range(per_round):
            step = r * per_round + s
            log.add_scalar("loss", math.nan if (r % 2 and s == per_round - 1) else 1.0, step=step)
        log.flush()
    return time.perf_counter() - started


def test_a_hanging_webhook_does_not_slow_the_hubs_writes(module_experiment):
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(100)  # connections wait in the backlog: every POST hangs until its timeout
    url = f"http://127.0.0.1:{hang.getsockname()[1]}/hook"
    try:
        module_experiment.watch(watch.nan("loss", group="hookfree"))
        module_experiment.watch(watch.nan("loss", group="hooked"), notify=watch.webhook(url))
        free = ray.get(burst.remote("hookfree/0", 20, 500), timeout=120)
        hooked = ray.get(burst.remote("hooked/0", 20, 500), timeout=120)
        print(f"\n20 flushes x 500 scalars, 10 alerts: {free:.2f} s without a webhook, "
              f"{hooked:.2f} s with a hanging one")
        assert len(alerts_of(module_experiment, "hooked")) == 10
        assert hooked < 2 * free + 1.0
    finally:
        hang.close()


def test_alerts_and_rules_survive_a_hub_restart_exactly_once(ray_session, tmp_path):
    hub = rayplex.init(str(tmp_path / "exp"), name="watchrestart")
    try:
        hub.watch(watch.nan("loss"))
        log = rayplex.get_logger("agent/1", hub="watchrestart")
        log.add_scalar("loss", math.nan, step=1)
        log.flush()
        assert len(rayplex.alerts(hub.logdir)) == 1
        ray.kill(hub.actor, no_restart=False)  # Ray restarts it; the rules are read back
        log.add_scalar("loss", 1.0, step=2)
        log.flush()
        assert "nan(loss)" in ray.get(hub.actor.info.remote())["watch"]["rules"]
        log.add_scalar("loss", math.inf, step=3)  # a new episode after the restart
        log.flush()
        lines = Path(hub.logdir, "alerts.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["step"] for line in lines] == [1, 3]
        assert len(set(lines)) == len(lines)
    finally:
        rayplex.shutdown("watchrestart")
