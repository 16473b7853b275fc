"""Telemetry: the node buffers sample the processes that log through them and their node, and
the hub writes the figures as scalars (``sys/<name>`` in each worker's run, ``system/<node>``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from rayplex.event_bytes import file_version_record
from rayplex.groups import GroupRegistry, GroupSpec
from rayplex.telemetry import TelemetrySampler, telemetry_batch
from tests import conftest

PROCESS_METRICS = {"cpu_percent", "rss_bytes", "num_threads", "num_fds"}


def test_a_process_is_sampled_by_pid_and_a_gone_one_is_skipped(tmp_path: Any) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler = TelemetrySampler(disk_path=str(tmp_path))
        assert sampler.processes([os.getpid(), child.pid])[os.getpid()]["cpu_percent"] == 0.0
        busy_until = time.process_time() + 0.05
        while time.process_time() < busy_until:  # some CPU for our own figure
            pass
        got = sampler.processes([os.getpid(), child.pid])
        assert set(got) == {os.getpid(), child.pid}
        mine = got[os.getpid()]
        assert set(mine) == PROCESS_METRICS
        assert mine["rss_bytes"] > 10 * 2**20 and mine["num_threads"] >= 1
        assert mine["num_fds"] >= 3 and mine["cpu_percent"] > 0
        child.kill()
        child.wait()
        assert set(sampler.processes([os.getpid(), child.pid])) == {os.getpid()}
    finally:
        child.kill()
        child.wait()


def test_the_node_sample_has_cpu_memory_network_and_the_logdirs_free_disk(tmp_path: Any) -> None:
    node = TelemetrySampler(disk_path=str(tmp_path)).node()
    assert {"cpu_percent", "memory_percent", "memory_used_bytes", "net_sent_bytes",
            "net_recv_bytes", "disk_free_bytes"} <= set(node)
    assert 0 < node["memory_percent"] < 100
    assert node["disk_free_bytes"] == pytest.approx(os.statvfs(tmp_path).f_bavail
                                                    * os.statvfs(tmp_path).f_frsize, rel=0.05)
    assert "disk_free_bytes" not in TelemetrySampler().node()


def test_without_nvml_there_are_no_gpu_metrics_and_one_info_line(
        caplog: pytest.LogCaptureFixture) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        pytest.skip("this machine has an NVIDIA driver")
    except ImportError:
        pass
    except Exception:  # nvidia-ml-py without a driver: the case under test
        pass
    with caplog.at_level(logging.INFO, logger="rayplex.telemetry"):
        sampler = TelemetrySampler()
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "no GPU metrics" in caplog.records[0].getMessage()
    assert not any(k.startswith("gpu") for k in sampler.node())
    assert not any("gpu" in k for v in sampler.processes([os.getpid()]).values() for k in v)


def test_a_sample_is_routed_like_the_clients_own_records_and_reads_back_in_tensorboard(
        tmp_path: Any) -> None:
    registry = GroupRegistry().with_group(GroupSpec.indexed("agent", 4))
    batch = telemetry_batch(registry, {"agent/5": {"cpu_percent": 12.5, "rss_bytes": 1e9},
                                       "learner/main": {"num_threads": 7.0}},
                            "system/10.0.0.1-abcdef12", {"memory_percent": 40.0}, step=30,
                            wall_time=1.7e9, sender="telemetry:x", seq=4, experiment="e")
    assert (batch.sender, batch.seq, batch.registry_stamp) == ("telemetry:x", 4, registry.stamp)
    for chunk in batch.chunks:
        run_dir = tmp_path / "tensorboard" / chunk.run
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "events.out.tfevents.1.x").write_bytes(file_version_record(1.0)
                                                          + chunk.blob)
    scalars = conftest.tb_scalars(str(tmp_path))
    agent_route = registry.route("agent/5")
    learner_route = registry.route("learner/main")
    assert scalars[agent_route.run][agent_route.tag("sys/cpu_percent")] == [(30, 12.5)]
    assert scalars[agent_route.run][agent_route.tag("sys/rss_bytes")] == [(30, 1e9)]
    assert scalars[learner_route.run][learner_route.tag("sys/num_threads")] == [(30, 7.0)]
    assert scalars["system/10.0.0.1-abcdef12"]["memory_percent"] == [(30, 40.0)]


_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import ray, rayplex

    # the test's Ray: the hub and node buffer this driver starts take its job's environment
    ray.init(address=sys.argv[2], configure_logging=False,
             runtime_env={"env_vars": {"RAYPLEX_TELEMETRY_S": "0.5",
                                       "RAYPLEX_FLUSH_INTERVAL_S": "0.2"}})
    hub = rayplex.init(sys.argv[1], name="tele")
    hub.register_indexed_group("agent", 4)

    @ray.remote(num_cpus=0)
    class Worker:
        def run(self, i):
            import os
            log = rayplex.get_logger(f"agent/{i}", hub="tele")
            step = 0
            deadline = time.time() + 4.0
            while time.time() < deadline:
                log.add_scalar("x", float(step), step=step)
                log.flush()
                step += 1
                time.sleep(0.05)  # a worker's pace
            return os.getpid()

    workers = [Worker.remote() for _ in range(2)]
    pids = ray.get([w.run.remote(i) for i, w in enumerate(workers)])
    started = json.load(open(sys.argv[1] + "/.rayplex/started.json"))["started"]
    rayplex.shutdown(name="tele")
    print(json.dumps({"pids": pids, "started": started, "ended": time.time()}))
""")


@pytest.mark.slow
def test_workers_process_metrics_land_in_their_runs_and_the_node_in_system_run(
        ray_session: Any, tmp_path: Any) -> None:
    logdir = str(tmp_path / "exp")
    env = {**os.environ, "RAYPLEX_TELEMETRY_S": "0.5", "RAYPLEX_FLUSH_INTERVAL_S": "0.2"}
    address = ray_session.get_runtime_context().gcs_address  # a Ray of its own took ~10 s more
    out = subprocess.run([sys.executable, "-c", _SCRIPT, logdir, address], env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    scalars = conftest.tb_scalars(logdir)
    registry = GroupRegistry().with_group(GroupSpec.indexed("agent", 4))
    for i in range(2):
        route = registry.route(f"agent/{i}")
        points = scalars[route.run][route.tag("sys/rss_bytes")]
        assert len(points) >= 2, sorted(scalars[route.run])
        assert all(v > 10 * 2**20 for _, v in points)
        for name in PROCESS_METRICS:
            assert scalars[route.run][route.tag(f"sys/{name}")], name
        longest = report["ended"] - report["started"] + 1
        assert all(0 <= step <= longest for step, _ in points)
        steps = [s for s, _ in points]
        assert steps == sorted(steps)
    system = [run for run in scalars if run.startswith("system/")]
    assert len(system) == 1, system
    assert {"cpu_percent", "memory_percent", "disk_free_bytes"} <= set(scalars[system[0]])
    assert len(scalars[system[0]]["memory_percent"]) >= 2


def test_telemetry_is_off_at_zero(experiment: Any) -> None:
    import ray

    import rayplex
    from rayplex.actors import list_rayplex_actors

    assert os.environ["RAYPLEX_TELEMETRY_S"] == "0"  # conftest: the suite runs without it
    log = rayplex.get_logger("quiet/main", hub=experiment.name)
    log.add_scalar("x", 1.0, step=0)
    log.flush()
    names = [n for n in list_rayplex_actors() if n.startswith(f"node:{experiment.name}:")]
    info = ray.get(ray.get_actor(names[0], namespace="rayplex").info.remote())
    assert (info["telemetry_samples"], info["telemetry_dropped"]) == (0, 0)
    assert not os.path.isdir(os.path.join(experiment.logdir, "tensorboard", "system"))


def test_only_a_node_buffers_telemetry_batch_may_write_the_system_group(tmp_path: Any) -> None:
    from rayplex.actors.writer import HubWriter, Unwritable
    from rayplex.rules import TELEMETRY_SENDER

    writer = HubWriter(str(tmp_path / "w"), experiment="e")
    try:
        def batch(sender: str, client: str) -> Any:
            return telemetry_batch(GroupRegistry(), {}, client, {"cpu_percent": 1.0}, 0, 0.0,
                                   sender, 1, "e")

        writer.check(batch(f"{TELEMETRY_SENDER}abc", "system/n1"))
        with pytest.raises(Unwritable, match="reserved"):
            writer.check(batch("pid:42", "system/n1"))  # a worker's batch
        with pytest.raises(Unwritable, match="reserved"):
            writer.check(batch(f"{TELEMETRY_SENDER}abc", "hparams/n1"))  # only system
    finally:
        writer.close()
