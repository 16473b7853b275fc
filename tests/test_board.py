"""The real TensorBoard on a logdir written by rayplex: its HTTP API serves exactly what was
logged, ``rayplex board`` prints its URL, and a headless Chromium renders our charts.

The browser test needs the Debian package ``chromium`` (``/usr/bin/chromium``) and the
``playwright`` Python package; it never downloads a browser (no ``playwright install``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections import defaultdict

import pytest

import rayplex
from rayplex.board import Board, start_board
from rayplex.cli import main

pytestmark = pytest.mark.slow

WALL = 1_700_000_000.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEADLINE_S = 60.0


def _reward(index: int, step: int) -> float:
    return index + step * 0.25  # exact in float32, as TensorBoard serves it


def _loss(step: int) -> float:
    return 4.0 / 2**step


@pytest.fixture(scope="module")
def logdir(ray_session, tmp_path_factory):
    """Indexed group ``agent`` (bin 4, clients agent/0..agent/5) and normal group ``learner``."""
    hub = rayplex.init(str(tmp_path_factory.mktemp("board") / "exp"), name="board")
    try:
        hub.register_indexed_group("agent", 4).register_normal_group("learner")
        for index in range(6):
            agent = rayplex.get_logger(f"agent/{index}", hub=hub.name)
            for step in range(4):
                agent.add_scalar("reward", _reward(index, step), step=step, walltime=WALL + step)
            agent.flush()
        learner = rayplex.get_logger("learner/main", hub=hub.name)
        for step in range(5):
            learner.add_scalar("loss", _loss(step), step=step, walltime=WALL + 100 + step)
        learner.flush()
    finally:
        rayplex.shutdown(hub.name)
    return hub.logdir


def _expected() -> dict[str, dict[str, list[list[float]]]]:
    """``{run: {tag: [[wall_time, step, value], ...]}}``, as TensorBoard's scalars route answers."""
    out: dict[str, dict[str, list[list[float]]]] = defaultdict(dict)
    for index in range(6):
        bin_name = "0-3" if index < 4 else "4-7"
        out[f"agent/{index}"][f"agent/reward/{bin_name}"] = [
            [WALL + step, step, _reward(index, step)] for step in range(4)]
    out["learner"]["main/loss"] = [[WALL + 100 + step, step, _loss(step)] for step in range(5)]
    return dict(out)


@pytest.fixture(scope="module")
def board(logdir):
    with start_board(logdir, host="127.0.0.1", port=0) as running:
        yield running


def _get(board: Board, route: str, **query: str):
    url = board.url + route + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _eventually(fetch, done, what: str, deadline_s: float = DEADLINE_S):
    """Call ``fetch`` until ``done(result)``; fail with the last result after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {deadline_s:g} s; last answer: {result!r}")
        time.sleep(0.2)


def _runs_loaded(board: Board) -> list[str]:
    expected = set(_expected())
    return _eventually(lambda: _get(board, "data/runs"), lambda runs: set(runs) >= expected,
                       "every run")


# ----------------------------------------------------------------------------- HTTP API


def test_tensorboard_lists_exactly_the_runs_we_wrote(board):
    assert sorted(_runs_loaded(board)) == sorted(_expected())


def test_tensorboard_lists_exactly_the_tags_we_wrote(board):
    _runs_loaded(board)
    tags = _get(board, "data/plugin/scalars/tags")
    assert {run: sorted(t) for run, t in tags.items()} == {
        run: sorted(t) for run, t in _expected().items()}


def test_an_indexed_bin_is_one_tag_shared_by_its_runs_so_one_chart_overlays_them(board):
    _runs_loaded(board)
    tags = _get(board, "data/plugin/scalars/tags")
    assert sorted(run for run, t in tags.items() if "agent/reward/0-3" in t) == [
        "agent/0", "agent/1", "agent/2", "agent/3"]
    assert sorted(run for run, t in tags.items() if "agent/reward/4-7" in t) == [
        "agent/4", "agent/5"]


def test_tensorboard_serves_exactly_the_values_we_logged(board):
    _runs_loaded(board)
    for run, tags in _expected().items():
        for tag, points in tags.items():
            assert _get(board, "data/plugin/scalars/scalars", run=run, tag=tag) == points, (run, tag)


# ----------------------------------------------------------------------------- rayplex board


def test_rayplex_board_prints_the_url_and_stops_on_ctrl_c(logdir, monkeypatch, capsys):
    seen = []

    def interrupted(self):
        seen.append((self.url, _get(self, "data/logdir")["logdir"], self.process))
        raise KeyboardInterrupt

    monkeypatch.setattr(Board, "wait", interrupted)
    assert main(["board", logdir, "--port", "0"]) == 0
    (url, served, process), = seen
    assert served == os.path.join(logdir, "tensorboard")
    assert process.poll() is not None  # stopped
    out = capsys.readouterr().out
    assert out.startswith("TensorBoard on ") and url in out and "Ctrl-C" in out


def test_rayplex_board_on_a_taken_port_is_one_line_on_stderr(logdir, board, capsys):
    assert main(["board", logdir, "--port", str(board.port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"rayplex board: error: cannot serve on 127.0.0.1:{board.port}: ")
    assert "in use" in err


# ----------------------------------------------------------------------------- browser


def test_a_headless_browser_renders_our_charts(board, tmp_path):
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright Python package is not installed")
    _runs_loaded(board)
    expected_runs: dict[str, int] = defaultdict(int)
    for tags in _expected().values():
        for tag in tags:
            expected_runs[tag] += 1

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # The scalars dashboard with a match-all filter puts every tag's chart in one open pane.
            page.goto(board.url + "#scalars&tagFilter=.*", timeout=DEADLINE_S * 1000)

            def drawn_lines() -> dict[str, int]:
                counts = {}
                for tag in expected_runs:
                    card = page.locator("tf-scalar-card").filter(has_text=tag).first
                    if card.count():
                        counts[tag] = card.locator("path.line").evaluate_all(
                            "paths => paths.filter(p => (p.getAttribute('d') || '').length > 1)"
                            ".length")
                return counts

            # TensorBoard draws a raw and a smoothed line per run.
            _eventually(drawn_lines,
                        lambda counts: all(counts.get(tag, 0) >= n for tag, n in expected_runs.items()),
                        "a line per run in every chart")
            for tag in expected_runs:
                assert page.get_by_text(tag, exact=True).count() >= 1
            page.screenshot(path=str(tmp_path / "tensorboard.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "tensorboard.png").read_bytes()[:4] == b"\x89PNG"


def test_a_tensorboard_that_exits_at_start_is_reported_with_its_output(logdir):
    from rayplex.board import BoardStartError

    with pytest.raises(BoardStartError, match=r"exited with code \d+(.|\n)*--no_such_flag"):
        start_board(logdir, port=0, extra_args=["--no_such_flag"])
