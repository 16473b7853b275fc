"""A logdir on object storage against a real S3-compatible server on 127.0.0.1 (moto's
server, with credentials checked and bucket versioning on, so that every PUT that landed is a
version the tests can count): uploaded once, read back from the bucket, and the faults of
issue 26 — the server down while workers log, the uploader and the hub SIGKILLed mid-upload,
wrong credentials."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("moto.server")

import ray  # noqa: E402

import rayplex  # noqa: E402
from rayplex import remote  # noqa: E402
from rayplex.config import reload_config  # noqa: E402

REGION = "us-east-1"
BUCKET = "rayplex-test"


class S3:
    """The module's server: its address, the one valid key pair, and the bucket's versions."""

    def __init__(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.host, self.port = self.server.get_host_and_port()
        self.endpoint = f"http://{self.host}:{self.port}"
        # Credentials are checked from the 4th request on: the first three make the key.
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        settings.INITIAL_NO_AUTH_ACTION_COUNT = 3  # type: ignore[assignment]
        ActionAuthenticatorMixin.request_count = 0
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION,
                           aws_access_key_id="x", aws_secret_access_key="x")
        iam.create_user(UserName="rayplex")
        key = iam.create_access_key(UserName="rayplex")["AccessKey"]
        iam.put_user_policy(UserName="rayplex", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                                   aws_access_key_id=self.key, aws_secret_access_key=self.secret)
        self.client.create_bucket(Bucket=BUCKET)
        self.client.put_bucket_versioning(Bucket=BUCKET,
                                          VersioningConfiguration={"Status": "Enabled"})

    def uri(self, prefix: str) -> str:
        return (f"s3://{BUCKET}/{prefix}?endpoint_override={self.host}:{self.port}"
                f"&scheme=http&region={REGION}")

    def filesystem(self, key: str | None = None, secret: str | None = None) -> Any:
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=key or self.key, secret_key=secret or self.secret,
                                 endpoint_override=f"{self.host}:{self.port}", scheme="http",
                                 region=REGION)

    def versions(self, prefix: str) -> dict[str, list[str]]:
        """``{key relative to prefix: [ETag of each version, oldest first]}``: every PUT that
        landed."""
        out: dict[str, list[tuple[Any, str]]] = {}
        for page in self.client.get_paginator("list_object_versions").paginate(
                Bucket=BUCKET, Prefix=prefix + "/"):
            for v in page.get("Versions", []):
                out.setdefault(v["Key"][len(prefix) + 1:], []).append(
                    (v["LastModified"], v["ETag"]))
        return {k: [etag for _, etag in sorted(vs)] for k, vs in out.items()}

    def restart(self) -> None:
        """Start the server again on the same port (its buckets live on in this process)."""
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self.server.start()


@pytest.fixture(scope="module")
def s3(ray_session: Any) -> Any:
    server = S3()
    yield server
    server.server.stop()


@pytest.fixture
def s3_env(s3: S3, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The driver's credentials (the readers' URI resolves with them: the environment, as a
    user's would) and a staging directory of the test's own."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    monkeypatch.setenv("RAYPLEX_STAGING_DIR", str(tmp_path / "staging"))
    reload_config()
    yield s3
    monkeypatch.undo()
    reload_config()


def assert_each_object_put_once(s3: S3, prefix: str) -> dict[str, int]:
    """No segment or immutable object was PUT twice; a state object (replaced whole) never
    twice with the same bytes. Returns the counts for the report."""
    versions = s3.versions(prefix)
    # pyarrow's delete_file puts back an empty marker of the parent directory ("store/", 0
    # bytes, always the same) after deleting a compacted segment: not an object of ours.
    markers = {key: etags for key, etags in versions.items() if key.endswith("/")}
    assert all(len(set(etags)) == 1 for etags in markers.values()), markers
    versions = {key: etags for key, etags in versions.items() if key not in markers}
    twice, same = [], []
    for key, etags in versions.items():
        rel = remote.parse_key(key)[0]
        kind = ("journal" if rel == remote.JOURNAL
                else "state" if rel == remote.CLAIM else remote.kind_of(rel))
        if kind == "state":
            if len(set(etags)) != len(etags):
                same.append(key)
        elif len(etags) != 1:
            twice.append(key)
    assert not twice, f"objects PUT more than once: {twice}"
    assert not same, f"state objects PUT again with the same bytes: {same}"
    return {"objects": len(versions), "puts": sum(len(v) for v in versions.values()),
            "marker_puts": sum(len(v) for v in markers.values())}


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _hub_info(name: str) -> dict[str, Any]:
    return next((dict(info) for info in rayplex.status() if info.get("name") == name), {})


def _upload_info(name: str) -> dict[str, Any]:
    for info in rayplex.status():
        if info.get("name") == name:
            upload = info.get("upload")
            return dict(upload) if isinstance(upload, dict) else {"error": repr(upload)}
    return {}


# ----------------------------------------------------------------------------- round trip


def test_an_s3_logdir_is_uploaded_once_and_read_back_from_the_bucket(
        s3_env: S3, capsys: pytest.CaptureFixture[str]) -> None:
    s3 = s3_env
    uri = s3.uri("roundtrip")
    hub = rayplex.init(uri, name="s3roundtrip", filesystem=s3.filesystem())
    assert hub.uri is not None and "roundtrip" in hub.uri and s3.secret not in hub.uri
    hub.register_indexed_group("agent", 2)
    log = rayplex.get_logger("learner/main", hub=hub.name)
    for step in range(200):
        log.add_scalar("loss", 1.0 / (step + 1), step=step)
    log.info("the learner says hello")
    log.log_params(Args={"lr": 0.1})
    log.save_pkl({"w": [1, 2, 3]}, "weights.pkl")
    agent = rayplex.get_logger("agent/1", hub=hub.name)
    agent.add_scalars({"reward": 1.0, "len": 3.0}, step=0)
    rayplex.flush(hub.name)
    # In the bucket now (flush waited for the upload), read back through the URI.
    assert len(rayplex.read_scalars(uri, tag="main/loss")) == 200
    assert rayplex.read_params(uri)["learner/main"] == {"Args": {"lr": 0.1}}
    assert [a.path for a in rayplex.list_artifacts(uri)] == ["learner/main/weights.pkl"]
    info = _upload_info(hub.name)
    assert info["objects"] > 0 and info["lag_bytes"] == 0 and "staging_bytes" in info
    assert s3.secret not in json.dumps(info) and s3.key not in json.dumps(info)
    for step in range(200, 300):
        log.add_scalar("loss", 1.0 / (step + 1), step=step)
    rayplex.shutdown(hub.name)
    scalars = rayplex.read_scalars(uri, tag="main/loss")
    assert [row.step for row in scalars] == list(range(300))
    assert rayplex.sql(uri, "SELECT count(*) AS n FROM scalars WHERE tag = 'main/loss'"
                       )["n"][0] == 300
    from rayplex.cli import main

    assert main(["ls", uri]) == 0 and "learner/main" in capsys.readouterr().out
    assert main(["tail", uri]) == 0 and "the learner says hello" in capsys.readouterr().out
    assert main(["export", uri, "--tag", "main/loss"]) == 0
    assert capsys.readouterr().out.count("main/loss") == 300
    from tests.conftest import tb_events

    target = remote.resolve(uri)
    assert target is not None
    steps = Counter(e.step for run, e in tb_events(remote.cache_dir(target)) if run == "learner"
                    for v in e.summary.value if v.tag == "main/loss")
    assert sorted(steps) == list(range(300)) and set(steps.values()) == {1}
    assert_each_object_put_once(s3, "roundtrip")
    # The hub's node is gone with its staging directory: a new init starts from the bucket.
    shutil.rmtree(hub.logdir)
    hub = rayplex.init(uri, name="s3roundtrip", filesystem=s3.filesystem())
    log = rayplex.get_logger("learner/main", hub=hub.name)
    for step in range(300, 350):
        log.add_scalar("loss", 1.0 / (step + 1), step=step)
    log.info("the learner is back")
    rayplex.shutdown(hub.name)
    assert [row.step for row in rayplex.read_scalars(uri, tag="main/loss")] == list(range(350))
    assert main(["tail", uri]) == 0
    out = capsys.readouterr().out
    assert out.index("the learner says hello") < out.index("the learner is back")
    counts = assert_each_object_put_once(s3, "roundtrip")
    assert counts["objects"] >= 8
    # Security: no credential in the staging directory, the synced copy or the bucket.
    for root in (hub.logdir, remote.cache_dir(target)):
        for dirpath, _, names in os.walk(root):
            for name in names:
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
                assert s3.secret.encode() not in data and s3.key.encode() not in data, name


def test_wrong_credentials_are_a_clear_error_at_init_not_a_hang(s3_env: S3) -> None:
    s3 = s3_env
    started = time.monotonic()
    with pytest.raises(ValueError, match="cannot list and write the bucket") as info:
        rayplex.init(s3.uri("wrongkey"), name="s3wrong",
                     filesystem=s3.filesystem("AKIAWRONGWRONGWRONG", "not-the-secret-at-all"))
    assert time.monotonic() - started < remote.PROBE_TIMEOUT_S + 5
    assert "not-the-secret-at-all" not in str(info.value)
    assert "s3wrong" not in [i.get("name") for i in rayplex.status()]
    assert s3.versions("wrongkey") == {}


def test_an_unresolvable_scheme_is_refused_at_init_and_writes_nothing_local(
        ray_session: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not a storage URI pyarrow.fs can open"):
        rayplex.init("nosuch://bucket/exp", name="s3nosuch")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_readme_s3_example_runs_against_the_server(s3: S3, tmp_path: Any) -> None:
    """The README's s3:// block, in a driver of its own whose environment holds the
    credentials (as a user's would: Ray's processes on the node inherit it)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"<!-- s3-example -->\n```text\n(.*?)^```", readme, re.M | re.S)
    assert code is not None
    script = code.group(1).replace("my-bucket", BUCKET).replace(
        "127.0.0.1:9000", f"{s3.host}:{s3.port}")
    env = {**os.environ, "RAY_ADDRESS": "local", "AWS_ACCESS_KEY_ID": s3.key,
           "AWS_SECRET_ACCESS_KEY": s3.secret, "RAYPLEX_STAGING_DIR": str(tmp_path / "st")}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "main/loss" in done.stdout
    assert_each_object_put_once(s3, "exp1")
    assert s3.secret not in done.stderr + done.stdout


# ----------------------------------------------------------------------------- no rewrites


def _bucket_store(s3: S3, prefix: str) -> list[str]:
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/store/")
    return sorted(o["Key"][len(prefix) + 1:] for o in listed.get("Contents", [])
                  if o["Key"].endswith(".parquet"))


@pytest.mark.slow
def test_an_artifact_written_again_and_compacted_segments_reach_s3_without_a_rewrite(
        s3_env: S3) -> None:
    """save_pkl to a path twice: the bucket holds the new object (a new generation), the old
    one never overwritten; the store's segments in the bucket are never compacted again (each
    PUT once) and leave the staging directory, and every point is read back from the bucket
    once."""
    import pickle

    from rayplex.store import compact
    from rayplex.store.format import Layout, Manifest

    s3 = s3_env
    uri = s3.uri("rewrite")
    hub = rayplex.init(uri, name="s3rewrite", filesystem=s3.filesystem())
    log = rayplex.get_logger("learner/main", hub=hub.name)
    log.save_pkl({"v": 1}, "w.pkl")
    layout = Layout.of(hub.logdir)
    for batch in range(3):  # three flushes: three small store segments
        for step in range(batch * 50, batch * 50 + 50):
            log.add_scalar("loss", float(step), step=step)
        rayplex.flush(hub.name)
        _until(lambda b=batch: layout.manifest.exists()
               and len(Manifest.load(layout).segments) > b, 60, "the store's segments")
    rayplex.flush(hub.name)
    before = _bucket_store(s3, "rewrite")
    assert len(before) >= 6, before
    assert compact(hub.logdir, min_segments=2) == 0  # all up: merged, they would go up again
    assert not list(layout.store.glob("*.parquet"))  # up: gone from staging
    log.save_pkl({"v": 2, "pad": "x" * 300}, "w.pkl")  # longer than what is up
    rayplex.flush(hub.name)
    names = {f"store/{n}" for seg in Manifest.load(layout).segments for n in seg.files}
    assert _bucket_store(s3, "rewrite") == sorted(n for n in names if n.endswith(".parquet"))
    assert [row.step for row in rayplex.read_scalars(uri, tag="main/loss")] == list(range(150))
    copy = remote.readable(uri)
    with open(os.path.join(copy, "artifacts", "learner", "main", "w.pkl"), "rb") as f:
        assert pickle.loads(f.read()) == {"v": 2, "pad": "x" * 300}
    log.save_pkl({"v": 3}, "w.pkl")  # shorter
    rayplex.shutdown(hub.name)
    copy = remote.readable(uri)
    with open(os.path.join(copy, "artifacts", "learner", "main", "w.pkl"), "rb") as f:
        assert pickle.loads(f.read()) == {"v": 3}
    counts = assert_each_object_put_once(s3, "rewrite")
    print(f"rewritten artifact and compaction: {counts}; store objects {len(before)} -> "
          f"{len(_bucket_store(s3, 'rewrite'))}")


def test_a_rotated_text_log_goes_up_to_s3_as_one_stream_each_byte_once(
        s3: S3, tmp_path: Any) -> None:
    """The hub's text-log rotation (RAYPLEX_LOG_MAX_BYTES) with the uploader running in
    between, against the server: no backup goes up as an object of its own, no object is PUT
    twice, and the bucket's log holds every line once, in order."""
    from rayplex.actors.logfiles import LogFiles
    from rayplex.textlog import LogLine
    from rayplex.upload import Uploader

    staging = tmp_path / "staging"
    target = remote.resolve("s3://" + BUCKET + "/rotate", s3.filesystem())
    assert target is not None
    files = LogFiles(staging / "logs", max_bytes=400, backup_count=5, level="INFO")

    def committed() -> dict[str, int]:
        return {p.relative_to(staging).as_posix(): p.stat().st_size
                for p in (staging / "logs").rglob("*") if p.is_file()}

    up = Uploader(str(staging), target, committed, segment_s=1e9)
    sent = []
    for i in range(60):
        sent.append(f"line {i:03d} " + "y" * 40)
        files.write([LogLine(float(i), 20, "learner/main", "n", 1, "l", sent[-1])])
        files.flush()
        if i % 6 == 5:
            assert up.drain(30)
    assert up.drain(30)
    files.close()
    versions = s3.versions("rotate")
    assert not [k for k in versions if ".log." in k.split("/")[-1].replace(".log.part", "")]
    counts = assert_each_object_put_once(s3, "rotate")
    copy = tmp_path / "copy"
    remote.sync(target, str(copy))
    got = (copy / "logs" / "all.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in got] == sent
    mine = (copy / "logs" / "learner" / "main.log").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in mine] == sent
    print(f"rotated logs: {counts}")


@pytest.mark.slow
def test_two_hubs_on_two_nodes_cannot_both_write_one_bucket_logdir(
        s3_env: S3, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two experiments with staging directories of their own (two nodes, as the bucket sees
    them) on one URI: the second init is refused while the first hub's claim is live, and
    takes the logdir once the first shut down; all of both is in the bucket once."""
    from rayplex.errors import LogdirConflictError

    s3 = s3_env
    uri = s3.uri("claimed")
    first = rayplex.init(uri, name="s3claimA", filesystem=s3.filesystem())
    rayplex.get_logger("learner/main", hub=first.name).add_scalar("x", 1.0, step=0)
    monkeypatch.setenv("RAYPLEX_STAGING_DIR", str(tmp_path / "node2"))
    reload_config()
    with pytest.raises(LogdirConflictError, match="s3claimA"):
        rayplex.init(uri, name="s3claimB", filesystem=s3.filesystem())
    assert "s3claimB" not in [i.get("name") for i in rayplex.status()]
    assert not (tmp_path / "node2").exists() or not any((tmp_path / "node2").rglob("*.log"))
    rayplex.shutdown(first.name)  # releases the claim (everything is up)
    second = rayplex.init(uri, name="s3claimB", filesystem=s3.filesystem())
    rayplex.get_logger("learner/main", hub=second.name).add_scalar("x", 2.0, step=1)
    rayplex.shutdown(second.name)
    rows = rayplex.read_scalars(uri, tag="main/x")
    assert [(r.step, r.value) for r in rows] == [(0, 1.0), (1, 2.0)]
    assert_each_object_put_once(s3, "claimed")


# ----------------------------------------------------------------------------- faults


@ray.remote(num_cpus=0)
def _log_steadily(hub: str, i: int, steps: int, pace_s: float,
                  gate: str | None = None) -> tuple[int, float]:
    """Log ``steps`` scalars ``pace_s`` apart; with a ``gate`` (a path), wait for it to exist
    before the last 20 steps, so that what the test does meanwhile lands inside the run."""
    log = rayplex.get_logger(f"agent/{i}", hub=hub)
    longest = 0.0
    for step in range(steps):
        if gate is not None and step == steps - 20:
            gate_deadline = time.monotonic() + 600
            while not os.path.exists(gate) and time.monotonic() < gate_deadline:
                time.sleep(0.05)
        started = time.perf_counter()
        log.add_scalar("x", float(step), step=step)
        longest = max(longest, time.perf_counter() - started)
        time.sleep(pace_s)
    deadline = time.monotonic() + 240
    while True:  # the hub may still refuse (its staging bound) while the bucket catches up:
        try:     # the data is kept and resent, and a later flush returns once it is written
            log.flush(timeout=120)
            break
        except rayplex.HubWriteError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # not a wait for a condition: a retry pace
    return steps, longest


def _exactly_once(s3: S3, uri: str, prefix: str, workers: int, steps: int) -> dict[str, int]:
    rows = rayplex.read_scalars(uri, group="agent")
    per = Counter((row.run, row.step) for row in rows)
    want = {(f"agent/{i}", s) for i in range(workers) for s in range(steps)}
    lost = want - set(per)
    twice = [k for k, n in per.items() if n > 1]
    assert not lost and not twice, f"lost {len(lost)}, duplicated {len(twice)}"
    counts = assert_each_object_put_once(s3, prefix)
    return {**counts, "scalars": len(rows)}


@pytest.mark.slow
def test_the_server_down_while_8_workers_log_delays_the_bucket_not_the_workers(
        s3_env: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 s down while 8 workers log, with a staging bound (RAYPLEX_STAGING_MAX_MB) the
    outage exceeds: the hub holds its writes once it is hit (the staging directory never
    passes it), the workers never wait, and all arrives once after."""
    s3 = s3_env
    bound = 32 * 1024  # above one worker's backlog (a batch), below the outage's
    monkeypatch.setenv("RAYPLEX_UPLOAD_SEGMENT_S", "0.3")
    monkeypatch.setenv("RAYPLEX_STAGING_MAX_MB", str(bound / 2**20))
    reload_config()
    uri, workers, steps, outage_s = s3.uri("outage"), 8, 200, 30.0
    hub = rayplex.init(uri, name="s3outage", filesystem=s3.filesystem())
    hub.register_indexed_group("agent", 1)
    refs = [_log_steadily.remote(hub.name, i, steps, 0.2) for i in range(workers)]
    _until(lambda: _upload_info(hub.name).get("objects", 0) > 2, 60, "the first uploads")
    s3.server.stop()
    down = time.monotonic()
    lag = _until(lambda: (i := _upload_info(hub.name)).get("problem") and i, 30,
                 "the uploader to notice the outage")
    peak, peak_all, held = 0, 0, False
    while time.monotonic() - down < outage_s:  # the outage itself, the bound watched
        # the hub's files (event files, text logs) to the byte; the store's count at measures
        sizes = remote.tree_sizes(hub.logdir, remote.COUNTED_TREES)
        peak = max(peak, _hub_bytes(sizes))
        peak_all = max(peak_all, remote.counted_bytes(hub.logdir, sizes))
        held = held or _hub_info(hub.name).get("staging_refused", 0) > 0
        time.sleep(0.5)
    behind = _upload_info(hub.name)
    s3.restart()
    results = ray.get(refs, timeout=300)
    assert all(n == steps for n, _ in results)
    longest = max(t for _, t in results)
    assert longest < 0.5, f"add_scalar waited {longest:.2f} s during the outage"
    assert behind.get("lag_s", 0) >= outage_s / 2, behind  # the lag grew while down
    # the hub held its writes at the bound, which the staging directory never passed (before
    # the bound was exact, CI saw 19,653 bytes against 8,192); nothing is lost, as checked below
    assert held and peak <= bound and not _hub_info(hub.name)["staging_oversize"], (held, peak)
    rayplex.flush(hub.name)
    # the hub's files within the bound; the store (another process, never refused) may still
    # hold a segment the uploader has not taken yet (README: bounded at each measure)
    assert _hub_bytes(remote.tree_sizes(hub.logdir, remote.COUNTED_TREES)) <= bound
    after = _upload_info(hub.name)
    assert after["lag_bytes"] == 0 and after["problem"] is None and not after["staging_full"]
    rayplex.shutdown(hub.name)
    counts = _exactly_once(s3, uri, "outage", workers, steps)
    print(f"outage {outage_s:.0f} s: staging peak {peak} bytes (bound {bound}; with the "
          f"store {peak_all}), "
          f"lag seen {behind.get('lag_bytes')} bytes "
          f"{behind.get('lag_s')} s (problem: {lag['problem'][:60]}); longest add_scalar "
          f"{longest * 1e3:.1f} ms; {counts}")


def _hub_bytes(sizes: dict[str, int]) -> int:
    """The bytes of the hub's own files (event files, text logs) that the staging bound counts:
    the bound holds them to the byte."""
    return sum(n for rel, n in sizes.items() if remote.counted(rel) and not rel.startswith("store/"))


def _pid_of(get: Callable[[], dict[str, Any]]) -> int | None:
    try:
        return int(get()["pid"])
    except Exception:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["uploader", "hub"])
def test_a_sigkill_mid_upload_loses_duplicates_and_rewrites_nothing(
        victim: str, s3_env: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s3 = s3_env
    monkeypatch.setenv("RAYPLEX_UPLOAD_SEGMENT_S", "0.1")
    reload_config()
    prefix = f"kill-{victim}"
    uri, workers, steps = s3.uri(prefix), 4, 150
    hub = rayplex.init(uri, name=f"s3kill{victim}", filesystem=s3.filesystem())
    hub.register_indexed_group("agent", 1)
    from rayplex.upload import uploader_name

    def uploader_info() -> dict[str, Any]:
        actor = ray.get_actor(uploader_name(hub.name), namespace="rayplex")
        return dict(ray.get(actor.info.remote(), timeout=10))

    def hub_info() -> dict[str, Any]:
        return dict(ray.get(hub.actor.info.remote(), timeout=10))

    get = uploader_info if victim == "uploader" else hub_info
    gate = str(tmp_path / "kills-done")
    refs = [_log_steadily.remote(hub.name, i, steps, 0.1, gate) for i in range(workers)]
    killed: set[int] = set()
    for _ in range(2):
        before = _until(lambda: _upload_info(hub.name).get("objects", 0), 60, "uploads")
        _until(lambda b=before: _upload_info(hub.name).get("objects", 0) > b, 60,
               "more uploads")
        pid = _until(lambda: (p := _pid_of(get)) not in killed and p, 60, f"the {victim}")
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
        _until(lambda: (p := _pid_of(get)) not in killed and p, 60, f"the {victim} to restart")
    assert not ray.wait(refs, num_returns=workers, timeout=0)[0], \
        "a worker finished before the second kill"
    open(gate, "w").close()
    assert [n for n, _ in ray.get(refs, timeout=300)] == [steps] * workers
    rayplex.shutdown(hub.name)
    counts = _exactly_once(s3, uri, prefix, workers, steps)
    print(f"{victim} SIGKILLed twice: {counts}")
