"""Tests for rayplex.media: every payload is written to a real event file with tensorboardX and
read back with TensorBoard's own loaders (never with rayplex's)."""

from __future__ import annotations

import doctest
import importlib.util
import io
import re
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.pr_curve import plugin_data_pb2 as pr_curve_plugin_data_pb2
from tensorboard.util import tensor_util
from tensorboardX import FileWriter
from tensorboardX import summary as tbx_summary
from tensorboardX.proto import summary_pb2
from tensorboardX.utils import convert_to_HWC

from rayplex import media
from rayplex.event_bytes import tag_header
from rayplex.media import (
    audio_value,
    encode_gif,
    encode_png,
    figure_value,
    histogram_value,
    hparams_values,
    image_value,
    images_value,
    pr_curve_value,
    text_value,
    video_value,
)

Value = summary_pb2.Summary.Value

# --------------------------------------------------------------------------- helpers


def with_tag(tag: str, payload: bytes) -> Value:
    """What the worker does: prepend the tag (field 1) to the tag-less payload."""
    return Value.FromString(tag_header(tag) + payload)


def write(logdir: Path, *tagged: tuple[str, bytes], step: int = 7) -> Path:
    """One event per (tag, payload), written by tensorboardX's FileWriter."""
    writer = FileWriter(str(logdir))
    for tag, payload in tagged:
        writer.add_summary(summary_pb2.Summary(value=[with_tag(tag, payload)]), step)
    writer.close()
    return logdir


def loaded_values(logdir: Path) -> dict[str, list[tuple[int, Any]]]:
    """``{tag: [(step, Summary.Value)]}`` through EventFileLoader (values migrated to tensors)."""
    (path,) = logdir.glob("events.out.tfevents.*")
    out: dict[str, list[tuple[int, Any]]] = {}
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value))
    return out


def accumulator(logdir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance=event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE
    )
    acc.Reload()
    return acc


def read_png(logdir: Path, payload: bytes, tag: str = "img") -> np.ndarray:
    write(logdir, (tag, payload))
    (event,) = accumulator(logdir).Images(tag)
    return iio.imread(event.encoded_image_string, extension=".png")


def gif_frames(gif: bytes) -> np.ndarray:
    return iio.imread(gif, index=None, extension=".gif")


# --------------------------------------------------------------------------- the convention


PAYLOADS: dict[str, Callable[[], bytes]] = {
    "histogram": lambda: histogram_value(np.arange(10.0)),
    "text": lambda: text_value("hi"),
    "image": lambda: image_value(np.zeros((2, 2, 3), np.uint8)),
    "images": lambda: images_value(np.zeros((2, 3, 2, 2), np.uint8)),
    "video": lambda: video_value(np.zeros((2, 2, 2, 3), np.uint8)),
    "audio": lambda: audio_value(np.zeros(10)),
    "pr_curve": lambda: pr_curve_value([0, 1], [0.1, 0.9]),
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_every_payload_is_a_summary_value_without_a_tag(kind: str) -> None:
    payload = PAYLOADS[kind]()
    assert isinstance(payload, bytes)
    value = Value.FromString(payload)
    assert value.tag == ""
    assert value.WhichOneof("value") is not None


def test_a_prepended_tag_longer_than_127_bytes_still_parses(tmp_path: Path) -> None:
    tag = "deep/" * 40 + "text"
    values = loaded_values(write(tmp_path, (tag, text_value("long tag"))))
    ((_, value),) = values[tag]
    assert tensor_util.make_ndarray(value.tensor).tolist() == [b"long tag"]


def test_the_module_docstring_examples_run() -> None:
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(media):
        if has_mpl or not test.name.endswith("figure_value"):
            runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_torch_like_tensors_are_detached_and_moved_to_the_cpu() -> None:
    class FakeTensor:
        def __init__(self, arr: np.ndarray) -> None:
            self.arr, self.calls = arr, []

        def detach(self) -> FakeTensor:
            self.calls.append("detach")
            return self

        def cpu(self) -> FakeTensor:
            self.calls.append("cpu")
            return self

        def numpy(self) -> np.ndarray:
            return self.arr

    t = FakeTensor(np.full((2, 2, 3), 9, np.uint8))
    assert image_value(t) == image_value(t.arr)
    assert t.calls[:2] == ["detach", "cpu"]


# --------------------------------------------------------------------------- images


def test_an_rgb_uint8_image_reads_back_with_the_same_pixels(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_png(tmp_path, image_value(img)), img)


def test_an_image_is_migrated_to_the_images_plugin_with_its_size(tmp_path: Path) -> None:
    img = np.zeros((5, 7, 3), np.uint8)
    ((step, value),) = loaded_values(write(tmp_path, ("pic", image_value(img))))["pic"]
    assert step == 7
    assert value.metadata.plugin_data.plugin_name == "images"
    width, height, png = tensor_util.make_ndarray(value.tensor).tolist()
    assert (width, height) == (b"7", b"5")
    assert iio.imread(png, extension=".png").shape == (5, 7, 3)


def test_float_pixels_in_0_1_are_scaled_to_the_nearest_uint8() -> None:
    floats = np.array([[0.0, 0.5, 1.0, 1 / 255, 0.999, 0.2]], np.float32)
    hw = Value.FromString(image_value(floats, dataformats="HW")).image.encoded_image_string
    decoded = iio.imread(hw, extension=".png")[..., 0]
    np.testing.assert_array_equal(decoded, [[0, 128, 255, 1, 255, 51]])


def test_float_pixels_outside_0_1_are_clipped_and_nan_becomes_zero() -> None:
    floats = np.array([[-0.5, 1.5, np.nan, np.inf, -np.inf]])
    png = Value.FromString(image_value(floats, dataformats="HW")).image.encoded_image_string
    np.testing.assert_array_equal(iio.imread(png, extension=".png")[..., 0], [[0, 255, 0, 255, 0]])


def test_integer_pixels_other_than_uint8_are_accepted_when_they_fit(tmp_path: Path) -> None:
    img = np.arange(12, dtype=np.int64).reshape(2, 2, 3) * 20
    np.testing.assert_array_equal(read_png(tmp_path, image_value(img)), img)


def test_a_chw_image_is_transposed_to_hwc(tmp_path: Path) -> None:
    hwc = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    np.testing.assert_array_equal(read_png(tmp_path, image_value(chw, dataformats="CHW")), hwc)


@pytest.mark.parametrize(("shape", "fmt"), [((4, 6), "HW"), ((4, 6, 1), "HWC"), ((1, 4, 6), "chw")])
def test_a_grayscale_image_is_stored_as_rgb(
    tmp_path: Path, shape: tuple[int, ...], fmt: str
) -> None:
    gray = np.arange(24, dtype=np.uint8).reshape(shape) * 10
    decoded = read_png(tmp_path, image_value(gray, dataformats=fmt))
    assert decoded.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(decoded[..., c], gray.reshape(4, 6))


def test_an_rgba_image_keeps_its_alpha_channel(tmp_path: Path) -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (3, 3, 4), dtype=np.uint8)
    np.testing.assert_array_equal(read_png(tmp_path, image_value(rgba)), rgba)


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [((4, 4, 2), "HWC"), ((4, 4), "HWC"), ((2, 4, 4, 3), "HWC"), ((3, 0, 4), "CHW")],
)
def test_a_wrongly_shaped_image_raises_value_error_naming_the_shape(
    shape: tuple[int, ...], fmt: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        image_value(np.zeros(shape, np.uint8), dataformats=fmt)


@pytest.mark.parametrize("dtype", [bool, np.complex64])
def test_an_image_of_an_unsupported_dtype_raises_value_error_naming_it(dtype: type) -> None:
    with pytest.raises(ValueError, match=np.dtype(dtype).name):
        image_value(np.zeros((2, 2, 3), dtype))


def test_integer_pixels_outside_0_255_raise_value_error_naming_the_dtype() -> None:
    with pytest.raises(ValueError, match="int16"):
        image_value(np.full((2, 2), 300, np.int16), dataformats="HW")


@pytest.mark.parametrize("bad", [None, "pixels", {"a": 1}, object(), [["a", "b"]]])
def test_an_image_that_is_not_numeric_raises_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        image_value(bad)


@pytest.mark.parametrize("fmt", ["HWX", "HHW", "W", "NCHW"])
def test_unknown_or_repeated_dataformats_raise_value_error(fmt: str) -> None:
    with pytest.raises(ValueError, match="dataformats"):
        image_value(np.zeros((2, 2, 3), np.uint8), dataformats=fmt)


def test_dataformats_that_is_not_a_string_raises_type_error() -> None:
    with pytest.raises(TypeError, match="dataformats"):
        image_value(np.zeros((2, 2, 3), np.uint8), dataformats=3)  # type: ignore[arg-type]


def test_encode_png_round_trips_gray_rgb_and_rgba() -> None:
    rng = np.random.default_rng(3)
    for shape in [(3, 5), (3, 5, 3), (3, 5, 4)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(iio.imread(encode_png(img), extension=".png"), img)
    gray1 = rng.integers(0, 256, (3, 5, 1), dtype=np.uint8)
    np.testing.assert_array_equal(iio.imread(encode_png(gray1), extension=".png"), gray1[..., 0])


def test_encode_png_rejects_anything_but_uint8_hw_or_hwc() -> None:
    with pytest.raises(ValueError, match="float64"):
        encode_png(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=re.escape("(2, 2, 2)")):
        encode_png(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=re.escape("(1, 2, 2, 3)")):
        encode_png(np.zeros((1, 2, 2, 3), np.uint8))


# --------------------------------------------------------------------------- image batches


def test_an_image_batch_is_tiled_like_tensorboardx_make_grid(tmp_path: Path) -> None:
    batch = np.random.default_rng(4).integers(0, 256, (10, 3, 4, 5), dtype=np.uint8)
    decoded = read_png(tmp_path, images_value(batch))
    assert decoded.shape == (2 * 4, 8 * 5, 3)  # 8 columns, 2 rows
    np.testing.assert_array_equal(decoded, convert_to_HWC(batch, "NCHW"))
    np.testing.assert_array_equal(decoded[4:8, 5:10], batch[9].transpose(1, 2, 0))
    assert not decoded[4:, 10:].any()  # empty cells are black


def test_an_nhwc_batch_gives_the_same_grid_as_nchw() -> None:
    nchw = np.random.default_rng(5).random((3, 3, 4, 4))
    nhwc = nchw.transpose(0, 2, 3, 1)
    assert images_value(nhwc, dataformats="NHWC") == images_value(nchw)


def test_a_grayscale_batch_without_a_channel_axis_is_stored_as_rgb(tmp_path: Path) -> None:
    batch = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    decoded = read_png(tmp_path, images_value(batch, dataformats="NHW"))
    assert decoded.shape == (3, 8, 3)
    np.testing.assert_array_equal(decoded[:, 4:, 1], batch[1])


def test_a_wrongly_shaped_image_batch_raises_value_error_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=re.escape("(3, 4, 4)")):
        images_value(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=re.escape("(2, 5, 4, 4)")):
        images_value(np.zeros((2, 5, 4, 4), np.uint8))


# --------------------------------------------------------------------------- video


def _flat_frames(t: int, h: int = 4, w: int = 6) -> np.ndarray:
    """T frames of distinct flat colours (exact in a GIF palette)."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 0, 0]])
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i] = colours[i % len(colours)]
        frames[i, 0, 0] = i  # keep consecutive frames distinct even when colours repeat
    return frames


def test_a_video_gif_has_one_frame_per_time_step(tmp_path: Path) -> None:
    frames = _flat_frames(6)
    write(tmp_path, ("vid", video_value(frames, fps=5)))
    (event,) = accumulator(tmp_path).Images("vid")
    assert (event.width, event.height) == (6, 4)
    decoded = gif_frames(event.encoded_image_string)
    assert decoded.shape[0] == 6
    np.testing.assert_array_equal(decoded[..., :3], frames)


def test_a_video_is_an_image_value_that_tensorboard_migrates(tmp_path: Path) -> None:
    ((_, value),) = loaded_values(write(tmp_path, ("vid", video_value(_flat_frames(3)))))["vid"]
    assert value.metadata.plugin_data.plugin_name == "images"
    _, _, gif = tensor_util.make_ndarray(value.tensor).tolist()
    assert gif[:6] == b"GIF89a"


def test_video_fps_sets_the_gif_frame_delay() -> None:
    def delay(fps: float) -> int:
        gif = Value.FromString(video_value(_flat_frames(2), fps=fps)).image.encoded_image_string
        return iio.immeta(gif, extension=".gif", index=0)["duration"]

    assert delay(4) == 250
    assert delay(0.5) == 2000
    assert delay(1000) == 20  # capped at 50 fps: browsers slow faster GIFs down to 10 fps


def test_identical_consecutive_frames_are_merged_by_pillow_keeping_the_playback_time() -> None:
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    frames[2] = 255
    gif = encode_gif(frames, fps=4)
    assert gif_frames(gif).shape[0] == 2
    durations = [iio.immeta(gif, extension=".gif", index=i)["duration"] for i in range(2)]
    assert durations == [500, 250]


def test_float_and_grayscale_videos_in_tchw_and_thw_layouts_are_accepted() -> None:
    frames = np.zeros((3, 1, 4, 5))
    frames[1] = 1.0
    gif = Value.FromString(video_value(frames, dataformats="TCHW")).image
    assert (gif.height, gif.width, gif.colorspace) == (4, 5, 1)
    decoded = gif_frames(gif.encoded_image_string)
    assert decoded.shape[0] == 3 and decoded[1].min() == 255 and decoded[2].max() == 0
    thw = Value.FromString(video_value(frames[:, 0], dataformats="THW")).image
    assert gif_frames(thw.encoded_image_string).shape[:3] == (3, 4, 5)


def test_several_videos_in_ntchw_are_tiled_into_one_grid() -> None:
    videos = np.stack([_flat_frames(4).transpose(0, 3, 1, 2)] * 3)  # N=3, T, C, H, W
    videos[1] = 255 - videos[1]
    image = Value.FromString(video_value(videos, dataformats="NTCHW")).image
    assert (image.height, image.width) == (4, 18)
    decoded = gif_frames(image.encoded_image_string)[..., :3]
    assert decoded.shape == (4, 4, 18, 3)
    np.testing.assert_array_equal(decoded[:, :, 6:12], 255 - _flat_frames(4))


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [((3, 4, 4, 4), "THWC"), ((1, 3, 3, 4, 4), "THWC"), ((3, 4, 4, 2), "THWC"), ((0, 4, 4), "THW")],
)
def test_a_wrongly_shaped_video_raises_value_error_naming_the_shape(
    shape: tuple[int, ...], fmt: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        video_value(np.zeros(shape, np.uint8), dataformats=fmt)


def test_a_non_positive_or_non_numeric_fps_is_rejected() -> None:
    frames = np.zeros((2, 2, 2, 3), np.uint8)
    for fps in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            video_value(frames, fps=fps)
    with pytest.raises(TypeError, match="fps"):
        video_value(frames, fps="4")  # type: ignore[arg-type]


def test_encode_gif_accepts_thw_and_thwc_uint8_only() -> None:
    gray = np.zeros((3, 2, 2), np.uint8)
    gray[1] = 255
    assert gif_frames(encode_gif(gray, 4)).shape[:3] == (3, 2, 2)
    assert gif_frames(encode_gif(_flat_frames(2), 4)).shape[0] == 2
    with pytest.raises(ValueError, match="float64"):
        encode_gif(np.zeros((2, 2, 2, 3)), 4)
    with pytest.raises(ValueError, match=re.escape("(2, 2, 2, 4)")):
        encode_gif(np.zeros((2, 2, 2, 4), np.uint8), 4)


# --------------------------------------------------------------------------- histograms


@pytest.mark.parametrize("bins", ["tensorflow", "auto", 10, [-4.0, -1.0, 0.0, 1.0, 4.0]])
def test_histogram_bucket_counts_sum_to_the_number_of_values(tmp_path: Path, bins: Any) -> None:
    values = np.random.default_rng(6).normal(size=(20, 25)).clip(-3.9, 3.9)
    write(tmp_path, ("w", histogram_value(values, bins=bins)))
    (event,) = accumulator(tmp_path).Histograms("w")
    histo = event.histogram_value
    assert histo.num == 500 and sum(histo.bucket) == 500
    assert histo.min == values.min() and histo.max == values.max()
    assert histo.sum == pytest.approx(values.sum())
    ((_, migrated),) = loaded_values(tmp_path)["w"]
    assert migrated.metadata.plugin_data.plugin_name == "histograms"
    assert tensor_util.make_ndarray(migrated.tensor)[:, 2].sum() == 500


def test_the_default_bins_match_tensorboardx_summary_writer_bit_for_bit(tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(logdir=str(tmp_path)) as writer:
        default_bins = writer.default_bins
    values = np.random.default_rng(7).normal(scale=1e-3, size=300)
    expected = tbx_summary.histogram("h", values, default_bins).value[0].histo
    assert Value.FromString(histogram_value(values)).histo == expected


def test_integer_and_bool_histograms_are_accepted() -> None:
    assert Value.FromString(histogram_value(np.arange(5))).histo.num == 5
    assert Value.FromString(histogram_value([True, False, True])).histo.sum == 2


def test_max_bins_merges_buckets() -> None:
    values = np.arange(1000.0)
    few = Value.FromString(histogram_value(values, bins=100, max_bins=10)).histo
    assert len(few.bucket) <= 12 and sum(few.bucket) == 1000


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_histogram_with_nan_or_inf_raises_value_error_counting_them(bad: float) -> None:
    with pytest.raises(ValueError, match="2 non-finite"):
        histogram_value(np.array([1.0, bad, 2.0, bad]))


def test_an_empty_histogram_raises_value_error_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=re.escape("(0, 3)")):
        histogram_value(np.zeros((0, 3)))


def test_values_entirely_outside_explicit_bin_edges_raise_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="bin edges"):
        histogram_value([-5.0, 5.0], bins=[0.0, 1.0, 2.0])


@pytest.mark.parametrize(
    ("bins", "error"),
    [
        ("nope", ValueError),
        (0, ValueError),
        ([3.0, 2.0, 1.0], ValueError),
        ([1.0], ValueError),
        ([0.0, np.inf], ValueError),
        (True, TypeError),
        (1.5, TypeError),
    ],
)
def test_invalid_bins_are_rejected(bins: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="bins"):
        histogram_value([1.0, 2.0], bins=bins)


def test_complex_or_text_histogram_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="complex128"):
        histogram_value(np.array([1 + 2j]))
    with pytest.raises(TypeError):
        histogram_value(["a", "b"])


# --------------------------------------------------------------------------- text


def test_text_reads_back_through_the_text_plugin(tmp_path: Path) -> None:
    text = "# Title\nsome **markdown** and ünïcödé"
    ((_, value),) = loaded_values(write(tmp_path, ("notes", text_value(text))))["notes"]
    assert value.metadata.plugin_data.plugin_name == "text"
    assert tensor_util.make_ndarray(value.tensor).tolist() == [text.encode()]


def test_text_that_is_not_a_string_raises_type_error() -> None:
    with pytest.raises(TypeError, match="bytes"):
        text_value(b"bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- audio


def _wav(logdir: Path, payload: bytes) -> tuple[Any, tuple[int, int, int], np.ndarray]:
    """The audio event, its WAV's (frames, channels, rate) and its int16 samples."""
    write(logdir, ("snd", payload))
    (event,) = accumulator(logdir).Audio("snd")
    with wave.open(io.BytesIO(event.encoded_audio_string)) as wav:
        params = (wav.getnframes(), wav.getnchannels(), wav.getframerate())
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    return event, params, pcm


def test_audio_reads_back_with_its_sample_count_and_rate(tmp_path: Path) -> None:
    samples = np.sin(np.linspace(0, 20 * np.pi, 1600, dtype=np.float32))
    event, wav, pcm = _wav(tmp_path, audio_value(samples, sample_rate=16000))
    assert event.content_type == "audio/wav"
    assert event.length_frames == 1600 and event.sample_rate == 16000
    assert wav == (1600, 1, 16000)
    np.testing.assert_allclose(pcm / 32767, samples, atol=1 / 32767)


def test_stereo_audio_keeps_both_channels_interleaved(tmp_path: Path) -> None:
    samples = np.stack([np.full(10, 0.5), np.full(10, -0.25)], axis=1)
    _, wav, pcm = _wav(tmp_path, audio_value(samples, sample_rate=8000))
    assert wav[1] == 2
    np.testing.assert_array_equal(pcm.reshape(10, 2)[0], [16384, -8192])


def test_audio_outside_minus_one_to_one_is_clipped_and_nan_becomes_silence(tmp_path: Path) -> None:
    _, _, pcm = _wav(tmp_path, audio_value(np.array([2.0, -3.0, np.nan, 1.0])))
    np.testing.assert_array_equal(pcm, [32767, -32767, 0, 32767])


def test_audio_is_migrated_to_the_audio_plugin(tmp_path: Path) -> None:
    ((_, value),) = loaded_values(write(tmp_path, ("snd", audio_value(np.zeros(5)))))["snd"]
    assert value.metadata.plugin_data.plugin_name == "audio"
    (wav,) = tensor_util.make_ndarray(value.tensor)  # dataclass_compat drops the label column
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"


@pytest.mark.parametrize(
    ("samples", "match"),
    [
        (np.zeros(10, np.int16), "int16"),
        (np.zeros((10, 3)), re.escape("(10, 3)")),
        (np.zeros((2, 10, 1)), re.escape("(2, 10, 1)")),
        (np.zeros(0), re.escape("(0, 1)")),
    ],
)
def test_badly_shaped_or_typed_audio_raises_value_error(samples: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        audio_value(samples)


def test_a_bad_sample_rate_is_rejected() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        audio_value(np.zeros(4), sample_rate=0)
    with pytest.raises(TypeError, match="sample_rate"):
        audio_value(np.zeros(4), sample_rate=44100.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- figures


def test_a_matplotlib_figure_becomes_a_png_of_its_pixel_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), dpi=40)
    fig.add_subplot().plot([0, 1, 2], [2, 0, 1])
    decoded = read_png(tmp_path, figure_value(fig))
    assert decoded.shape[:2] == (80, 120)
    assert decoded.std() > 0  # something was drawn


def test_figure_value_closes_pyplot_figures_unless_told_not_to() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept, closed = plt.figure(figsize=(1, 1)), plt.figure(figsize=(1, 1))
    figure_value(kept, close=False)
    figure_value(closed)
    assert plt.fignum_exists(kept.number) and not plt.fignum_exists(closed.number)
    plt.close(kept)


def test_figure_value_rejects_what_is_not_a_figure() -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(TypeError, match="Figure"):
        figure_value(np.zeros((2, 2, 3)))


def test_figure_value_without_matplotlib_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'rayplex[media]'")):
        figure_value(object())


# --------------------------------------------------------------------------- PR curves


def test_a_pr_curve_reads_back_as_a_6_by_num_thresholds_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 50).astype(bool)
    predictions = rng.random(50)
    write(tmp_path, ("pr", pr_curve_value(labels, predictions, num_thresholds=21)))
    ((_, value),) = loaded_values(tmp_path)["pr"]
    assert value.metadata.plugin_data.plugin_name == "pr_curves"
    content = pr_curve_plugin_data_pb2.PrCurvePluginData.FromString(
        value.metadata.plugin_data.content
    )
    assert content.num_thresholds == 21
    data = tensor_util.make_ndarray(value.tensor)
    assert data.shape == (6, 21)
    tp, fp = data[0, 0], data[1, 0]  # threshold 0: everything predicted positive
    assert (tp, fp) == (labels.sum(), (~labels).sum())
    expected = tbx_summary.pr_curve("pr", labels, predictions, 21).value[0].tensor
    np.testing.assert_array_equal(data.ravel(), np.array(expected.float_val, np.float32))


def test_pr_curve_weights_scale_the_counts() -> None:
    labels, predictions = np.array([1, 0, 1]), np.array([0.9, 0.4, 0.6])
    value = Value.FromString(pr_curve_value(labels, predictions, 5, weights=[2.0, 1.0, 3.0]))
    data = np.array(value.tensor.float_val).reshape(6, 5)
    assert (data[0, 0], data[1, 0]) == (5.0, 1.0)


@pytest.mark.parametrize(
    ("labels", "predictions", "kwargs", "match"),
    [
        ([0, 1], [0.5], {}, re.escape("(2,)")),
        ([0, 2], [0.5, 0.5], {}, "0 and 1"),
        ([0, 1], [0.5, 1.5], {}, re.escape("[0, 1]")),
        ([0, 1], [0.5, np.nan], {}, re.escape("[0, 1]")),
        ([], [], {}, "empty"),
        ([0, 1], [0.1, 0.2], {"num_thresholds": 128}, "num_thresholds"),
        ([0, 1], [0.1, 0.2], {"num_thresholds": 1}, "num_thresholds"),
        ([0, 1], [0.1, 0.2], {"weights": [1.0, -1.0]}, "non-negative"),
        ([0, 1], [0.1, 0.2], {"weights": [1.0, 1.0, 1.0]}, re.escape("(3,)")),
    ],
)
def test_invalid_pr_curve_inputs_raise_value_error(
    labels: Any, predictions: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        pr_curve_value(labels, predictions, **kwargs)


def test_a_non_int_num_thresholds_raises_type_error() -> None:
    with pytest.raises(TypeError, match="num_thresholds"):
        pr_curve_value([0, 1], [0.1, 0.2], num_thresholds=10.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hparams


def test_hparams_values_carry_the_three_special_tags_that_the_plugin_parses(
    tmp_path: Path,
) -> None:
    hparams = {"lr": 0.01, "layers": np.int64(4), "opt": "adam", "nesterov": True}
    tagged = hparams_values(hparams, {"loss/val": 0.3, "acc": 1})
    assert [tag for tag, _ in tagged] == [
        hparams_metadata.EXPERIMENT_TAG,
        hparams_metadata.SESSION_START_INFO_TAG,
        hparams_metadata.SESSION_END_INFO_TAG,
    ]
    values = loaded_values(write(tmp_path, *tagged))
    content = {tag: values[tag][0][1].metadata.plugin_data.content for tag, _ in tagged}
    for tag, _ in tagged:
        assert values[tag][0][1].metadata.plugin_data.plugin_name == "hparams"

    experiment = hparams_metadata.parse_experiment_plugin_data(
        content[hparams_metadata.EXPERIMENT_TAG]
    )
    assert {h.name for h in experiment.hparam_infos} == set(hparams)
    assert [m.name.tag for m in experiment.metric_infos] == ["loss/val", "acc"]

    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    assert start.hparams["lr"].number_value == 0.01
    assert start.hparams["layers"].number_value == 4.0
    assert start.hparams["opt"].string_value == "adam"
    assert start.hparams["nesterov"].bool_value is True

    end = hparams_metadata.parse_session_end_info_plugin_data(
        content[hparams_metadata.SESSION_END_INFO_TAG]
    )
    assert end.status == 1  # STATUS_SUCCESS


@pytest.mark.parametrize("bad", [None, [1, 2], {"a": 1}, 1 + 2j, b"bytes"])
def test_an_hparam_of_an_unsupported_type_raises_type_error_naming_the_key(bad: Any) -> None:
    with pytest.raises(TypeError, match="'batch_size'"):
        hparams_values({"lr": 0.1, "batch_size": bad}, {})


def test_hparams_and_metrics_must_be_mappings_with_string_keys_and_numeric_metrics() -> None:
    with pytest.raises(TypeError, match="hparams"):
        hparams_values([("lr", 0.1)], {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        hparams_values({1: 0.1}, {})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="'acc'"):
        hparams_values({"lr": 0.1}, {"acc": "high"})  # type: ignore[dict-item]


# ------------------------------------------------------------ image files (save_image, videos)


def decode(data: bytes, ext: str = ".png") -> np.ndarray:
    return np.asarray(iio.imread(data, extension=ext))


@pytest.mark.parametrize(
    ("shape", "fmt"),
    [((6, 5, 1), None), ((6, 5, 1), "HWC"), ((6, 5), None), ((6, 5), "HW"), ((1, 6, 5), "CHW")],
)
@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_one_channel_images_become_grayscale_files(
    shape: tuple[int, ...], fmt: str | None, ext: str
) -> None:
    img = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8
    pixels = media.image_file_pixels(img.reshape(shape), fmt)
    assert pixels.shape == (6, 5)
    decoded = decode(media.encode_image_file(pixels, ext), ext)
    assert decoded.shape == (6, 5)
    if ext == ".png":
        np.testing.assert_array_equal(decoded, img)
    else:  # lossy
        assert np.abs(decoded.astype(int) - img).mean() < 4


def test_a_two_d_float_array_is_grayscale_by_default() -> None:
    img = np.array([[0.0, 0.5], [1.0, 2.0]])
    np.testing.assert_array_equal(media.image_file_pixels(img), [[0, 128], [255, 255]])


def test_explicit_dataformats_are_kept() -> None:
    chw = np.zeros((3, 4, 5), np.uint8)
    chw[0] = 255
    pixels = media.image_file_pixels(chw, "CHW")
    assert pixels.shape == (4, 5, 3) and (pixels[..., 0] == 255).all()
    with pytest.raises(ValueError, match="dataformats"):
        media.image_file_pixels(np.zeros((4, 5)), "HWC")


def test_a_four_d_array_without_dataformats_raises_value_error_naming_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\)"):
        media.image_file_pixels(np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize("mode", [True, "grid", "individual"])
def test_normalize_stretches_each_channel_to_the_full_range(mode: object) -> None:
    img = np.stack([np.full((2, 2), 3.0), np.full((2, 2), 3.0), np.full((2, 2), 3.0)], axis=-1)
    img[0, 0] = [1.0, 10.0, -5.0]
    pixels = media.image_file_pixels(img, normalize=mode)
    np.testing.assert_array_equal(pixels[0, 0], [0, 255, 0])
    np.testing.assert_array_equal(pixels[1, 1], [255, 0, 255])


def test_normalize_with_a_range_maps_it_to_the_full_range_and_clips_outside() -> None:
    img = np.array([[-1.0, 0.0, 5.0, 10.0, 20.0]])
    np.testing.assert_array_equal(media.image_file_pixels(img, normalize=(0, 10)),
                                  [[0, 0, 128, 255, 255]])


def test_normalize_applies_to_integer_images_too() -> None:
    img = np.array([[100, 101]], np.uint8)
    np.testing.assert_array_equal(media.image_file_pixels(img, normalize=True), [[0, 255]])


@pytest.mark.parametrize("mode", [True, "grid", "individual"])
def test_normalizing_an_all_zero_image_does_not_divide_by_zero(mode: object) -> None:
    with np.errstate(all="raise"):
        pixels = media.image_file_pixels(np.zeros((64, 64, 1)), normalize=mode)
    assert pixels.shape == (64, 64) and not pixels.any()


def test_normalizing_ignores_nan_and_an_all_nan_image_is_black() -> None:
    img = np.array([[np.nan, 1.0, 3.0]])
    np.testing.assert_array_equal(media.image_file_pixels(img, normalize=True), [[0, 0, 255]])
    assert not media.image_file_pixels(np.full((2, 2), np.nan), normalize=True).any()


@pytest.mark.parametrize(
    ("normalize", "error"),
    [("rows", ValueError), ((1, 1), ValueError), ((0, np.inf), ValueError), (3, TypeError),
     ((1, 2, 3), TypeError)],
)
def test_a_bad_normalize_raises(normalize: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="normalize"):
        media.image_file_pixels(np.zeros((2, 2)), normalize=normalize)


def test_cmap_colours_two_d_data_with_the_matplotlib_colour_map() -> None:
    import matplotlib

    img = np.array([[0.0, 0.5, 1.0]])
    pixels = media.image_file_pixels(img, cmap="cool")
    expected = np.rint(matplotlib.colormaps["cool"](img) * 255).astype(np.uint8)
    assert pixels.shape == (1, 3, 4)
    np.testing.assert_array_equal(pixels, expected)
    np.testing.assert_array_equal(decode(media.encode_image_file(pixels, ".png")), expected)


def test_cmap_with_normalize_colours_the_normalized_values() -> None:
    import matplotlib

    pixels = media.image_file_pixels(np.array([[10.0, 20.0]]), cmap="cool", normalize=True)
    expected = np.rint(matplotlib.colormaps["cool"](np.array([[0.0, 1.0]])) * 255)
    np.testing.assert_array_equal(pixels, expected.astype(np.uint8))


def test_cmap_reads_integer_pixels_on_the_0_255_scale() -> None:
    import matplotlib

    pixels = media.image_file_pixels(np.array([[0, 255]], np.uint8), cmap="cool")
    expected = np.rint(matplotlib.colormaps["cool"](np.array([[0.0, 1.0]])) * 255)
    np.testing.assert_array_equal(pixels, expected.astype(np.uint8))


def test_a_jpeg_of_a_colour_mapped_image_drops_the_alpha_channel() -> None:
    pixels = media.image_file_pixels(np.zeros((8, 8)), cmap="cool")
    assert decode(media.encode_image_file(pixels, ".jpg"), ".jpg").shape == (8, 8, 3)


def test_cmap_on_a_colour_image_or_an_unknown_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="one-channel"):
        media.image_file_pixels(np.zeros((2, 2, 3)), cmap="cool")
    with pytest.raises(ValueError, match="colour map"):
        media.image_file_pixels(np.zeros((2, 2)), cmap="no-such-map")


def test_video_pixels_infer_grayscale_from_a_three_d_stack_or_a_list_of_frames() -> None:
    frames = [np.full((4, 6), i / 2) for i in range(3)]
    for given in (frames, np.stack(frames)):
        pixels = media.video_pixels(given, None)
        assert pixels.shape == (3, 4, 6, 1)
        np.testing.assert_array_equal(pixels[:, 0, 0, 0], [0, 128, 255])
    assert media.video_pixels(np.zeros((3, 4, 6, 3)), None).shape == (3, 4, 6, 3)
    with pytest.raises(ValueError, match="dataformats"):
        media.video_pixels(np.zeros((4, 6)), None)


def test_stack_frames_makes_rgb_frames_when_any_is_in_colour() -> None:
    gray = np.full((2, 3), 7, np.uint8)
    rgba = np.zeros((2, 3, 4), np.uint8)
    assert media.stack_frames([gray, gray], ["a", "b"]).shape == (2, 2, 3, 1)
    both = media.stack_frames([gray, rgba], ["a", "b"])
    assert both.shape == (2, 2, 3, 3) and (both[0] == 7).all()


def test_stack_frames_refuses_frames_of_different_sizes_naming_them() -> None:
    with pytest.raises(ValueError, match="b.png is 4x2 but a.png is 3x2"):
        media.stack_frames([np.zeros((2, 3)), np.zeros((2, 4))], ["a.png", "b.png"])
