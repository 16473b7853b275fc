"""A logdir on object storage, the pure parts (no Ray): resolving a URI, the object keys, the
upload journal, and the uploader as a plain object shipping to a ``file://`` bucket, killed
between its journal lines (issue 26). The S3 tests with Ray are in ``test_s3.py``."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow")

from rayplex import remote  # noqa: E402
from rayplex.upload import Uploader  # noqa: E402
from tests.conftest import compaction_held_at  # noqa: E402


def test_a_plain_path_is_not_remote_and_a_file_uri_is() -> None:
    assert remote.resolve("/tmp/exp") is None
    assert remote.resolve("runs:1/exp") is None
    target = remote.resolve("file:///tmp/some/exp")
    assert target is not None and target.root == "/tmp/some/exp"
    assert target.fs.type_name == "local"


@pytest.mark.parametrize("uri", ["nosuch://bucket/exp", "az://c/x", "https://host/x"])
def test_an_unresolvable_scheme_is_a_clear_value_error(uri: str) -> None:
    with pytest.raises(ValueError, match=f"{uri!r} is not a storage URI pyarrow.fs can open"):
        remote.resolve(uri)


def test_an_explicit_filesystem_takes_the_path_inside_it(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    target = remote.resolve(f"s3://{tmp_path}/exp", pafs.LocalFileSystem())
    assert target is not None and target.root == f"{tmp_path}/exp"
    with pytest.raises(TypeError, match="pyarrow.fs.FileSystem"):
        remote.resolve("s3://b/x", filesystem="not a filesystem")


def test_credentials_never_show_in_the_uri_people_see() -> None:
    uri = "s3://AKIAXXSECRETID:wJalrSECRETKEY@bkt/exp?endpoint_override=h:1&secret_key=wJalr2"
    shown = remote.redact(uri)
    assert "AKIAXXSECRETID" not in shown and "wJalr" not in shown and "bkt/exp" in shown
    with pytest.raises(ValueError) as info:  # an error that quotes the URI quotes it redacted
        remote.resolve(uri.replace("s3://", "nosuch://"))
    assert "SECRET" not in str(info.value) and "wJalr" not in str(info.value)


def test_keys_sort_in_write_order_and_parse_back() -> None:
    rel = "tensorboard/a/events.out.tfevents.1.host.2.0"
    keys = [remote.object_key(rel, off) for off in (0, 9, 100, 12_345_678)]
    assert keys == sorted(keys)
    assert [remote.parse_key(k) for k in keys] == [(rel, 0), (rel, 9), (rel, 100), (rel, 12_345_678)]
    assert all("tfevents" in k for k in keys)  # TensorBoard reads every segment as an event file


def test_the_journal_replays_done_and_pending_and_ignores_a_torn_line(tmp_path: Path) -> None:
    journal = remote.UploadJournal(str(tmp_path / "j.jsonl"))
    journal.intend("logs/all.log", "stream", "logs/all.log", 0, 10, "h1")
    journal.done("logs/all.log")
    journal.intend("logs/all.log.part-0000000000000010", "stream", "logs/all.log", 10, 25, "h2")
    with open(journal.path, "ab") as f:
        f.write(b'{"op": "done", "key": "logs/all')  # killed mid-line
    book = remote.UploadJournal(journal.path).load()
    assert book.ends == {"logs/all.log": 10} and book.objects == 1
    assert list(book.pending) == ["logs/all.log.part-0000000000000010"]


def _bucket_versions(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class _Puts:
    """Every PUT the uploader makes, recorded (a file:// bucket has no request log)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[tuple[str, bytes]] = []
        self.fail_after: int | None = None
        self.landed = False  # killed after the object landed (before its done line)
        real = remote.put

        def put(target: remote.Target, key: str, data: bytes) -> None:
            if self.fail_after is not None and len(self.keys) >= self.fail_after:
                if self.landed:
                    real(target, key, data)
                    self.keys.append((key, data))
                raise SystemExit("killed mid-upload")  # what a SIGKILL leaves: no done line
            real(target, key, data)
            self.keys.append((key, data))

        monkeypatch.setattr(remote, "put", put)


def test_an_uploader_killed_between_put_and_journal_resumes_without_rewriting_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    events = staging / "tensorboard" / "run" / "events.out.tfevents.1.h.1.0"
    events.parent.mkdir(parents=True)
    log = staging / "logs" / "all.log"
    log.parent.mkdir(parents=True)
    params = staging / "params" / "learner" / "main.json"
    params.parent.mkdir(parents=True)
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    committed: dict[str, int] = {}

    def write(i: int) -> None:
        with open(events, "ab") as f:
            f.write(bytes([i]) * 100)
        with open(log, "ab") as f:
            f.write(f"line {i}\n".encode())
        params.write_text(json.dumps({"i": i}))
        committed.update({"tensorboard/run/events.out.tfevents.1.h.1.0": events.stat().st_size,
                          "logs/all.log": log.stat().st_size})

    puts = _Puts(monkeypatch)
    write(0)
    assert Uploader(str(staging), target, lambda: committed, segment_s=1e9).drain(10)
    write(1)
    committed["logs/all.log"] -= 3  # the hub committed only part of it: only that goes up
    puts.fail_after = len(puts.keys) + 1
    with pytest.raises(SystemExit):
        Uploader(str(staging), target, lambda: committed, segment_s=1e9).round(force=True)
    write(2)
    puts.landed = True
    puts.fail_after = len(puts.keys) + 1
    with pytest.raises(SystemExit):
        Uploader(str(staging), target, lambda: committed, segment_s=1e9).round(force=True)
    write(3)
    puts.fail_after = None
    again = Uploader(str(staging), target, lambda: committed, segment_s=1e9)
    assert again.drain(10) and not again.book.pending
    keys = [key for key, _ in puts.keys if not key.startswith(".rayplex/uploads")]
    streams = [k for k in keys if remote.kind_of(remote.parse_key(k)[0]) == "stream"]
    assert len(streams) == len(set(streams)), "a segment was uploaded twice"
    got = _bucket_versions(bucket)
    assert b"".join(v for k, v in sorted(got.items()) if k.startswith("tensorboard/")) == \
        events.read_bytes()
    remote.sync(target, str(tmp_path / "copy"))
    copy = tmp_path / "copy"
    assert (copy / "logs" / "all.log").read_bytes() == log.read_bytes()[:committed["logs/all.log"]]
    assert (copy / "tensorboard" / "run" / events.name).read_bytes() == events.read_bytes()
    assert json.loads((copy / "params" / "learner" / "main.json").read_text()) == {"i": 3}
    journal = (copy / ".rayplex" / "uploads.jsonl").read_bytes()
    assert journal == (staging / ".rayplex" / "uploads.jsonl").read_bytes()  # mirrored whole


def test_a_segment_waits_for_its_age_or_size_unless_drained(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "logs").mkdir(parents=True)
    (staging / "logs" / "all.log").write_bytes(b"x" * 50)
    target = remote.resolve(f"file://{tmp_path / 'bucket'}")
    assert target is not None
    up = Uploader(str(staging), target, lambda: {"logs/all.log": 50}, segment_s=1e9,
                  segment_bytes=100)
    assert up.round() is False and up.counters["lag_bytes"] == 50
    assert not (tmp_path / "bucket" / "logs").exists()
    assert up.round(force=True) is True
    assert (tmp_path / "bucket" / "logs" / "all.log").read_bytes() == b"x" * 50
    assert os.path.getsize(staging / ".rayplex" / "uploads.jsonl") > 0


def test_a_new_staging_directory_starts_from_the_bucket_and_rewrites_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's node is gone (its staging directory with it): the next init hydrates a new
    staging directory from the bucket, and the hub appends after what is there."""
    first, second, bucket = tmp_path / "node1", tmp_path / "node2", tmp_path / "bucket"
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    puts = _Puts(monkeypatch)

    def log_lines(staging: Path, lines: list[str]) -> dict[str, int]:
        path = staging / "logs" / "all.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.writelines(line + "\n" for line in lines)
        (staging / "params").mkdir(exist_ok=True)
        (staging / "params" / "p.json").write_text(json.dumps({"n": len(lines)}))
        return {"logs/all.log": path.stat().st_size}

    committed = log_lines(first, ["a", "b"])
    assert Uploader(str(first), target, lambda: committed, segment_s=1e9).drain(10)
    assert remote.hydrate(target, str(first)) == 0  # a journal here: nothing to do
    assert remote.hydrate(target, str(second)) > 0
    assert (second / "logs" / "all.log").read_text() == "a\nb\n"
    committed = log_lines(second, ["c"])
    assert Uploader(str(second), target, lambda: committed, segment_s=1e9).drain(10)
    keys = [key for key, _ in puts.keys]
    twice = {k for k in keys if keys.count(k) > 1}
    assert all(remote.kind_of(k) == "state" for k in twice), twice  # params: replaced whole
    assert [k for k in keys if k.startswith("logs/")] == [
        "logs/all.log", "logs/all.log.part-0000000000000004"]
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    assert (copy / "logs" / "all.log").read_text() == "a\nb\nc\n"


def test_a_rotated_text_log_is_one_stream_in_the_bucket_uploaded_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub rotates logs/all.log (to all.log.1, .2): the bucket keeps one stream of every
    line, each byte PUT once, even when the rotation comes before the uploader shipped the
    old file's last lines."""
    from rayplex.actors.logfiles import LogFiles
    from rayplex.textlog import LogLine

    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    puts = _Puts(monkeypatch)
    files = LogFiles(staging / "logs", max_bytes=300, backup_count=4, level="INFO")

    def committed() -> dict[str, int]:
        return {p.relative_to(staging).as_posix(): p.stat().st_size
                for p in (staging / "logs").rglob("*") if p.is_file()}

    up = Uploader(str(staging), target, committed, segment_s=1e9)
    sent = []
    for i in range(40):
        line = f"line {i:03d} " + "x" * 30
        sent.append(line)
        files.write([LogLine(float(i), 20, "learner/main", "n", 1, "l", line)])
        files.flush()
        if i % 7 == 3:  # the uploader runs now and then: rotations happen in between
            assert up.drain(10)
    assert up.drain(10)
    files.close()
    keys = [key for key, _ in puts.keys if key.startswith("logs/")]
    assert len(keys) == len(set(keys)), "an object was PUT twice"
    assert not [k for k in keys if re.search(r"\.log\.\d", k)], keys  # no backup went up
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    got = (copy / "logs" / "all.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in got] == sent


def test_an_artifact_written_again_is_a_new_generation_never_a_rewrite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An artifact replaced by a write of the same path goes up as new objects; its old ones
    are never overwritten, and a reader of the bucket sees the new bytes only."""
    from rayplex.artifacts import ArtifactStore

    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    puts = _Puts(monkeypatch)
    store = ArtifactStore(staging / "artifacts")
    rel = "artifacts/learner/w.pkl"

    def committed() -> dict[str, int]:
        return {rel: (staging / rel).stat().st_size}

    up = Uploader(str(staging), target, committed, segment_s=1e9)
    store.write_bytes("learner/w.pkl", b"A" * 100)
    assert up.drain(10)
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    assert (copy / rel).read_bytes() == b"A" * 100
    for data in (b"B" * 150, b"C" * 40):  # longer, then shorter than what is up
        store.write_bytes("learner/w.pkl", data)
        assert up.drain(10)
        remote.sync(target, str(copy))
        assert (copy / rel).read_bytes() == data
    store.append_bytes("learner/w.pkl", b"D" * 10)
    assert up.drain(10)
    remote.sync(target, str(copy))
    assert (copy / rel).read_bytes() == b"C" * 40 + b"D" * 10
    keys = [key for key, _ in puts.keys if key.startswith("artifacts/")]
    assert len(keys) == len(set(keys)), f"an object was PUT twice: {keys}"
    # A new staging directory (a new node) starts from the latest generation.
    assert remote.hydrate(target, str(tmp_path / "node2")) > 0
    assert (tmp_path / "node2" / rel).read_bytes() == b"C" * 40 + b"D" * 10


def test_segments_compacted_away_leave_the_bucket_after_the_new_manifest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store merges segments 1 and 2 into 3: once 3 and the manifest naming it are up, 1
    and 2 are deleted from the bucket (a reader of the bucket sees each point once), also by
    an uploader restarted in between."""
    from dataclasses import asdict

    from rayplex.store.format import Segment

    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    store = staging / "store"
    store.mkdir(parents=True)
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    order: list[str] = []
    real_delete = getattr(remote, "delete", None)

    def delete(target: remote.Target, key: str) -> None:
        order.append(f"delete {key}")
        assert real_delete is not None
        real_delete(target, key)

    monkeypatch.setattr(remote, "delete", delete, raising=False)
    puts = _Puts(monkeypatch)

    def commit(ids: list[int]) -> None:
        segs = [Segment(i, 10, 1, 1, 0) for i in ids]
        for seg in segs:
            for name in (seg.raw, seg.pyr):
                if not (store / name).exists():
                    (store / name).write_bytes(f"{name}".encode())
        for name in os.listdir(store):
            if name.endswith(".parquet") and name not in {n for s in segs for n in (s.raw, s.pyr)}:
                os.remove(store / name)  # compaction removes the merged segments locally
        (store / "MANIFEST.json").write_text(json.dumps({"segments": [asdict(s) for s in segs]}))

    commit([1, 2])
    assert Uploader(str(staging), target, lambda: {}, segment_s=1e9).drain(10)
    assert sorted(os.listdir(bucket / "store")) == [
        "MANIFEST.json", "pyr-00000001.parquet", "pyr-00000002.parquet",
        "seg-00000001.parquet", "seg-00000002.parquet"]
    commit([3])
    up = Uploader(str(staging), target, lambda: {}, segment_s=1e9)
    monkeypatch.setattr(up, "_retire", lambda: None, raising=False)  # killed before it deleted anything
    assert up.drain(10)
    assert (bucket / "store" / "seg-00000001.parquet").exists()
    assert Uploader(str(staging), target, lambda: {}, segment_s=1e9).drain(10)
    assert sorted(os.listdir(bucket / "store")) == [
        "MANIFEST.json", "pyr-00000003.parquet", "seg-00000003.parquet"]
    put_keys = [k for k, _ in puts.keys]
    assert put_keys.index("store/MANIFEST.json", 1) < len(put_keys)  # the new manifest went up
    assert order == ["delete store/pyr-00000001.parquet", "delete store/pyr-00000002.parquet",
                     "delete store/seg-00000001.parquet", "delete store/seg-00000002.parquet"]
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    assert sorted(os.listdir(copy / "store")) == [
        "MANIFEST.json", "pyr-00000003.parquet", "seg-00000003.parquet"]


def test_the_staging_directory_is_bounded_uploaded_backups_go_and_a_dead_bucket_holds_writes(
        tmp_path: Path) -> None:
    """Rotated text logs whose bytes are up are deleted locally; while the bucket cannot be
    written and more than the bound waits, the flag the hub refuses writes on is up, and it
    goes down once the bucket caught up."""
    from rayplex.actors.logfiles import LogFiles
    from rayplex.textlog import LogLine

    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    bucket.write_text("not a directory: every PUT fails")  # the bucket is unreachable
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    files = LogFiles(staging / "logs", max_bytes=400, backup_count=1000, level="INFO")

    def committed() -> dict[str, int]:
        return {p.relative_to(staging).as_posix(): p.stat().st_size
                for p in (staging / "logs").rglob("*") if p.is_file()}

    up = Uploader(str(staging), target, committed, segment_s=1e9, max_bytes=2000)
    peak = 0
    for i in range(100):
        files.write([LogLine(float(i), 20, "learner/main", "n", 1, "l", f"line {i:03d}")])
        files.flush()
        if up.attempt(force=True) is None and remote.staging_full(str(staging)):
            written = i + 1
            break
        peak = max(peak, up.counters["lag_bytes"])
    else:
        raise AssertionError("the flag never went up")
    assert "not yet in the bucket" in (remote.staging_full(str(staging)) or "")
    assert 2000 < up.counters["lag_bytes"] < 2000 + 400 and up.counters["staging_full"]
    bucket.unlink()  # the bucket is back
    assert up.drain(10) and remote.staging_full(str(staging)) is None
    assert not up.counters["staging_full"] and up.counters["dropped"] > 0
    logs = sorted(p.name for p in (staging / "logs").rglob("*") if p.is_file())
    assert logs == ["all.log", "main.log"], logs  # the backups are up, and gone locally
    for i in range(100, 160):  # the bucket up: the staging logs stay below a rotation or two
        files.write([LogLine(float(i), 20, "learner/main", "n", 1, "l", f"line {i:03d}")])
        files.flush()
        assert up.drain(10)
        assert sum(p.stat().st_size for p in (staging / "logs").rglob("*") if p.is_file()) \
            <= 2 * 400
    files.close()
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    got = (copy / "logs" / "all.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in got] == [
        f"line {i:03d}" for i in [*range(written), *range(100, 160)]]


def test_a_bucket_claim_refuses_a_second_hub_until_released_or_expired(tmp_path: Path) -> None:
    from rayplex.errors import LogdirConflictError

    target = remote.resolve(f"file://{tmp_path / 'bucket'}")
    assert target is not None
    a = remote.claimant("expA", str(tmp_path / "node1"))
    b = remote.claimant("expB", str(tmp_path / "node2"))
    assert a["id"] != b["id"] and remote.claimant("expA", str(tmp_path / "node1")) == a
    remote.take_claim(target, a, settle_s=0)
    remote.take_claim(target, a, settle_s=0)  # the same hub again (restarted): still its own
    with pytest.raises(LogdirConflictError, match="'expA'"):
        remote.take_claim(target, b, settle_s=0)
    assert remote.renew_claim(target, a) is None
    remote.release_claim(target, b)  # not b's: nothing happens
    with pytest.raises(LogdirConflictError):
        remote.take_claim(target, b, settle_s=0)
    remote.release_claim(target, a)
    remote.take_claim(target, b, lease_s=0.2, settle_s=0)
    assert "'expB'" in (remote.renew_claim(target, a) or "")  # a finds it taken: uploads stop
    up = Uploader(str(tmp_path / "node1"), target, lambda: {}, claim=a)
    up.renewed = -1e9
    assert up.attempt(force=True) is None and "claimed by hub 'expB'" in up.counters["problem"]
    deadline = time.monotonic() + 10
    while remote.renew_claim(target, a) is not None:  # b's lease runs out unrenewed
        assert time.monotonic() < deadline, "b's claim never expired"
        time.sleep(0.05)
    assert up.attempt(force=True) is not None


def test_the_stores_manifest_log_goes_up_after_its_segments_and_old_logs_leave(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's commits after its snapshot are records of its manifest log: a reader of the
    bucket sees them (the log goes up, after the segments its records name), and a log that a
    new snapshot replaced leaves the bucket."""
    pytest.importorskip("duckdb")

    import rayplex
    from rayplex.store.format import Layout, Manifest

    staging, bucket, target, writer, template = _staged_store_writer(tmp_path)
    try:
        def commit(steps: range) -> None:
            writer.write(b"".join(template.record(1000.0 + s, s, float(s)) for s in steps))
            writer.flush()
            rayplex.index(staging)

        commit(range(0, 50))
        commit(range(50, 100))  # appended to the log, the snapshot unchanged
        local = Manifest.load(Layout.of(staging))
        assert local.log is not None and len(local.segments) == 2
        assert Uploader(str(staging), target, lambda: {}, segment_s=1e9).drain(10)
        copy = tmp_path / "copy"
        remote.sync(target, str(copy))
        assert Manifest.load(Layout.of(copy)).segments == local.segments  # not the snapshot's 1
        series = rayplex.read_series(copy, "main/x", refresh=False)  # the bucket's store alone
        assert int(series["count"].sum()) == 100
        # commits until one checkpoints: a new snapshot with a new log replaces the old log
        monkeypatch.setattr("rayplex.store.indexer.STORE_LOG_CHECKPOINT_BYTES", 1)
        first_log, step = local.log, 100
        while Manifest.load(Layout.of(staging)).log == first_log:
            assert step < 2000, "the store never checkpointed"
            commit(range(step, step + 50))
            step += 50
        assert Uploader(str(staging), target, lambda: {}, segment_s=1e9).drain(10)
        assert not (bucket / "store" / first_log).exists()  # the replaced log left the bucket
        remote.sync(target, str(copy))
        series = rayplex.read_series(copy, "main/x", refresh=False)
        assert int(series["count"].sum()) == step
    finally:
        writer.close()


def _staged_hub(tmp_path: Path, bound: int, forwarders: tuple[str, ...] = ()
                ) -> tuple[Path, Path, remote.Target, Any]:
    """A plain Hub (no Ray) writing a staging directory bounded to ``bound`` bytes (0: no
    bound), event files rotated at 1 KiB, read by ``forwarders``; and its ``file://`` bucket."""
    from rayplex.actors.hub import Hub

    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    remote.set_staged(str(staging), remote.Staged(max_bytes=bound, rotate_bytes=1024,
                                                  rotate_s=3600.0, forwarders=forwarders))
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    return staging, bucket, target, Hub("staged", str(staging))


def _write_and_upload(hub: Any, up: Uploader, calls: int) -> None:
    """``calls`` node calls of 5 scalars of ``learner/a`` (tag ``x``), each followed by an
    upload round."""
    from rayplex.encoder import Encoder
    from rayplex.items import Scalar
    from rayplex.records import NodeCall

    for seq in range(1, calls + 1):
        batch = Encoder(hub.registry).encode(
            [Scalar("learner/a", "x", seq * 10 + i, 1.0, float(i)) for i in range(5)],
            "w1", seq, hub.experiment)
        assert hub.write_node(NodeCall("n", seq, [batch]))[0].error is None
        assert up.attempt(force=True) is not None


def _staged_store_writer(tmp_path: Path) -> tuple[Path, Path, remote.Target, Any, Any]:
    """A staging directory with one run ``learner`` being written (its event writer and the
    template of tag ``main/x``), and its bucket as a ``file://`` target."""
    from rayplex.event_bytes import ScalarTemplate, tag_header
    from rayplex.events import EventWriter

    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    writer = EventWriter(str(staging / "tensorboard" / "learner"))
    return staging, bucket, target, writer, ScalarTemplate(tag_header("main/x"))


def _stream_bytes(staging: Path) -> int:
    """The bytes the staging bound counts: event files and text logs (with their backups)."""
    total = 0
    for top in ("tensorboard", "logs"):
        for p in (staging / top).rglob("*"):
            if p.is_file() and (top != "tensorboard" or "tfevents" in p.name):
                total += p.stat().st_size
    return total


def test_a_staged_hub_stays_within_its_bound_to_the_byte_and_never_wedges(
        tmp_path: Path) -> None:
    """Issue 26: a staged logdir that writes far more than its bound, the bucket reachable.
    Checked after every write, the staging directory's event files and logs never pass the
    bound (not even between two measures of the uploader); a batch refused at the bound is
    written after the next upload round (closed event files, once up, leave the staging
    directory: the hub never wedges); every scalar is in the bucket exactly once."""
    from rayplex.encoder import Encoder
    from rayplex.items import Line, Scalar
    from rayplex.records import NodeCall
    from tests.conftest import tb_scalars

    bound = 8192
    staging, bucket, target, hub = _staged_hub(tmp_path, bound)
    batches, peak, refused = 300, 0, 0
    try:
        up = Uploader(str(staging), target, hub.writer.committed_files,
                      open_files=hub.writer.open_event_files, segment_s=1e9, max_bytes=bound)
        for seq in range(1, batches + 1):
            items = [Scalar("learner/a", "x", seq * 10 + i, 1.0, float(i)) for i in range(5)]
            items.append(Line((1.0, 20, "learner/a", "node0001", 1, "app", f"line {seq}", None)))
            batch = Encoder(hub.registry).encode(items, "w1", seq, hub.experiment)
            for attempt in range(4):
                ack = hub.write_node(NodeCall("n", seq * 10 + attempt, [batch]))[0]
                peak = max(peak, _stream_bytes(staging))
                assert peak <= bound, f"staging holds {peak} bytes, bound {bound}"
                if ack.error is None:
                    break
                refused += 1
                assert up.attempt(force=True) is not None  # one upload round makes room
            else:
                raise AssertionError(f"batch {seq} refused 4 times: the staging dir wedged")
            if seq % 25 == 0:
                assert up.attempt(force=True) is not None
        # a node call holding more than the bound (its node buffer's backlog after an outage)
        # is written as far as it fits, the rest resent: never refused whole forever
        backlog = [Encoder(hub.registry).encode(
            [Scalar("learner/a", "x", seq * 10 + i, 1.0, float(i)) for i in range(5)], "w2",
            seq, hub.experiment) for seq in range(1, 101)]
        for call in range(100):
            acks = hub.write_node(NodeCall("n2", call, backlog))
            peak = max(peak, _stream_bytes(staging))
            assert peak <= bound, f"staging holds {peak} bytes, bound {bound}"
            if all(a.error is None for a in acks):
                break
            assert up.attempt(force=True) is not None
        else:
            raise AssertionError("a node call larger than the bound wedged the hub")
        assert call > 0  # it did not fit at once
        # batches of 3/4 of the bound each (a worker's backlog): the hub makes all the room
        # there is (its text logs rotated too, their backups up and gone) and writes each
        for seq in range(1, 6):
            big = Encoder(hub.registry).encode(
                [Scalar("learner/a", "x", 10_000 + seq * 1000 + i, 1.0, float(i))
                 for i in range(130)], "w3", seq, hub.experiment)
            for attempt in range(6):
                ack = hub.write_node(NodeCall("n3", seq * 10 + attempt, [big]))[0]
                peak = max(peak, _stream_bytes(staging))
                assert peak <= bound, f"staging holds {peak} bytes, bound {bound}"
                if ack.error is None:
                    break
                assert up.attempt(force=True) is not None
            else:
                raise AssertionError(f"a batch of {len(big.chunks[0].blob)} bytes wedged the hub")
        assert not hub.info()["staging_oversize"]
        # one batch larger than the whole bound: written once the staging dir was emptied
        huge = Encoder(hub.registry).encode(
            [Scalar("learner/a", "x", 20_000 + i, 1.0, float(i)) for i in range(300)], "w4", 1,
            hub.experiment)
        for attempt in range(6):
            if hub.write_node(NodeCall("n4", attempt, [huge]))[0].error is None:
                break
            assert up.attempt(force=True) is not None
        else:
            raise AssertionError("a batch larger than the bound was never written")
        assert hub.info()["staging_oversize"] == 1
        from rayplex.event_bytes import file_version_record

        alone = len(huge.chunks[0].blob) + len(file_version_record(0.0))  # its file, and only it
        assert alone <= _stream_bytes(staging) <= alone + bound // 10 and alone > bound
        assert up.drain(10)
        assert refused > 0 and up.counters["deleted"] > 0  # the bound was reached, and freed
    finally:
        hub._stop.set()
        hub.close()
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    steps = sorted(step for step, _ in tb_scalars(str(copy))["learner"]["a/x"])
    assert steps == sorted([seq * 10 + i for seq in range(1, batches + 1) for i in range(5)
                            for _ in range(1 if seq > 100 else 2)]  # w1's and w2's
                           + [10_000 + seq * 1000 + i for seq in range(1, 6) for i in range(130)]
                           + [20_000 + i for i in range(300)])
    lines = (copy / "logs" / "all.log").read_text().splitlines()
    assert sorted(int(x.rsplit(" ", 1)[1]) for x in lines if "line " in x) == list(
        range(1, batches + 1))


def test_the_stores_src_files_go_up_with_their_segments_and_leave_with_them(
        tmp_path: Path) -> None:
    """A store segment's ``src-<id>.json`` (the event-file ranges it was read from, which a
    rebuild and a compaction need) goes up with the segment, and a staging directory rebuilt
    from the bucket (a new node) has them; once compacted away they leave the bucket too."""
    pytest.importorskip("duckdb")

    import rayplex
    from rayplex.store.format import Layout, Manifest

    staging, bucket, target, writer, template = _staged_store_writer(tmp_path)
    try:
        for start in (0, 50, 100):
            writer.write(b"".join(template.record(1000.0 + s, s, float(s))
                                  for s in range(start, start + 50)))
            writer.flush()
            rayplex.index(staging, compaction=False)
            assert Uploader(str(staging), target, lambda: {}, segment_s=1e9).drain(10)
        segments = Manifest.load(Layout.of(staging)).segments
        assert len(segments) == 3
        for seg in segments:
            up = bucket / "store" / seg.src
            assert up.exists(), f"{seg.src} is not in the bucket"
            assert up.read_bytes() == (staging / "store" / seg.src).read_bytes()
        node2 = tmp_path / "node2"
        assert remote.hydrate(target, str(node2)) > 0
        assert all((node2 / "store" / seg.src).exists() for seg in segments)
        from rayplex.store.indexer import compact

        assert compact(staging) > 0  # the three merged into one
        merged = Manifest.load(Layout.of(staging)).segments
        assert [s.id for s in merged] != [s.id for s in segments]
        assert Uploader(str(staging), target, lambda: {}, segment_s=1e9).drain(10)
        assert sorted(p.name for p in (bucket / "store").glob("src-*")) == sorted(
            s.src for s in merged)
    finally:
        writer.close()


def test_a_staged_hub_keeps_every_rotated_text_log_until_the_bucket_has_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text logs rotated often (``RAYPLEX_LOG_MAX_BYTES``) while the uploader ships nothing:
    the hub keeps as many backups as the staging bound holds, and refuses writes at the bound
    before it would drop one, so every line reaches the bucket once (the stdlib-style
    ``backup_count`` of 5 dropped the oldest backups unshipped)."""
    from rayplex.config import reload_config
    from rayplex.encoder import Encoder
    from rayplex.items import Line
    from rayplex.records import NodeCall

    monkeypatch.setenv("RAYPLEX_LOG_MAX_BYTES", "200")
    reload_config()
    bound = 8192
    staging, bucket, target, hub = _staged_hub(tmp_path, bound)
    written = 0
    try:
        for seq in range(1, 500):  # no upload round: until the bound refuses a write
            line = Line((1.0, 20, "learner/a", "node0001", 1, "app", f"line {seq}", None))
            batch = Encoder(hub.registry).encode([line], "w1", seq, hub.experiment)
            if hub.write_node(NodeCall("n", seq, [batch]))[0].error is not None:
                break
            written = seq
        else:
            raise AssertionError("the bound never refused a write")
        up = Uploader(str(staging), target, hub.writer.committed_files,
                      open_files=hub.writer.open_event_files, segment_s=1e9, max_bytes=bound)
        assert up.drain(10)
    finally:
        hub._stop.set()
        hub.close()
        monkeypatch.undo()  # before the next test reads the configuration
        reload_config()
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    for log in ("all.log", "learner/a.log"):
        lines = (copy / "logs" / log).read_text().splitlines()
        assert sorted(int(x.rsplit(" ", 1)[1]) for x in lines if "line " in x) == list(
            range(1, written + 1)), log


def test_a_closed_event_file_leaves_staging_only_once_every_forwarder_read_it(
        tmp_path: Path) -> None:
    """An event file the hub closed and the bucket holds whole stays in the staging directory
    while a forwarder's cursor is behind its end (the forwarder reads it there), and leaves it
    at the first upload round after the cursor passed its end."""
    from rayplex.cursor import Cursor
    from rayplex.layout import forward_cursor_path

    staging, bucket, target, hub = _staged_hub(tmp_path, 0, forwarders=("mlflow",))
    try:
        up = Uploader(str(staging), target, hub.writer.committed_files,
                      open_files=hub.writer.open_event_files, segment_s=1e9)
        _write_and_upload(hub, up, 40)
        events = staging / "tensorboard"

        def closed() -> dict[str, int]:
            open_now = set(hub.writer.open_event_files())
            return {str(p.relative_to(staging)): p.stat().st_size
                    for p in events.rglob("events.out.tfevents.*")
                    if str(p.relative_to(staging)) not in open_now}

        behind = closed()
        assert len(behind) >= 2  # rotated at 1 KiB: closed files, all in the bucket
        assert up.attempt(force=True) is not None
        assert closed() == behind and up.counters["deleted"] == 0  # the forwarder read none
        half = dict(sorted(behind.items())[: len(behind) // 2])
        cursor = Cursor(offsets={**half, **{rel: size - 1 for rel, size in behind.items()
                                            if rel not in half}})
        cursor.save(forward_cursor_path(str(staging), "mlflow"))
        assert up.attempt(force=True) is not None
        assert closed() == {rel: size for rel, size in behind.items() if rel not in half}
        Cursor(offsets=behind).save(forward_cursor_path(str(staging), "mlflow"))
        assert up.attempt(force=True) is not None
        assert closed() == {} and up.counters["deleted"] == len(behind)
    finally:
        hub.close()


def test_the_uploader_reads_a_damaged_forwarder_cursor_as_the_forwarder_does(
        tmp_path: Path) -> None:
    """A forwarder's cursor file damaged (a torn write) while its second copy (``.bak``) holds
    the offsets: the uploader reads the copy, as the forwarder itself would on restart
    (one codec, :class:`rayplex.cursor.Cursor`), deletes the closed event files that copy says
    were read, and leaves the damaged file where it is (the forwarder owns it). Both copies
    damaged: nothing is deleted."""
    from rayplex.cursor import Cursor
    from rayplex.layout import forward_cursor_path

    staging, bucket, target, hub = _staged_hub(tmp_path, 0, forwarders=("mlflow",))
    try:
        up = Uploader(str(staging), target, hub.writer.committed_files,
                      open_files=hub.writer.open_event_files, segment_s=1e9)
        _write_and_upload(hub, up, 30)
        open_now = set(hub.writer.open_event_files())
        closed = {str(p.relative_to(staging)): p.stat().st_size
                  for p in (staging / "tensorboard").rglob("events.out.tfevents.*")
                  if str(p.relative_to(staging)) not in open_now}
        assert len(closed) >= 2
        path = forward_cursor_path(str(staging), "mlflow")
        Cursor(offsets=closed).save(path)
        for damaged in (path, path + ".bak"):  # both damaged
            Path(damaged).write_bytes(Path(damaged).read_bytes()[:-7])
        assert up.attempt(force=True) is not None
        assert up.counters["deleted"] == 0
        Cursor(offsets=closed).save(path)
        Path(path).write_bytes(Path(path).read_bytes()[:-7])  # torn: the copy is whole
        assert up.attempt(force=True) is not None
        assert up.counters["deleted"] == len(closed)
        assert not any((staging / rel).exists() for rel in closed)
        assert Path(path).exists()  # not set aside by the uploader: the forwarder's to do
        assert Cursor.load(path).offsets == closed  # the forwarder recovers the same
    finally:
        hub.close()


def _store_bytes_here(staging: Path) -> int:
    """The bytes of the store's files in a staging directory (its lock aside)."""
    return sum(p.stat().st_size for p in (staging / "store").glob("*")
               if p.is_file() and p.name != "LOCK")


def test_store_segments_leave_staging_once_up_count_in_the_bound_and_go_up_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26: the store's files count against the staging bound, and a segment leaves the
    staging directory once the bucket holds it. Compaction merges the segments not yet up
    (one that is up is never merged again: each store object is PUT once, none deleted from
    the bucket); the store indexes on (nothing rebuilt); the bucket holds every point once."""
    pytest.importorskip("duckdb")

    import rayplex
    from rayplex.event_bytes import ScalarTemplate, tag_header
    from rayplex.events import EventWriter
    from rayplex.store.format import Layout, Manifest

    assert remote.counted("store/seg-00000001.parquet") and remote.counted("store/MANIFEST.json")
    puts = _Puts(monkeypatch)
    staging, bucket = tmp_path / "staging", tmp_path / "bucket"
    remote.set_staged(str(staging), remote.Staged(max_bytes=1 << 20, store=True))
    target = remote.resolve(f"file://{bucket}")
    assert target is not None
    template = ScalarTemplate(tag_header("main/x"))

    def committed() -> dict[str, int]:  # every event file is closed: committed whole
        return {str(p.relative_to(staging)): p.stat().st_size
                for p in (staging / "tensorboard").rglob("events.out.tfevents.*")}

    up = Uploader(str(staging), target, committed, open_files=lambda: [], segment_s=1e9)
    peaks, step, compacted = [0, 0], 0, 0
    for round_ in range(40):
        writer = EventWriter(str(staging / "tensorboard" / "learner"))  # one closed file a round
        writer.write(b"".join(template.record(1000.0 + s, s, float(s))
                              for s in range(step, step + 50)))
        writer.close()
        step += 50
        report = rayplex.index(staging)
        assert report.rebuilt == [] and report.points == 50, round_
        compacted += report.compacted
        phase = round_ // 20  # uploads every 10th round, then every round
        peaks[phase] = max(peaks[phase], _store_bytes_here(staging))
        if phase or round_ % 10 == 9:
            assert up.attempt(force=True) is not None
            layout = Layout.of(staging)
            assert all(layout.uploaded(seg) and not any(
                (layout.store / name).exists() for name in seg.files)
                for seg in Manifest.load(layout).segments), round_  # all up: none left here
    assert compacted > 0  # the segments not yet up were merged before they went up
    assert peaks[1] < peaks[0] / 3, peaks  # uploaded at once, a segment at a time is here
    store_puts = [key for key, _ in puts.keys
                  if key.startswith("store/") and "MANIFEST" not in key]
    assert len(store_puts) == len(set(store_puts))
    assert {k for k in store_puts if k.endswith(".parquet")} == {
        f"store/{p.name}" for p in (bucket / "store").glob("*.parquet")}  # none deleted
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    frame = rayplex.sql(str(copy), "SELECT step FROM scalars ORDER BY step", refresh=False)
    assert [int(s) for s in frame["step"]] == list(range(step)), "each point once, in the store"


@pytest.mark.parametrize("during", ["compact-reserved", "compact-written"])
def test_a_segment_that_goes_up_while_a_compaction_merges_it_is_not_merged_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, during: str) -> None:
    """Compaction merges without the store's lock (issue 23) and a segment the bucket holds is
    never merged again (issue 26): when the uploader marks and deletes the segments a compaction
    is merging, held before it reads them (``compact-reserved``) or before it commits
    (``compact-written``), the compaction gives up. The manifest still lists the segments that
    went up (PUT once, not replaced by a merged copy) and no merged file is left behind."""
    import rayplex
    import rayplex.store.indexer as indexer
    from rayplex.event_bytes import ScalarTemplate, tag_header
    from rayplex.events import EventWriter
    from rayplex.store.format import Layout, Manifest

    staging = tmp_path / "staging"
    template = ScalarTemplate(tag_header("main/x"))
    for first in range(0, 200, 50):  # four small segments, one per index call
        writer = EventWriter(str(staging / "tensorboard" / "learner"))
        writer.write(b"".join(template.record(1000.0 + s, s, float(s))
                              for s in range(first, first + 50)))
        writer.close()
        assert rayplex.index(staging, compaction=False).points == 50
    layout = Layout.of(staging)
    ids = [seg.id for seg in Manifest.load(layout).segments]
    assert len(ids) == 4

    with compaction_held_at(monkeypatch, staging, during) as merged:
        assert indexer.uploaded(staging, lambda name: True) > 0  # all up: they leave staging
    assert merged == [0]
    after = Manifest.load(layout).segments
    assert [seg.id for seg in after] == ids and all(layout.uploaded(seg) for seg in after)
    assert sorted(p.name for p in layout.store.glob("*.parquet")) == []  # no merged copy
