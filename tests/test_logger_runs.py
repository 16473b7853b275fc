"""ML-Logger's run bookkeeping on rayplex.Logger: capture_error, job status, get_exps, hostname,
git capture, ping and signals. The hub's heartbeat book is tested as a plain object; the calls
on a real local Ray, read back from the logdir."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import ray

import rayplex
from rayplex.actors.control import ControlBook, read_control
from rayplex.handle import signal as send_signal  # rayplex.signal once exported
from rayplex.nested import flatten
from rayplex.rules import check_signal, match_clients
from tests.conftest import wait_for
from tests.fixtures import shared_experiment  # noqa: F401  (one hub for this module)

pytestmark = pytest.mark.filterwarnings("ignore:rayplex. group .* is not registered")


def _params(logdir, client):
    group, name = client.split("/")
    return json.loads((Path(logdir) / "params" / group / f"{name}.json").read_text())


# ------------------------------------------------------------------ plain: the hub's book


def test_a_signal_is_handed_out_by_the_next_ping_once(tmp_path):
    book = ControlBook(str(tmp_path / "control.json"))
    assert book.ping("agent/1", "running", "t0", {}, now=1.0) == []
    assert book.signal("agent/1", "pause") == ["pause"]
    assert book.signal("agent/1", "stop") == ["pause", "stop"]
    assert book.signal("agent/1", "stop") == ["pause", "stop"]  # a replayed signal: not twice
    assert book.ping("agent/2", "running", "t1", {}, now=2.0) == []  # someone else's
    assert book.ping("agent/1", "running", "t2", {}, now=3.0) == ["pause", "stop"]
    assert book.ping("agent/1", "running", "t3", {}, now=4.0) == []


def test_a_replayed_ping_answers_the_same_signals_even_after_a_restart(tmp_path):
    path = str(tmp_path / "control.json")
    book = ControlBook(path)
    book.signal("agent/1", "stop")
    assert book.ping("agent/1", "running", "tok", {}, now=1.0) == ["stop"]
    restarted = ControlBook(path)
    assert restarted.ping("agent/1", "running", "tok", {}, now=1.0) == ["stop"]
    assert restarted.ping("agent/1", "running", "new", {}, now=2.0) == []


def test_heartbeats_and_pending_signals_survive_a_restart_as_json(tmp_path):
    path = tmp_path / "control.json"
    book = ControlBook(str(path))
    book.ping("agent/1", "evaluating", "t", {"hostname": "n1", "pid": 7}, now=5.0)
    book.signal("agent/2", "stop")
    again = ControlBook(str(path))
    assert again.heartbeats == {"agent/1": {"hostname": "n1", "pid": 7, "status": "evaluating",
                                            "time": 5.0}}
    assert again.signals == {"agent/2": ["stop"]}
    assert json.loads(path.read_text())["signals"] == {"agent/2": ["stop"]}


def test_an_unreadable_control_file_starts_empty_instead_of_failing(tmp_path, caplog):
    path = tmp_path / "control.json"
    path.write_text("{not json")
    assert ControlBook(str(path)).heartbeats == {}
    assert "unreadable" in caplog.text


@pytest.mark.parametrize("bad", ["", "st op", "x" * 65, "stop\n", "../x"])
def test_signal_names_are_short_plain_words(bad):
    with pytest.raises(ValueError, match="signal"):
        check_signal(bad)
    with pytest.raises(TypeError):
        check_signal(3)


def test_flatten_params_and_match_clients():
    assert flatten({"a": {"b": {"c": 1}, "d": []}, "e": {}}, sep=".") == {"a.b.c": 1, "a.d": [],
                                                                          "e": {}}
    assert match_clients(["agent/10", "agent/2", "learner/x"], ["agent/*", "nope"]) == [
        "agent/10", "agent/2"]


# ------------------------------------------------------------------ on Ray


def test_capture_error_logs_the_traceback_swallows_it_and_can_reraise(experiment):
    log = rayplex.get_logger("learner/crashy")

    def explode():
        raise RuntimeError("boom at step 7")

    with log.capture_error():
        explode()
    with pytest.raises(RuntimeError, match="second"), log.capture_error(reraise=True):
        raise RuntimeError("second")
    with pytest.raises(KeyboardInterrupt), log.capture_error():
        raise KeyboardInterrupt
    log.flush()
    stored = log.load_bytes("error.log").decode()
    assert stored.count("Exception occurred") == 2
    assert "boom at step 7" in stored and "in explode" in stored and "second" in stored
    text = (Path(experiment.logdir) / "logs" / "learner" / "crashy.log").read_text()
    assert "ERROR" in text and "boom at step 7" in text and "in explode" in text


def test_job_status_is_stored_with_the_params_and_get_exps_returns_a_dataframe(experiment):
    @ray.remote
    def job(i):
        log = rayplex.get_logger(f"agent/{i}")
        log.log_params(Args={"lr": 0.1 * i, "net": {"depth": i}})
        log.job_started(job={"queue": "cpu"})
        if i == 2:
            log.job_errored()
        else:
            log.job_completed()
        log.ping("done")
        return i

    assert ray.get([job.remote(i) for i in range(3)]) == [0, 1, 2]
    driver = rayplex.get_logger("learner/analysis")
    driver.job_running()
    params = _params(experiment.logdir, "agent/1")
    assert params["job"]["status"] == "completed" and params["job"]["queue"] == "cpu"
    assert {"startTime", "completionTime"} <= set(params["job"])
    assert params["Args"] == {"lr": 0.1, "net": {"depth": 1}}

    exps = driver.get_exps("agent/*")
    assert list(exps["client"]) == ["agent/0", "agent/1", "agent/2"]
    assert list(exps["job.status"]) == ["completed", "completed", "errored"]
    assert list(exps["Args.net.depth"]) == [0, 1, 2]
    assert list(exps["ping.status"]) == ["done"] * 3
    assert all(time.time() - t < 300 for t in exps["ping.time"])
    assert list(driver.get_exps()["client"]) == ["agent/0", "agent/1", "agent/2",
                                                 "learner/analysis"]
    assert driver.get_exps("nobody/*").empty
    rows = driver.get_exps("agent/2", as_dataframe=False)
    assert rows[0]["job.status"] == "errored" and "errorTime" in rows[0]["job.queue"] + "errorTime"


def test_job_calls_refuse_what_is_not_a_mapping(experiment):
    log = rayplex.get_logger("learner/jobs")
    with pytest.raises(TypeError, match="job must be a mapping"):
        log.job_started(job="started")
    with pytest.raises(TypeError, match="Args"):
        log.job_started(Args=3)


def test_hostname_is_this_machines_fully_qualified_name(experiment):
    assert rayplex.get_logger("learner/host").hostname == socket.getfqdn()


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


def test_log_git_stores_revision_branch_tags_as_params_and_the_diff_as_an_artifact(
        experiment, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("lr = 0.1\n")
    _git(repo, "add", "train.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "first")
    _git(repo, "tag", "v1")
    (repo / "train.py").write_text("lr = 0.2\n")
    log = rayplex.get_logger("learner/git")
    params = log.log_git(repo)
    assert params["git"] == {"revision": _git(repo, "rev-parse", "HEAD").strip(),
                             "branch": "main", "tags": "v1"}
    assert _params(experiment.logdir, "learner/git")["git"]["tags"] == "v1"
    patch = log.load_bytes("index.diff").decode()
    assert patch == _git(repo, "diff", "HEAD", "--binary") and "+lr = 0.2" in patch
    assert log.rev_info(repo) == {"hash": params["git"]["revision"], "branch": "refs/heads/main"}
    assert log.diff(repo, diff_filename="patches/again.diff") == patch


def test_diff_outside_a_git_repository_stores_nothing_and_returns_none(experiment, tmp_path):
    log = rayplex.get_logger("learner/nogit")
    assert log.diff(tmp_path) is None
    assert log.git_rev(directory=tmp_path) is None
    assert log.glob("**/*") == []
    with pytest.raises(ValueError, match="revision"):
        log.diff(tmp_path, ref="--output=/tmp/x")


def test_ping_records_a_heartbeat_and_returns_each_driver_signal_once(experiment):
    @ray.remote
    class Worker:
        def ping(self, status):
            return rayplex.get_logger("agent/7").ping(status)

    worker = Worker.remote()
    assert ray.get(worker.ping.remote("warming up")) == []
    assert send_signal("agent/7", "pause") == ["pause"]
    assert experiment.signal("agent/7", "stop") == ["pause", "stop"]
    assert ray.get(worker.ping.remote("running")) == ["pause", "stop"]
    assert ray.get(worker.ping.remote("running")) == []
    beat = read_control(experiment.logdir).heartbeats["agent/7"]
    assert beat["status"] == "running" and beat["hostname"] == socket.gethostname()
    assert time.time() - beat["time"] < 60
    ray.kill(worker)


def test_ping_with_an_interval_keeps_pinging_and_buffers_signals_for_the_next_call(experiment):
    log = rayplex.get_logger("agent/8")
    assert log.ping("training", interval=0.2) == []
    first = read_control(experiment.logdir).heartbeats["agent/8"]["time"]
    wait_for(lambda: read_control(experiment.logdir).heartbeats["agent/8"]["time"] > first, 30,
             "a newer heartbeat")
    send_signal("agent/8", "stop")
    wait_for(lambda: "agent/8" not in read_control(experiment.logdir).signals, 30,
             "the signal taken")  # the thread took it
    assert log.ping("training") == ["stop"]
    assert log.ping("training") == []


def test_signal_and_ping_check_their_arguments_at_the_call_site(experiment):
    log = rayplex.get_logger("agent/9")
    with pytest.raises(ValueError, match="signal"):
        send_signal("agent/9", "rm -rf /")
    with pytest.raises(ValueError, match="group"):
        send_signal("no-slash", "stop")
    with pytest.raises(ValueError, match="interval"):
        log.ping("running", interval=0)
    with pytest.raises(TypeError, match="status"):
        log.ping(3)
    control = os.path.join(experiment.logdir, ".rayplex", "control.json")
    assert not os.path.exists(control) or "agent/9" not in Path(control).read_text()
