"""The hub's journal as a plain object: data records only, recovery that never raises, undo that
survives a read-only disk, requests and partials applied once."""

from __future__ import annotations

import ast
import errno
import importlib
import json
import logging
import os
import pickle
from pathlib import Path

import pytest

from rayplex.actors import journal as journal_module
from rayplex.actors.journal import HubState, Journal, RecentIds
from rayplex.actors.summaries import SummaryBook
from rayplex.artifacts import decode_chunks, encode_chunk
from rayplex.records import Partial
from rayplex.stats import PartialStats


def _journal(tmp_path: Path) -> Journal:
    return Journal(str(tmp_path / ".rayplex" / "journal"), root=str(tmp_path))


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    (tmp_path / ".rayplex").mkdir()
    return tmp_path


def _erofs(*args: object, **kwargs: object) -> None:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def _half_written(logdir: Path) -> Path:
    """``logdir/events`` as a hub that died mid-batch leaves it: 9 committed bytes, then part
    of a batch whose transaction (writer ``w``, seq 1) was begun but never committed."""
    data = logdir / "events"
    data.write_bytes(b"committed")
    journal = _journal(logdir)
    journal.recover()
    journal.begin({str(data): 9}, [("w", 1)])
    data.write_bytes(b"committed+half")
    journal.close()
    return data


class _CreatesAFile:
    """Unpickling this creates ``path``: what a crafted logdir would do to an unpickling hub."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def test_an_unfinished_write_is_undone_at_restart(logdir: Path) -> None:
    data = logdir / "events"
    data.write_bytes(b"committed")
    journal = _journal(logdir)
    journal.recover()
    journal.begin({str(data): 9}, [("w", 3)])
    with open(data, "ab") as f:
        f.write(b"half a batch")
    journal.close()  # the hub dies before commit
    state = _journal(logdir).recover()
    assert data.read_bytes() == b"committed"
    assert state.undone == {str(data): 9} and state.pending_undo == {}
    assert state.unfinished == [("w", 3)]


def test_a_committed_batch_is_remembered_and_a_torn_record_ignored(logdir: Path) -> None:
    journal = _journal(logdir)
    journal.recover()
    journal.begin({}, [("w", 7)])
    journal.commit([("w", 7)])
    with open(journal.path, "ab") as f:
        f.write(b"\x05\x00torn")
    state = _journal(logdir).recover()
    assert state.last_seq == {"w": 7} and state.unfinished == []


def test_records_are_json_and_nothing_is_pickled(logdir: Path) -> None:
    journal = _journal(logdir)
    journal.recover()
    journal.begin({str(logdir / "x"): 0}, [("w", 1)])
    part = Partial("agent", 2, ("mean",), {"r": PartialStats([1.0])}, ("agent/1",), (("w", 1),))
    journal.commit([("w", 1)], [part], ["req-1"])
    records, _, problem = decode_chunks((logdir / ".rayplex" / "journal").read_bytes())
    kinds = [json.loads(raw)["k"] for raw in records]
    assert problem is None and kinds == ["snapshot", "begin", "commit"]
    assert json.loads(records[1])["offsets"] == {"x": 0}  # relative to the logdir



@pytest.mark.parametrize("module", ["rayplex.actors.journal", "rayplex.actors.state"])
def test_hub_state_modules_import_no_pickle(module: str) -> None:
    source = Path(importlib.import_module(module).__file__ or "").read_text()
    imported = {alias.name for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module for node in ast.walk(ast.parse(source))
                                            if isinstance(node, ast.ImportFrom)}
    assert not imported & {"pickle", "cloudpickle", "dill", "marshal", "shelve"}


def test_quarantined_batches_and_applied_requests_count_as_committed(logdir: Path) -> None:
    journal = _journal(logdir)
    journal.recover()
    journal.begin({}, [("a", 1), ("b", 4)])
    journal.commit([("a", 1)], [], ["params-1", "artifact-2"], quarantined=[("b", 4)])
    state = _journal(logdir).recover()
    assert state.last_seq == {"a": 1, "b": 4}
    assert list(state.applied_requests) == ["params-1", "artifact-2"]


def test_applied_requests_keep_the_most_recent_ids_across_compaction(
        logdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "MAX_APPLIED_REQUESTS", 3)
    monkeypatch.setattr(RecentIds.__init__, "__defaults__", ((), 3))
    journal = _journal(logdir)
    journal.recover()
    for i in range(5):
        journal.begin({})
        journal.commit([], [], [f"r{i}"])
    state = _journal(logdir).recover()  # replays, then compacts into a snapshot
    assert list(state.applied_requests) == ["r2", "r3", "r4"]
    assert list(_journal(logdir).recover().applied_requests) == ["r2", "r3", "r4"]


def test_open_intents_survive_compaction_and_end_with_their_commit(logdir: Path) -> None:
    journal = _journal(logdir)
    journal.recover()
    target = str(logdir / "artifacts" / "g" / "n" / "b.txt")
    journal.intend("move-1", target)
    journal.intend("move-2", str(logdir / "artifacts" / "g" / "n" / "c.txt"))
    journal.commit([], [], ["move-2"])
    journal.intend("outside", "/etc/passwd")  # a hostile path is never answered
    state = _journal(logdir).recover()  # replays, then compacts into a snapshot
    assert state.intents == {"move-1": target}
    assert _journal(logdir).recover().intents == {"move-1": target}


def test_partials_and_written_steps_replay_into_the_summary_book(logdir: Path) -> None:
    journal = _journal(logdir)
    journal.recover()
    for step in (0, 1):
        journal.begin({})
        part = Partial("agent", step, ("count",), {"r": PartialStats([1.0, 2.0])}, ("agent/1",))
        journal.commit([("w", step)], [part])
    journal.written([("agent", 0)])
    state = _journal(logdir).recover(summary_delay_s=0.0, now=100.0)
    assert state.book is not None
    due = state.book.due(now=100.0, force=True)
    assert [(s.step, s.values, s.again) for s in due] == [(1, {"r/count": 2.0}, False)]


def test_a_compacted_journal_keeps_the_state(logdir: Path) -> None:
    journal = _journal(logdir)
    journal.recover()
    for seq in range(50):
        journal.begin({})
        journal.commit([("w", seq)])
    before = journal.size()
    book = SummaryBook(0.0)
    assert journal.compact(HubState({"w": 49}, book, RecentIds(["q"]),
                                    {str(logdir / "f"): 3}))
    assert journal.size() < before
    (logdir / "f").write_bytes(b"abcdef")
    state = _journal(logdir).recover()
    assert state.last_seq == {"w": 49} and "q" in state.applied_requests
    assert state.undone == {str(logdir / "f"): 3} and (logdir / "f").read_bytes() == b"abc"


def test_a_crafted_pickle_journal_is_never_unpickled(logdir: Path) -> None:
    marker = logdir / "pwned"
    evil = pickle.dumps(("snapshot", _CreatesAFile(marker)))
    path = logdir / ".rayplex" / "journal"
    path.write_bytes(encode_chunk(evil))
    state = _journal(logdir).recover()
    assert not marker.exists()
    assert state.last_seq == {} and state.book is not None
    assert (logdir / ".rayplex" / "journal.unreadable").read_bytes() == encode_chunk(evil)
    journal = _journal(logdir)  # the recovered journal works as usual
    journal.recover()
    journal.begin({})
    journal.commit([("w", 1)])
    assert _journal(logdir).recover().last_seq == {"w": 1}
    assert not marker.exists()


@pytest.mark.parametrize("record", [
    b"[1, 2]", b'{"k": "commit", "senders": [["w", "1"]]}', b'{"k": "exec"}',
    b'{"k": "snapshot", "format": "other"}', b"\xff\xfe", b"[" * 100_000,
])
def test_a_foreign_record_stops_the_replay_without_raising(logdir: Path, record: bytes) -> None:
    journal = _journal(logdir)
    journal.recover()
    journal.begin({})
    journal.commit([("w", 1)])
    with open(journal.path, "ab") as f:
        f.write(encode_chunk(record))
    state = _journal(logdir).recover()
    assert state.last_seq == {"w": 1}


def test_a_hostile_journal_cannot_truncate_files_outside_the_logdir(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.write_bytes(b"keep me")
    inner = tmp_path / "exp"
    (inner / ".rayplex").mkdir(parents=True)
    journal = _journal(inner)
    journal.recover()
    with open(journal.path, "ab") as f:
        f.write(encode_chunk(json.dumps(
            {"k": "begin", "offsets": {"../precious": 0, str(outside): 0},
             "batches": []}).encode()))
    state = _journal(inner).recover()
    assert outside.read_bytes() == b"keep me" and state.undone == state.pending_undo == {}


def test_recovery_on_a_read_only_disk_comes_up_and_keeps_the_undo_pending(
        logdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _half_written(logdir)
    monkeypatch.setattr(os, "truncate", _erofs)
    monkeypatch.setattr(journal_module, "atomic_write", _erofs)
    journal = _journal(logdir)
    state = journal.recover()  # must not raise
    assert state.pending_undo == {str(data): 9} and state.unfinished == [("w", 1)]
    assert journal.retry_undo(state.pending_undo) == {str(data): 9}
    assert journal.compaction_due(max_bytes=2**30) is False  # not before the retry delay
    monkeypatch.setattr(journal_module, "COMPACTION_RETRY_S", 0.0)
    assert journal.compaction_due(max_bytes=2**30) is True
    monkeypatch.undo()
    assert journal.retry_undo(state.pending_undo) == {}
    assert data.read_bytes() == b"committed"
    assert _journal(logdir).recover().pending_undo == {}


def test_a_pending_undo_survives_later_transactions_when_compaction_failed(
        logdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, other = _half_written(logdir), logdir / "other"
    with monkeypatch.context() as m:  # disk full at restart: no truncation, no compaction
        m.setattr(os, "truncate", _erofs)
        m.setattr(journal_module, "atomic_write", _erofs)
        journal = _journal(logdir)
        state = journal.recover()
    assert state.pending_undo == {str(data): 9}
    journal.begin({str(other): 0}, [("v", 1)])  # the hub goes on with other files
    journal.commit([("v", 1)])
    journal.close()
    state = _journal(logdir).recover()  # space again: the pending undo is not forgotten
    assert state.undone == {str(data): 9} and data.read_bytes() == b"committed"
    assert state.last_seq == {"v": 1}


def test_a_failed_truncation_in_the_running_hub_is_journalled_as_pending(logdir: Path) -> None:
    journal = _journal(logdir)
    journal.recover()
    path = str(logdir / "events")
    Path(path).write_bytes(b"0123456789")
    journal.begin({path: 4}, [("w", 1)])
    journal.abort(pending={path: 4})  # the hub's truncation failed (EROFS)
    state = _journal(logdir).recover()
    assert state.undone == {path: 4} and Path(path).read_bytes() == b"0123"


def test_an_append_that_fails_half_way_leaves_no_torn_record_behind(
        logdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = _journal(logdir)
    journal.recover()
    real_pwrite = os.pwrite

    def half_then_enospc(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "disk full")

    journal.begin({}, [("w", 1)])
    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", half_then_enospc)
        m.setattr(os, "ftruncate", _erofs)  # and the cleanup fails too
        with pytest.raises(OSError):
            journal.commit([("w", 1)])
        journal.abort()  # cannot be written now: owed to the journal
    journal.begin({}, [("w", 2)])
    journal.commit([("w", 2)])
    assert _journal(logdir).recover().last_seq == {"w": 2}


def test_an_unreadable_journal_is_reported_and_the_hub_comes_up(
        logdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = logdir / ".rayplex" / "journal"
    path.write_bytes(b"whatever")
    real_open = open

    def no_read(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if str(file) == str(path) and "r" in mode:
            raise PermissionError(errno.EACCES, "denied")
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", no_read)
    with caplog.at_level(logging.WARNING, logger="rayplex.hub"):
        state = _journal(logdir).recover()
    assert state.last_seq == {} and "cannot be read" in caplog.text
