"""ML-Logger's file calls on rayplex.Logger: remove, move, duplicate, glob, JSON, YAML, JSON
lines, directories as tar archives, TorchScript. The tar helpers are tested as plain functions;
everything else on a real local Ray, read back from the logdir: one hub for the module
(``shared_experiment``), each test with client ids of its own."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import ray

import rayplex
from rayplex.artifacts import TEMP_PREFIX
from rayplex.logger_files import check_path, pack_dir, unpack_tar
from tests.fixtures import shared_experiment  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:rayplex. group .* is not registered")


def _stored(logdir: str, client: str) -> list[str]:
    root = Path(logdir) / "artifacts" / client
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _all_stored(logdir: str) -> list[str]:
    """Every file and directory under the logdir's artifacts."""
    root = Path(logdir) / "artifacts"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


# ------------------------------------------------------------------ plain: tar helpers


def test_pack_dir_leaves_out_excluded_names_and_whole_excluded_directories(tmp_path):
    src = tmp_path / "src"
    (src / ".git" / "objects").mkdir(parents=True)
    (src / ".git" / "objects" / "x").write_text("git")
    (src / "pkg").mkdir()
    (src / "pkg" / "mod.py").write_text("code")
    (src / "pkg" / "mod.pyc").write_bytes(b"\x00")
    (src / "top.txt").write_text("top")
    with tarfile.open(fileobj=io.BytesIO(pack_dir(src, excludes=["*.pyc", ".git"]))) as tar:
        names = tar.getnames()
    assert sorted(names) == ["pkg", "pkg/mod.py", "top.txt"]


def test_pack_then_unpack_round_trips_contents(tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "deep.bin").write_bytes(bytes(range(256)))
    (src / "x.txt").write_text("x")
    os.symlink("b/deep.bin", src / "a" / "inner-link")
    dest = tmp_path / "dest"
    unpack_tar(pack_dir(src, archive="gztar"), dest)
    assert (dest / "a" / "b" / "deep.bin").read_bytes() == bytes(range(256))
    assert (dest / "x.txt").read_text() == "x"
    assert os.readlink(dest / "a" / "inner-link") == "b/deep.bin"


def test_pack_dir_refuses_a_file_and_an_unknown_format(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        pack_dir(tmp_path / "f")
    with pytest.raises(ValueError, match="zip"):
        pack_dir(tmp_path, archive="zip")


@pytest.mark.parametrize(("member", "why"), [
    (_member("/etc/cron.d/evil"), "absolute"),
    (_member("../escape.txt"), r"'\.\.'"),
    (_member("a/../../escape.txt"), r"'\.\.'"),
    (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute"),
    (_member("a/link", tarfile.SYMTYPE, "../../outside"), "outside"),
    (_member("hard", tarfile.LNKTYPE, "../outside"), "outside"),
    (_member("dev", tarfile.CHRTYPE), "devices"),
    (_member("fifo", tarfile.FIFOTYPE), "FIFO"),
])
def test_unpack_refuses_members_that_escape_and_writes_nothing(tmp_path, member, why):
    data = _tar((_member("good.txt"), b"ok"), (member, b"x" if member.isfile() else None))
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=why) as info:
        unpack_tar(data, dest)
    assert repr(member.name) in str(info.value)
    assert not dest.exists()  # checked whole before anything is written
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unpack_does_not_follow_a_symlink_already_in_the_destination(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "sub")
    with pytest.raises(ValueError, match="refused to extract"):
        unpack_tar(_tar((_member("sub/planted.txt"), b"x")), dest)
    assert list(outside.iterdir()) == []


def test_unpack_of_something_that_is_not_a_tar_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a tar archive"):
        unpack_tar(b"definitely not a tar", tmp_path / "d")


@pytest.mark.parametrize("path", ["/abs/x.json", "//srv/data/x.json", "s3://bucket/x",
                                  "gs://bucket/x", "file:///tmp/x"])
def test_check_path_refuses_absolute_server_root_and_cloud_paths_naming_them(path):
    with pytest.raises(ValueError, match="refused by design|not supported") as info:
        check_path(path)
    assert repr(path) in str(info.value)


# ------------------------------------------------------------------ on Ray


def test_remove_move_duplicate_and_glob_act_on_the_clients_own_directory(experiment):
    log = rayplex.get_logger("learner/files")
    other = rayplex.get_logger("learner/other")
    for path in ("ckpt/1.pkl", "ckpt/2.pkl", "notes.txt", "videos/a.mp4", "videos/b.mp4"):
        log.save_bytes(path.encode(), path)
    other.save_bytes(b"keep", "ckpt/1.pkl")
    assert log.glob("**/*.pkl") == ["ckpt/1.pkl", "ckpt/2.pkl"]
    assert log.glob("*") == ["ckpt", "notes.txt", "videos"]
    assert log.glob("*.pkl", wd="ckpt") == ["1.pkl", "2.pkl"]

    log.move("notes.txt", "docs/notes.txt")
    log.duplicate("ckpt", "ckpt-copy")
    log.duplicate("docs/notes.txt", "notes-copy.txt")
    assert log.remove("videos/*.mp4", "ckpt/2.pkl", "never-there") == [
        "videos/a.mp4", "videos/b.mp4", "ckpt/2.pkl"]
    assert _stored(experiment.logdir, "learner/files") == [
        "ckpt-copy/1.pkl", "ckpt-copy/2.pkl", "ckpt/1.pkl", "docs/notes.txt", "notes-copy.txt"]
    assert log.load_bytes("notes-copy.txt") == b"notes.txt"
    assert _stored(experiment.logdir, "learner/other") == ["ckpt/1.pkl"]

    assert log.remove("") == [""]  # ML-Logger's remove(""): everything of this client
    assert not (Path(experiment.logdir) / "artifacts" / "learner" / "files").exists()
    assert other.load_bytes("ckpt/1.pkl") == b"keep"


def test_move_and_duplicate_report_missing_sources_and_blocked_targets(experiment):
    log = rayplex.get_logger("learner/errs")
    log.save_bytes(b"a", "d/a.txt")
    log.save_bytes(b"b", "e/b.txt")
    with pytest.raises(FileNotFoundError, match="missing"):
        log.move("missing", "x")
    with pytest.raises(FileExistsError):
        log.duplicate("d", "e", exists_ok=False)
    with pytest.raises(ValueError, match="into itself"):
        log.move("d", "d/inner")
    assert log.glob("**/*") == ["d", "d/a.txt", "e", "e/b.txt"]


def _enter(context):
    with context:
        pass


_OUTSIDE_CALLS = {
    "remove /etc": lambda log: log.remove("/etc"),
    "remove //home": lambda log: log.remove("//home/user"),
    "remove ..": lambda log: log.remove("../other"),
    "move to /tmp": lambda log: log.move("a.txt", "/tmp/a.txt"),
    "move from //etc": lambda log: log.move("//etc/passwd", "a.txt"),
    "duplicate to ..": lambda log: log.duplicate("a.txt", "../../outside.txt"),
    "glob /*": lambda log: log.glob("/*"),
    "glob wd //": lambda log: log.glob("**/*", wd="//"),
    "glob ..": lambda log: log.glob("../*"),
    "save_json /tmp": lambda log: log.save_json({}, "/tmp/x.json"),
    "load_json //etc": lambda log: log.load_json("//etc/passwd"),
    "log_jsonl /tmp": lambda log: log.log_jsonl({}, "/tmp/x.jsonl"),
    "save_yaml ..": lambda log: log.save_yaml({}, "../x.yaml"),
    "upload_dir /tmp": lambda log: log.upload_dir(".", "/tmp/x.tar"),
    "upload_dir s3": lambda log: log.upload_dir(".", "s3://bucket/x.tar"),
    "download_dir //srv": lambda log: log.download_dir("//srv/x.tar", "/tmp/never"),
    "torch_jit_load /": lambda log: log.torch_jit_load("/models/x.pt"),
    "capture_error /var": lambda log: _enter(log.capture_error(file="/var/log/x")),
    "diff to /tmp": lambda log: log.diff(diff_filename="/tmp/index.diff"),
}


def test_every_path_taking_call_refuses_paths_outside_the_clients_directory(experiment):
    log = rayplex.get_logger("learner/confined")
    log.save_bytes(b"a", "a.txt")
    others = _all_stored(experiment.logdir)  # the other tests' files, on the module's hub
    for name, call in _OUTSIDE_CALLS.items():
        with pytest.raises(ValueError):
            call(log)
            pytest.fail(f"{name} did not raise")
    assert _stored(experiment.logdir, "learner/confined") == ["a.txt"]
    assert _all_stored(experiment.logdir) == others
    assert not os.path.exists("/tmp/never")


def test_json_yaml_and_json_lines_round_trip(experiment):
    log = rayplex.get_logger("learner/docs")
    log.save_json({"lr": np.float32(0.5), "sizes": np.arange(3)}, "cfg/params.json")
    assert log.load_json("cfg", "params.json") == {"lr": 0.5, "sizes": [0, 1, 2]}
    log.save_yaml({"net": {"depth": 3}, "name": "a"}, "cfg.yaml")
    assert log.load_yaml("cfg.yaml") == {"net": {"depth": 3}, "name": "a"}
    for step in range(3):
        log.log_jsonl({"step": step, "loss": 1.0 / (step + 1)}, "rows.jsonl")
    log.log_jsonl(None, "rows.jsonl")
    assert log.load_jsonl("rows.jsonl") == [
        {"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}, {"step": 2, "loss": 1 / 3}, {}]
    assert log.load_jsonl("rows.jsonl", start=1, stop=2) == [{"step": 1, "loss": 0.5}]
    raw = (Path(experiment.logdir) / "artifacts/learner/docs/rows.jsonl").read_text()
    assert raw.count("\n") == 4 and json.loads(raw.splitlines()[0]) == {"step": 0, "loss": 1.0}
    reader = rayplex.get_logger("learner/reader")
    assert reader.load_json("cfg/params.json", client="learner/docs")["lr"] == 0.5


def test_json_lines_appended_from_many_tasks_each_land_once_and_whole(experiment):
    @ray.remote
    def append(i):
        log = rayplex.get_logger("learner/shared")
        for k in range(5):
            log.log_jsonl({"task": i, "k": k, "pad": "x" * 500}, "rows.jsonl")
        return i

    assert sorted(ray.get([append.remote(i) for i in range(4)])) == [0, 1, 2, 3]
    rows = rayplex.get_logger("learner/shared").load_jsonl("rows.jsonl")
    assert sorted((r["task"], r["k"]) for r in rows) == [(i, k) for i in range(4) for k in range(5)]


def test_save_yaml_refuses_objects_that_safe_load_could_not_read(experiment):
    log = rayplex.get_logger("learner/yaml")
    with pytest.raises(TypeError, match="plain data"):
        log.save_yaml({"obj": object()}, "x.yaml")
    with pytest.raises(FileNotFoundError):
        log.load_yaml("x.yaml")


def test_load_yaml_never_builds_python_objects_by_default(experiment):
    log = rayplex.get_logger("learner/yaml2")
    log.save_bytes(b"!!python/object/apply:os.system ['echo pwned']\n", "evil.yaml")
    import yaml

    with pytest.raises(yaml.constructor.ConstructorError):
        log.load_yaml("evil.yaml")


def test_upload_dir_then_download_dir_in_another_worker(experiment, tmp_path):
    src = tmp_path / "project"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "train.py").write_text("print('hi')\n")
    (src / "pkg" / "train.pyc").write_bytes(b"\x00")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    log = rayplex.get_logger("learner/code")
    log.upload_dir(str(src), "upload_dir/target.tar", excludes=["*.pyc", ".git"])
    assert log.glob("**/*", wd="upload_dir") == ["target.tar"]  # ML-Logger's test_upload_dir

    @ray.remote
    def fetch(dest):
        rayplex.get_logger("learner/code").download_dir("upload_dir/target.tar", dest)
        return sorted(str(p.relative_to(dest)) for p in Path(dest).rglob("*"))

    dest = tmp_path / "restored"
    assert ray.get(fetch.remote(str(dest))) == ["pkg", "pkg/train.py"]
    assert (dest / "pkg" / "train.py").read_text() == "print('hi')\n"


def test_download_dir_of_a_hostile_archive_writes_nothing(experiment, tmp_path):
    log = rayplex.get_logger("learner/hostile")
    log.save_bytes(_tar((_member("ok.txt"), b"ok"), (_member("../../evil.txt"), b"x")), "x.tar")
    with pytest.raises(ValueError, match="evil.txt"):
        log.download_dir("x.tar", tmp_path / "a" / "to")
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_nothing_is_left_half_written_after_file_operations(experiment):
    log = rayplex.get_logger("learner/atomic")
    log.save_bytes(b"x" * 10_000, "d/a.bin")
    log.duplicate("d", "e")
    log.move("e", "f")
    log.remove("d")
    root = Path(experiment.logdir) / "artifacts"
    assert [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)] == []
    assert _stored(experiment.logdir, "learner/atomic") == ["f/a.bin"]


def test_torch_jit_save_and_load_round_trip(experiment):
    torch = pytest.importorskip("torch")

    class Policy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    torch.manual_seed(0)
    model = Policy()
    log = rayplex.get_logger("learner/jit")
    log.torch_jit_save(model, "models", "policy.pt")
    loaded = log.torch_jit_load("models/policy.pt")
    x = torch.randn(4, 3)
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert torch.equal(loaded(x), model(x))
    log.torch_jit_save(torch.jit.script(model), path="already-scripted.pt")
    assert torch.equal(log.torch_jit_load(path="already-scripted.pt")(x), model(x))


def test_save_torch_and_load_torch_unpickle_a_module_only_when_asked(experiment):
    torch = pytest.importorskip("torch")
    log = rayplex.get_logger("learner/torch")
    log.torch_save({"w": torch.arange(3)}, "modules", "weights.pt")
    assert torch.equal(log.torch_load("modules/weights.pt")["w"], torch.arange(3))
    module = torch.nn.Linear(2, 1)
    log.save_torch(module, path="modules/whole.pt")
    with pytest.raises(Exception, match="weights_only"):
        log.load_torch("modules/whole.pt")  # torch's safe default: no arbitrary unpickling
    loaded = log.load_torch("modules/whole.pt", weights_only=False)
    assert torch.equal(loaded.weight, module.weight)


# ------------------------------------------------ issue 21: integrity, third pass


def test_a_load_of_the_callers_own_missing_path_never_reads_another_clients_file(
        experiment, tmp_path):
    torch = pytest.importorskip("torch")
    stranger = rayplex.get_logger("checkpoints/best")
    stranger.save_pkl({"from": "stranger"}, "model.pkl")
    stranger.save_json({"from": "stranger"}, "cfg.json")
    stranger.save_yaml({"from": "stranger"}, "cfg.yaml")
    stranger.log_jsonl({"from": "stranger"}, "rows.jsonl")
    stranger.save_torch({"w": torch.zeros(1)}, path="w.pt")
    stranger.torch_jit_save(torch.nn.Linear(1, 1), path="jit.pt")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "run.py").write_text("print('stranger')\n")
    stranger.upload_dir(tmp_path / "src", "code.tar")
    log = rayplex.get_logger("learner/loader")
    loads = {
        "load_pkl": lambda: log.load_pkl("checkpoints/best/model.pkl"),
        "load_bytes": lambda: log.load_bytes("checkpoints/best/model.pkl"),
        "load_json": lambda: log.load_json("checkpoints/best/cfg.json"),
        "load_yaml": lambda: log.load_yaml("checkpoints/best/cfg.yaml"),
        "load_jsonl": lambda: log.load_jsonl("checkpoints/best/rows.jsonl"),
        "load_torch": lambda: log.load_torch("checkpoints/best/w.pt"),
        "torch_jit_load": lambda: log.torch_jit_load("checkpoints/best/jit.pt"),
        "download_dir": lambda: log.download_dir("checkpoints/best/code.tar", tmp_path / "d"),
    }
    for name, load in loads.items():
        with pytest.raises(FileNotFoundError, match="learner/loader/checkpoints/best"):
            load()
            pytest.fail(f"{name} read another client's file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # Naming the client explicitly is how one reads another client's file.
    assert log.load_pkl("model.pkl", client="checkpoints/best") == {"from": "stranger"}
    assert log.load_json("cfg.json", client="checkpoints/best") == {"from": "stranger"}
    assert log.load_yaml("cfg.yaml", client="checkpoints/best") == {"from": "stranger"}
    assert log.load_jsonl("rows.jsonl", client="checkpoints/best") == [{"from": "stranger"}]
    assert float(log.load_torch("w.pt", client="checkpoints/best")["w"][0]) == 0.0
    assert log.torch_jit_load("jit.pt", client="checkpoints/best") is not None
    assert log.download_dir("code.tar", tmp_path / "e", client="checkpoints/best") == ["run.py"]


def _victim_and_link(experiment):
    """``agent/victim`` stores two files; ``learner/linked/shared`` is a symlink into it."""
    victim = rayplex.get_logger("agent/victim")
    victim.save_bytes(b"v1", "ckpt/a.pkl")
    victim.save_bytes(b"v2", "ckpt/b.pkl")
    log = rayplex.get_logger("learner/linked")
    log.save_bytes(b"mine", "own.txt")
    root = Path(experiment.logdir) / "artifacts"
    os.symlink(root / "agent" / "victim", root / "learner" / "linked" / "shared")
    return log, root / "agent" / "victim"


def test_a_symlink_into_another_clients_directory_lets_no_file_call_act_there(experiment):
    log, victim_dir = _victim_and_link(experiment)
    assert log.glob("shared/ckpt/*") == []
    assert log.glob("**/*.pkl") == []
    assert log.remove("shared/ckpt/*") == []
    refused = {
        "remove": lambda: log.remove("shared/ckpt/a.pkl"),
        "save_text": lambda: log.save_text("planted", "shared/ckpt/a.pkl"),
        "save_bytes new": lambda: log.save_bytes(b"planted", "shared/new.txt"),
        "log_jsonl": lambda: log.log_jsonl({}, "shared/rows.jsonl"),
        "load_bytes": lambda: log.load_bytes("shared/ckpt/a.pkl"),
        "glob wd": lambda: log.glob("*", wd="shared/ckpt"),
        "move out": lambda: log.move("shared/ckpt/a.pkl", "stolen.pkl"),
        "move in": lambda: log.move("own.txt", "shared/ckpt/own.txt"),
        "duplicate": lambda: log.duplicate("shared/ckpt", "copy"),
    }
    for name, call in refused.items():
        with pytest.raises(ValueError, match="client's directory") as info:
            call()
            pytest.fail(f"{name} acted through the symlink")
        assert "shared" in str(info.value), name
    assert sorted(p.name for p in (victim_dir / "ckpt").iterdir()) == ["a.pkl", "b.pkl"]
    assert (victim_dir / "ckpt" / "a.pkl").read_bytes() == b"v1"
    assert log.remove("shared") == ["shared"]  # the link itself is the caller's own
    assert (victim_dir / "ckpt" / "a.pkl").read_bytes() == b"v1"


def test_download_dir_of_an_archive_refused_late_leaves_nothing_behind(experiment, tmp_path):
    log = rayplex.get_logger("learner/unpack")
    log.save_bytes(_tar((_member("ok.txt"), b"ok"), (_member("a", tarfile.SYMTYPE, "."), None),
                        (_member("a/b", tarfile.SYMTYPE, ".."), None)), "x.tar")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="'a/b'"):
        log.download_dir("x.tar", out / "to")
    assert list(out.iterdir()) == []


def test_download_dir_refuses_an_archive_that_unpacks_past_max_bytes(experiment, tmp_path):
    log = rayplex.get_logger("learner/bomb")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 8 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert len(buf.getvalue()) < 64 * 2**10
    log.save_bytes(buf.getvalue(), "bomb.tar.gz")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="max_bytes"):
        log.download_dir("bomb.tar.gz", out / "to", max_bytes=2**20)
    assert list(out.iterdir()) == []
    assert log.download_dir("bomb.tar.gz", out / "to", max_bytes=2**24) == ["zeros.bin"]


def test_a_deep_glob_answers_quickly_and_never_stalls_another_clients_flush(experiment):
    log = rayplex.get_logger("learner/deep")
    deep = "/".join(f"d{i}" for i in range(100))
    log.save_bytes(b"x", f"{deep}/f.txt")
    writer = rayplex.get_logger("learner/writer-deep")
    writer.add_scalar("x", 1.0, step=0)
    writer.flush()
    paths, seconds, waits = _flush_waits_while(lambda: log.glob("**/**/**/f.txt"), writer)
    assert paths == [f"{deep}/f.txt"]
    assert max(waits) < 2.0, waits
    assert seconds < 5.0


def test_unpack_checks_links_through_linked_members_before_writing_anything(tmp_path):
    data = _tar((_member("ok.txt"), b"ok"), (_member("a", tarfile.SYMTYPE, "."), None),
                (_member("a/b", tarfile.SYMTYPE, ".."), None))
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="'a/b'"):
        unpack_tar(data, dest)
    assert list(tmp_path.iterdir()) == []


def test_unpack_into_an_existing_directory_adds_the_members_or_nothing(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    bad = _tar((_member("new.txt"), b"new"), (_member("dev", tarfile.CHRTYPE), None))
    with pytest.raises(ValueError, match="devices"):
        unpack_tar(bad, dest)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dest", "keep.txt"]
    assert unpack_tar(_tar((_member("sub/new.txt"), b"new"), (_member("keep.txt"), b"v2")),
                      dest) == ["sub/new.txt", "keep.txt"]
    assert (dest / "sub" / "new.txt").read_text() == "new"
    assert (dest / "keep.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]  # no staging left


def test_unpack_refuses_an_archive_past_max_bytes_before_writing(tmp_path):
    data = _tar((_member("a.bin"), bytes(600)), (_member("b.bin"), bytes(600)))
    with pytest.raises(ValueError, match="more than 1000 bytes.*max_bytes"):
        unpack_tar(data, tmp_path / "d", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []
    assert unpack_tar(data, tmp_path / "d", max_bytes=1200) == ["a.bin", "b.bin"]


def _flush_waits_while(query, writer):
    """Run ``query()`` in a thread; flush ``writer`` over and over meanwhile. Returns (the
    query's answer, its seconds, every flush's wait in seconds)."""
    import threading
    import time

    answer: dict[str, object] = {}

    def run():
        began = time.monotonic()
        answer["value"] = query()
        answer["seconds"] = time.monotonic() - began

    thread = threading.Thread(target=run)
    thread.start()
    waits = []
    while thread.is_alive() or not waits:
        writer.add_scalar("x", 2.0, step=len(waits) + 1)
        began = time.monotonic()
        writer.flush()
        waits.append(time.monotonic() - began)
    thread.join()
    return answer["value"], answer["seconds"], waits


def test_a_long_glob_runs_beside_the_writes_not_in_front_of_them(experiment):
    log = rayplex.get_logger("learner/wide")
    log.save_bytes(b"x", "d0/e0/f.txt")
    base = Path(experiment.logdir) / "artifacts" / "learner" / "wide"
    for i in range(100):  # 10,000 directories: a walk of about a second
        for j in range(100):
            os.makedirs(base / f"d{i}" / f"e{j}", exist_ok=True)
    writer = rayplex.get_logger("learner/writer-wide")
    writer.add_scalar("x", 1.0, step=0)
    writer.flush()
    paths, seconds, waits = _flush_waits_while(lambda: log.glob("**/f.txt"), writer)
    assert paths == ["d0/e0/f.txt"]
    assert seconds > 0.3, "the walk was too short to show anything"
    assert len(waits) >= 3 and max(waits) < seconds / 2, (seconds, waits)
