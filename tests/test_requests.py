"""Every hub request, applied and replayed, on plain hubs over real files (no Ray): what it
answers, what it writes, and that a replay (Ray calls a method again after the hub restarts,
with the same request id) answers without applying it a second time. The last tests take each
request of :data:`rayplex.actors.requests.REQUESTS` as a plain object on a
:class:`~rayplex.actors.requests.RequestContext` (a writer, an artifact store, a control book).

A "kill" here is what a dead hub process leaves: its ticker stops and the kernel drops its lock
on the logdir; nothing of it is closed or flushed. The restarted hub is a new ``Hub`` on the same
logdir, which reads the journal as the restarted actor does.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rayplex import projector
from rayplex.actors.control import ControlBook
from rayplex.actors.hub import Hub
from rayplex.actors.requests import QUERIES, REQUESTS, RequestContext, answer
from rayplex.actors.writer import HubWriter
from rayplex.artifacts import ArtifactStore
from rayplex.encoder import Encoder
from rayplex.groups import GroupRegistry, GroupSpec
from rayplex.items import Scalar
from rayplex.records import NodeCall


class _Hubs:
    """Starts plain hubs on one logdir and kills them; closes them all at the end."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self.started: list[Hub] = []

    def start(self) -> Hub:
        hub = Hub("req", self.logdir)
        hub._stop.set()  # no ticker: nothing happens behind the test's back
        self.started.append(hub)
        return hub

    def restart(self, hub: Hub) -> Hub:
        """``hub``'s process is killed and the actor restarts on the same logdir."""
        hub.writer.claim.release("the test killed it")
        return self.start()


@pytest.fixture
def hubs(tmp_path: Any) -> Iterator[_Hubs]:
    made = _Hubs(str(tmp_path / "exp"))
    yield made
    for hub in made.started:
        hub.close()


def _ok(hub: Hub, request_id: str, method: str, *args: Any) -> Any:
    ok, answer = hub.request(request_id, method, args)
    assert ok, answer
    return answer


def _art(hub: Hub, rel: str) -> str:
    return os.path.join(hub.logdir, "artifacts", *rel.split("/"))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _kill_before_recording(logdir: str, request_id: str, method: str, args: tuple[Any, ...],
                           tmp_path: Any) -> None:
    """Another process applies the request on a hub over ``logdir`` and is killed (``os._exit``:
    no ``finally`` or ``except`` of the hub runs) just before the hub journals it as applied."""
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent(f"""
        import os, pickle, sys
        from rayplex.actors.hub import Hub
        hub = Hub("req", {logdir!r})
        hub._stop.set()
        hub.writer.journal.commit = lambda *args, **kwargs: os._exit(3)
        request_id, method, args = pickle.loads(sys.stdin.buffer.read())
        print(hub.request(request_id, method, args))
    """))
    done = subprocess.run([sys.executable, str(script)], input=pickle.dumps(
        (request_id, method, args)), capture_output=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 3, done.stderr.decode()[-2000:]


# ------------------------------------------------------------------------- artifacts


def test_save_artifact_replaces_the_file_and_its_replay_only_answers_the_path(hubs):
    hub = hubs.start()
    path = _ok(hub, "r1", "save_artifact", "g/n/a.txt", b"one")
    assert path == _art(hub, "g/n/a.txt") and _read(path) == b"one"
    _ok(hub, "r2", "save_artifact", "g/n/a.txt", b"two")
    assert _ok(hub, "r1", "save_artifact", "g/n/a.txt", b"one") == path  # same hub
    restarted = hubs.restart(hub)
    assert _ok(restarted, "r1", "save_artifact", "g/n/a.txt", b"one") == path
    assert _read(path) == b"two"  # r1 was not applied again over r2


APPENDS = [
    ("save_artifact", lambda rel: (rel, b"row", True)),
    ("append_artifact", lambda rel: (rel, b"line\n")),
    ("append_chunks", lambda rel: (rel, [b"row-1", b"row-2"])),
]


@pytest.mark.parametrize("method,args", APPENDS, ids=[m for m, _ in APPENDS])
def test_an_append_replayed_after_a_kill_is_not_appended_again(hubs, method, args):
    hub = hubs.start()
    path = _ok(hub, "r0", method, *args("g/n/f.bin"))
    assert path == _art(hub, "g/n/f.bin")
    head = _read(path)
    _ok(hub, "r1", method, *args("g/n/f.bin"))
    once = _read(path)
    assert len(once) > len(head)
    assert _ok(hub, "r1", method, *args("g/n/f.bin")) == path
    restarted = hubs.restart(hub)
    assert _ok(restarted, "r1", method, *args("g/n/f.bin")) == path
    assert _read(path) == once
    _ok(restarted, "r2", method, *args("g/n/f.bin"))  # a new request appends
    assert _read(path) == once + once[len(head):]


@pytest.mark.parametrize("method,args", APPENDS, ids=[m for m, _ in APPENDS])
def test_an_append_the_hub_died_in_is_cut_back_and_its_replay_applies_it_once(
        hubs, tmp_path, method, args):
    hub = hubs.start()
    path = _ok(hub, "r0", method, *args("g/n/f.bin"))
    head = _read(path)
    hub.writer.claim.release("the test killed it")
    _kill_before_recording(hubs.logdir, "r1", method, args("g/n/f.bin"), tmp_path)
    assert len(_read(path)) > len(head)  # appended, never recorded
    restarted = hubs.start()
    assert _read(path) == head  # the restarted hub cut it back
    assert _ok(restarted, "r1", method, *args("g/n/f.bin")) == path
    once = _read(path)
    assert _ok(hubs.restart(restarted), "r1", method, *args("g/n/f.bin")) == path
    assert _read(path) == once == head + head  # applied exactly once


def test_append_chunks_refuses_what_is_not_a_list_of_bytes(hubs):
    hub = hubs.start()
    assert hub.request("r1", "append_chunks", ("g/n/f.pkl", [b"ok", "text"]))[1][0] == "TypeError"
    assert not os.path.exists(_art(hub, "g/n/f.pkl"))


def test_load_artifact_answers_the_bytes_every_time(hubs):
    hub = hubs.start()
    _ok(hub, "r0", "save_artifact", "g/n/a.bin", b"\x00\x01")
    assert _ok(hub, "r1", "load_artifact", "g/n/a.bin") == b"\x00\x01"
    assert _ok(hubs.restart(hub), "r1", "load_artifact", "g/n/a.bin") == b"\x00\x01"
    missing = hubs.started[-1].request("r2", "load_artifact", ("g/n/none",))
    assert missing[0] is False and missing[1][0] == "FileNotFoundError"


def test_remove_artifacts_removes_once_and_its_replay_removes_nothing(hubs):
    hub = hubs.start()
    for rel in ("g/n/a.txt", "g/n/x.log", "g/n/y.log", "g/n/keep.txt"):
        _ok(hub, f"w-{rel}", "save_artifact", rel, b"1")
    assert sorted(_ok(hub, "r1", "remove_artifacts", "g/n", ["a.txt", "*.log"])) == [
        "a.txt", "x.log", "y.log"]
    assert not os.path.exists(_art(hub, "g/n/a.txt"))
    _ok(hub, "w2", "save_artifact", "g/n/a.txt", b"again")
    restarted = hubs.restart(hub)
    assert _ok(restarted, "r1", "remove_artifacts", "g/n", ["a.txt", "*.log"]) == []
    assert _read(_art(hub, "g/n/a.txt")) == b"again"  # not removed a second time
    assert _ok(restarted, "r2", "remove_artifacts", "g/n", [""]) == [""]
    assert not os.path.exists(_art(hub, "g/n"))


def test_move_artifact_moves_once_and_its_replay_answers_the_target(hubs):
    hub = hubs.start()
    _ok(hub, "w", "save_artifact", "g/n/a.txt", b"a")
    target = _ok(hub, "r1", "move_artifact", "g/n/a.txt", "g/n/b.txt")
    assert target == _art(hub, "g/n/b.txt") and _read(target) == b"a"
    restarted = hubs.restart(hub)
    assert _ok(restarted, "r1", "move_artifact", "g/n/a.txt", "g/n/b.txt") == target
    assert restarted.request("r2", "move_artifact", ("g/n/a.txt", "g/n/b.txt"))[1][0] == \
        "FileNotFoundError"


@pytest.mark.parametrize("exists_ok", [True, False])
def test_duplicate_artifact_copies_once_and_its_replay_answers_the_target(hubs, exists_ok):
    hub = hubs.start()
    _ok(hub, "w1", "save_artifact", "g/n/d/a.txt", b"first")
    target = _ok(hub, "r1", "duplicate_artifact", "g/n/d", "g/n/e", exists_ok)
    assert target == _art(hub, "g/n/e") and _read(_art(hub, "g/n/e/a.txt")) == b"first"
    _ok(hub, "w2", "save_artifact", "g/n/d/a.txt", b"second")
    restarted = hubs.restart(hub)
    assert _ok(restarted, "r1", "duplicate_artifact", "g/n/d", "g/n/e", exists_ok) == target
    assert _read(_art(hub, "g/n/e/a.txt")) == b"first"  # not copied again
    again = restarted.request("r2", "duplicate_artifact", ("g/n/d", "g/n/e", exists_ok))
    assert again[0] is exists_ok
    assert again[0] or again[1][0] == "FileExistsError"


def test_glob_artifacts_is_a_query_answered_every_time(hubs):
    hub = hubs.start()
    for rel in ("g/n/a.txt", "g/n/b.txt", "g/n/c.log"):
        _ok(hub, f"w-{rel}", "save_artifact", rel, b"1")
    assert sorted(_ok(hub, "q1", "glob_artifacts", "*.txt", "g/n")) == ["a.txt", "b.txt"]
    _ok(hub, "w", "save_artifact", "g/n/d.txt", b"1")
    assert sorted(_ok(hub, "q1", "glob_artifacts", "*.txt", "g/n")) == [
        "a.txt", "b.txt", "d.txt"]


# --------------------------------------------------------------------------- params


def test_save_params_merges_once_and_its_replay_answers_what_is_stored(hubs):
    hub = hubs.start()
    assert _ok(hub, "r1", "save_params", "g/a", {"Args": {"lr": 0.1}}) == {"Args": {"lr": 0.1}}
    merged = {"Args": {"lr": 0.1, "seed": 1}, "job": {"status": "started"}}
    assert _ok(hub, "r2", "save_params", "g/a", {"Args": {"seed": 1},
                                                 "job": {"status": "started"}}) == merged
    path = os.path.join(hub.logdir, "params", "g", "a.json")
    text = json.dumps(merged, indent=2, sort_keys=True) + "\n"
    assert _read(path).decode() == text
    restarted = hubs.restart(hub)
    assert _ok(restarted, "r1", "save_params", "g/a", {"Args": {"lr": 0.5}}) == merged
    assert _read(path).decode() == text  # the replay merged nothing
    bad = restarted.request("r3", "save_params", ("not a client", {"x": 1}))
    assert bad[0] is False and bad[1][0] == "ValueError"


# ----------------------------------------------------------------- control, experiments


def test_ping_hands_a_signal_out_once_and_a_replayed_token_gets_it_again(hubs):
    hub = hubs.start()
    assert hub.signal("g/a", "stop") == ["stop"]
    assert _ok(hub, "p1", "ping", "g/a", "running", "token-1", {"pid": 7}) == ["stop"]
    assert _ok(hub, "p2", "ping", "g/a", "running", "token-2", {}) == []
    restarted = hubs.restart(hub)
    assert _ok(restarted, "p1", "ping", "g/a", "running", "token-1", {"pid": 7}) == ["stop"]
    assert _ok(restarted, "p3", "ping", "g/a", "paused", "token-3", {}) == []
    bad = restarted.request("p4", "ping", ("nope", "running", "token-4", {}))
    assert bad[0] is False and bad[1][0] == "ValueError"
    with pytest.raises(ValueError):
        restarted.signal("g/a", "no spaces")


def test_read_experiments_answers_params_and_last_heartbeat_of_matching_clients(hubs):
    hub = hubs.start()
    _ok(hub, "s1", "save_params", "g/a", {"lr": 1})
    _ok(hub, "s2", "save_params", "g/b", {"lr": 2})
    _ok(hub, "s3", "save_params", "h/c", {"lr": 3})
    _ok(hub, "p1", "ping", "g/a", "running", "token-1", {"pid": 7})
    _ok(hub, "p2", "ping", "h/d", "running", "token-2", {})
    found = _ok(hub, "q1", "read_experiments", ["g/*"])
    assert sorted(found) == ["g/a", "g/b"]
    params, beat = found["g/a"]
    assert params == {"lr": 1} and beat["status"] == "running" and beat["pid"] == 7
    assert found["g/b"] == ({"lr": 2}, None)
    everything = _ok(hubs.restart(hub), "q1", "read_experiments", ["*"])
    assert sorted(everything) == ["g/a", "g/b", "h/c", "h/d"]
    assert everything["h/d"][0] == {} and everything["h/d"][1]["status"] == "running"


# ------------------------------------------------------------- embeddings, scalars, export


def _write_scalars(hub: Hub, client: str, values: list[float]) -> None:
    items = [Scalar(client, "loss", step, 1.0 + step, value) for step, value in enumerate(values)]
    batch = Encoder(hub.registry).encode(items, "sender-1", 1, hub.experiment)
    acks = hub.write_node(NodeCall("node", 1, [batch]))
    assert [a.error for a in acks] == [None] and not acks[0].stale


def test_save_embedding_writes_once_and_its_replay_answers_the_path(hubs):
    hub = hubs.start()
    hub.register_group(GroupSpec.indexed("agent", 4))
    emb = projector.build_embedding(np.eye(2), ["a", "b"], step=3, tag="agent/e")
    args = ("agent/1", hub.registry.stamp, "agent/1", emb)
    answer = _ok(hub, "r1", "save_embedding", *args)
    tensors = os.path.join(answer["path"], "tensors.tsv")
    assert os.path.isfile(tensors)
    os.remove(tensors)
    restarted = hubs.restart(hub)
    assert _ok(restarted, "r1", "save_embedding", *args) == answer
    assert not os.path.exists(tensors)  # not written again
    stale = _ok(restarted, "r2", "save_embedding", "agent/1", ("old", 0), "agent/1", emb)
    assert stale["stale"].stamp == restarted.registry.stamp


def test_client_scalars_answers_the_clients_run_under_its_prefix(hubs):
    hub = hubs.start()
    _write_scalars(hub, "learner/a", [0.5, 0.25])
    stamp = hub.registry.stamp
    got = _ok(hub, "q1", "client_scalars", "learner/a", stamp, "learner", None)["scalars"]
    assert got == {"a/loss": [[1.0, 0, 0.5], [2.0, 1, 0.25]]}
    assert _ok(hub, "q2", "client_scalars", "learner/a", stamp, "learner", "a") == {
        "scalars": got}
    assert _ok(hub, "q3", "client_scalars", "learner/a", stamp, "learner", "b") == {
        "scalars": {}}
    stale = _ok(hub, "q4", "client_scalars", "learner/a", ("old", 0), "learner", None)
    assert stale["stale"].stamp == stamp
    outside = hub.request("q5", "client_scalars", ("learner/a", stamp, "agent", None))
    assert outside[0] is False and outside[1][0] == "ValueError"


def test_export_json_writes_once_and_its_replay_writes_nothing(hubs):
    hub = hubs.start()
    _write_scalars(hub, "learner/a", [0.5])
    paths = _ok(hub, "r1", "export_json", "json")
    assert paths == [os.path.join(hub.logdir, "json", "learner.json")]
    with open(paths[0], encoding="utf-8") as f:
        assert json.load(f) == {"a/loss": [[1.0, 0, 0.5]]}
    os.remove(paths[0])
    assert _ok(hubs.restart(hub), "r1", "export_json", "json") == []
    assert not os.path.exists(paths[0])
    refused = hubs.started[-1].request("r2", "export_json", ("artifacts",))
    assert refused[0] is False and refused[1][0] == "ValueError"


def test_an_unknown_request_is_refused_by_name(hubs):
    hub = hubs.start()
    assert hub.request("r1", "nope", ()) == (False, ("ValueError", "unknown hub request 'nope'"))


# ------------------------------------------- each request as a plain object, on a request context


def _context(logdir: str) -> RequestContext:
    writer = HubWriter(logdir)
    registry = GroupRegistry(epoch="e").with_group(GroupSpec.indexed("agent", 4))
    return RequestContext(writer, ArtifactStore(os.path.join(logdir, "artifacts")),
                   ControlBook(os.path.join(writer.state_dir, "control.json")), lambda: registry)


def _files(logdir: str) -> dict[str, bytes]:
    """Every file under the logdir but the hub's own state, with its bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(logdir):
        dirnames[:] = [d for d in dirnames if d != ".rayplex"]
        for name in filenames:
            out[os.path.relpath(os.path.join(dirpath, name), logdir)] = _read(
                os.path.join(dirpath, name))
    return out


_EMB = projector.build_embedding(np.eye(2), step=1, tag="agent/e")
CASES: dict[str, tuple[tuple[Any, ...], bool, Any]] = {
    # method: (args after the request id, recorded as applied, what its replay answers
    #          (APPLIED: the same as apply))
    "save_artifact": (("g/n/a.txt", b"x"), True, "APPLIED"),
    "load_artifact": (("g/n/src.txt",), False, "APPLIED"),
    "save_params": (("g/n", {"a": {"b": 1}}), True, "APPLIED"),
    "append_artifact": (("g/n/log.txt", b"line\n"), True, "APPLIED"),
    "append_chunks": (("g/n/rows.pkl", [b"r1", b"r2"]), True, "APPLIED"),
    "remove_artifacts": (("g/n", ["src.txt"]), True, []),
    "move_artifact": (("g/n/src.txt", "g/n/moved.txt"), True, "APPLIED"),
    "duplicate_artifact": (("g/n/src.txt", "g/n/copy.txt", False), True, "APPLIED"),
    "glob_artifacts": (("*.txt", "g/n"), False, None),
    "read_experiments": ((["*"],), False, None),
    "ping": (("g/n", "running", "token", {}), False, None),
    "save_embedding": (("agent/1", None, "agent/1", _EMB), True, "APPLIED"),
    "client_scalars": (("agent/1", None, "agent/1", None), False, None),
    "export_json": (("json",), True, []),
    "node_senders": (("node-1", {"s1": 42}, [], {}), False, None),
}


def test_the_cases_cover_every_request():
    assert set(CASES) == set(REQUESTS)
    assert {"glob_artifacts"} == QUERIES


@pytest.mark.parametrize("method", sorted(CASES))
def test_each_request_applies_once_and_its_replay_writes_nothing(tmp_path, method):
    logdir = str(tmp_path / "exp")
    ctx = _context(logdir)
    ctx.artifacts.write_bytes("g/n/src.txt", b"source")
    args, recorded, replayed = CASES[method]
    args = tuple(ctx.registry().stamp if a is None and i == 1 and method in (
        "save_embedding", "client_scalars") else a for i, a in enumerate(args))
    request = REQUESTS[method]
    ok, applied = answer(request, ctx, "r1", args)
    assert ok, applied
    assert ctx.writer.applied("r1") is recorded
    ctx.writer.claim.release("the test killed it")  # the hub dies; a new one reads the journal
    again = _context(logdir)
    assert again.writer.applied("r1") is recorded
    if recorded:
        assert request.replay is not None
        before = _files(logdir)
        assert request.replay(again, *args) == (applied if replayed == "APPLIED" else replayed)
        assert _files(logdir) == before
    again.writer.close()
    ctx.writer.close()
