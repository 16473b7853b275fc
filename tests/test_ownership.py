"""One live hub per logdir (taken by the hub itself, atomically) and a logdir deleted or replaced
under a live hub (refused, reported, never acknowledged into deleted files)."""

from __future__ import annotations

import json
import logging
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
            hub = None
        else:  # the winner keeps its hub until both answered: no turn-taking under load
            print(json.dumps({"trial": trial, "name": name, "won": True,
                              "seconds": time.monotonic() - started}), flush=True)
        sys.stdin.readline()  # "log": the winner logs into the logdir and shuts down
        if hub is not None:
            log = rayplex.get_logger("learner/" + me, hub=name)
            for step in range(300):
                log.add_scalar("x", float(step), step=step)
                log.info("line %d", step)
            rayplex.flush(name)
            rayplex.shutdown(name=name)
        print(json.dumps({"trial": trial, "done": True}), flush=True)
""")


def _read_json_line(proc: subprocess.Popen, deadline: float) -> dict:
    while True:
        assert time.monotonic() < deadline, "a racing driver did not answer"
        line = proc.stdout.readline()
        assert line, f"a racing driver ended: {proc.poll()}"
        if line.startswith("{"):
            return json.loads(line)


@pytest.mark.slow
def test_two_drivers_racing_for_one_logdir_exactly_one_wins(ray_session, tmp_path):
    from rayplex.actors import list_rayplex_actors  # not an attribute of rayplex until imported

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
            for proc in drivers:
                proc.stdin.write("log\n")
                proc.stdin.flush()
            for proc in drivers:
                assert _read_json_line(proc, time.monotonic() + 180)["done"]
            winners = [r for r in results if r["won"]]
            assert len(winners) == 1, results
            loser = next(r for r in results if not r["won"])
            assert loser["error"] == "LogdirConflictError", loser
            assert winners[0]["name"] in loser["message"] and loser["name"] in loser["message"]
            assert logdir in loser["message"]
            assert loser["seconds"] < 60, loser  # promptly, not a hang
            assert f"hub:{loser['name']}" not in list_rayplex_actors()
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
    import ray

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
        with pytest.raises(rayplex.HubWriteError, match="deleted"):  # what a driver that
            ray.get(hub.actor.flush.remote())  # logged nothing itself gets from rayplex.flush
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


# ------------------------------------------------------------- plain objects, no Ray
def _claim(logdir, name: str, identity: str = ""):
    from rayplex.actors.claim import LogdirClaim

    return LogdirClaim(str(logdir), os.path.join(str(logdir), ".rayplex"), name, identity)


def test_of_two_claims_on_one_logdir_one_wins_and_the_loser_names_both(tmp_path):
    from rayplex.actors.claim import TAKEOVER_WAIT_S, holder

    first = _claim(tmp_path, "first")
    first.take()
    second = _claim(tmp_path, "second")
    started = time.monotonic()
    with pytest.raises(rayplex.LogdirConflictError) as info:
        second.take()
    assert time.monotonic() - started < TAKEOVER_WAIT_S + 5
    message = str(info.value)
    assert "'first'" in message and "'second'" in message and str(tmp_path) in message
    assert holder(str(tmp_path))["name"] == "first"
    first.release()
    assert holder(str(tmp_path)) is None
    second.take()  # the owner is gone: taken over
    assert holder(str(tmp_path))["name"] == "second"
    second.release()


def test_a_hub_refused_a_logdir_never_touches_its_journal(tmp_path):
    from rayplex.actors.hub import Hub

    logdir = str(tmp_path / "exp")
    owner = Hub("owner", logdir)
    owner._stop.set()
    journal = os.stat(os.path.join(logdir, ".rayplex", "journal"))
    with pytest.raises(rayplex.LogdirConflictError, match="'owner'"):
        Hub("intruder", logdir)
    after = os.stat(os.path.join(logdir, ".rayplex", "journal"))
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        journal.st_ino, journal.st_size, journal.st_mtime_ns)
    owner.close()


def test_a_restarted_hub_waits_for_its_own_predecessor_s_lock(tmp_path, monkeypatch):
    from rayplex.actors import claim as claims

    script = textwrap.dedent(f"""
        import os, sys
        from rayplex.actors.claim import LogdirClaim
        c = LogdirClaim({str(tmp_path)!r}, {str(tmp_path / ".rayplex")!r}, "exp", "actor-1")
        c.take()
        print("held", flush=True)
        sys.stdin.read()  # held until the test closes stdin: then this process ends
    """)
    predecessor = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert predecessor.stdout.readline().strip() == "held"
    monkeypatch.setattr(claims, "TAKEOVER_WAIT_S", 0.0)  # another hub: refused at once
    with pytest.raises(rayplex.LogdirConflictError):
        _claim(tmp_path, "other", "actor-2").take()
    restarted = _claim(tmp_path, "exp", "actor-1")  # the same actor, restarted by Ray
    predecessor.stdin.close()  # its process ends (after take() below started waiting, or before)
    restarted.take()
    assert predecessor.wait(timeout=60) == 0
    assert claims.read_owner(str(tmp_path / ".rayplex"))["pid"] == os.getpid()
    restarted.release()


def test_the_lock_is_neither_inherited_by_exec_nor_kept_by_a_forked_child(tmp_path):
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        from rayplex.actors.claim import LogdirClaim
        c = LogdirClaim({str(tmp_path)!r}, {str(tmp_path / ".rayplex")!r}, "exp")
        c.take()
        fd = c._fd
        check = f"import os; os.fstat({{fd}})"
        exec_child = subprocess.run([sys.executable, "-c", check], close_fds=False,
                                    capture_output=True)
        assert exec_child.returncode != 0 and b"Bad file descriptor" in exec_child.stderr
        pid = os.fork()
        if pid == 0:
            try:
                os.fstat(fd)
            except OSError:
                os._exit(0)
            os._exit(1)
        assert os.waitpid(pid, 0)[1] == 0, "the forked child kept the lock's descriptor"
        os.fstat(fd)  # the parent still holds it
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def _plain_hub(logdir: str, name: str = "gone"):
    from rayplex.actors.hub import Hub

    hub = Hub(name, logdir)
    hub._stop.set()
    return hub


def _write(hub, seq: int, client: str = "learner/a"):
    from rayplex.encoder import Encoder
    from rayplex.items import Scalar
    from rayplex.records import NodeCall

    batch = Encoder(hub.registry).encode(
        [Scalar(client, "x", seq * 10 + i, 1.0, float(i)) for i in range(10)],
        f"w-{hub.name}", seq, hub.experiment)
    return hub.write_node(NodeCall("n", seq, [batch]))[0]


def test_a_plain_hub_refuses_everything_once_its_logdir_is_deleted(tmp_path, caplog):
    from rayplex.groups import GroupSpec

    logdir = str(tmp_path / "exp")
    hub = _plain_hub(logdir)
    assert _write(hub, 1).error is None
    shutil.rmtree(logdir)
    with caplog.at_level(logging.ERROR, logger="rayplex.hub"):
        ack = _write(hub, 2)
    assert ack.error and "deleted" in ack.error and logdir in ack.error
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"hub: {ack.error}"]  # once, in the hub's log (Ray shows it in the driver's terminal)
    assert hub.info()["problem"] == ack.error
    with pytest.raises(rayplex.HubWriteError, match="deleted"):
        hub.flush()
    assert hub.request("r1", "save_params", ("learner/a", {"lr": 1})) == (False,
                                                                        ("OSError", ack.error))
    with pytest.raises(rayplex.HubWriteError):
        hub.signal("learner/a", "stop")
    hub.register_group(GroupSpec.normal("eval"))
    hub._tick_once(time.monotonic(), 0.2)
    hub.close()
    assert not os.path.exists(logdir)  # nothing recreated, nothing written


def test_a_deletion_during_a_write_is_not_acknowledged(tmp_path, monkeypatch):
    logdir = str(tmp_path / "exp")
    hub = _plain_hub(logdir)
    real = hub.writer.write_batches

    def written_then_deleted(*args):
        offsets = real(*args)
        shutil.rmtree(logdir)
        return offsets

    monkeypatch.setattr(hub.writer, "write_batches", written_then_deleted)
    assert "deleted" in _write(hub, 1).error
    hub.close()


def test_a_replaced_logdir_is_never_written_by_the_old_hub(tmp_path):
    logdir, moved = str(tmp_path / "exp"), str(tmp_path / "moved")
    old = _plain_hub(logdir, "old")
    assert _write(old, 1, "learner/old").error is None
    os.rename(logdir, moved)
    os.makedirs(logdir)  # another directory in its place, taken by another hub
    new = _plain_hub(logdir, "new")
    assert "replaced" in _write(old, 2, "learner/old").error
    assert _write(new, 1, "learner/new").error is None
    assert list(tb_scalars(logdir)["learner"]) == ["new/x"]
    assert [s for s, _ in tb_scalars(moved)["learner"]["old/x"]] == list(range(10, 20))
    old.close()
    new.close()


def test_a_hub_restarted_by_ray_takes_its_logdir_back_and_still_refuses_others(
        ray_session, tmp_path):
    import ray

    from rayplex import actors
    from rayplex.handle import _hub_info

    hub = rayplex.init(str(tmp_path / "exp"), name="restarted")
    try:
        log = rayplex.get_logger("learner/main", hub="restarted")
        log.add_scalar("x", 0.0, step=0)
        log.flush()
        pid = hub.info()["pid"]
        ray.kill(hub.actor, no_restart=False)  # Ray restarts it: its lock went with its process
        log.add_scalar("x", 1.0, step=1)
        log.flush(timeout=120)
        assert hub.info()["pid"] != pid and hub.info()["problem"] is None
        assert tb_scalars(hub.logdir)["learner"]["main/x"] == [(0, 0.0), (1, 1.0)]
        node = ray.get_runtime_context().get_node_id()  # past the driver's check: the lock
        other = actors.get_or_create_hub("intruder", hub.logdir, node)
        with pytest.raises(rayplex.LogdirConflictError, match="'restarted'"):
            _hub_info(other)
        assert "hub:intruder" not in actors.list_rayplex_actors()
    finally:
        rayplex.shutdown(name="restarted", timeout=10)
