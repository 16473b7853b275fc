"""One live hub per logdir (taken by the hub itself, atomically) and a logdir deleted or replaced
under a live hub (refused, reported, never acknowledged into deleted files)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import rayplex
from tests.conftest import tb_scalars

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(logdir: str, client: str) -> list[str]:
    path = os.path.join(logdir, "logs", *client.split("/")) + ".log"
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line for line in f.read().splitlines() if line.strip()]


# ------------------------------------------------- two drivers racing for one logdir
_RACER = textwrap.dedent("""
    import json, sys, time
    import ray, rayplex
    ray.init(address=sys.argv[1], namespace="racer", configure_logging=False)
    me = sys.argv[2]
    print(json.dumps({"ready": me}), flush=True)
    for line in sys.stdin:  # "go <trial> <logdir>": released by the test, both at once
        _, trial, logdir = line.split()
        name = f"race{trial}{me}"
        started = time.monotonic()
        try:
            hub = rayplex.init(logdir, name=name)
        except Exception as exc:
            print(json.dumps({"trial": trial, "name": name, "won": False,
                              "error": type(exc).__name__, "message": str(exc),
                              "seconds": time.monotonic() - started}), flush=True)
            continue
        log = rayplex.get_logger("learner/" + me, hub=name)
        for step in range(300):
            log.add_scalar("x", float(step), step=step)
            log.info("line %d", step)
        rayplex.flush(name)
        rayplex.shutdown(name=name)
        print(json.dumps({"trial": trial, "name": name, "won": True,
                          "seconds": time.monotonic() - started}), flush=True)
""")


def _read_json_line(proc: subprocess.Popen, deadline: float) -> dict:
    while True:
        assert time.monotonic() < deadline, "a racing driver did not answer"
        line = proc.stdout.readline()
        assert line, f"a racing driver ended: {proc.poll()}"
        if line.startswith("{"):
            return json.loads(line)


def test_two_drivers_racing_for_one_logdir_exactly_one_wins(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    drivers = [subprocess.Popen([sys.executable, "-c", _RACER, address, me], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=ROOT) for me in "ab"]
    trials = 10
    try:
        for proc in drivers:
            assert "ready" in _read_json_line(proc, time.monotonic() + 180)
        for trial in range(trials):
            logdir = str(tmp_path / f"t{trial}")
            for proc in drivers:  # the barrier: both are released back to back
                proc.stdin.write(f"go {trial} {logdir}\n")
            for proc in drivers:
                proc.stdin.flush()
            results = [_read_json_line(proc, time.monotonic() + 180) for proc in drivers]
            winners = [r for r in results if r["won"]]
            assert len(winners) == 1, results
            loser = next(r for r in results if not r["won"])
            assert loser["error"] == "LogdirConflictError", loser
            assert winners[0]["name"] in loser["message"] and loser["name"] in loser["message"]
            assert logdir in loser["message"]
            assert loser["seconds"] < 30, loser  # promptly, not a hang
            assert f"hub:{loser['name']}" not in rayplex.actors.list_rayplex_actors()
            who = winners[0]["name"][-1]
            scalars = tb_scalars(logdir)
            assert sorted(scalars) == ["learner"]
            assert scalars["learner"][f"{who}/x"] == [(s, float(s)) for s in range(300)]
            assert len(_lines(logdir, f"learner/{who}")) == 300
    finally:
        for proc in drivers:
            proc.stdin.close()
            proc.wait(timeout=120)


# ---------------------------------------------------- a logdir deleted under a live hub
def test_a_logdir_deleted_under_a_live_hub_is_refused_reported_and_kept_by_the_senders(
        ray_session, tmp_path):
    hub = rayplex.init(str(tmp_path / "exp"), name="deleted")
    try:
        log = rayplex.get_logger("learner/main", hub="deleted")
        for step in range(1000):
            log.add_scalar("x", float(step), step=step)
        log.flush()
        shutil.rmtree(hub.logdir)
        for step in range(1000, 1100):  # scalars only: no new directory to trip over
            log.add_scalar("x", float(step), step=step)
        with pytest.raises(rayplex.HubWriteError, match="deleted"):
            rayplex.flush("deleted", timeout=30)
        problem = next(h for h in rayplex.status() if h.get("name") == "deleted")["problem"]
        assert problem and hub.logdir in problem and "deleted" in problem
        stats = log.stats()
        assert stats["acked"] < stats["sent"]  # the batches after the deletion are not acked
        assert not os.path.exists(hub.logdir)  # nothing written into a recreated logdir
    finally:
        rayplex.shutdown(name="deleted", timeout=5)


# --------------------------------------------- the example server restarted after a crash
def test_the_example_server_restarted_under_a_live_hub_keeps_its_logdir(ray_session, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    root = home / "Temp" / "tensorplex"
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    env = {**os.environ, "HOME": str(home), "RAYPLEX_HUB": "tplex_restart",
           "RAY_AUTH_TOKEN_PATH": token, "PYTHONUNBUFFERED": "1",
           "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    # the first server's hub: its server crashed, the hub (detached) and a client carry on
    hub = rayplex.init(str(root), name="tplex_restart")
    client = rayplex.get_logger("learner/client", hub="tplex_restart")
    for step in range(500):
        client.add_scalar("x", float(step), step=step)
    client.flush()
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "examples", "tensorplex",
                                                            "run_server.py")],
                              env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        deadline = time.monotonic() + 180
        while not any("serving experiment" in line for line in out):
            assert time.monotonic() < deadline and server.poll() is None, "".join(out)
            out.append(server.stdout.readline())
        for step in range(500, 1000):
            client.add_scalar("x", float(step), step=step)
        client.flush()
        server.send_signal(signal.SIGINT)
        rest, _ = server.communicate(timeout=120)
        assert server.returncode == 0, "".join(out) + rest
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
        rayplex.shutdown(name="tplex_restart", timeout=5)
    assert tb_scalars(hub.logdir)["learner"]["client/x"] == [(s, float(s)) for s in range(1000)]
