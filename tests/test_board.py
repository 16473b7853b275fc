"""The real TensorBoard on a logdir written by rayplex: its HTTP API serves exactly what was
logged, ``rayplex board`` prints its URL and never leaves TensorBoard behind, and a headless
Chromium renders our charts, also on the demo's logdir (images, text, HParams too).

The browser tests need the Debian package ``chromium`` (``/usr/bin/chromium``) and the
``playwright`` Python package; they never download a browser (no ``playwright install``).
Without them they skip, except under CI (``CI=true``), where they fail: ``.ci/run`` installs
Chromium, so a missing one is a broken CI, not a reason to test less.

``RAYPLEX_SCREENSHOT=path`` makes the demo test also save its scalars screenshot there
(``python docs/make_screenshot.py`` runs it for ``docs/tensorboard.png``).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

import rayplex
from rayplex.board import Board, start_board
from rayplex.cli import main
from tests.conftest import wait_for

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
    last: list = []

    def answered():
        last[:] = [fetch()]
        return done(last[0])

    try:
        wait_for(answered, deadline_s, what, interval=0.2)
    except AssertionError:
        pytest.fail(f"{what} not seen within {deadline_s:g} s; last answer: {last[0]!r}")
    return last[0]


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


def _browser_or_skip():
    """``(playwright.sync_api, chromium path)``; skips without them, fails under CI."""
    def missing(why: str):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why}: CI must run the browser tests (.ci/run installs Chromium)")
        pytest.skip(why)

    chromium = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if chromium is None:
        missing(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        missing("the playwright Python package is not installed")
    return sync_api, chromium


def _lines_drawn(page, expected_runs: dict[str, int], charts: str) -> None:
    """Wait until the chart of each tag in ``expected_runs`` draws at least that many lines
    (TensorBoard draws a raw and a smoothed line per run)."""

    def drawn_lines() -> dict[str, int]:
        counts = {}
        for tag in expected_runs:
            card = page.locator("tf-scalar-card").filter(has_text=tag).first
            if card.count():
                counts[tag] = card.locator("path.line").evaluate_all(
                    "paths => paths.filter(p => (p.getAttribute('d') || '').length > 1).length")
        return counts

    _eventually(drawn_lines,
                lambda counts: all(counts.get(tag, 0) >= n for tag, n in expected_runs.items()),
                f"a line per run in {charts}")


def test_a_headless_browser_renders_our_charts(board, tmp_path):
    sync_api, chromium = _browser_or_skip()
    _runs_loaded(board)
    expected_runs: dict[str, int] = defaultdict(int)
    for tags in _expected().values():
        for tag in tags:
            expected_runs[tag] += 1

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # The scalars dashboard with a match-all filter puts every tag's chart in one open pane.
            page.goto(board.url + "#scalars&tagFilter=.*", timeout=DEADLINE_S * 1000)

            _lines_drawn(page, expected_runs, "every chart")
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


# ----------------------------------------------------------------------------- signals


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_rayplex_board_stops_its_tensorboard_when_it_is_signalled(logdir, signum):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rayplex.cli", "board", logdir, "--port",
                             str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    child = None
    try:
        url = f"http://127.0.0.1:{port}/data/logdir"

        def serving():
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status == 200
            except OSError:
                return proc.poll() is not None  # stop polling: the assertion below says why

        _eventually(serving, bool, "rayplex board serving")
        assert proc.poll() is None, proc.stderr.read()
        # Its URL line: start_board has returned and `rayplex board` waits on TensorBoard.
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE_S)
        assert ready and proc.stdout.readline().startswith("TensorBoard on ")
        (child,) = _children(proc.pid)  # TensorBoard
        proc.send_signal(signum)
        assert proc.wait(timeout=DEADLINE_S) == 0, proc.stderr.read()
        _eventually(lambda: _gone(child), bool, f"TensorBoard (pid {child}) gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


# ----------------------------------------------------------------------------- the demo's logdir


@pytest.fixture(scope="module")
def demo_board(ray_session, tmp_path_factory):
    from rayplex.demo import run_demo

    result = run_demo(str(tmp_path_factory.mktemp("demo") / "demo"), workers=16, evaluators=4,
                      seconds=4, progress=False)
    with start_board(result.logdir, host="127.0.0.1", port=0) as running:
        yield running


def _post(board: Board, route: str, body: dict):
    request = urllib.request.Request(board.url + route, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_tensorboard_shows_the_demos_images_text_and_hparams(demo_board):
    runs = _eventually(lambda: _get(demo_board, "data/runs"),
                       lambda runs: {"agent/0", "agent/15", "learner", "eval/stochastic-1",
                                     "hparams/learner/main"} <= set(runs), "the demo's runs")
    assert "agent/summary" in runs
    plugins = _eventually(lambda: _get(demo_board, "data/plugins_listing"),
                          lambda p: all(p.get(n, {}).get("enabled") for n in
                                        ("scalars", "images", "text", "hparams", "histograms")),
                          "the scalars, images, text, histograms and HParams plugins enabled")
    assert plugins["images"]["enabled"]

    images = _get(demo_board, "data/plugin/images/tags")
    assert set(images["learner"]) >= {"main/observation", "main/policy_rollout"}
    (observation,) = _get(demo_board, "data/plugin/images/images", run="learner",
                          tag="main/observation")
    with urllib.request.urlopen(demo_board.url + "data/plugin/images/individualImage?"
                                + observation["query"],
                                timeout=10) as response:
        assert response.read()[:4] == b"\x89PNG"

    text = _get(demo_board, "data/plugin/text/tags")
    assert "main/notes" in text["learner"]
    notes = _get(demo_board, "data/plugin/text/text", run="learner", tag="main/notes")
    assert notes and "step 0: all good" in notes[0]["text"]

    experiment = _post(demo_board, "data/plugin/hparams/experiment", {"experimentName": ""})
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"Args/workers", "Args/evaluators", "Args/seconds"} <= names, names


def test_the_demos_scalars_page_shows_the_grouped_charts(demo_board, tmp_path):
    """Indexed bins overlay their runs in one chart; combined and normal groups have theirs."""
    sync_api, chromium = _browser_or_skip()
    tags = _eventually(lambda: _get(demo_board, "data/plugin/scalars/tags"),
                       lambda t: {"agent/0", "agent/15", "eval/stochastic-1", "learner"} <= set(t),
                       "the demo's scalar runs")
    expected_runs = {  # chart -> runs overlaid in it
        "agent/reward/0-7": 8, "agent/reward/8-15": 8,
        "eval/score/stochastic": 2, "eval/score/deterministic": 2, "main/loss": 1}
    for tag, count in expected_runs.items():
        assert sum(tag in run_tags for run_tags in tags.values()) == count, tag
    out = tmp_path / "tensorboard.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1060},
                                    device_scale_factor=1)
            page.goto(demo_board.url + "#scalars&tagFilter=reward%2F|loss|score",
                      timeout=DEADLINE_S * 1000)

            _lines_drawn(page, expected_runs, "every grouped chart")
            page.mouse.move(0, 0)  # no tooltip in the picture
            page.screenshot(path=str(out))
        finally:
            browser.close()
    assert out.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("RAYPLEX_SCREENSHOT"):
        shutil.copyfile(out, Path(os.environ["RAYPLEX_SCREENSHOT"]))
