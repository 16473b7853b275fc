"""The hub and its transactional writer as plain objects (no Ray): poison input, undo that
fails, a disk that is full or read-only, bounded open files."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import textwrap
import time

import pytest

from rayplex.actors.hub import Hub
from rayplex.actors.summaries import Summary
from rayplex.actors.writer import HubWriter
from rayplex.config import config
from rayplex.encoder import Encoder
from rayplex.groups import GroupRegistry
from rayplex.items import Line, PartialItem, Scalar
from rayplex.records import Batch, Chunk, NodeCall, Partial
from rayplex.stats import PartialStats
from tests.conftest import tb_scalars


def _batch(hub: Hub, sender: str, seq: int, client: str = "learner/a", n: int = 3,
           lines: list | None = None) -> Batch:
    enc = Encoder(hub.registry)
    items = [Scalar(client, "x", seq * 100 + i, 1.0, float(i)) for i in range(n)]
    items += [Line(line) for line in (lines or [])]
    return enc.encode(items, sender, seq, hub.experiment)


def _line(message: str, client: str = "learner/a", logger: object = "app") -> tuple:
    return (1.0, 20, client, "node0001", 1, logger, message, None)


@pytest.fixture
def hub(tmp_path):
    h = Hub("plain", str(tmp_path / "exp"))
    yield h
    h._stop.set()
    h.close()


def _died(hub: Hub) -> None:
    """The hub's process ends (to simulate a restart in this process): its ticker stops and
    the kernel drops its lock on the logdir."""
    hub._stop.set()
    hub.writer.claim.release("the test killed it")


def _count(logdir: str, run: str, tag: str) -> int:
    return len(tb_scalars(logdir).get(run, {}).get(tag, []))


def test_a_poison_batch_is_quarantined_whole_and_the_rest_is_written_once(hub):
    good = _batch(hub, "w1", 1)
    poison = Batch("w2", 1, hub.registry.stamp,
                   [Chunk("all.log/x", "all.log", b"\x00junk", 1)], [], [],
                   experiment=hub.experiment)
    acks = hub.write_node(NodeCall("n", 1, [good, poison]))
    assert not acks[0].rejected and acks[0].error is None
    assert acks[1].rejected == 1
    quarantined = os.listdir(os.path.join(hub.logdir, ".rayplex", "quarantine"))
    assert len(quarantined) == 1
    with open(os.path.join(hub.logdir, "logs", "all.log"), encoding="utf-8") as f:
        text = f.read()
    assert "ERROR" in text and "quarantined" in text
    # resending either is never written again
    again = hub.write_node(NodeCall("n", 2, [good, poison]))
    assert again[0].duplicate and again[1].duplicate
    assert _count(hub.logdir, "learner", "a/x") == 3
    assert hub.info()["quarantined_records"] == 1


def test_a_line_no_worker_would_send_is_quarantined_without_touching_other_files(hub):
    good = _batch(hub, "w1", 1, lines=[_line("fine")])
    bad = _batch(hub, "w2", 1, lines=[_line("x", logger=7)])  # a logger name that is no str
    acks = hub.write_node(NodeCall("n", 1, [good, bad]))
    assert acks[0].error is None and not acks[0].rejected and acks[1].rejected
    assert _count(hub.logdir, "learner", "a/x") == 3  # only the good batch's events
    with open(os.path.join(hub.logdir, "logs", "all.log"), encoding="utf-8") as f:
        text = f.read()
    assert "fine" in text and "quarantined" in text


def test_an_exception_mid_write_undoes_everything_and_quarantines_only_the_culprit(
        hub, monkeypatch):
    from rayplex.actors.logfiles import LogFiles

    real_write = LogFiles.write

    def write(self, lines):  # a line that passes the rules but breaks the writer (a bug)
        if any(line[6] == "boom" for line in lines):
            raise RuntimeError("the text-log writer broke")
        return real_write(self, lines)

    monkeypatch.setattr(LogFiles, "write", write)
    good = _batch(hub, "w1", 1, lines=[_line("ok")])
    culprit = _batch(hub, "w2", 1, client="learner/b", lines=[_line("boom", "learner/b")])
    acks = hub.write_node(NodeCall("n", 1, [good, culprit]))
    assert acks[0].error is None and not acks[0].rejected
    assert acks[1].rejected == 4
    scalars = tb_scalars(hub.logdir)["learner"]
    assert len(scalars["a/x"]) == 3 and "b/x" not in scalars  # the culprit's events undone
    resend = hub.write_node(NodeCall("n", 2, [good, culprit]))
    assert all(a.duplicate for a in resend)
    assert len(tb_scalars(hub.logdir)["learner"]["a/x"]) == 3


def test_a_failed_undo_keeps_the_resend_from_becoming_a_duplicate(hub, monkeypatch):
    first = _batch(hub, "w1", 1)
    assert hub.write_node(NodeCall("n", 1, [first]))[0].error is None
    culprit = _batch(hub, "w1", 2, lines=[_line("ok")])
    real_truncate = os.truncate

    def read_only(path, size):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(os, "truncate", read_only)
    monkeypatch.setattr(hub.writer.logs, "write",
                        lambda lines: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    ack = hub.write_node(NodeCall("n", 2, [culprit]))[0]
    assert ack.error is not None  # the disk failed: the sender keeps it and resends
    assert hub.writer.pending_undo  # the appended events could not be cut back yet
    monkeypatch.undo()
    monkeypatch.setattr(os, "truncate", read_only)
    ack = hub.write_node(NodeCall("n", 3, [culprit]))[0]
    assert ack.error is not None  # still cannot undo: nothing new is written meanwhile
    monkeypatch.setattr(os, "truncate", real_truncate)
    ack = hub.write_node(NodeCall("n", 4, [culprit]))[0]
    assert ack.error is None and not ack.duplicate
    assert sorted(s for s, _ in tb_scalars(hub.logdir)["learner"]["a/x"]) == [
        100, 101, 102, 200, 201, 202]


def test_the_hub_never_routes_a_stale_batch_is_answered_with_the_registry(hub):
    from rayplex.groups import GroupSpec

    stale = _batch(hub, "w1", 1, client="agent/3")
    hub.register_group(GroupSpec.indexed("agent", 8))
    ack = hub.write_node(NodeCall("n", 1, [stale]))[0]
    assert ack.stale and ack.registry.stamp == hub.registry.stamp
    assert "agent" not in tb_scalars(hub.logdir)
    fresh = _batch(hub, "w1", 1, client="agent/3")  # the sender encodes again
    assert hub.write_node(NodeCall("n", 2, [fresh]))[0].error is None
    assert list(tb_scalars(hub.logdir)["agent/3"]) == ["agent/x/0-7"]


def test_a_batch_of_another_experiment_is_refused(hub):
    other = _batch(hub, "w1", 1)
    other.experiment = "another-hub"
    hub.experiment = "this-hub"
    ack = hub.write_node(NodeCall("n", 1, [other]))[0]
    assert ack.wrong_experiment
    assert "learner" not in tb_scalars(hub.logdir)


def test_the_same_batch_twice_in_one_call_is_written_once(hub):
    batch = _batch(hub, "w1", 1)
    acks = hub.write_node(NodeCall("n", 1, [batch, batch]))
    assert len(acks) == 2 and all(a.error is None for a in acks)
    assert _count(hub.logdir, "learner", "a/x") == 3


def test_hub_state_on_disk_is_data(hub):
    from rayplex.groups import GroupSpec

    hub.register_group(GroupSpec.indexed("agent", 4))
    state = os.listdir(os.path.join(hub.logdir, ".rayplex"))
    assert "registry.json" in state and "registry.pkl" not in state
    _died(hub)
    restarted = Hub("plain", hub.logdir)
    try:
        assert restarted.registry.groups["agent"].bin_size == 4
    finally:
        restarted._stop.set()


# ------------------------------------------------------------- full and read-only disks
@contextlib.contextmanager
def _tmpfs(path, size="256k"):
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def test_a_hub_comes_up_on_a_read_only_logdir_and_writes_once_it_is_writable(tmp_path):
    mount = str(tmp_path / "ro")
    with _tmpfs(mount, "4m"):
        logdir = os.path.join(mount, "exp")
        first = Hub("ro", logdir)
        assert first.write_node(NodeCall("n", 1, [_batch(first, "w", 1)]))[0].error is None
        first._stop.set()
        first.close()
        subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
        hub = Hub("ro", logdir)  # a restart while the disk is read-only: it comes up
        batch = _batch(hub, "w", 2)
        assert hub.write_node(NodeCall("n", 2, [batch]))[0].error is not None
        assert hub.info()["problem"]
        subprocess.run(["mount", "-o", "remount,rw", mount], check=True)
        assert hub.write_node(NodeCall("n", 3, [batch]))[0].error is None
        assert hub.info()["problem"] is None
        with open(os.path.join(logdir, "logs", "all.log"), encoding="utf-8") as f:
            assert "writable again" in f.read()
        assert sorted(s for s, _ in tb_scalars(logdir)["learner"]["a/x"]) == [
            100, 101, 102, 200, 201, 202]
        hub._stop.set()
        hub.close()


def test_a_hub_comes_up_on_a_full_disk(tmp_path):
    mount = str(tmp_path / "full")
    with _tmpfs(mount, "256k"):
        logdir = os.path.join(mount, "exp")
        first = Hub("full", logdir)
        first._stop.set()
        first.close()
        with open(os.path.join(mount, "filler"), "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * 1024 * 1024)
        hub = Hub("full", logdir)
        batch = _batch(hub, "w", 1, n=2000)
        assert hub.write_node(NodeCall("n", 1, [batch]))[0].error is not None
        os.unlink(os.path.join(mount, "filler"))
        assert hub.write_node(NodeCall("n", 2, [batch]))[0].error is None
        assert _count(logdir, "learner", "a/x") == 2000
        hub._stop.set()
        hub.close()


def test_1500_clients_in_one_write_under_a_1024_fd_limit_are_all_written(tmp_path):
    script = textwrap.dedent(f"""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        from rayplex.actors.hub import Hub
        from rayplex.encoder import Encoder
        from rayplex.groups import GroupSpec
        from rayplex.items import Scalar
        from rayplex.records import NodeCall
        hub = Hub("fds", {str(tmp_path / "exp")!r})
        hub.register_group(GroupSpec.indexed("agent", 8))
        enc = Encoder(hub.registry)
        batch = enc.encode([Scalar(f"agent/{{i}}", "x", 0, 1.0, float(i)) for i in range(1500)],
                           "w", 1, hub.experiment)
        ack = hub.write_node(NodeCall("n", 1, [batch]))[0]
        assert ack.error is None, ack.error
        hub._stop.set()
        hub.close()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300,
                   cwd=os.path.dirname(os.path.dirname(__file__)))
    scalars = tb_scalars(str(tmp_path / "exp"))
    assert len([run for run in scalars if run.startswith("agent/")]) == 1500


def test_hub_writer_is_usable_without_ray(tmp_path):
    writer = HubWriter(str(tmp_path / "w"), experiment="e")
    assert writer.write_batches([], []) == {}
    assert GroupRegistry().stamp


# ------------------------------------------- summaries wait for resends after a fault
def _summary_batch(hub: Hub, sender: str, seq: int, client: str, step: int) -> Batch:
    part = Partial("agent", step, ("count",), {"r": PartialStats([1.0])}, (client,))
    return Encoder(hub.registry).encode([PartialItem(part)], sender, seq, hub.experiment)


def _counts(due: list) -> list[tuple[int, float, bool]]:
    return [(s.step, s.values["r/count"], s.again) for s in due]


def _quiet_but_held(hub: Hub, since: float) -> float:
    """A time past the quiet delay of every partial so far, still within the hold."""
    t = since + config().effective_summary_delay_s + 0.5
    assert t < since + config().effective_summary_hold_s
    return t


def test_a_restarted_hub_holds_summaries_until_a_resent_first_partial_can_arrive(tmp_path):
    logdir = str(tmp_path / "exp")
    first = Hub("restart", logdir)
    first._stop.set()
    for step in range(3):  # agent/0 summarised steps 0-2, committed
        call = NodeCall("n1", step, [_summary_batch(first, "w0", step + 1, "agent/0", step)],
                        ray_node="r1")
        assert first.write_node(call)[0].error is None
    # the hub dies here; agent/1's first batch (its step 0) is still with its sender
    _died(first)
    hub = Hub("restart", logdir)
    hub._stop.set()
    up = time.time()
    assert hub.summaries.due(_quiet_but_held(hub, up)) == []
    resend = NodeCall("n1", 9, [_summary_batch(hub, "w1", 1, "agent/1", 0)], ray_node="r1")
    assert hub.write_node(resend)[0].error is None
    later = time.time() + config().effective_summary_hold_s + 1
    assert _counts(hub.summaries.due(later))[:1] == [(0, 2.0, False)]  # once, both workers
    hub.close()


def test_a_restarted_node_buffer_or_a_failed_write_holds_summaries_back(tmp_path, monkeypatch):
    hub = Hub("held", str(tmp_path / "exp"))
    hub._stop.set()
    ok = hub.write_node(NodeCall("n1", 1, [_summary_batch(hub, "w0", 1, "agent/0", 0)],
                                 ray_node="r1"))
    assert ok[0].error is None
    settled = time.time() + config().effective_summary_hold_s  # agent/0 joined before now
    assert _counts(hub.summaries.due(settled)) == [(0, 1.0, False)]  # a first node buffer
    hub.write_node(NodeCall("n1", 2, [_summary_batch(hub, "w0", 2, "agent/0", 1)],
                            ray_node="r1"))
    t1 = time.time()
    assert _counts(hub.summaries.due(max(settled, t1 + config().effective_summary_delay_s
                                         + 0.1))) == [(1, 1.0, False)]
    hub.write_node(NodeCall("n2", 1, [_summary_batch(hub, "w0", 3, "agent/0", 2)],
                            ray_node="r1"))  # another incarnation on node r1: it restarted
    assert hub.summaries.due(_quiet_but_held(hub, t1)) == []

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    hub2 = Hub("held2", str(tmp_path / "exp2"))
    hub2._stop.set()
    hub2.write_node(NodeCall("n1", 1, [_summary_batch(hub2, "w0", 1, "agent/0", 0)],
                             ray_node="r1"))
    monkeypatch.setattr(hub2.writer, "write_batches", full)
    t2 = time.time()
    failed = hub2.write_node(NodeCall("n1", 2, [_summary_batch(hub2, "w1", 1, "agent/1", 0)],
                                      ray_node="r1"))
    assert failed[0].error is not None  # its sender resends after a back-off
    assert hub2.summaries.due(_quiet_but_held(hub2, t2)) == []
    monkeypatch.undo()
    hub.close()
    hub2.close()


def test_a_stalled_hub_process_holds_summaries_back(tmp_path):
    hub = Hub("stalled", str(tmp_path / "exp"))
    hub._stop.set()
    hub.write_node(NodeCall("n1", 1, [_summary_batch(hub, "w0", 1, "agent/0", 0)],
                            ray_node="r1"))
    woke = time.time()
    hub._tick_once(time.monotonic() - 30.0, 0.2)  # the previous tick was 30 s ago
    assert hub.summaries.due(_quiet_but_held(hub, woke)) == []
    hub.close()


# ------------------------- a move or duplicate replayed after the hub died mid-request
class _Died(BaseException):
    """The hub process dies here (nothing after this line of the hub runs)."""


def _die_before_recording(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    def died(*args: object, **kwargs: object) -> None:
        raise _Died

    monkeypatch.setattr(hub.writer.journal, "commit", died)


@pytest.mark.parametrize("into_directory", [False, True])
def test_a_move_replayed_after_the_hub_died_before_recording_it_is_answered_as_applied(
        tmp_path, monkeypatch, into_directory):
    logdir = str(tmp_path / "exp")
    hub = Hub("mv", logdir)
    hub._stop.set()
    hub.artifacts.write_bytes("g/n/a.txt", b"a")
    if into_directory:
        hub.artifacts.write_bytes("g/n/dir/keep.txt", b"k")
    to = "g/n/dir" if into_directory else "g/n/b.txt"
    _die_before_recording(hub, monkeypatch)
    with pytest.raises(_Died):
        hub.request("req-1", "move_artifact", ("g/n/a.txt", to))
    monkeypatch.undo()
    _died(hub)
    restarted = Hub("mv", logdir)  # Ray replays the call on the restarted hub
    restarted._stop.set()
    ok, path = restarted.request("req-1", "move_artifact", ("g/n/a.txt", to))
    want = os.path.join(logdir, "artifacts", "g", "n", "dir", "a.txt") if into_directory \
        else os.path.join(logdir, "artifacts", "g", "n", "b.txt")
    assert (ok, path) == (True, want)
    assert restarted.artifacts.read_bytes(os.path.relpath(want, os.path.join(logdir,
                                                                             "artifacts"))) == b"a"
    _died(restarted)
    again = Hub("mv", logdir)  # once applied, also remembered across one more restart
    again._stop.set()
    assert again.request("req-1", "move_artifact", ("g/n/a.txt", to))[0] is True
    assert again.request("req-2", "move_artifact", ("g/n/a.txt", to)) == (
        False, ("FileNotFoundError", again.request("req-3", "move_artifact",
                                                   ("g/n/a.txt", to))[1][1]))
    for h in (hub, restarted, again):
        h.close()


def test_a_directory_duplicate_replayed_after_the_hub_died_is_answered_as_applied(
        tmp_path, monkeypatch):
    logdir = str(tmp_path / "exp")
    hub = Hub("dup", logdir)
    hub._stop.set()
    hub.artifacts.write_bytes("g/n/d/a.txt", b"a")
    _die_before_recording(hub, monkeypatch)
    with pytest.raises(_Died):
        hub.request("req-1", "duplicate_artifact", ("g/n/d", "g/n/e", False))
    monkeypatch.undo()
    _died(hub)
    restarted = Hub("dup", logdir)
    restarted._stop.set()
    ok, path = restarted.request("req-1", "duplicate_artifact", ("g/n/d", "g/n/e", False))
    assert (ok, path) == (True, os.path.join(logdir, "artifacts", "g", "n", "e"))
    assert restarted.artifacts.read_bytes("g/n/e/a.txt") == b"a"
    # a new request still refuses an existing directory when exists_ok is false
    refused = restarted.request("req-2", "duplicate_artifact", ("g/n/d", "g/n/e", False))
    assert refused[0] is False and refused[1][0] == "FileExistsError"
    hub.close()
    restarted.close()


def test_a_second_summary_point_and_its_warning_are_written_together_or_not_at_all(
        hub, monkeypatch):
    """A late partial's second point at a written step is documented as coming with a WARNING
    naming it: the point and the line are one transaction, so a failed write (a full disk, a
    kill) never leaves the point without its warning."""
    logdir = hub.logdir
    hub.writer.write_summaries([Summary("agent", 3, {"r/count": 2.0}, False)], hub.registry)

    def full(lines: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    late = [Summary("agent", 3, {"r/count": 3.0}, True)]
    monkeypatch.setattr(hub.writer.logs, "write", full)
    with pytest.raises(OSError):
        hub.writer.write_summaries(late, hub.registry)
    monkeypatch.undo()

    def points() -> list[tuple[int, float]]:
        return [(s, v) for s, v in tb_scalars(logdir)["agent/summary"]["r/count"]]

    def warnings() -> int:
        path = os.path.join(logdir, "logs", "all.log")
        if not os.path.exists(path):
            return 0
        with open(path, encoding="utf-8") as f:
            return sum("late store_metrics partial for group 'agent' step 3" in line for line in f)

    assert (points(), warnings()) == ([(3, 2.0)], 0)  # neither: the write failed whole
    hub.writer.write_summaries(late, hub.registry)  # the book hands it back; written now
    assert (points(), warnings()) == ([(3, 2.0), (3, 3.0)], 1)


def test_a_write_undone_after_its_text_log_rotated_is_written_once_when_resent(
        tmp_path, monkeypatch):
    """A transaction whose lines rotate a text log (``RAYPLEX_LOG_MAX_BYTES``) and then fails
    (a full disk, a kill) is undone whole: its lines are neither left in the rotated file nor in
    the new one, so the resend writes each line once."""
    from rayplex.config import reload_config

    monkeypatch.setenv("RAYPLEX_LOG_MAX_BYTES", "600")
    reload_config()
    hub = Hub("rotating", str(tmp_path / "exp"))
    hub._stop.set()
    try:
        for round_ in range(4):
            seq = round_ + 1
            batch = _batch(hub, "w1", seq, n=1, lines=[
                _line(f"r{round_} line {i} " + "x" * 40) for i in range(4)])
            real = hub.writer.journal.commit

            def fail_once(*args, calls=[], real=real, **kwargs):  # noqa: B006 - per round
                calls.append(1)
                if len(calls) == 1:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(*args, **kwargs)

            monkeypatch.setattr(hub.writer.journal, "commit", fail_once)
            assert hub.write_node(NodeCall("n1", 2 * seq, [batch]))[0].error is not None
            assert hub.write_node(NodeCall("n1", 2 * seq + 1, [batch]))[0].error is None
            monkeypatch.setattr(hub.writer.journal, "commit", real)
        hub.writer.flush()
        logs = tmp_path / "exp" / "logs"
        found: dict[str, int] = {}
        for path in sorted(logs.glob("all.log*")):
            for line in path.read_text(encoding="utf-8").splitlines():
                message = line.split(" line ", 1)
                if len(message) == 2:
                    key = line[line.index(" r"):].strip()
                    found[key] = found.get(key, 0) + 1
        assert len(list(logs.glob("all.log.*"))) >= 1  # it did rotate
        # (the hub's own error lines fill the files too: the oldest rounds may have been
        # dropped with the fifth backup, but nothing is there twice and the last round whole)
        last = {k for k in found if k.startswith("r3 ")}
        assert len(last) == 4 and set(found.values()) == {1}, sorted(
            (k, n) for k, n in found.items() if n != 1)
    finally:
        hub.close()
        monkeypatch.delenv("RAYPLEX_LOG_MAX_BYTES")
        reload_config()
