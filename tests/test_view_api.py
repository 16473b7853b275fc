"""``rayplex view`` without a browser: the JSON answers (pure functions over the store, no
server, no Ray), the HTTP app's security (Starlette's test client) and the command (a real
server process stopped by Ctrl-C and SIGTERM)."""

from __future__ import annotations

import doctest
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import rayplex
from rayplex.cli import main
from rayplex.view import api
from rayplex.view.api import BadRequest, Source, band_answer, log_tail, series_answer
from tests.conftest import count_decoded, wait_for
from tests.view_logdir import value_of, write_run, write_runs

pytest.importorskip("duckdb")
pytest.importorskip("starlette")

SPIKE = (7, "train/reward", 123, 5000.0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """A TensorBoard logdir: agent/0..agent/11 (two tags, 300 steps, a spike in agent/7), a run
    named like markup, and runs whose names are glob patterns."""
    root = tmp_path_factory.mktemp("view") / "tb"
    write_runs(root, 12, 300, tags=("train/reward", "train/loss"), spike=SPIKE)
    for odd in ("<img src=x onerror=window.__pwned=1>", "glob[1]", "glob1", "glob*"):
        write_run(root, odd, ["train/reward"], np.arange(10), lambda tag, s: s * 1.0)
    rayplex.index(root)
    return str(root)


@pytest.fixture(scope="module")
def source(logdir):
    return Source(logdir)


def _known(source):
    known = source.known()
    return {"runs": known.runs, "tags": known.tags}


# ----------------------------------------------------------------------------- answers


def test_the_catalog_lists_every_run_in_natural_order_with_its_last_step(source):
    runs = source.known().answer["runs"]
    names = [r["run"] for r in runs]
    agents = [n for n in names if n.startswith("agent/")]
    assert agents == [f"agent/{i}" for i in range(12)]  # agent/2 before agent/10
    assert len(names) == 16
    by_name = {r["run"]: r for r in runs}
    assert by_name["agent/3"]["last_step"] == 299
    assert by_name["agent/3"]["points"] == 600
    assert by_name["agent/3"]["state"] == "finished"
    assert {t["tag"]: t["runs"] for t in source.known().answer["tags"]} == {
        "train/loss": 12, "train/reward": 16}


def test_series_are_read_series_buckets_and_keep_the_spike_as_the_maximum(logdir, source):
    answer = series_answer(logdir, _known(source),
                           {"tag": "train/reward", "runs": ["agent/7", "agent/2"], "buckets": 20})
    assert [r["run"] for r in answer["runs"]] == ["agent/2", "agent/7"]
    frame = rayplex.read_series(logdir, "train/reward", runs="agent/7", buckets=20)
    seven = answer["runs"][1]
    assert seven["max"] == pytest.approx(frame["max"].tolist())
    assert seven["step_lo"] == frame["step_lo"].tolist()
    top = int(np.argmax(seven["max"]))
    assert seven["max"][top] == 5000.0
    assert seven["step_lo"][top] <= SPIKE[2] <= seven["step_hi"][top]
    # The spike is outside the robust y-range (so it gets a mark) and inside the full one.
    assert answer["range"]["clipped"]
    assert answer["range"]["robust"][1] < 5000.0 == answer["range"]["full"][1]


def test_a_zoom_reads_finer_buckets_of_only_its_steps(logdir, source):
    wide = series_answer(logdir, _known(source), {"tag": "train/loss", "runs": ["agent/1"],
                                                  "buckets": 10})
    zoom = series_answer(logdir, _known(source), {"tag": "train/loss", "runs": ["agent/1"],
                                                  "buckets": 10, "steps": [100, 119]})
    assert wide["width"] > zoom["width"] == 2
    run = zoom["runs"][0]
    assert run["step_lo"][0] >= 100 and run["step_hi"][-1] <= 119


def test_since_sends_only_the_buckets_from_the_one_holding_that_step(logdir, source):
    full = series_answer(logdir, _known(source), {"tag": "train/reward", "runs": ["agent/7"],
                                                  "buckets": 30})
    width = full["width"]
    since = full["runs"][0]["step_lo"][-3] + 1  # inside the third-last bucket
    part = series_answer(logdir, _known(source), {"tag": "train/reward", "runs": ["agent/7"],
                                                  "buckets": 30, "since": since})
    assert part["since"] == since and part["width"] == width
    assert part["runs"][0]["step_lo"] == full["runs"][0]["step_lo"][-3:]
    assert part["runs"][0]["max"] == full["runs"][0]["max"][-3:]
    assert part["range"] == full["range"]  # the y-range still covers every bucket
    band = band_answer(logdir, _known(source), {"tag": "train/reward", "runs": None,
                                                "buckets": 30, "since": since})
    whole = band_answer(logdir, _known(source), {"tag": "train/reward", "runs": None,
                                                 "buckets": 30})
    assert band["x"] == whole["x"][-3:] and band["median"] == whole["median"][-3:]
    with pytest.raises(BadRequest, match="since"):
        source.series({"tag": "train/reward", "runs": None, "band": True, "since": "x"})


def test_a_band_is_the_envelope_and_median_of_the_runs_buckets(logdir, source):
    runs = [f"agent/{i}" for i in range(12)]
    band = band_answer(logdir, _known(source), {"tag": "train/reward", "runs": runs,
                                                "buckets": 30})
    frame = rayplex.read_series(logdir, "train/reward", runs="agent/*", buckets=30)
    width = band["width"]
    frame["slot"] = frame["step_lo"] // width
    expected = frame.groupby("slot").agg(min=("min", "min"), max=("max", "max"),
                                         median=("last", "median"), runs=("run", "nunique"))
    assert band["min"] == pytest.approx(expected["min"].tolist())
    assert band["max"] == pytest.approx(expected["max"].tolist())
    assert band["median"] == pytest.approx(expected["median"].tolist())
    assert band["runs"] == expected["runs"].tolist() == [12] * len(band["x"])
    assert band["members"] == 12
    assert max(band["max"]) == 5000.0  # the spike stays in the envelope
    # Run i's curve is i/100 + 0.01 step: the median of 12 runs' last values at the end.
    last = band["step_hi"][-1]
    assert band["median"][-1] == pytest.approx(np.median([value_of(i, last) for i in range(12)]),
                                               rel=1e-6)


def test_a_zoom_reads_whole_buckets_of_one_level_and_every_bucket_is_exact(
        tmp_path, monkeypatch):
    """60 runs x 4,000 steps, a spike of 1e6 in agent/23 at step 2,345. A zoom whose ends fall
    inside buckets is read widened to whole output buckets (``whole_buckets``): it decodes the
    rows of the pyramid level it reads and no raw point (before: every raw row group of the tag
    for the ragged ends, 240,000 rows). Every bucket is the exact M4 of the raw points in its
    steps (brute force), the spike's bucket has max 1e6 at every zoom holding its step."""
    from rayplex.store.pyramid import plan

    spike = (23, "train/reward", 2345, 1e6)
    write_runs(tmp_path, 60, 4000, spike=spike)
    rayplex.index(tmp_path)
    logdir = str(tmp_path)
    known = _known(Source(logdir))
    decoded = count_decoded(monkeypatch)
    at = np.arange(4000)
    for buckets, steps in [(100, (1001, 2998)), (100, (2001, 2700)), (550, (7, 3993)),
                           (20, (2340, 2350)), (100, (2346, 3999))]:
        decoded.clear()
        answer = series_answer(logdir, known, {"tag": "train/reward", "runs": None,
                                               "buckets": buckets, "steps": list(steps)})
        lo, hi = api.whole_buckets(steps, buckets)
        chosen = plan(lo, hi, buckets)
        assert lo <= steps[0] and hi >= steps[1] and answer["width"] == chosen.width
        if chosen.level:  # whole buckets of the level read: no raw point is decoded
            assert sum(n for key, n in decoded if key == "step") == 0, (steps, decoded)
            assert sum(n for _, n in decoded) <= 60 * (4000 >> chosen.level) + 8_192, decoded
        assert len(answer["runs"]) == 60
        for line in answer["runs"]:
            i = int(line["run"].split("/")[1])
            value = value_of(i, at)
            if i == spike[0]:
                value = np.where(at == spike[2], spike[3], value)
            value = value.astype(np.float32).astype(np.float64)  # scalars are float32
            inside = (at >= lo) & (at <= hi)
            s, v = at[inside], value[inside]
            edges = np.flatnonzero(np.r_[True, np.diff(s // chosen.width) != 0])
            ends = np.r_[edges[1:], len(s)] - 1
            assert line["step_lo"] == s[edges].tolist() and line["step_hi"] == s[ends].tolist()
            assert line["first"] == v[edges].tolist() and line["last"] == v[ends].tolist()
            assert line["min"] == np.minimum.reduceat(v, edges).tolist(), (steps, i)
            assert line["max"] == np.maximum.reduceat(v, edges).tolist(), (steps, i)
            assert line["count"] == (ends - edges + 1).tolist()
            if i == spike[0] and lo <= spike[2] <= hi:
                at_spike = [m for a, b, m in zip(line["step_lo"], line["step_hi"], line["max"],
                                                 strict=True) if a <= spike[2] <= b]
                assert at_spike == [1e6] and max(line["max"]) == 1e6


def test_a_band_sorts_each_buckets_last_values_as_lexsort_does():
    rng = np.random.default_rng(7)
    for n, slots in ((0, 1), (1_000, 5), (50_000, 400), (20_000, 100_000)):
        slot = rng.integers(0, slots, n) * 3 - 11
        last = rng.integers(0, 5, n).astype(np.float64)
        last[::9] = np.inf
        assert np.array_equal(api._by_slot_then(slot, last), np.lexsort((last, slot)))


def test_the_first_charts_of_a_cold_server_import_no_ray(logdir):
    """A fresh ``rayplex view`` process answers its catalog and first charts without importing
    Ray (before: the live-hub probe imported ``rayplex.actors``, and with it Ray: seconds of a
    cold first chart)."""
    code = ("import sys\n"
            "from rayplex.view.api import Source\n"
            "source = Source(sys.argv[1])\n"
            "answers = [source.series(r) for r in source.first_requests()]\n"
            "print(len(answers), 'ray' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, logdir], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "False"]  # each tag coarse, then full width


def test_a_band_of_every_run_reads_them_all(logdir, source):
    band = band_answer(logdir, _known(source), {"tag": "train/reward", "runs": None,
                                                "buckets": 5})
    assert band["members"] == 16


def test_a_band_carries_the_lines_of_its_extremes_and_highlighted_runs(logdir, source):
    band = band_answer(logdir, _known(source), {"tag": "train/reward", "runs": None,
                                                "buckets": 20, "highlight": ["agent/3"]})
    names = [line["run"] for line in band["lines"]]
    assert set(names) == {"agent/3", band["extremes"]["top"], band["extremes"]["bottom"]}
    # The same buckets as the lines of those runs asked for alone: one request per band chart.
    alone = series_answer(logdir, _known(source), {"tag": "train/reward", "runs": names,
                                                   "buckets": 20})
    assert band["lines"] == alone["runs"] and band["width"] == alone["width"]
    with pytest.raises(BadRequest, match="at most 8"):
        source.series({"tag": "train/reward", "band": True,
                       "highlight": [f"agent/{i}" for i in range(9)]})
    with pytest.raises(BadRequest, match="no run"):
        source.series({"tag": "train/reward", "band": True, "highlight": ["../x"]})


def test_an_answer_is_kept_whatever_the_requests_spelling(logdir):
    source = Source(logdir)
    first = source.series({"tag": "train/reward", "runs": None, "band": True, "buckets": 30})
    hits = source.answers_hits
    again = source.series({"tag": "train/reward", "band": True, "buckets": 30, "steps": None,
                           "since": None, "highlight": [], "summary": False})
    assert again is first and source.answers_hits == hits + 1
    other = source.series({"tag": "train/reward", "band": True, "buckets": 31})
    assert other is not first and source.answers_hits == hits + 1


def test_a_request_asked_while_the_same_one_is_answered_waits_for_that_answer(
        logdir, monkeypatch):
    import threading

    source = Source(logdir)
    started, release, calls = threading.Event(), threading.Event(), []
    real = api.band_answer

    def slow_band(*args):  # the real answer, held until the second request is waiting
        calls.append(args)
        started.set()
        assert release.wait(30)
        return real(*args)

    monkeypatch.setattr(api, "band_answer", slow_band)
    request = {"tag": "train/loss", "band": True, "buckets": 40}
    answers: list[dict] = []
    first = threading.Thread(target=lambda: answers.append(source.series(request)))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=lambda: answers.append(source.series(dict(request))))
    second.start()
    wait_for(lambda: source.answers_hits == 1, 30, "the second request waiting")
    release.set()
    first.join(30)
    second.join(30)
    assert len(calls) == 1 and len(answers) == 2 and answers[0] is answers[1]
    # A failed answer fails every request waiting for it, and is not kept.
    monkeypatch.setattr(api, "band_answer", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        source.series({"tag": "train/loss", "band": True, "buckets": 41})
    monkeypatch.setattr(api, "band_answer", real)
    assert source.series({"tag": "train/loss", "band": True, "buckets": 41})["mode"] == "band"


def test_warm_reads_nothing_while_a_pages_request_is_under_way(logdir, monkeypatch):
    import threading

    source = Source(logdir)
    source.known()
    started, release, lines = threading.Event(), threading.Event(), []
    real_band, real_lines = api.band_answer, api.series_answer

    def held_band(*args):  # the page's request, held until warm has had to wait
        started.set()
        assert release.wait(30)
        return real_band(*args)

    monkeypatch.setattr(api, "band_answer", held_band)
    monkeypatch.setattr(api, "series_answer", lambda *args: lines.append(args) or
                        real_lines(*args))
    page = threading.Thread(target=source.series, args=(
        {"tag": "train/loss", "band": True, "buckets": 40},))
    page.start()
    assert started.wait(30)
    warmed: list[int] = []
    warm = threading.Thread(target=lambda: warmed.append(source.warm()))
    warm.start()
    wait_for(lambda: source.warm_waits >= 1, 30, "warm waiting for the page's request")
    assert lines == []  # warm read nothing meanwhile
    release.set()
    page.join(30)
    warm.join(30)
    assert warmed == [4] and len(lines) == 4  # each tag's coarse stage, then its full width


def test_warm_answers_the_first_charts_a_page_asks_for(logdir, monkeypatch):
    source = Source(logdir)
    requests = source.first_requests()
    known = source.known().answer
    coarse, full = known["coarse_buckets"], known["buckets"]
    # The page's order: every chart's coarse stage first (painted first), then full width.
    assert [(r["tag"], r["buckets"]) for r in requests] == [
        ("train/loss", coarse), ("train/reward", coarse),
        ("train/loss", full), ("train/reward", full)]
    assert not any(r["band"] for r in requests)  # 16 runs: lines
    assert source.warm() == 4
    hits = source.answers_hits
    # What the page sends for its first chart (app.js: load) is answered from what warm kept.
    page = {"tag": "train/loss", "runs": None, "buckets": coarse, "steps": None, "band": False}
    assert source.series(page)["mode"] == "lines" and source.answers_hits == hits + 1
    assert source.series({**page, "buckets": full})["buckets"] == full
    assert source.answers_hits == hits + 2
    monkeypatch.setattr(api, "BAND_ABOVE", 3)
    banded = Source(logdir)
    assert all(r["band"] and r["highlight"] == [] for r in banded.first_requests())
    assert banded.warm() == 4
    assert banded.series({**page, "band": True, "highlight": []})["mode"] == "band"
    assert banded.answers_hits == 1


def _brute_force(runs: list[str], steps: tuple[int, int] | None, width: int, lo_step: int = 0
                 ) -> dict[str, dict[int, tuple[float, float, float, float]]]:
    """Per run, per output bucket (``step // width``) of the raw points of ``train/reward``
    within ``steps`` widened to whole buckets: (first, last, min, max)."""
    out: dict[str, dict[int, tuple[float, float, float, float]]] = {}
    for run in runs:
        index = int(run.split("/")[1])
        step = np.arange(300)
        value = np.where((index == SPIKE[0]) & (step == SPIKE[2]), SPIKE[3], value_of(index, step))
        if steps is not None:
            lo, hi = steps[0] - steps[0] % width, steps[1] + (-(steps[1] + 1)) % width
            keep = (step >= lo) & (step <= hi)
            step, value = step[keep], value[keep]
        cut = {int(b): value[step // width == b] for b in np.unique(step // width)}
        out[run] = {b: (float(v[0]), float(v[-1]), float(v.min()), float(v.max()))
                    for b, v in cut.items()}
    return out


@pytest.mark.parametrize("steps", [None, [40, 290]])
def test_a_coarse_stage_is_exact_m4_at_its_own_width(logdir, source, steps):
    """The page's first stage (coarse buckets; a zoom's: the zoom's coarse buckets) holds, per
    bucket, the first/last/min/max of every raw point in it: checked against the points."""
    known = source.known().answer
    # A zoom of 250 of these 300 steps at ZOOM_COARSE_BUCKETS would read raw points (the page
    # then skips the coarse stage): asked here at 40, whole level-2 rows (width 8).
    coarse = 40 if steps else known["coarse_buckets"]
    lo, hi = steps or (0, 299)
    assert api.coarse_first(lo, hi, coarse)  # whole pyramid rows, not raw points
    runs = [f"agent/{i}" for i in range(12)]
    request = {"tag": "train/reward", "runs": runs, "buckets": coarse, "steps": steps}
    lines = source.series(request)
    full = source.series({**request, "buckets": known["buckets"]})
    assert lines["width"] > full["width"] >= 1
    truth = _brute_force(runs, tuple(steps) if steps else None, lines["width"])
    for r in lines["runs"]:
        got = {s // lines["width"]: (f, la, mi, ma) for s, f, la, mi, ma in zip(
            r["step_lo"], r["first"], r["last"], r["min"], r["max"], strict=True)}
        assert sorted(got) == sorted(truth[r["run"]]), r["run"]
        assert np.allclose([got[b] for b in sorted(got)],
                           [truth[r["run"]][b] for b in sorted(got)]), r["run"]
    band = source.series({**request, "band": True, "runs": runs})
    assert band["width"] == lines["width"]
    envelope = {b: max(t[b][3] for t in truth.values()) for b in truth["agent/0"]}
    assert [x // band["width"] for x in band["x"]] == sorted(envelope)
    assert band["max"] == pytest.approx([envelope[b] for b in sorted(envelope)])
    assert max(band["max"]) == SPIKE[3] == max(envelope.values())  # the spike, at every stage


def test_a_run_named_like_a_glob_pattern_selects_only_itself(logdir, source):
    for name in ("glob[1]", "glob*"):
        answer = series_answer(logdir, _known(source), {"tag": "train/reward", "runs": [name],
                                                        "buckets": 5})
        assert [r["run"] for r in answer["runs"]] == [name]


@pytest.mark.parametrize("request_, message", [
    ({"tag": "../../etc/passwd", "runs": None}, "no tag"),
    ({"tag": "train/reward\x00", "runs": None}, "NUL"),
    ({"tag": 3, "runs": None}, "must be a str"),
    ({"tag": "train/reward", "runs": ["../../etc"]}, "no run"),
    ({"tag": "train/reward", "runs": "agent/*"}, "list of run names"),
    ({"tag": "train/reward", "runs": ["agent/1"], "steps": [5, 1]}, "lo <= hi"),
    ({"tag": "train/reward", "runs": ["agent/1"], "steps": [0, 2**64]}, "out of range"),
    ({"tag": "train/reward", "runs": ["agent/1"], "steps": "0,5"}, "steps must be"),
    ({"tag": "train/reward", "runs": ["agent/1"], "buckets": 0}, "buckets"),
    ({"tag": "train/reward", "runs": ["agent/1"], "buckets": True}, "buckets"),
    ({"tag": "train/reward'; DROP TABLE scalars; --", "runs": None}, "no tag"),
])
def test_a_malformed_or_foreign_request_is_refused(logdir, source, request_, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        source.series(request_)


def test_more_runs_than_lines_can_show_must_ask_for_a_band(logdir, source, monkeypatch):
    monkeypatch.setattr(api, "LINE_RUNS_MAX", 3)
    with pytest.raises(BadRequest, match="band"):
        source.series({"tag": "train/reward", "runs": None})
    assert source.series({"tag": "train/reward", "runs": None, "band": True})["members"] == 16


def test_robust_range_marks_a_lone_spike_and_keeps_a_family_of_curves():
    robust = api.robust_range([0.0] * 500, [1.0] * 499 + [1e6])
    assert robust["clipped"] and robust["robust"][1] < 2 and robust["full"][1] == 1e6
    family = api.robust_range(np.arange(100.0), np.arange(100.0) + 1)
    assert not family["clipped"]
    assert api.robust_range([float("nan")], [float("inf")])["full"] is None


def test_the_modules_docstring_examples_run():
    from rayplex.view import server

    for module in (api, server):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


def test_the_store_is_brought_up_to_date_and_the_version_changes(tmp_path):
    root = tmp_path / "tb"
    write_runs(root, 2, 10)
    source = Source(root)
    assert source.store_version() == "none"
    assert source.refresh() is True  # no store yet: indexed
    before = source.version()
    assert source.refresh() is False  # nothing new
    write_run(root, "agent/1", ["train/reward"], np.array([10, 11]), lambda t, s: s * 2.0)
    assert source.refresh() is True
    assert source.version() != before
    assert source.known().runs["agent/1"]["last_step"] == 11


def test_the_params_table_has_each_runs_flattened_params_and_last_values(tmp_path):
    root = tmp_path / "exp"
    write_runs(root / "tensorboard", 2, 20)
    write_run(root / "tensorboard", "learner", ["loss"], np.arange(5), lambda t, s: 1.0 / (s + 1))
    (root / "params" / "agent").mkdir(parents=True)
    (root / "params" / "learner").mkdir(parents=True)
    (root / "params" / "agent" / "1.json").write_text('{"Args": {"lr": 0.1, "net": [64, 64]}}')
    (root / "params" / "learner" / "main.json").write_text('{"Args": {"lr": 0.5}}')
    source = Source(root)
    source.refresh()
    answer = source.params()
    assert answer["keys"] == ["Args/lr", "Args/net"]
    assert answer["tags"] == ["loss", "train/reward"]
    rows = {r["run"]: r for r in answer["rows"]}
    assert list(rows) == ["agent/0", "agent/1", "learner"]
    assert rows["agent/1"]["params"] == {"Args/lr": "0.1", "Args/net": "[64, 64]"}
    assert rows["agent/0"]["params"] == {}
    assert rows["learner"]["client"] == "learner/main"  # a normal group's client -> its run
    assert rows["learner"]["last"] == {"loss": pytest.approx(0.2)}
    assert rows["agent/1"]["last"]["train/reward"] == pytest.approx(value_of(1, 19), rel=1e-6)


# ----------------------------------------------------------------------------- text logs


def _write_log(logdir: str) -> None:
    from rayplex.textlog import LogLine, format_line

    os.makedirs(os.path.join(logdir, "logs"), exist_ok=True)
    with open(os.path.join(logdir, "logs", "all.log"), "w", encoding="utf-8") as f:
        for i in range(50):
            f.write(format_line(LogLine(float(i), 40 if i % 10 == 0 else 20, f"agent/{i % 3}",
                                        "n", 1, "l", f"line {i} <b onmouseover=x>bold</b>")))


def test_the_log_tail_keeps_the_last_lines_of_a_client_at_a_level(tmp_path):
    _write_log(str(tmp_path))
    assert len(log_tail(tmp_path, lines=5)["lines"]) == 5
    errors = log_tail(tmp_path, level="ERROR", lines=100)["lines"]
    assert [int(re.search(r"line (\d+)", x).group(1)) for x in errors] == [0, 10, 20, 30, 40]
    one = log_tail(tmp_path, client="agent/1", lines=100)["lines"]
    assert one and all(" agent/1 " in line for line in one)
    assert log_tail(tmp_path / "nothing", lines=3) == {"lines": [], "exists": False}
    for bad in ({"client": "../x"}, {"level": "LOUD"}, {"lines": 0}):
        with pytest.raises(BadRequest):
            log_tail(tmp_path, **bad)


# ----------------------------------------------------------------------------- HTTP app


@pytest.fixture(scope="module")
def client(logdir):
    from starlette.testclient import TestClient

    from rayplex.view.server import create_app

    with TestClient(create_app(logdir), base_url="http://127.0.0.1") as test_client:
        yield test_client


def test_the_app_serves_its_page_with_a_strict_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "<script type=\"module\"" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert client.get("/static/vendor/uplot/uPlot.esm.js").status_code == 200
    assert client.get("/api/catalog").json()["runs"]


def test_the_app_serves_no_file_outside_its_static_folder(client, logdir):
    for path in ("/static/../api.py", "/static/%2e%2e/api.py", "/static/..%2fapi.py",
                 "/static/../../../../etc/passwd", f"/static/{logdir}/store/MANIFEST.json"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "import" not in response.text and "root:" not in response.text


def test_an_answer_says_how_long_the_server_took(client):
    response = client.post("/api/series", json={"tag": "train/loss", "runs": ["agent/1"]})
    assert response.status_code == 200
    assert re.fullmatch(r"answer;dur=\d+\.\d", response.headers["server-timing"])


def test_the_app_refuses_bad_requests_with_400(client):
    assert client.post("/api/series", content=b"{not json").status_code == 400
    response = client.post("/api/series", json={"tag": "../x", "runs": None})
    assert response.status_code == 400 and "no tag" in response.json()["error"]
    assert client.get("/api/series").status_code == 405
    assert client.get("/api/logs", params={"client": "../../x"}).status_code == 400


def test_a_loopback_server_refuses_other_host_names(logdir):
    from starlette.testclient import TestClient

    from rayplex.view.server import create_app

    with TestClient(create_app(logdir), base_url="http://evil.example") as other:
        assert other.get("/api/catalog").status_code == 400


# ----------------------------------------------------------------------------- the command


def test_view_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["view", "--help"])
    assert exit_.value.code == 0
    assert "--port" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["view"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["veiw", "/tmp"])
    assert exit_.value.code == 2
    assert "did you mean 'view'" in capsys.readouterr().err


def test_view_of_a_missing_or_remote_logdir_is_an_error(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["view", "s3://bucket/exp"]) == 1


def _start_view(logdir: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "rayplex.cli", "view", logdir, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://\S+", line)
    if match is None:
        proc.kill()
        pytest.fail(f"no URL printed: {line!r} {proc.stderr.read()!r}")
    return proc, match.group(0)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_view_indexes_a_tensorboard_logdir_serves_it_and_stops_cleanly(tmp_path, sig):
    root = tmp_path / "tb"
    write_runs(root, 3, 50)
    proc, url = _start_view(str(root))
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/catalog", timeout=30) as response:
            assert b"agent/2" in response.read()
        assert (root / "store" / "MANIFEST.json").exists()  # indexed before serving
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stderr.read()
    assert "indexing" in proc.stderr.read()


@pytest.mark.slow
def test_view_on_a_non_loopback_host_warns(tmp_path):
    root = tmp_path / "tb"
    write_runs(root, 1, 5)
    rayplex.index(root)
    proc, url = _start_view(str(root), "--host", "0.0.0.0")
    try:
        port = url.rstrip("/").rsplit(":", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=30) as answer:
            assert answer.status == 200  # serving: the stop below is a stop of a running server
        proc.terminate()
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
        assert code == 0, err
        assert "warning: serving on 0.0.0.0" in err
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_demo_view_serves_the_demos_logdir(tmp_path):
    """``rayplex demo --view``: the demo runs (its own local Ray), then the viewer serves its
    logdir, indexed, until SIGTERM."""
    logdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "rayplex.cli", "demo", "--seconds", "3",
                             "--workers", "4", "--evaluators", "2", "--logdir", str(logdir),
                             "--view"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=str(tmp_path))
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "rayplex view: http://" in line:
                break
        url = re.search(r"http://\S+", lines[-1])
        assert url, "".join(lines)
        assert lines[-2].strip() == f"rayplex view {logdir}"  # the commands end with it
        with urllib.request.urlopen(url.group(0) + "api/catalog", timeout=60) as response:
            runs = {r["run"] for r in json.load(response)["runs"]}
        assert {"agent/0", "agent/3"} <= runs, runs
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# ----------------------------------------------------------------------------- watchers


def _write_alerts(root: Path, alerts: list) -> None:
    """``alerts.jsonl`` as the hub writes it (:func:`rayplex.watch.alert_to_json`)."""
    from rayplex.layout import alerts_path
    from rayplex.watch import alert_to_json

    with open(alerts_path(root), "a", encoding="utf-8") as f:
        for alert in alerts:
            f.write(json.dumps(alert_to_json(alert)) + "\n")


def _alert(rule, client, step, value, wall):
    from rayplex.watch import Alert

    return Alert(rule, client.split("/")[0], client, "node-1", 4242, step, value, None, wall,
                 f"{rule} in {client}")


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """A rayplex logdir (no hub holds it any more) with runs agent/0..3, learner, and alerts:
    agent/1 crashed, a NaN in agent/2, a NaN in learner/main (shown by the run ``learner``)."""
    root = tmp_path_factory.mktemp("view-watch") / "exp"
    write_runs(root / "tensorboard", 4, 20)
    write_run(root / "tensorboard", "learner", ["loss"], np.arange(20), lambda tag, s: s * 1.0)
    _write_alerts(root, [_alert("nan(train/*)", "agent/2", 7, float("nan"), 1000.0),
                         _alert("crashed", "agent/1", None, None, 1001.0),
                         _alert("nan(loss)", "learner/main", 9, float("inf"), 1002.0)])
    rayplex.index(root)
    return root


def test_run_states_are_the_watchers_and_carry_the_last_alert(watched):
    source = Source(watched)
    runs = {r["run"]: r for r in source.known().answer["runs"]}
    assert runs["agent/1"]["state"] == "crashed"
    assert runs["agent/1"]["alert"]["rule"] == "crashed"
    assert runs["agent/2"]["state"] == "finished"  # no live hub: the experiment is over
    assert runs["agent/2"]["alert"]["step"] == 7 and runs["agent/2"]["alert"]["value"] == "nan"
    assert runs["agent/0"]["state"] == "finished" and runs["agent/0"]["alert"] is None
    assert runs["learner"]["alert"]["client"] == "learner/main"  # a group's run: its client's


def test_alerts_come_newest_first_with_the_run_that_shows_them_and_update_live(watched):
    source = Source(watched)
    answer = source.alerts()
    assert answer["total"] == 3
    assert [(a["rule"], a["client"], a["run"]) for a in answer["alerts"]] == [
        ("nan(loss)", "learner/main", "learner"), ("crashed", "agent/1", "agent/1"),
        ("nan(train/*)", "agent/2", "agent/2")]
    assert answer["alerts"][0]["value"] == "inf" and answer["alerts"][0]["pid"] == 4242
    assert [a["client"] for a in source.alerts(limit=1)["alerts"]] == ["learner/main"]
    version = source.version()
    states_before = source.known().runs["agent/3"]["state"]
    _write_alerts(watched, [_alert("crashed", "agent/3", None, None, 1003.0)])
    assert source.version() != version  # the page polls the version: it fetches again
    assert states_before == "finished" and source.known().runs["agent/3"]["state"] == "crashed"
    assert source.alerts()["alerts"][0]["client"] == "agent/3"
    with pytest.raises(BadRequest, match="limit"):
        source.alerts(limit=0)


def test_a_plain_tensorboard_logdir_has_no_alerts_and_states_by_age(source):
    assert source.alerts() == {"total": 0, "alerts": []}
    assert {r["state"] for r in source.known().answer["runs"]} == {"finished"}


def test_the_alerts_route_answers_json(watched):
    from starlette.testclient import TestClient

    from rayplex.view.server import create_app

    with TestClient(create_app(str(watched)), base_url="http://127.0.0.1") as test_client:
        answer = test_client.get("/api/alerts?limit=2").json()
        assert len(answer["alerts"]) == 2 and answer["total"] >= 3
        assert test_client.get("/api/alerts?limit=x").status_code == 400


def test_wall_times_are_anchors_of_each_runs_steps(watched):
    from tests.view_logdir import WALL

    answer = Source(watched).walltimes()
    anchors = answer["runs"]["agent/2"]
    assert anchors["step"][0] == 0 and anchors["step"][-1] == 19
    # view_logdir writes step s at WALL + s: every anchor is exact
    assert anchors["wall"] == [WALL + s for s in anchors["step"]]
    assert anchors["step"] == sorted(anchors["step"])
    assert set(answer["runs"]) == {"agent/0", "agent/1", "agent/2", "agent/3", "learner"}
