"""ML-Logger's logging surface on rayplex.Logger (issue 15): images and videos, metrics prefixes,
pop, coloured tables, timers and counters, and the fixes to save_image, log_params and
store_metrics. Pure parts are tested as plain objects; the Logger wiring through a real local Ray,
read back with rayplex's readers and the artifact store."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

import rayplex
from rayplex.logger import Color, Logger, percent
from rayplex.terminal import print_table
from tests.fixtures import shared_experiment  # noqa: F401  (one hub for this module)


def scalars(logdir: str, run: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rayplex.read_scalars(logdir, run=run):
        out.setdefault(row.tag, []).append((row.step, row.value))
    return out


def text_log(logdir: str, client: str) -> str:
    with open(os.path.join(logdir, "logs", f"{client}.log"), encoding="utf-8") as f:
        return f.read()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------- Color, percent, print_table


def test_color_formats_its_value_with_the_formatter_and_keeps_the_value() -> None:
    cell = Color(0.28571, "yellow", lambda v: f"{v * 100:.5f}%")
    assert str(cell) == "28.57100%" and cell.value == 0.28571
    assert f"{Color(3.1415926, 'red'):.3}" == "3.14"
    assert str(Color(10, "yellow")) == "10"


def test_percent_shows_a_fraction_as_a_percentage() -> None:
    assert percent(0.85) == "85.00%"
    assert str(Color(0.5, "green", percent)) == "50.00%"


def test_color_accepts_ml_logger_colour_names_and_refuses_unknown_ones() -> None:
    for name in ("red", "green", "yellow", "blue", "magenta", "cyan", "white", "gray", "grey",
                 "brown", "default", None):
        Color(1, name)
    with pytest.raises(ValueError, match="unknown color 'reddish'"):
        Color(1, "reddish")
    with pytest.raises(TypeError, match="formatter"):
        Color(1, "red", "{:.2f}")  # type: ignore[arg-type]


def test_print_table_colours_cells_on_a_terminal_only() -> None:
    values = {"acc": Color(0.5, "green", percent), "loss": 0.123456789}
    terminal = Terminal()
    print_table("step 3", values, file=terminal)
    assert "50.00%" in terminal.getvalue() and "0.123457" in terminal.getvalue()
    assert "\x1b[32m" in terminal.getvalue()  # green
    piped = io.StringIO()
    print_table("step 3", values, file=piped)
    assert "50.00%" in piped.getvalue() and "\x1b[" not in piped.getvalue()


def test_print_table_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = Terminal()
    print_table("t", {"acc": Color(0.5, "green", percent)}, file=terminal)
    assert "50.00%" in terminal.getvalue() and "\x1b[" not in terminal.getvalue()


def test_print_table_shows_control_characters_and_markup_as_text() -> None:
    terminal = Terminal()
    print_table("t", {"evil\x1b]0;title\x07": "[red]x[/red]"}, file=terminal)
    out = terminal.getvalue()
    assert "\\x1b]0;title\\x07" in out and "\x1b]0" not in out
    assert "[red]x[/red]" in out


# ------------------------------------------------------------------------- images and video


def stored_image(log: Logger, path: str) -> np.ndarray:
    return np.asarray(iio.imread(log.load_bytes(path), extension=os.path.splitext(path)[1]))


@pytest.mark.parametrize(
    ("shape", "kwargs", "path"),
    [((8, 6, 1), {}, "hwc1.png"), ((8, 6), {"dataformats": "HW"}, "hw.png"),
     ((1, 8, 6), {"dataformats": "CHW"}, "chw1.png"), ((8, 6, 1), {}, "hwc1.jpg"),
     ((8, 6), {}, "two_d.png")],
)
def test_save_image_stores_one_channel_images_as_grayscale(
    experiment: Any, shape: tuple[int, ...], kwargs: dict[str, Any], path: str
) -> None:
    log = rayplex.get_logger("learner/img")
    gray = np.linspace(0, 1, 48).reshape(8, 6)
    log.save_image(gray.reshape(shape), path, **kwargs)
    back = stored_image(log, path)
    assert back.shape == (8, 6)
    expected = np.rint(gray * 255)
    assert np.abs(back.astype(float) - expected).max() <= (0 if path.endswith(".png") else 8)


def test_save_image_normalizes_and_colours_with_a_colour_map(experiment: Any) -> None:
    import matplotlib

    log = rayplex.get_logger("learner/img")
    depth = np.array([[10.0, 15.0, 20.0]])
    log.save_image(depth, "cool.png", normalize=True, cmap="cool")
    expected = np.rint(matplotlib.colormaps["cool"](np.array([[0.0, 0.5, 1.0]])) * 255)
    np.testing.assert_array_equal(stored_image(log, "cool.png"), expected.astype(np.uint8))
    log.save_image(np.zeros((64, 64, 1)), "zero.png", normalize="grid")
    assert not stored_image(log, "zero.png").any()
    log.save_image(np.array([[0.0, 5.0, 10.0]]), "range.png", normalize=(0, 5))
    np.testing.assert_array_equal(stored_image(log, "range.png"), [[0, 255, 255]])


@pytest.mark.parametrize("as_list", [False, True])
def test_save_video_reads_a_stack_of_two_d_frames_as_grayscale(
    experiment: Any, as_list: bool
) -> None:
    log = rayplex.get_logger("learner/vid")
    frames = [np.full((16, 12), k / 4) for k in range(5)]
    log.save_video(frames if as_list else np.stack(frames), "clip.gif", fps=10)
    back = iio.imread(log.load_bytes("clip.gif"), index=None, extension=".gif")
    assert back.shape[:3] == (5, 16, 12)
    assert [int(f[0, 0, 0]) for f in back] == [0, 64, 128, 191, 255]


def test_make_video_assembles_images_from_a_list_of_paths_in_its_order(experiment: Any) -> None:
    log = rayplex.get_logger("learner/film")
    for k in range(4):
        log.save_image(np.full((8, 8, 3), 60 * k, np.uint8), f"frames/f_{k:02d}.png")
    path = log.make_video(["frames/f_02.png", "frames/f_00.png"], key="videos/list.gif", fps=5)
    assert path is not None
    back = iio.imread(log.load_bytes("videos/list.gif"), index=None, extension=".gif")
    assert [int(f[0, 0, 0]) for f in back] == [120, 0]


def test_make_video_refuses_frames_of_different_sizes(experiment: Any) -> None:
    log = rayplex.get_logger("learner/film")
    log.save_image(np.zeros((8, 8)), "a.png")
    log.save_image(np.zeros((8, 10)), "b.png")
    with pytest.raises(ValueError, match="b.png is 10x8 but a.png is 8x8"):
        log.make_video(["a.png", "b.png"], key="bad.gif")


def test_make_video_from_a_glob_sorts_the_matches_and_returns_none_for_no_match(
    experiment: Any,
) -> None:
    log = rayplex.get_logger("learner/film")
    for k in (2, 0, 3, 1):
        log.save_image(np.full((8, 8), 60 * k, np.uint8), f"face_{k:04d}.png")
    log.make_video("face_*.png", key="videos/up.gif", fps=5)
    log.make_video("face_*.png", key="videos/down.gif", fps=5, order="descending")
    up = iio.imread(log.load_bytes("videos/up.gif"), index=None, extension=".gif")
    down = iio.imread(log.load_bytes("videos/down.gif"), index=None, extension=".gif")
    assert [int(f[0, 0, 0]) for f in up] == [0, 60, 120, 180]
    assert [int(f[0, 0, 0]) for f in down] == [180, 120, 60, 0]
    assert log.make_video("no_exist_*.png", key="videos/none.gif") is None
    with pytest.raises(ValueError, match="order"):
        log.make_video("face_*.png", key="videos/x.gif", order="sideways")


# ------------------------------------------------------------------------------ log_params


def test_log_params_stores_numpy_arrays_as_numbers_and_lists(experiment: Any) -> None:
    log = rayplex.get_logger("learner/params")
    merged = log.log_params(Args={"lr": np.array(10.0), "n": np.array(3), "v": np.array([1.0, 2]),
                                  "m": np.arange(4).reshape(2, 2), "f": np.float32(0.5)})
    expected = {"lr": 10.0, "n": 3, "v": [1.0, 2.0], "m": [[0, 1], [2, 3]], "f": 0.5}
    assert merged == {"Args": expected}
    assert rayplex.read_params(experiment.logdir)["learner/params"] == {"Args": expected}
    with open(os.path.join(experiment.logdir, "params", "learner", "params.json")) as f:
        assert "array(" not in f.read()


def test_log_params_print_shows_coloured_cells_and_stores_the_values(
    experiment: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = rayplex.get_logger("learner/params2")
    log.log_params(Args={"eps": Color(0.25, "yellow", percent), "name": "ppo"}, print=True)
    out = capsys.readouterr().out
    assert "25.00%" in out and "Args/eps" in out and "ppo" in out
    assert rayplex.read_params(experiment.logdir)["learner/params2"] == {
        "Args": {"eps": 0.25, "name": "ppo"}}


# ---------------------------------------------------------------------------- store_metrics


def test_store_metrics_flattens_ragged_lists_and_counts_none_as_nan(experiment: Any) -> None:
    log = rayplex.get_logger("ragged/m")  # a group of its own: summaries are per group
    log.store_metrics(x=[[0], [1, 2], np.array([10, 1]), [np.array([10]), None]])
    log.store_metrics(x=None)
    log.log_metrics_summary(step=0, stats=("mean", "count"))
    rayplex.flush()
    got = scalars(experiment.logdir, "ragged/summary")
    assert got["x/count"] == [(0, 6.0)] and got["x/mean"] == [(0, 4.0)]
    assert got["x/nan_count"] == [(0, 2.0)]


# ------------------------------------------------------------------------- Prefix and pop


def test_prefix_applies_once_at_store_time_and_not_again_in_the_summary(experiment: Any) -> None:
    log = rayplex.get_logger("prefixonce/p")  # a group of its own: summaries are per group
    for _ in range(3):
        with log.Prefix(metrics="test"):
            log.store_metrics(value=1.0)
        with log.Prefix(metrics="eval"):
            log.store_metrics({"value": 3.0})
    with log.Prefix(metrics="eval"):
        log.log_metrics_summary(step=10, stats="mean")  # inside a Prefix: no second prefix
    rayplex.flush()
    got = scalars(experiment.logdir, "prefixonce/summary")
    assert got == {"test/value/mean": [(10, 1.0)], "eval/value/mean": [(10, 3.0)]}


def test_prefix_sep_false_and_nesting_follow_ml_logger(experiment: Any) -> None:
    log = rayplex.get_logger("prefixsep/p")  # a run of its own: every tag in it is checked
    with log.Prefix(metrics="evaluate/", sep=""):
        log.log(loss=0.5, step=0)
    with log.Prefix(metrics="evaluate"):
        log.log(acc=1.0, step=0)
        with log.Prefix(metrics="inner"):  # replaces, as in ML-Logger
            log.log(deep=2.0, step=0)
        with log.Prefix(metrics=False):
            log.log(plain=3.0, step=0)
    log.log(after=4.0, step=0)
    log.flush()
    got = scalars(experiment.logdir, "prefixsep")
    assert set(got) == {"p/evaluate/loss", "p/evaluate/acc", "p/inner/deep", "p/plain", "p/after"}


def test_prefix_is_per_thread(experiment: Any) -> None:
    import threading

    log = rayplex.get_logger("learner/p")
    with log.Prefix(metrics="main"):
        thread = threading.Thread(target=lambda: log.store_metrics(other=1.0))
        thread.start()
        thread.join()
        log.store_metrics(mine=1.0)
    assert set(log._window.take()) == {"other", "main/mine"}


def test_prefix_refuses_a_non_string(experiment: Any) -> None:
    log = rayplex.get_logger("learner/p")
    with pytest.raises(TypeError, match="Prefix"), log.Prefix(metrics=3):  # type: ignore[arg-type]
        pass


def test_pop_removes_a_key_from_the_window_so_the_summary_skips_it(experiment: Any) -> None:
    log = rayplex.get_logger("pop/p")  # a group of its own: summaries are per group
    log.store_metrics(reward=[1.0, 3.0], length=10)
    popped = log.pop("reward")
    assert popped.mean == 2.0 and popped.count == 2
    assert log.pop("reward") is None
    log.log_metrics_summary(step=1, stats="mean")
    rayplex.flush()
    assert scalars(experiment.logdir, "pop/summary") == {"length/mean": [(1, 10.0)]}


# ------------------------------------------------------------------ log(..., print=True)


def test_log_with_color_values_logs_the_numbers_and_prints_formatted_cells(
    experiment: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    log = rayplex.get_logger("learner/c")
    log.log(step=0, some=Color(0.1, "yellow"))
    log.log(step=1, some=Color(0.28571, "yellow", lambda v: f"{v * 100:.5f}%"), print=True)
    assert "28.57100%" in capsys.readouterr().out
    log.log({"some_var/smooth": 10}, some=Color(0.85, "yellow", percent), step=2, print=True)
    out = capsys.readouterr().out
    assert "85.00%" in out and "some_var/smooth" in out
    log.log(step=3, some=Color(10, "yellow"))
    log.flush()
    got = scalars(experiment.logdir, "learner")
    assert [v for _, v in got["c/some"]] == pytest.approx([0.1, 0.28571, 0.85, 10.0])


# ---------------------------------------------------------------------- timers, counters


def test_split_start_since_and_every_on_the_logger(experiment: Any) -> None:
    log = rayplex.get_logger("learner/t")
    assert log.split() is None
    assert isinstance(log.split(), float)
    assert isinstance(log.start("x"), float)
    assert isinstance(log.split("x"), float) and isinstance(log.since("x"), float)
    assert sum(i for i in range(100) if log.every(10, "k")) == sum(range(9, 100, 10))
    assert log.count("k") == 101
    log.clear("k")
    assert log.count("k") == 1


def test_time_logs_the_mean_duration_every_interval_blocks(experiment: Any) -> None:
    log = rayplex.get_logger("learner/t")
    durations = []
    for _ in range(4):
        with log.time("upload files", interval=2):
            began = log.start("inner")
            while log.since("inner") < 0.002:
                pass
            durations.append(began)
    with pytest.raises(RuntimeError), log.time("upload files", interval=2):
        raise RuntimeError("not counted")
    log.flush()
    got = scalars(experiment.logdir, "learner")["t/time/upload files"]
    assert [step for step, _ in got] == [2, 4]
    assert all(0.002 <= seconds < 5.0 for _, seconds in got)
    assert text_log(experiment.logdir, "learner/t").count("timing <upload files>: ") == 2


def test_time_refuses_a_bad_interval_before_running_the_block(experiment: Any) -> None:
    log = rayplex.get_logger("learner/t")
    ran: list[bool] = []
    with pytest.raises(ValueError, match="interval"), log.time("k", interval=0):
        ran.append(True)
    assert ran == []


def test_time_formats_the_line_with_fmt(experiment: Any) -> None:
    log = rayplex.get_logger("learner/t")
    fmt: Callable[[float], str] = lambda s: "quick" if s < 5 else "slow"  # noqa: E731
    with log.time("fmt", fmt=fmt):
        pass
    log.flush()
    assert "timing <fmt>: quick" in text_log(experiment.logdir, "learner/t")
    assert not math.isnan(scalars(experiment.logdir, "learner")["t/time/fmt"][0][1])



def test_save_video_writes_mp4_of_grayscale_frames_with_ffmpeg(experiment: Any) -> None:
    pytest.importorskip("imageio_ffmpeg")
    log = rayplex.get_logger("learner/vid")
    frames = np.stack([np.full((16, 16), k / 4) for k in range(5)])
    assert log.save_video(frames, "clip.mp4", fps=10).endswith("clip.mp4")
    back = iio.imread(log.load_bytes("clip.mp4"), index=None, extension=".mp4")
    assert back.shape[0] == 5 and back.shape[1:3] == (16, 16)
    means = [float(f.mean()) for f in back]
    assert means == sorted(means) and means[-1] - means[0] > 200  # dark to bright, in order
