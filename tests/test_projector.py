"""TensorBoard projector embeddings: the files (pure), the hub writing them (a plain Hub), and
``Logger.add_embedding`` / ``export_json`` end to end, read back with TensorBoard's own
projector code."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from tensorboard.plugins.projector.projector_plugin import (
    ProjectorPlugin,
    _read_tensor_tsv_file,
)

import rayplex
from rayplex import projector
from rayplex.actors.hub import Hub
from rayplex.groups import GroupSpec
from tests.conftest import event_files, tb_scalars
from tests.fixtures import shared_experiment  # noqa: F401 - one hub for the module's Ray tests


def _tb_configs(run_dirs: dict[str, str]) -> dict[str, ProjectorConfig]:
    """What TensorBoard's projector plugin reads from each run directory (its own parser)."""
    configs, _ = ProjectorPlugin._read_latest_config_files(None, list(run_dirs.items()))
    return configs


# ------------------------------------------------------------------------ pure: the files


def test_tensors_round_trip_through_tensorboards_reader(tmp_path):
    mat = np.random.default_rng(0).normal(size=(7, 3))
    data, n = projector.tensors_tsv(mat)
    (tmp_path / "t.tsv").write_bytes(data)
    assert n == 7
    np.testing.assert_allclose(_read_tensor_tsv_file(str(tmp_path / "t.tsv")), mat, rtol=1e-6)


def test_bad_matrices_are_refused_with_the_shape():
    with pytest.raises(ValueError, match=r"2-D .* shape \(3,\)"):
        projector.tensors_tsv([1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        projector.tensors_tsv([[1.0, float("nan")]])
    with pytest.raises(TypeError):
        projector.tensors_tsv([["a"]])


def test_metadata_is_one_label_per_point_or_a_header_and_columns():
    assert projector.metadata_tsv(["a\tb", "c\nd"], 2) == b"a b\nc d\n"
    assert projector.metadata_tsv([("x", 1)], 1, header=["name", "n"]) == b"name\tn\nx\t1\n"
    with pytest.raises(ValueError, match="3 labels but mat has 2 points"):
        projector.metadata_tsv(["a", "b", "c"], 2)
    with pytest.raises(ValueError, match="row 0 has 1 columns"):
        projector.metadata_tsv(["x"], 1, header=["name", "n"])
    with pytest.raises(TypeError, match="list of labels"):
        projector.metadata_tsv("ab", 2)


def test_the_sprite_is_a_square_grid_of_the_thumbnails_row_by_row():
    imgs = np.zeros((5, 1, 4, 4))
    for i in range(5):
        imgs[i] = (i + 1) / 5  # thumbnail i is uniformly (i + 1) * 51
    png, dim = projector.sprite_png(imgs, 5)
    sprite = np.asarray(Image.open(io.BytesIO(png)))
    assert dim == (4, 4) and sprite.shape == (12, 12, 3)  # ceil(sqrt(5)) = 3 per row
    for i in range(5):
        r, c = divmod(i, 3)
        assert (sprite[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] == (i + 1) * 51).all()
    assert (sprite[4:, 8:] == 0).all() and (sprite[8:, 4:] == 0).all()  # padding


def test_bad_thumbnails_are_refused():
    with pytest.raises(ValueError, match="square"):
        projector.sprite_png(np.zeros((2, 3, 4, 5)), 2)
    with pytest.raises(ValueError, match="3 images but mat has 2"):
        projector.sprite_png(np.zeros((3, 4, 4)), 2)
    with pytest.raises(ValueError, match="at most 8192"):
        projector.sprite_png(np.zeros((5, 1, 4100, 4100), np.uint8), 5)


def test_the_config_parses_with_tensorboards_proto_and_a_repeated_name_is_replaced():
    first = projector.build_embedding(np.eye(2), ["a", "b"], np.zeros((2, 3, 2, 2)), 1, "x/e")
    other = projector.build_embedding(np.eye(2), step=2, tag="x/e")
    again = projector.build_embedding(np.ones((2, 2)), step=1, tag="x/e")
    text = projector.merge_config(projector.merge_config(projector.merge_config(
        "", first), other), again)
    config = text_format.Parse(text, ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == ["x/e:00002", "x/e:00001"]
    assert config.embeddings[1].tensor_path == "00001/x%2Fe/tensors.tsv"
    assert not config.embeddings[1].metadata_path  # the replacement has no labels
    parsed_first = text_format.Parse(first.config_entry(), ProjectorConfig()).embeddings[0]
    assert parsed_first.metadata_path == "00001/x%2Fe/metadata.tsv"
    assert list(parsed_first.sprite.single_image_dim) == [2, 2]


def test_a_config_written_by_tensorboardx_is_kept_when_merging():
    tbx = ('embeddings {\ntensor_name: "default:00000"\ntensor_path: "00000/default/tensors.tsv"'
           '\n}\n')
    ours = projector.build_embedding([[1.0]], step=0, tag="default")
    assert projector.merge_config(tbx, ours).count("embeddings {") == 1
    other = projector.build_embedding([[1.0]], step=0, tag="mine")
    assert projector.merge_config(tbx, other).count("embeddings {") == 2


def test_tags_become_safe_directory_names():
    assert projector.encode_tag("a/b c:ü") == "a%2Fb%20c%3A%C3%BC"
    assert projector.encode_tag("..") == "%2E."
    for bad in ("../x", "/abs/x", "00001/a/b", "1/x", "00001/.hidden", "00001/"):
        with pytest.raises(ValueError):
            projector.check_subdir(bad)


def test_an_embedding_from_elsewhere_is_checked_before_it_is_written():
    good = projector.build_embedding([[1.0]])
    projector.check_embedding(good)
    for bad in (
        projector.Embedding("../x", "t:0", {"tensors.tsv": b"1\n"}),
        projector.Embedding("00000/t", "t:0", {"tensors.tsv": b"1\n", "evil.sh": b""}),
        projector.Embedding("00000/t", "t:0", {"metadata.tsv": b"a\n"}),
        projector.Embedding("00000/t", "t:0", {"tensors.tsv": b"1\n", "sprite.png": b""}),
        projector.Embedding("00000/t", "t\n0", {"tensors.tsv": b"1\n"}),
        "not an embedding",
    ):
        with pytest.raises(ValueError):
            projector.check_embedding(bad)


# ------------------------------------------------------------------ a plain Hub writes them


@pytest.fixture
def hub(tmp_path):
    h = Hub("plain", str(tmp_path / "exp"))
    h.register_group(GroupSpec.indexed("agent", 4))
    yield h
    h._stop.set()
    h.close()


def _save(hub, request_id, run, emb, client="agent/5"):
    return hub.request(request_id, "save_embedding", (client, hub.registry.stamp, run, emb))


def test_the_hub_writes_the_files_and_config_once_per_request(hub):
    emb = projector.build_embedding(np.eye(3), ["a", "b", "c"], step=4, tag="agent/e/4-7")
    ok, answer = _save(hub, "r1", "agent/5", emb)
    assert ok, answer
    run_dir = os.path.join(hub.logdir, "tensorboard", "agent", "5")
    assert answer["path"] == os.path.join(run_dir, "00004", "agent%2Fe%2F4-7")
    assert event_files(hub.logdir)  # TensorBoard lists the run, so the projector sees it
    config = _tb_configs({"agent/5": run_dir})["agent/5"]
    assert [e.tensor_name for e in config.embeddings] == ["agent/e/4-7:00004"]
    tensors = _read_tensor_tsv_file(os.path.join(run_dir, config.embeddings[0].tensor_path))
    np.testing.assert_array_equal(tensors, np.eye(3))
    # Ray replays the call: answered, nothing written again
    tensors_path = os.path.join(answer["path"], "tensors.tsv")
    with open(tensors_path, "wb") as f:
        f.write(b"changed\n")
    assert _save(hub, "r1", "agent/5", emb) == (True, answer)
    with open(tensors_path, "rb") as f:
        assert f.read() == b"changed\n"


def test_the_hub_answers_an_old_registry_with_its_own(hub):
    emb = projector.build_embedding([[1.0]])
    ok, answer = hub.request("r2", "save_embedding", ("agent/5", ("old", 0), "agent/5", emb))
    assert ok and answer["stale"].stamp == hub.registry.stamp
    assert not os.path.exists(os.path.join(hub.logdir, "tensorboard", "agent", "5"))


def test_the_hub_keeps_embeddings_inside_the_clients_run(hub, tmp_path):
    emb = projector.build_embedding([[1.0]])
    for run in ("../../outside", "learner", "agent/../../x"):
        ok, (kind, _) = _save(hub, f"bad-{run}", run, emb)
        assert not ok and kind == "ValueError"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.makedirs(os.path.join(hub.logdir, "tensorboard", "agent"), exist_ok=True)
    os.symlink(outside, os.path.join(hub.logdir, "tensorboard", "agent", "6"))
    ok, (kind, message) = _save(hub, "link", "agent/6", emb, client="agent/6")
    assert not ok and kind == "ValueError" and "outside" in message
    assert list(outside.iterdir()) == []


def test_export_json_refuses_rayplex_own_trees_and_escapes(hub):
    for bad in ("tensorboard", "logs/x", "../up", "/abs", "a/../../b", ""):
        ok, (kind, _) = hub.request(f"e-{bad}", "export_json", (bad,))
        assert not ok and kind == "ValueError", bad


# ------------------------------------------------------------------ end to end on Ray


def test_add_embedding_shows_in_tensorboards_projector_for_each_route(experiment):
    experiment.register_indexed_group("agent", 4).register_normal_group("learner")
    learner = rayplex.get_logger("learner/main")
    agent = rayplex.get_logger("agent/5")
    mat = np.arange(12, dtype=float).reshape(4, 3)
    learner.add_embedding(mat, metadata=["a", "b", "c", "d"],
                          label_img=np.ones((4, 3, 8, 8)), global_step=2)
    agent.add_embedding(mat * 2, tag="emb")
    agent.add_embedding(mat * 3, tag="emb")  # the same step and tag: replaced
    tb = os.path.join(experiment.logdir, "tensorboard")
    configs = _tb_configs({"learner": os.path.join(tb, "learner"),
                           "agent/5": os.path.join(tb, "agent", "5")})
    (lrn,) = configs["learner"].embeddings
    assert lrn.tensor_name == "main/default:00002"
    assert list(lrn.sprite.single_image_dim) == [8, 8]
    with open(os.path.join(tb, "learner", lrn.metadata_path), encoding="utf-8") as f:
        assert f.read().split() == ["a", "b", "c", "d"]
    sprite = Image.open(os.path.join(tb, "learner", lrn.sprite.image_path))
    assert sprite.size == (16, 16)
    (agt,) = configs["agent/5"].embeddings
    assert agt.tensor_name == "agent/emb/4-7:00000"
    np.testing.assert_array_equal(
        _read_tensor_tsv_file(os.path.join(tb, "agent", "5", agt.tensor_path)), mat * 3)
    with pytest.raises(ValueError, match="3 labels but mat has 4 points"):
        learner.add_embedding(mat, metadata=["a", "b", "c"])


def test_export_json_writes_this_clients_scalars_as_tensorboardx_does(experiment, tmp_path):
    experiment.register_indexed_group("agent", 4).register_normal_group("learner")
    main, other, agent = (rayplex.get_logger(c) for c in ("learner/json", "learner/other",
                                                           "agent/1"))
    for step in range(3):
        main.add_scalars({"loss": 1.0 / (step + 1), ".sec/x": step}, step=step)
        other.add_scalar("loss", 5.0, step=step)
        agent.add_scalar("reward", step * 2.0, step=step)
    path = main.export_json(tmp_path / "main.json")
    agent.export_json(str(tmp_path / "agent.json"))
    with open(path, encoding="utf-8") as f:
        exported = json.load(f)
    with open(tmp_path / "agent.json", encoding="utf-8") as f:
        exported_agent = json.load(f)
    board = tb_scalars(experiment.logdir)
    assert sorted(exported) == ["json.sec/x", "json/loss"]  # not learner/other's tags
    for tag, rows in exported.items():
        assert all(len(row) == 3 and row[0] > 1e9 for row in rows)  # [wall_time, step, value]
        assert [(s, v) for _, s, v in rows] == board["learner"][tag]
    assert [(s, v) for _, s, v in exported_agent["agent/reward/0-3"]] == \
        board["agent/1"]["agent/reward/0-3"]
