"""The artifact client without Ray: real files, a real :class:`ArtifactStore` on a tmp dir.

The transport given to the client applies each hub request to the store in this process, as
the hub applies it (same store calls, same answers), so every test reads back real files. The
Logger's artifact methods are one-line façades over this client (checked at the end).
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import textwrap

import numpy as np
import pytest

from rayplex.artifact_client import ARTIFACT_VERBS, ArtifactClient
from rayplex.artifacts import ArtifactStore


class StoreTransport:
    """Applies a hub request to a real ArtifactStore; records the requests sent."""

    def __init__(self, root: str) -> None:
        self.store = ArtifactStore(root)
        self.sent: list[str] = []

    def __call__(self, method: str, *args):
        self.sent.append(method)
        store = self.store
        if method == "save_artifact":
            rel, data, append = args
            path = store.append_chunk(rel, data) if append else store.write_bytes(rel, data)
            return os.fspath(path)
        if method == "load_artifact":
            return store.read_bytes(args[0])
        if method == "append_artifact":
            return os.fspath(store.append_bytes(*args))
        if method == "append_chunks":
            return os.fspath(store.append_chunks(*args))
        if method == "glob_artifacts":
            return store.glob(*args)
        if method == "move_artifact":
            return os.fspath(store.move(*args))
        if method == "duplicate_artifact":
            return os.fspath(store.duplicate(*args))
        if method == "remove_artifacts":
            base, paths = args
            return [p for p in paths if store.remove(f"{base}/{p}" if p else base)]
        raise AssertionError(f"not an artifact request: {method}")


@pytest.fixture
def hub(tmp_path):
    return StoreTransport(str(tmp_path / "artifacts"))


@pytest.fixture
def files(hub):
    return ArtifactClient("learner/main", hub)


def on_disk(hub, rel):
    with open(os.path.join(hub.store.root, rel), "rb") as f:
        return f.read()


def test_bytes_pickles_and_text_land_in_the_clients_directory_and_read_back(files, hub):
    files.save_bytes(b"raw", "a/raw.bin")
    files.save_pkl({"epoch": 3}, "ckpt/latest.pkl")
    files.save_text("héllo", "notes.txt")
    assert on_disk(hub, "learner/main/a/raw.bin") == b"raw"
    assert on_disk(hub, "learner/main/notes.txt") == "héllo".encode()
    assert files.load_pkl("ckpt/latest.pkl") == {"epoch": 3}
    assert files.load_bytes("a/raw.bin") == b"raw"


def test_appended_pickles_load_as_the_list_of_every_object(files):
    for i in range(3):
        files.save_pkl({"i": i}, "rows.pkl", append=True)
    assert files.load_pkl("rows.pkl") == [{"i": 0}, {"i": 1}, {"i": 2}]
    files.append_rows("rows.pkl", [__import__("cloudpickle").dumps({"i": 3})], framed=True)
    assert files.load_pkl("rows.pkl")[-1] == {"i": 3}


def test_another_clients_file_is_read_only_when_it_is_named(hub):
    learner = ArtifactClient("learner/main", hub)
    agent = ArtifactClient("agent/1", hub)
    learner.save_pkl([1, 2], "ckpt.pkl")
    with pytest.raises(FileNotFoundError):
        agent.load_pkl("ckpt.pkl")
    with pytest.raises(FileNotFoundError):
        agent.load_pkl("learner/main/ckpt.pkl")
    assert agent.load_pkl("ckpt.pkl", client="learner/main") == [1, 2]


def test_json_yaml_and_json_lines_round_trip(files, hub):
    files.save_json({"a": np.float32(0.5), "b": np.arange(2)}, "m.json")
    assert files.load_json("m.json") == {"a": 0.5, "b": [0, 1]}
    files.log_jsonl({"step": 1}, "rows.jsonl")
    files.log_jsonl(None, "rows.jsonl")
    assert on_disk(hub, "learner/main/rows.jsonl") == b'{"step": 1}\n{}\n'
    assert files.load_jsonl("rows.jsonl") == [{"step": 1}, {}]
    files.save_yaml({"lr": 0.1}, "cfg.yaml")
    assert files.load_yaml("cfg.yaml") == {"lr": 0.1}
    with pytest.raises(TypeError):
        files.save_yaml(object(), "bad.yaml")
    assert hub.sent.count("save_artifact") == 2  # the refused YAML sent nothing


def test_remove_move_duplicate_and_glob_act_on_the_clients_own_directory(files, hub):
    for name in ("c/1.pkl", "c/2.pkl", "v/a.mp4", "keep.txt"):
        files.save_bytes(b"x", name)
    ArtifactClient("agent/1", hub).save_bytes(b"other", "c/1.pkl")
    assert files.glob("**/*.pkl") == ["c/1.pkl", "c/2.pkl"]
    assert files.move("c/2.pkl", "moved.pkl").endswith("learner/main/moved.pkl")
    assert files.duplicate("moved.pkl", "copy.pkl").endswith("learner/main/copy.pkl")
    assert files.remove("v/*.mp4", "missing") == ["v/a.mp4"]
    assert sorted(files.glob("*")) == ["c", "copy.pkl", "keep.txt", "moved.pkl", "v"]
    assert files.remove("") == [""]
    assert files.glob("*") == []
    assert on_disk(hub, "agent/1/c/1.pkl") == b"other"


@pytest.mark.parametrize("path", ["/etc/passwd", "//home/x", "../agent/1/x", "a/../../x"])
def test_every_path_taking_call_refuses_paths_outside_and_sends_nothing(files, hub, path):
    calls = [lambda: files.save_bytes(b"x", path), lambda: files.save_json({}, path),
             lambda: files.load_pkl(path), lambda: files.move("a", path),
             lambda: files.duplicate(path, "b"), lambda: files.glob(path),
             lambda: files.remove(path), lambda: files.log_jsonl({}, path),
             lambda: files.upload_dir(".", path)]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert hub.sent == []
    assert not os.path.exists(hub.store.root) or not os.listdir(hub.store.root)


def test_the_ml_logger_file_calls_refuse_cloud_buckets_and_send_nothing(files, hub):
    for call in (lambda: files.save_json({}, "s3://b/k"), lambda: files.glob("gs://b/*"),
                 lambda: files.move("a", "file://x"), lambda: files.upload_dir(".", "s3://b")):
        with pytest.raises(ValueError, match="cloud buckets"):
            call()
    assert hub.sent == []


def test_upload_file_and_dir_then_download_dir(files, tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("print(1)")
    (src / "pkg" / "a.pyc").write_bytes(b"\0")
    assert files.upload_file(src / "pkg" / "a.py", "code/").endswith("learner/main/code/a.py")
    assert files.load_bytes("code/a.py") == b"print(1)"
    files.upload_dir(src, "src.tar", excludes=["*.pyc"])
    dest = tmp_path / "dest"
    assert sorted(files.download_dir("src.tar", dest)) == ["pkg", "pkg/a.py"]
    assert (dest / "pkg" / "a.py").read_text() == "print(1)" and not (dest / "pkg" / "a.pyc").exists()


def test_images_and_a_video_from_stored_frames_are_real_files(files):
    import imageio.v3 as iio

    for i in range(3):
        files.save_image(np.full((8, 8, 3), i * 100, np.uint8), f"frames/{i}.png")
    assert iio.imread(io.BytesIO(files.load_bytes("frames/2.png"))).shape == (8, 8, 3)
    stored = files.make_video("frames/*.png", "clips/run.gif", fps=5)
    assert stored is not None and stored.endswith("clips/run.gif")
    assert iio.imread(io.BytesIO(files.load_bytes("clips/run.gif")), index=None).shape[0] == 3
    assert files.make_video("nothing/*.png", "clips/none.gif") is None


def test_torch_state_round_trips_through_the_store(files):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(2, 1)
    files.save_module(net, "net.pt")
    other = torch.nn.Linear(2, 1)
    files.load_module(other, "net.pt")
    assert torch.equal(other.weight, net.weight)
    files.save_torch({"w": torch.ones(2)}, "t", "w.pt")
    assert torch.equal(files.load_torch("t", "w.pt")["w"], torch.ones(2))


def test_a_bad_client_id_is_refused_when_the_client_is_made():
    with pytest.raises(ValueError):
        ArtifactClient("no-slash", lambda *a: None)


# --------------------------------------------------------------- the Logger's façades
def test_the_loggers_artifact_methods_are_one_statement_over_the_client_with_its_signature():
    from rayplex.logger import Logger

    for name in ARTIFACT_VERBS:
        facade, client = getattr(Logger, name), getattr(ArtifactClient, name)
        assert inspect.signature(facade) == inspect.signature(client), name
        assert facade.__doc__ and facade.__doc__ == client.__doc__, name
        body = ast.parse(textwrap.dedent(inspect.getsource(facade))).body[0].body
        assert len(body) == 1 and isinstance(body[0], ast.Return), name
        call = body[0].value
        assert (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == name.replace("torch_save", "save_torch")
                .replace("torch_load", "load_torch")
                and ast.unparse(call.func.value) == "self._artifacts"), name
