"""Lifecycle and exactly-once promises of the README's "Guarantees", on a real local Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import rayplex
from tests.conftest import returns_within, tb_scalars, wait_for


@pytest.fixture(autouse=True)
def _no_hub_left_behind(ray_session):
    """A failing test must not leave its hub running for the next one."""
    yield
    rayplex.shutdown(all=True)


def _steps(logdir, run, tag):
    return [s for s, _ in tb_scalars(logdir)[run][tag]]


# ------------------------------------------------------------------ 1. pending log() rows
@pytest.mark.parametrize("how", ["logger_flush", "rayplex_flush", "shutdown"])
def test_the_pending_log_row_is_written_by_every_flush_path(ray_session, tmp_path, how):
    hub = rayplex.init(str(tmp_path / "exp"))
    log = rayplex.get_logger("learner/rows")
    log.log(step=10, loss=0.3)
    log.log({"loss": 0.2}, step=11)
    if how == "logger_flush":
        log.flush()
    elif how == "rayplex_flush":
        rayplex.flush()
    rayplex.shutdown() if how == "shutdown" else rayplex.shutdown(hub.name)
    assert _steps(hub.logdir, "learner", "rows/loss") == [10, 11]


def test_the_pending_log_row_is_written_at_process_exit(ray_session, tmp_path):
    hub = rayplex.init(str(tmp_path / "exp"))
    address = ray_session.get_runtime_context().gcs_address
    script = textwrap.dedent(f"""
        import ray, rayplex
        ray.init(address={address!r}, namespace="t", configure_logging=False)
        log = rayplex.get_logger("learner/exit")
        log.log(step=1, loss=1.0)
        log.log(step=2, loss=2.0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    rayplex.flush(hub.name)
    assert _steps(hub.logdir, "learner", "exit/loss") == [1, 2]
    rayplex.shutdown(hub.name)



# --------------------------------------------------------- 2. a Logger kept across shutdown
def test_a_logger_kept_across_shutdown_raises_and_a_fresh_one_works(ray_session, tmp_path):
    rayplex.init(str(tmp_path / "a"))
    old = rayplex.get_logger("learner/main")
    old.add_scalar("x", 1.0, step=0)
    rayplex.shutdown()
    hub = rayplex.init(str(tmp_path / "b"))
    with pytest.raises(rayplex.RayplexError, match="shut down"):
        old.add_scalar("x", 2.0, step=1)
    with pytest.raises(rayplex.RayplexError, match="shut down"):
        old.flush()
    new = rayplex.get_logger("learner/main")
    assert new is not old
    new.add_scalar("x", 3.0, step=2)
    new.flush()
    assert _steps(hub.logdir, "learner", "main/x") == [2]
    assert _steps(str(tmp_path / "a"), "learner", "main/x") == [0]
    rayplex.shutdown()


# ------------------------------------------------------ 3. shutdown stops only what we used
def test_shutdown_without_a_name_stops_only_this_process_s_experiments(ray_session, tmp_path):
    import ray

    @ray.remote
    def start_other(path):
        import rayplex as rp
        rp.init(path, name="others")
        return True

    ray.get(start_other.remote(str(tmp_path / "others")))
    rayplex.init(str(tmp_path / "mine"), name="mine")
    rayplex.shutdown()
    names = [h["name"] for h in rayplex.status()]
    assert "others" in names and "mine" not in names
    rayplex.shutdown(all=True)
    assert [h["name"] for h in rayplex.status()] == []


# -------------------------------------- 4. records never go into another experiment's logdir
def test_a_task_still_logging_after_shutdown_never_writes_into_the_next_experiment(
        ray_session, tmp_path):
    import ray

    @ray.remote
    class Worker:
        def __init__(self):
            self.log = rayplex.get_logger("learner/late")

        def log_one(self, step):
            try:
                self.log.add_scalar("x", float(step), step=step)
                self.log.flush(timeout=20)
                return "ok"
            except rayplex.RayplexError as exc:
                return f"error: {exc}"

        def stats(self):
            return self.log.stats()

    rayplex.init(str(tmp_path / "first"))
    worker = Worker.remote()
    assert ray.get(worker.log_one.remote(0)) == "ok"
    rayplex.shutdown()
    second = rayplex.init(str(tmp_path / "second"))
    answer = ray.get(worker.log_one.remote(1))
    assert answer.startswith("error")
    assert "shut down" in answer
    rayplex.flush()
    assert "learner" not in tb_scalars(second.logdir)
    assert _steps(str(tmp_path / "first"), "learner", "late/x") == [0]
    rayplex.shutdown()
    ray.kill(worker)


def test_shutdown_flushes_senders_in_other_processes(ray_session, tmp_path):
    import ray

    hub = rayplex.init(str(tmp_path / "exp"))

    @ray.remote
    class Busy:
        def __init__(self):
            self.log = rayplex.get_logger("learner/busy")

        def log_many(self, n):
            for i in range(n):
                self.log.add_scalar("x", float(i), step=i)
            return n  # no flush: shutdown must reach this process's buffer

    busy = Busy.remote()
    assert ray.get(busy.log_many.remote(500)) == 500
    rayplex.shutdown()
    assert _steps(hub.logdir, "learner", "busy/x") == list(range(500))
    ray.kill(busy)


# ----------------------------------------------- 5. busy @logged actors are flushed together
def test_flush_with_busy_actors_returns_within_its_bound_and_delivers(ray_session, tmp_path):
    import ray

    hub = rayplex.init(str(tmp_path / "exp"))

    @ray.remote(max_concurrency=2)
    @rayplex.logged("eval/{i}")
    class Busy:
        def __init__(self, i, logger=None):
            import threading

            self.logger = logger
            self.logged = threading.Event()

        def log_then_block(self, seconds):
            self.logger.add_scalar("x", 1.0, step=0)
            self.logged.set()
            time.sleep(seconds)  # the actor stays busy, as a long training step would
            return True

        def wait_logged(self):
            return self.logged.wait(60)

    actors = [Busy.remote(i) for i in range(3)]
    refs = [a.log_then_block.remote(30) for a in actors]
    assert all(ray.get([a.wait_logged.remote() for a in actors], timeout=90))
    start = time.monotonic()
    rayplex.flush(timeout=5)
    assert time.monotonic() - start < 10
    assert sorted(tb_scalars(hub.logdir)["eval"]) == ["0/x", "1/x", "2/x"]
    for a in actors:
        ray.kill(a)
    del refs
    rayplex.shutdown()


# --------------------------------------------------- 6. a stalled hub never blocks get_logger
def test_get_logger_and_a_logged_task_start_quickly_while_the_hub_is_stopped(
        ray_session, tmp_path):
    import ray

    hub = rayplex.init(str(tmp_path / "exp"))
    pid = hub.info()["pid"]

    @ray.remote
    @rayplex.logged("learner/t{i}")
    def started(i, logger=None):
        return time.time()

    os.kill(pid, signal.SIGSTOP)
    try:
        # The hub stays stopped until both have returned: waiting on it would never end, so
        # "returns at all" is the test, with bounds far above a slow machine's start-up.
        log = returns_within(60, lambda: rayplex.get_logger("learner/stalled"))
        log.add_scalar("x", 1.0, step=0)
        ray.get(started.remote(1), timeout=120)  # the task ran (and returned) meanwhile
        assert _hub_is_stopped(pid)
    finally:
        os.kill(pid, signal.SIGCONT)
    rayplex.flush()
    assert _steps(hub.logdir, "learner", "stalled/x") == [0]
    rayplex.shutdown()


def _hub_is_stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


# --------------------------------------------------- 7. one live hub per logdir
def test_a_second_hub_name_on_a_live_hub_s_logdir_is_refused(ray_session, tmp_path):
    path = tmp_path / "exp"
    rayplex.init(str(path), name="owner")
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(rayplex.LogdirConflictError, match="owner"):
        rayplex.init(str(link), name="intruder")
    rayplex.shutdown(name="owner")
    second = rayplex.init(str(path), name="intruder")  # the owner is gone: taken over
    owner = json.loads((path / ".rayplex" / "owner.json").read_text())
    assert owner["name"] == "intruder"
    second.shutdown()


# --------------------------------------------------- 8. bad init arguments fail in the driver
def test_init_on_a_file_names_the_path(ray_session, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ValueError, match="afile"):
        rayplex.init(str(f))


def test_init_with_a_bogus_log_level_names_the_option(ray_session, tmp_path):
    with pytest.raises(ValueError, match="bogus"):
        rayplex.init(str(tmp_path / "exp"), log_level="bogus")
    assert not any(h.get("logdir", "").startswith(str(tmp_path)) for h in rayplex.status())
    assert not (tmp_path / "exp").exists()


# ------------------------------------------------- 5. flush names the senders it could not reach
def test_flush_names_a_sender_that_cannot_answer_and_returns_within_its_bound(
        ray_session, tmp_path, caplog):
    import ray

    hub = rayplex.init(str(tmp_path / "exp"))

    @ray.remote
    class Frozen:
        def __init__(self):
            self.log = rayplex.get_logger("learner/frozen")

        def pid(self):
            self.log.add_scalar("x", 1.0, step=0)
            return os.getpid()

    frozen = Frozen.remote()
    pid = ray.get(frozen.pid.remote())
    rayplex.flush()
    os.kill(pid, signal.SIGSTOP)  # alive, but its flush thread cannot answer
    try:
        start = time.monotonic()
        with caplog.at_level("WARNING", logger="rayplex"):
            rayplex.flush(timeout=2)
        assert time.monotonic() - start < 2 + 5
        assert f"pid:{pid}" in caplog.text
    finally:
        os.kill(pid, signal.SIGCONT)
    ray.kill(frozen)
    rayplex.shutdown(hub.name)


# ------------------------------------------------------------ 14. the node buffer's own bound
@pytest.mark.slow
def test_a_node_buffer_holds_at_most_its_bound_while_the_hub_is_stalled(ray_session, tmp_path):
    import ray

    hub = rayplex.init(str(tmp_path / "exp"))
    script = textwrap.dedent(f"""
        import os, ray, rayplex
        os.environ["RAYPLEX_NODE_BUFFER_MB"] = "1"
        ray.init(address={ray_session.get_runtime_context().gcs_address!r}, namespace="t",
                 configure_logging=False, runtime_env={{"env_vars": {{"RAYPLEX_NODE_BUFFER_MB": "1"}}}})

        @ray.remote
        def work(i):
            log = rayplex.get_logger(f"learner/w{{i}}")
            for step in range(400):
                log.add_text("t", "x" * 4000, step=step)
            log.flush(timeout=120)
            return 400

        print(sum(ray.get([work.remote(i) for i in range(4)])))
    """)
    stall = hub.actor.__ray_call__.remote(lambda self: time.sleep(4))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True)
    ray.get(stall)
    assert out.stdout.strip().endswith("1600")
    (nb,) = [ray.get_actor(n, namespace="rayplex") for n in
             [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
              if a["name"].startswith("node:default:")]]
    info = ray.get(nb.info.remote())
    assert info["max_bytes"] == 2**20
    assert info["peak_bytes"] <= info["max_bytes"] + 4 * (400 * 4300)  # + one batch per sender
    rayplex.shutdown()


# ------------------- issue 21.3: an experiment shut down from another driver ends every session
_OTHER_DRIVER = """
import json, logging, os, sys, time
import ray, rayplex

address, name, ready, report, leave = sys.argv[1:6]
ray.init(address=address, namespace="t", configure_logging=False)
warnings = []

class Capture(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())

logging.getLogger("rayplex").addHandler(Capture())
log = rayplex.get_logger("learner/other", hub=name)
logged, raised_at, error = 0, None, None
open(ready, "w").close()
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        log.add_scalar("x", float(logged), step=logged)
    except rayplex.RayplexError as exc:
        raised_at, error = time.time(), str(exc)
        break
    logged += 1
    time.sleep(0.001)  # a steady training loop's pace, not synchronisation
start = time.monotonic()
try:
    log.flush(timeout=20)
    flush_error = None
except Exception as exc:
    flush_error = f"{type(exc).__name__}: {exc}"
flush_s = time.monotonic() - start
with open(report + ".tmp", "w") as f:
    json.dump({"logged": logged, "raised_at": raised_at, "error": error, "flush_s": flush_s,
               "flush_error": flush_error, "stats": log.stats(), "warnings": warnings}, f)
os.rename(report + ".tmp", report)
deadline = time.monotonic() + 120
while not os.path.exists(leave) and time.monotonic() < deadline:  # stay alive: a stale sender
    time.sleep(0.05)
"""


def _wait_for_file(path, seconds, proc=None):
    def there():
        if os.path.exists(path):
            return True
        assert proc is None or proc.poll() is None, proc.communicate()
        return False

    wait_for(there, seconds, f"{path} to appear", interval=0.02)


def test_a_shutdown_from_another_driver_ends_this_driver_s_loggers_within_the_bound(
        ray_session, tmp_path):
    from rayplex.config import config

    hub = rayplex.init(str(tmp_path / "first"), name="shared")
    marks = {k: str(tmp_path / k) for k in ("ready", "report", "leave")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _OTHER_DRIVER, ray_session.get_runtime_context().gcs_address,
         hub.name, marks["ready"], marks["report"], marks["leave"]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_file(marks["ready"], 120, proc)
        rayplex.flush(hub.name)  # the other driver's first records are on disk
        assert _steps(hub.logdir, "learner", "other/x")
        rayplex.shutdown(hub.name)
        shut_down_at = time.time()
        _wait_for_file(marks["report"], 120, proc)
        with open(marks["report"], encoding="utf-8") as f:
            report = json.load(f)
        print({k: v for k, v in report.items() if k != "stats"}, report["stats"]["dropped"])
        assert report["raised_at"] is not None, report
        assert "shut down" in report["error"]
        assert report["raised_at"] - shut_down_at <= config().flush_interval_s + 5
        assert report["flush_error"].startswith("ExperimentClosedError") and report["flush_s"] < 5
        on_disk = len(_steps(hub.logdir, "learner", "other/x"))
        # every record is on disk or counted as dropped (a batch the hub wrote just before the
        # kill whose answer was lost is counted too: never silent, at most one batch twice)
        assert on_disk + report["stats"]["dropped"] >= report["logged"]
        assert report["stats"]["dropped"] <= report["logged"] - on_disk + 2_000
        assert len(report["warnings"]) == 1, report["warnings"]
        assert str(report["stats"]["dropped"]) in report["warnings"][0]

        # the next experiment of that name is not slowed by the stale sender still alive there
        nxt = rayplex.init(str(tmp_path / "next"), name="shared")
        rayplex.get_logger("learner/next", hub="shared").add_scalar("x", 1.0, step=0)
        start = time.monotonic()
        rayplex.flush(nxt.name)
        took = time.monotonic() - start
        print(f"next experiment's flush: {took:.2f} s")
        assert took < 5
        assert _steps(nxt.logdir, "learner", "next/x") == [0]
        assert "other/x" not in tb_scalars(nxt.logdir).get("learner", {})
    finally:
        open(marks["leave"], "w").close()
        out, _ = proc.communicate(timeout=180)
        print(out[-3000:])
    rayplex.shutdown("shared")


# -------------------------- issue 21.4: a flush round covers what was logged before it was asked
def test_flush_is_not_held_by_an_actor_logging_every_millisecond_and_covers_what_came_before(
        ray_session, tmp_path):
    import threading

    import ray

    hub = rayplex.init(str(tmp_path / "exp"))

    @ray.remote(max_concurrency=2)
    class Chatty:
        def __init__(self):
            self.log = rayplex.get_logger("learner/chatty")
            self.logged = 0
            self.stop = threading.Event()

        def run(self):
            while not self.stop.is_set():
                self.log.add_scalar("x", float(self.logged), step=self.logged)
                self.logged += 1
                time.sleep(0.001)  # logging every millisecond, as a fast training loop does
            return self.logged

        def count(self):
            return self.logged

        def halt(self):
            self.stop.set()

    chatty = Chatty.remote()
    running = chatty.run.remote()
    wait_for(lambda: ray.get(chatty.count.remote()) >= 2_000, 60, "2000 lines logged")
    took = []
    for _ in range(3):
        before = ray.get(chatty.count.remote())  # logged before the flush was asked
        start = time.monotonic()
        rayplex.flush(hub.name)
        took.append(time.monotonic() - start)
        steps = set(_steps(hub.logdir, "learner", "chatty/x"))
        assert set(range(before)) <= steps
    print("flush took", [round(t, 2) for t in took])
    assert max(took) < 5
    ray.get(chatty.halt.remote())
    ray.get(running)
    ray.kill(chatty)
    rayplex.shutdown()
