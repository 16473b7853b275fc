"""``rayplex view`` in a real headless Chromium (playwright, as tests/test_board.py does it: the
Debian ``chromium``, no ``playwright install``; skipped without it, failed under ``CI=true``).

On a TensorBoard logdir of 1,000 runs with a planted spike: the run table lists them all
(virtualised), the band chart draws and its maximum is the spike's bucket, the filter narrows
the list, a zoom fetches finer buckets, the URL reproduces the view, a point appended while the
page is open appears, and a run name or log line made of markup shows as text.

``RAYPLEX_VIEW_SCREENSHOT=path`` also saves the page's screenshot there
(``python docs/make_screenshot.py view`` writes ``docs/view.png`` with it).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rayplex
from tests.test_board import CHROMIUM_ARGS, _browser_or_skip
from tests.view_logdir import WALL, write_run, write_runs

pytestmark = pytest.mark.slow
pytest.importorskip("duckdb")
pytest.importorskip("starlette")

RUNS = 1000
STEPS = 200
SPIKE = (737, "train/reward", 123, 10_000.0)
SUMMARY_STATS = ("mean", "std", "min", "max")
MARKUP = "<img src=x onerror=window.__pwned=1>"
LOG_MARKUP = "<b onmouseover=window.__pwned=2>bold</b>"
DEADLINE_S = 60.0
ROOT = Path(__file__).resolve().parents[1]


def _write_log(logdir: Path) -> None:
    from rayplex.textlog import LogLine, format_line

    (logdir / "logs").mkdir()
    with open(logdir / "logs" / "all.log", "w", encoding="utf-8") as f:
        for i in range(20):
            f.write(format_line(LogLine(float(i), 20, "agent/1", "n", 1, "l", f"line {i} {LOG_MARKUP}")))


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """1,000 runs x 200 steps of ``train/reward`` (a spike in agent/737), a run named like
    markup, a text log with markup; indexed."""
    root = tmp_path_factory.mktemp("view-wide") / "tb"
    write_runs(root, RUNS, STEPS, spike=SPIKE)
    write_run(root, MARKUP, ["train/reward"], np.arange(STEPS), lambda tag, s: s * 0.01)
    _write_log(root)
    rayplex.index(root)
    return root


class _Server:
    def __init__(self, logdir: Path) -> None:
        env = {**os.environ,
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "rayplex.cli", "view", str(logdir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        line = self.proc.stdout.readline()
        match = re.search(r"http://\S+", line)
        if match is None:
            self.stop()
            pytest.fail(f"rayplex view printed no URL: {line!r} {self.proc.stderr.read()!r}")
        self.url = match.group(0)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            assert self.proc.wait(timeout=30) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def server(wide):
    running = _Server(wide)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api, chromium = _browser_or_skip()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, errors


def _until(page, script: str, what: str, deadline_s: float = DEADLINE_S):
    """Evaluate ``script`` until it is truthy; its value. (Polled with ``evaluate``: the page's
    Content-Security-Policy forbids the ``eval`` that ``wait_for_function`` needs.)"""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        last = page.evaluate(script)
        if last:
            return last
        page.wait_for_timeout(50)
    pytest.fail(f"{what} not seen within {deadline_s:g} s; last: {last!r}; "
                f"errors: {page.evaluate('window.__rayplexView && window.__rayplexView.error')}")


def _chart(page, tag: str, script: str = "c", what: str = "the chart"):
    """``script`` of the chart of ``tag`` (``c``) once truthy and painted at full width (not its
    first, coarse stage: a repaint would come under a drag); the chart is scrolled into view
    (a chart out of view is not loaded)."""
    return _until(page, f"(() => {{ const c = (window.__rayplexView.charts || {{}})[{json.dumps(tag)}];"
                        f" const box = document.querySelector(`.chart[data-tag=\"${{CSS.escape("
                        f"{json.dumps(tag)})}}\"]`); if (box) box.scrollIntoView({{block: 'nearest'}});"
                        f" return c && c.stage !== 'coarse' ? ({script}) : null; }})()", what)


def _non_background_pixels(page, tag: str) -> int:
    from PIL import Image

    canvas = page.locator(f".chart[data-tag={json.dumps(tag)}] canvas")
    image = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3)
    return int((pixels.min(axis=1) < 200).sum())


def _open(page, url: str) -> None:
    page.goto(url, timeout=DEADLINE_S * 1000)
    _until(page, "window.__rayplexView && window.__rayplexView.ready", "the page's catalog")


def _row_names(page) -> list[str]:
    return page.eval_on_selector_all("#runrows .run .name", "rows => rows.map(r => r.textContent)")


# ----------------------------------------------------------------------------- the run table


def test_the_run_table_lists_every_run_in_natural_order_and_stays_virtual(page, server):
    _open(page, server.url)
    assert page.text_content("#count") == f"{RUNS + 1} of {RUNS + 1} runs shown, {RUNS + 1} selected"
    names = _row_names(page)
    assert names[0] == MARKUP  # '<' sorts before 'a'
    assert names[1:12] == [f"agent/{i}" for i in range(11)]  # agent/2 before agent/10
    assert len(names) < 120  # only the rows in view exist
    page.eval_on_selector("#runlist", "el => { el.scrollTop = el.scrollHeight; }")
    _until(page, "[...document.querySelectorAll('#runrows .run .name')].some("
                 "r => r.textContent === 'agent/999')", "the last run after scrolling")
    assert len(_row_names(page)) < 120


def test_the_filter_narrows_the_list(page, server):
    _open(page, server.url)
    page.fill("#filter", r"^agent/1\d$")
    _until(page, "document.getElementById('count').textContent.startsWith('10 of')",
           "the filtered count")
    assert _row_names(page) == [f"agent/{i}" for i in range(10, 20)]
    assert "filter=" in page.url


# ----------------------------------------------------------------------------- charts


def test_the_band_chart_draws_and_its_maximum_is_the_spikes_bucket(page, server, tmp_path):
    _open(page, server.url)
    chart = _chart(page, "train/reward", "c.mode === 'band' && c", "the band chart")
    assert chart["answer"]["members"] == RUNS + 1
    assert chart["max"] == SPIKE[3]
    lo, hi = chart["argmax"]
    assert lo <= SPIKE[2] <= hi
    # The robust range leaves the spike out, so it is marked at the top edge, never hidden.
    assert chart["yRange"][1] < SPIKE[3]
    assert any(m["edge"] == "top" and lo <= m["x"] <= hi for m in chart["marks"])
    assert _non_background_pixels(page, "train/reward") > 500
    shot = os.environ.get("RAYPLEX_VIEW_SCREENSHOT") or str(tmp_path / "view.png")
    page.screenshot(path=shot)
    assert Path(shot).read_bytes()[:4] == b"\x89PNG"
    # One click shows the full range: the spike is inside it, no mark left.
    page.click(".chart[data-tag='train/reward'] button.full")
    full = _chart(page, "train/reward", "c.yRange[1] >= 10000 && c", "the full range")
    assert full["marks"] == []


def test_few_selected_runs_are_lines_and_a_zoom_fetches_finer_buckets(page, server):
    requests: list[dict] = []
    page.on("request", lambda r: requests.append(json.loads(r.post_data))
            if r.url.endswith("/api/series") else None)
    _open(page, server.url)
    page.fill("#filter", r"^agent/73\d$")
    page.click("#sel-filtered")
    chart = _chart(page, "train/reward", "c.mode === 'lines' && c", "the line chart")
    assert [r["run"] for r in chart["answer"]["runs"]] == [f"agent/{i}" for i in range(730, 740)]
    assert chart["max"] == SPIKE[3]
    assert _non_background_pixels(page, "train/reward") > 500
    before = chart["answer"]["width"]
    over = page.locator(".chart[data-tag='train/reward'] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    hover = _until(page, "document.querySelector(\".chart[data-tag='train/reward'] .hover\")"
                         ".textContent", "the hover text")
    assert re.fullmatch(r"agent/73\d step \d+: [-+.\de]+( \(bucket .*\))?", hover), hover
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
    page.mouse.up()
    zoomed = _chart(page, "train/reward", "c.answer.steps && c", "the zoomed chart")
    lo, hi = zoomed["answer"]["steps"]
    assert 60 <= lo < hi <= 140
    # At once, before the finer buckets came, the chart was cut to the zoom (a preview).
    assert page.evaluate("window.__rayplexView.preview") == [lo, hi]
    assert any(r.get("steps") == [lo, hi] for r in requests)
    assert zoomed["answer"]["width"] < before or before == 1
    assert all(lo <= s for r in zoomed["answer"]["runs"] for s in r["step_lo"])
    assert f"zoom={lo}%2C{hi}" in page.url
    page.dblclick(".chart[data-tag='train/reward'] .u-over")
    _chart(page, "train/reward", "c.answer.steps === null", "the zoom reset")


def test_the_url_reproduces_the_view(page, server):
    _open(page, server.url + "#filter=%5Eagent%2F5%5Cd%24&sel=*&zoom=20%2C80&smooth=0.6&logy=1")
    chart = _chart(page, "train/reward", "c.answer.steps && c", "the chart of the linked view")
    assert chart["answer"]["steps"] == [20, 80]
    assert [r["run"] for r in chart["answer"]["runs"]] == [f"agent/5{i}" for i in range(10)]
    assert page.input_value("#smooth") == "0.6"
    assert page.input_value("#filter") == r"^agent/5\d$"
    assert page.is_checked("#logy")
    assert _non_background_pixels(page, "train/reward") > 500


# ----------------------------------------------------------------------------- escaping


def test_a_run_name_and_a_log_line_made_of_markup_show_as_text(page, server):
    _open(page, server.url)
    assert MARKUP in _row_names(page)
    assert page.locator("#runrows img").count() == 0
    page.click("#logs summary")
    _until(page, "document.getElementById('log-lines').textContent.includes('line 19')",
           "the log tail")
    assert LOG_MARKUP in page.text_content("#log-lines")
    assert page.locator("#log-lines b").count() == 0
    assert page.evaluate("window.__pwned") is None


# ----------------------------------------------------------------------------- live


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A rayplex-layout logdir: agent/0..2 (50 steps) with params, and its server."""
    root = tmp_path_factory.mktemp("view-small") / "exp"
    write_runs(root / "tensorboard", 3, 50)
    for i in range(3):
        (root / "params" / "agent").mkdir(parents=True, exist_ok=True)
        (root / "params" / "agent" / f"{i}.json").write_text(
            json.dumps({"Args": {"lr": [0.3, 0.1, 0.2][i], "name": f"<i>{i}</i>"}}))
    # store_metrics' summary run, as the hub names it: <group>/summary, <key>/<stat>
    write_run(root / "tensorboard", "agent/summary", [f"reward/{s}" for s in SUMMARY_STATS],
              np.arange(50), lambda tag, s: {"mean": s * 1.0, "std": s * 0 + 2.0,
                                             "min": s - 5.0, "max": s + 9.0}[tag.split("/")[1]])
    _write_alerts(root, [_alert("nan(train/*)", "agent/2", 7, 1000.0),
                         _alert("crashed", "agent/0", None, 1001.0)])
    rayplex.index(root)
    running = _Server(root)
    yield root, running
    running.stop()


def _alert(rule: str, client: str, step: int | None, wall: float):
    from rayplex.watch import Alert

    return Alert(rule, client.split("/")[0], client, "node-1", 4242, step,
                 float("nan") if step is not None else None, None, wall,
                 f"<b>{rule}</b> in {client}")


def _write_alerts(root: Path, alerts: list) -> None:
    """``alerts.jsonl`` as the hub appends it (:func:`rayplex.watch.alert_to_json`)."""
    from rayplex.layout import alerts_path
    from rayplex.watch import alert_to_json

    with open(alerts_path(root), "a", encoding="utf-8") as f:
        for alert in alerts:
            f.write(json.dumps(alert_to_json(alert)) + "\n")


def _alert_rows(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#alerts-table tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")


def test_alerts_show_newest_first_live_and_a_click_selects_the_run(page, small):
    root, server = small
    _open(page, server.url)
    _until(page, "document.querySelectorAll('#alerts-table tbody tr').length === 2", "alerts")
    rows = _alert_rows(page)
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("crashed", "agent/0", "", ""), ("nan(train/*)", "agent/2", "7", "nan")]
    assert rows[0][5] == "<b>crashed</b> in agent/0"  # a message is text
    assert page.locator("#alerts-table b").count() == 0
    states = page.eval_on_selector_all("#runrows .run", "rs => rs.map(r => [r.querySelector("
                                       "'.name').textContent, r.querySelector('.state').className])")
    assert dict(states)["agent/0"] == "state state-crashed"
    assert dict(states)["agent/1"] == "state state-finished"  # no hub holds it: it is over
    page.click("#alerts-table tbody tr[data-run='agent/2']")
    chart = _chart(page, "train/reward", "c.answer.runs.length === 1 && c", "the alert's run")
    assert chart["answer"]["runs"][0]["run"] == "agent/2"
    assert page.text_content("#count").endswith("1 selected")
    # A new alert while the page is open: it appears on top, with no reload.
    _write_alerts(root, [_alert("nan(train/*)", "agent/1", 9, 1002.0)])
    _until(page, "document.getElementById('alerts-count').textContent === '3'", "the new alert")
    assert _alert_rows(page)[0][2] == "agent/1"
    page.click("#sel-all")


def test_the_params_table_sorts_and_selects_runs(page, small):
    _, server = small
    _open(page, server.url)
    page.click("#params summary")
    _until(page, "document.querySelectorAll('#params-table tbody tr').length === 4", "the table")
    heads = page.eval_on_selector_all("#params-table th", "ths => ths.map(t => t.dataset.column)")
    assert heads == ["run", "param:Args/lr", "param:Args/name",
                     *[f"last:reward/{s}" for s in ("max", "mean", "min", "std")],
                     "last:train/reward"]
    page.click("#params-table th[data-column='param:Args/lr']")
    order = page.eval_on_selector_all("#params-table tbody tr", "rs => rs.map(r => r.dataset.run)")
    assert order == ["agent/1", "agent/2", "agent/0", "agent/summary"]  # lr 0.1, 0.2, 0.3, none
    assert page.locator("#params-table i").count() == 0  # a markup param value is text
    assert "<i>1</i>" in page.text_content("#params-table tbody tr:first-child")
    page.click("#sel-none")
    page.click("#params-table tbody tr[data-run='agent/2']")
    chart = _chart(page, "train/reward", "c.answer.runs.length === 1 && c", "the one run")
    assert chart["answer"]["runs"][0]["run"] == "agent/2"


def test_a_point_appended_while_the_page_is_open_appears(page, small):
    root, live = small
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data))
            if r.url.endswith("/api/series") else None)
    _open(page, live.url)
    _chart(page, "train/reward", "c.answer.runs.length === 3", "the chart")
    write_run(root / "tensorboard", "agent/1", ["train/reward"], np.array([60]),
              lambda tag, s: s * 0 + 77.0)
    chart = _chart(page, "train/reward", "c.max === 77 && c", "the appended point")
    run = next(r for r in chart["answer"]["runs"] if r["run"] == "agent/1")
    assert run["step_hi"][-1] == 60 and run["last"][-1] == 77.0
    assert page.text_content("#count").startswith("4 of 4")
    # Fetched incrementally: from the last bucket seen on, merged into what the page had.
    assert page.evaluate("window.__rayplexView.incremental") >= 1
    assert any(r.get("since") is not None for r in sent)
    others = [r for r in chart["answer"]["runs"] if r["run"] != "agent/1"]
    assert [r["step_hi"][-1] for r in others] == [49, 49]
    assert all(r["step_lo"] == sorted(r["step_lo"]) for r in chart["answer"]["runs"])


def test_the_summary_run_is_a_mean_and_std_band_with_min_and_max(page, small):
    _, server = small
    _open(page, server.url)
    chart = _chart(page, "summary:agent/summary:reward", "c", "the summary chart")
    answer = chart["answer"]
    assert answer["mode"] == "summary" and chart["series"] == 5  # mean±std, mean, min, max
    assert answer["mean"][-1] == 49.0 and answer["std"][-1] == 2.0
    assert answer["max"][-1] == 58.0 and answer["min"][0] == -5.0
    assert chart["max"] == 58.0
    assert _non_background_pixels(page, "summary:agent/summary:reward") > 300
    page.click("#sel-none")
    _until(page, "document.querySelector(\".chart[data-tag='summary:agent/summary:reward'] "
                 ".note\").textContent.includes('not selected')", "the unselected summary")


def test_a_band_draws_its_extremes_and_the_pinned_runs_on_top(page, server):
    requests: list[dict] = []
    page.on("request", lambda r: requests.append(json.loads(r.post_data))
            if r.url.endswith("/api/series") else None)
    _open(page, server.url)
    chart = _chart(page, "train/reward", "c.mode === 'band' && c.highlight.length && c", "band")
    # The lines on top come with the band: one request for the chart, not one more per line.
    mine = [r for r in requests if r.get("tag") == "train/reward"]
    assert mine and all(r["band"] and r["runs"] is None for r in mine), mine
    # agent/999 ends highest, agent/0 lowest (run i climbs from i / 100; the markup run ties)
    assert len(chart["highlight"]) == 2 and "agent/999" in chart["highlight"]
    (lowest,) = set(chart["highlight"]) - {"agent/999"}
    assert lowest in ("agent/0", MARKUP)
    page.fill("#filter", r"^agent/5$")
    page.click("#runrows .run:has(.name:text-is('agent/5')) .pin")
    pinned = _chart(page, "train/reward", "c.highlight.includes('agent/5') && c", "the pinned run")
    assert any(r.get("highlight") == ["agent/5"] for r in requests)
    assert pinned["mode"] == "band" and set(pinned["highlight"]) == {
        "agent/5", lowest, "agent/999"}
    assert pinned["series"] == 3 + 3  # min, max, median + three lines
    assert "pin=agent%2F5" in page.url
    assert page.text_content("#count").endswith(f"{RUNS + 1} selected")  # a pin selects nothing


def test_the_x_axis_shows_step_wall_or_relative_time_and_is_in_the_url(page, small):
    _, server = small
    _open(page, server.url + "#x=relative")
    # tests/view_logdir.py writes step s at wall time WALL + s: relative time is the step
    chart = _chart(page, "train/reward", "c.xaxis === 'relative' && c", "relative time")
    last = page.evaluate("Math.max(...window.__rayplexView.state.runs.map(r => r.last_step))")
    assert last in (49, 60)  # 60 once the live test appended its point
    assert chart["xSpan"][0] == pytest.approx(0, abs=0.1)
    assert chart["xSpan"][1] == pytest.approx(last, abs=0.1)
    assert page.input_value("#xaxis") == "relative"
    page.select_option("#xaxis", "wall")
    chart = _chart(page, "train/reward", "c.xaxis === 'wall' && c", "wall time")
    assert chart["xSpan"][0] == pytest.approx(WALL, abs=0.1)
    assert chart["xSpan"][1] == pytest.approx(WALL + last, abs=0.1)
    assert "x=wall" in page.url
    assert _non_background_pixels(page, "train/reward") > 300
    # A drag in time zooms to the steps under it.
    over = page.locator(".chart[data-tag='train/reward'] .u-over")
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=6)
    page.mouse.up()
    zoomed = _chart(page, "train/reward", "c.answer.steps && c.xaxis === 'wall' && c", "zoom")
    lo, hi = zoomed["answer"]["steps"]
    assert 0.15 * last <= lo < hi <= 0.65 * last
    page.select_option("#xaxis", "step")
    _chart(page, "train/reward", "c.xaxis === 'step' && c", "steps again")
    assert "x=" not in page.url.split("#")[1].replace("sel=", "")


# ----------------------------------------------------------------------------- progressive paints


def _paints(page, tag: str) -> list[dict]:
    return [p for p in page.evaluate("window.__rayplexView.paints") if p["tag"] == tag]


def test_the_first_paint_is_a_coarse_answer_then_the_full_width_with_the_spike_at_both(page, server):
    from rayplex.config import CHART_BUCKETS, COARSE_BUCKETS

    requests: list[dict] = []
    page.on("request", lambda r: requests.append(json.loads(r.post_data))
            if r.url.endswith("/api/series") else None)
    _open(page, server.url)
    _chart(page, "train/reward", "c.stage === 'full' && c", "the full-width chart")
    paints = _paints(page, "train/reward")
    first, last = paints[0], paints[-1]
    assert (first["stage"], first["buckets"]) == ("coarse", COARSE_BUCKETS)
    assert (last["stage"], last["buckets"]) == ("full", CHART_BUCKETS)
    assert first["width"] > last["width"]
    for stage in (first, last):  # exact at every stage: the spike's bucket is the maximum
        assert stage["max"] == SPIKE[3]
        assert stage["argmax"][0] <= SPIKE[2] <= stage["argmax"][1]
    asked = [r["buckets"] for r in requests if r.get("tag") == "train/reward"]
    assert asked[:2] == [COARSE_BUCKETS, CHART_BUCKETS]


LONG_STEPS = 4000


@pytest.fixture(scope="module")
def long_runs(tmp_path_factory):
    """3 runs x 4,000 steps (a spike in agent/1 at step 2,500): a zoom over a fifth of it has
    a coarse stage (its 128 buckets are whole pyramid rows)."""
    root = tmp_path_factory.mktemp("view-long") / "tb"
    write_runs(root, 3, LONG_STEPS, spike=(1, "train/reward", 2500, 500.0))
    rayplex.index(root)
    running = _Server(root)
    yield running
    running.stop()


def _drag(page, tag: str, start: float, end: float) -> None:
    over = page.locator(f".chart[data-tag='{tag}'] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * end, y, steps=8)
    page.mouse.up()


def test_a_zoom_paints_a_coarse_stage_then_full_detail_and_a_stale_stage_is_never_painted(
        page, long_runs):
    from rayplex.config import CHART_BUCKETS, ZOOM_COARSE_BUCKETS

    tag = "train/reward"
    _open(page, long_runs.url)
    _chart(page, tag, "c.stage === 'full' && c", "the full-width chart")
    # The first zoom's coarse answer is held in the browser until a second zoom is painted.
    held: list = []

    def hold(route):
        body = json.loads(route.request.post_data or "null")
        if body.get("steps") and body["buckets"] == ZOOM_COARSE_BUCKETS and not held:
            held.append((route, body["steps"]))
        else:
            route.continue_()

    page.route("**/api/series", hold)
    _drag(page, tag, 0.1, 0.9)
    _until(page, "window.__rayplexView.state.zoom", "the first zoom")
    deadline = time.monotonic() + DEADLINE_S
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the first zoom asked for no coarse stage"
    first_zoom = held[0][1]
    _drag(page, tag, 0.1, 0.9)  # within the first zoom's range (the chart shows it already)
    second = _chart(page, tag, f"c.answer.steps && c.answer.steps[0] !== {first_zoom[0]} && "
                               "c.stage === 'full' && c", "the second zoom, full detail")
    second_zoom = second["answer"]["steps"]
    assert first_zoom[0] <= second_zoom[0] < second_zoom[1] <= first_zoom[1]
    stale = page.evaluate("window.__rayplexView.stale")
    held[0][0].continue_()  # the first zoom's coarse answer now arrives, after the second's
    _until(page, f"window.__rayplexView.stale > {stale}", "the stale answer dropped")
    paints = _paints(page, tag)
    assert not [p for p in paints if p["steps"] == first_zoom]
    assert page.evaluate(f"window.__rayplexView.charts[{tag!r}].answer.steps") == second_zoom
    # The second zoom: its coarse stage painted, then full detail; the spike's at both.
    mine = [p for p in paints if p["steps"] == second_zoom]
    assert [(p["stage"], p["buckets"]) for p in mine] == [("coarse", ZOOM_COARSE_BUCKETS),
                                                          ("full", CHART_BUCKETS)]
    assert mine[0]["width"] > mine[1]["width"]
    if second_zoom[0] <= 2500 <= second_zoom[1]:
        assert all(p["max"] == 500.0 for p in mine)
