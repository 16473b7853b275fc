"""Everything else a Logger logs: media, hparams, ML-Logger's log/log_params, artifacts."""

from __future__ import annotations

import io
import json
import os

import imageio.v3 as iio
import numpy as np
import pytest
import ray

import rayplex
from tests.conftest import tb_scalars, tb_values
from tests.fixtures import shared_experiment  # noqa: F401  (one hub for this module)


def _encoded(value):
    """The encoded image of a Summary.Value, before or after TensorBoard's tensor migration."""
    if value.HasField("image"):
        return value.image.encoded_image_string
    return value.tensor.string_val[2]


def test_images_video_audio_and_pr_curve_round_trip(experiment):
    log = rayplex.get_logger("learner/media")
    img = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    log.add_image("img", img, step=1)
    frames = np.stack([np.full((6, 6, 3), k * 40, np.uint8) for k in range(5)])
    log.add_video("vid", frames, step=2, fps=5)
    log.add_audio("snd", np.sin(np.linspace(0, 10, 800)), step=3, sample_rate=8000)
    log.add_pr_curve("pr", np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.6, 0.4]), step=4)
    log.add_images("grid", np.zeros((4, 3, 8, 8)), step=5)
    log.flush()
    values = tb_values(experiment.logdir)["learner"]
    (_, _, v), = values["media/img"]
    assert np.array_equal(iio.imread(io.BytesIO(_encoded(v))), img)
    (_, _, v), = values["media/vid"]
    assert iio.improps(io.BytesIO(_encoded(v)), index=None).shape[0] == 5
    assert {"media/snd", "media/pr", "media/grid"} <= set(values)


def test_wrong_shapes_raise_at_the_call_site_with_the_shape(experiment):
    log = rayplex.get_logger("learner/bad")
    with pytest.raises(ValueError, match=r"\(2, 2, 2, 2, 2\)"):
        log.add_image("x", np.zeros((2, 2, 2, 2, 2)))


def test_ml_logger_log_writes_a_row_per_step(experiment):
    log = rayplex.get_logger("learner/ml")
    log.log(step=0, loss=1.0, acc=0.5)
    log.log({"loss": 0.5}, step=1, print=True)
    log.log(acc=0.75)  # same step as before: joins the row
    log.flush()
    scalars = tb_scalars(experiment.logdir)["learner"]
    assert scalars["ml/loss"] == [(0, 1.0), (1, 0.5)]
    assert scalars["ml/acc"] == [(0, 0.5), (1, 0.75)]


def test_log_params_merges_into_json_and_the_hparams_tab(experiment):
    log = rayplex.get_logger("learner/main")
    log.log_params(Args={"lr": 1e-3, "batch": 64})
    merged = log.log_params(Args={"lr": 3e-4}, Env={"name": "cartpole"})
    assert merged == {"Args": {"lr": 3e-4, "batch": 64}, "Env": {"name": "cartpole"}}
    log.flush()
    with open(os.path.join(experiment.logdir, "params", "learner", "main.json")) as f:
        assert json.load(f) == merged
    tags = set(tb_values(experiment.logdir)["hparams/learner/main"])
    assert "_hparams_/experiment" in tags and "_hparams_/session_start_info" in tags


def test_add_hparams_writes_a_session_with_metric_values(experiment):
    log = rayplex.get_logger("learner/hp")
    log.add_hparams({"lr": 0.1, "opt": "adam"}, {"final/reward": 3.5})
    log.flush()
    scalars = tb_scalars(experiment.logdir)["hparams/learner/hp"]
    assert scalars["final/reward"] == [(0, 3.5)]


def test_add_hparams_takes_the_metric_values_add_scalar_takes(experiment):
    log = rayplex.get_logger("learner/hp2")
    log.add_hparams({"lr": 0.1}, {"np": np.float32(0.5), "zero_d": np.array(2), "big": 1e39})
    with pytest.raises(TypeError, match="'text'"):
        log.add_hparams({"lr": 0.1}, {"text": "high"})
    log.flush()
    scalars = tb_scalars(experiment.logdir)["hparams/learner/hp2"]
    assert scalars["np"] == [(0, 0.5)] and scalars["zero_d"] == [(0, 2.0)]
    assert scalars["big"] == [(0, float("inf"))]  # beyond float32, as add_scalar writes it


def test_artifacts_round_trip_and_are_readable_by_other_workers(experiment):
    log = rayplex.get_logger("learner/main")
    log.save_pkl({"epoch": 3}, "checkpoints/latest.pkl")
    log.save_pkl(1, "stream.pkl", append=True)
    log.save_pkl(2, "stream.pkl", append=True)
    log.save_text("hello", "notes/readme.txt")
    img = np.full((4, 4, 3), 200, np.uint8)
    log.save_image(img, "pics/a.png")
    log.save_video(np.zeros((3, 8, 8, 3), np.uint8), "clips/v.gif", fps=5)

    @ray.remote
    def reader():
        other = rayplex.get_logger("agent/0")
        try:  # only a named client is read: a path is relative to the caller's directory
            other.load_pkl("learner/main/checkpoints/latest.pkl")
            addressed = "read"
        except FileNotFoundError:
            addressed = "not found"
        return (other.load_pkl("checkpoints/latest.pkl", client="learner/main"),
                other.load_pkl("stream.pkl", client="learner/main"), addressed)

    assert ray.get(reader.remote()) == ({"epoch": 3}, [1, 2], "not found")
    root = os.path.join(experiment.logdir, "artifacts", "learner", "main")
    with open(os.path.join(root, "notes", "readme.txt")) as f:
        assert f.read() == "hello"
    assert np.array_equal(iio.imread(os.path.join(root, "pics", "a.png")), img)
    assert iio.improps(os.path.join(root, "clips", "v.gif"), index=None).shape[0] >= 1


def test_upload_file_and_savefig(experiment, tmp_path):
    local = tmp_path / "data.bin"
    local.write_bytes(b"\x00\x01payload")
    log = rayplex.get_logger("learner/up")
    log.upload_file(local)
    assert log.load_bytes("data.bin") == b"\x00\x01payload"
    plt = pytest.importorskip("matplotlib.pyplot")
    fig = plt.figure()
    plt.plot([1, 2, 3])
    log.savefig("fig.png", fig=fig)
    assert log.load_bytes("fig.png")[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("path", ["../escape.pkl", "/etc/passwd", "a/../../b", "x\x00y", ""])
def test_artifact_paths_never_escape_the_store(experiment, path):
    log = rayplex.get_logger("learner/main")
    with pytest.raises(ValueError):
        log.save_pkl(1, path)


def test_a_symlink_out_of_the_store_is_refused_before_writing(experiment, tmp_path):
    log = rayplex.get_logger("learner/main")
    log.save_text("x", "inside.txt")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(experiment.logdir, "artifacts", "learner", "main", "link"))
    with pytest.raises(ValueError):
        log.save_text("y", "link/evil.txt")
    assert list(outside.iterdir()) == []


def test_loading_a_missing_artifact_is_a_file_not_found_error(experiment):
    with pytest.raises(FileNotFoundError):
        rayplex.get_logger("learner/main").load_pkl("nope.pkl")
