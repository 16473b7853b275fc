"""``rayplex view`` in a real headless Chromium, next to TensorBoard on the same logdir.

The logdirs are bench_store.py's (rayplex's layout and encoder, one planted spike of 1e6):
**wide** (1,000 workers x 4 tags x 5,000 steps at ``--scale 1``) and **many** (3,000 trials of 20
steps at every scale, for the filter). Measured, ``--repeats`` times each (medians):

- rayplex view: time from navigation until the first chart is painted (its first, coarse
  stage; the median, and the first page's: the later ones find the server's answers kept); a
  zoom (a drag over 20 % of the chart, another range each time) until the finer chart is
  painted (its coarse stage) and until its full detail; a regex filter over
  the many logdir's runs until the list is redrawn (in the page: the filter is applied
  synchronously); the server's RSS; the page's JS heap; whether the spike's bucket is the chart's maximum.
- TensorBoard (``--tensorboard``): time from navigation until a scalar chart has a line; how
  many runs its run selector shows enabled; whether the spike survives its sampling (its
  scalars route for the spike's run).

Needs the Debian ``chromium`` and ``pip install -e ".[test]"`` (playwright, tensorboard).

Example:
    python benchmarks/bench_view.py --scale 0.1
    python benchmarks/bench_view.py --scale 1 --tensorboard
    python benchmarks/bench_view.py --scale 1 --keep /tmp/v --cold-against /tmp/old-checkout
    (a fresh server per page, old and new code alternating: first paint, full width, zoom
    repaint and full detail, with the server's CPU seconds at each)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import median, print_table, temp_logdir, write_json  # noqa: E402
from bench_store import SPIKE, Spec, generate, specs  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-precise-memory-info"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _until(page: Any, script: str, deadline_s: float = 300.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value:
            return value
        page.wait_for_timeout(10)
    raise TimeoutError(script)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """A process's CPU seconds so far (user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_view(logdir: str, code: str = ROOT) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": code + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # In the checkout: ``python -m`` puts the working directory first on the path.
    proc = subprocess.Popen([sys.executable, "-m", "rayplex.cli", "view", logdir],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=code)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://\S+", line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"rayplex view printed {line!r}")
    return proc, match.group(0)


PROFILE = """() => performance.getEntriesByType('resource')
    .filter(e => e.name.includes('/api/'))
    .map(e => ({url: e.name.replace(location.origin, ''), start_ms: Math.round(e.startTime),
                end_ms: Math.round(e.responseEnd), kb: Math.round(e.encodedBodySize / 1024),
                server_ms: (e.serverTiming.find(t => t.name === 'answer') || {}).duration}))"""
"""The page's requests to /api until its first chart: when, how big, the server's time."""


def bench_view(browser: Any, wide: str, many: str, spec: Spec, repeats: int) -> dict[str, Any]:
    tag = spec.tags[0]
    profile: list[dict[str, Any]] = []
    zoom_requests: list[dict[str, Any]] = []
    proc, url = _start_view(wide)
    first, preview, zoom, heap, spike_ok, marked = [], [], [], [], [], []
    zoom_full: list[float] = []
    listed = enabled = 0
    try:
        for i in range(repeats):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(url)
            _until(page, "window.__rayplexView && Object.keys(window.__rayplexView.charts).length")
            first.append(time.perf_counter() - t0)
            if i == 0:
                profile = page.evaluate(PROFILE)
            page.locator(f".chart[data-tag='{tag}']").scroll_into_view_if_needed()
            chart = _until(page, f"window.__rayplexView.charts[{tag!r}]")
            lo, hi = chart["argmax"]
            spike_ok.append(chart["max"] == SPIKE and lo <= spec.spike[1] <= hi)
            marked.append(any(m["edge"] == "top" and lo <= m["x"] <= hi for m in chart["marks"]))
            if i == 0:
                listed, enabled = page.evaluate("[window.__rayplexView.state.runs.length, "
                                                "window.__rayplexView.state.selected.size]")
            renders = page.evaluate("window.__rayplexView.renders")
            previews = page.evaluate("window.__rayplexView.previews")
            over = page.locator(f".chart[data-tag='{tag}'] .u-over")
            over.scroll_into_view_if_needed()
            box = over.bounding_box()
            y = box["y"] + box["height"] / 2
            # Another range each time: the server keeps answers per store version, and a
            # repeat of the same zoom would measure that cache, not a read.
            page.mouse.move(box["x"] + box["width"] * (0.3 + 0.05 * i), y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * (0.5 + 0.05 * i), y, steps=4)
            zoom_at = page.evaluate("performance.now()")
            t0 = time.perf_counter()
            page.mouse.up()
            _until(page, f"window.__rayplexView.previews > {previews}", 60)
            page.evaluate("new Promise(requestAnimationFrame)")  # the frame it is painted in
            preview.append(time.perf_counter() - t0)
            _until(page, f"window.__rayplexView.charts[{tag!r}].answer.steps && "
                         f"window.__rayplexView.renders > {renders}")
            zoom.append(time.perf_counter() - t0)  # its first stage (a coarse one: finer still)
            _until(page, f"(c => c.answer.steps && {STAGE_FULL})"
                         f"(window.__rayplexView.charts[{tag!r}])")
            zoom_full.append(time.perf_counter() - t0)
            if i == 1:  # the zoom's requests (the first zoom may meet the server's first reads)
                zoom_requests = [r for r in page.evaluate(PROFILE) if r["start_ms"] >= zoom_at]
            heap.append(page.evaluate("performance.memory.usedJSHeapSize") / 2**20)
            page.close()
        rss = _rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    filters = []
    proc, url = _start_view(many)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        _until(page, "window.__rayplexView && window.__rayplexView.ready")
        runs = page.evaluate("window.__rayplexView.state.runs.length")
        for i in range(repeats):
            filters.append(page.evaluate("""(pattern) => {
                const input = document.getElementById('filter');
                const t0 = performance.now();
                input.value = pattern;
                input.dispatchEvent(new Event('input'));
                return (performance.now() - t0) / 1000; }""", f"/{i + 1}\\d*$"))
        page.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return {"first_chart_s": median(first[1:] or first), "first_chart_cold_s": first[0],
            "runs_listed": listed, "runs_enabled_by_default": enabled,
            "spike_visible_by_default": all(marked), "spike_visible_full_range": all(spike_ok),
            "zoom_preview_s": median(preview), "zoom_refined_s": median(zoom),
            "zoom_full_detail_s": median(zoom_full),
            "filter_s": median(filters), "filter_runs": runs, "server_rss_mb": rss,
            "js_heap_mb": median(heap),
            "first_page_requests": profile, "zoom_requests": zoom_requests}


STAGE_FULL = "(c.stage === undefined || c.stage === 'full')"
"""A chart painted at its full width (a page without progressive stages has no ``stage``)."""


def bench_cold(browser: Any, wide: str, spec: Spec, codes: dict[str, str],
               repeats: int) -> dict[str, dict[str, Any]]:
    """Each ``repeats`` times, the codes alternating (``{label: checkout}``): a fresh server,
    a page opened at once; seconds from navigation until the first chart is painted (any
    stage), until a chart is painted at full width, then a zoom (20 % of the first tag's chart)
    until it is repainted with finer buckets than before and until its full detail; and the
    server's CPU seconds at each of those moments (from its start; the zoom's from the drag)."""
    tag = spec.tags[0]
    got: dict[str, dict[str, list[float]]] = {label: {} for label in codes}
    for i in range(repeats):
        for label, code in codes.items():
            load = os.getloadavg()[0]
            proc, url = _start_view(wide, code)
            out = got[label]
            # A fresh context: no cached module of the other code (a port can come round again).
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            try:
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(url)
                charts = "Object.values((window.__rayplexView || {}).charts || {})"
                _until(page, f"{charts}.length")
                out.setdefault("first_chart_painted_s", []).append(time.perf_counter() - t0)
                out.setdefault("server_cpu_to_first_paint_s", []).append(_cpu_s(proc.pid))
                _until(page, f"{charts}.some(c => {STAGE_FULL})")
                out.setdefault("first_chart_full_width_s", []).append(time.perf_counter() - t0)
                out.setdefault("server_cpu_to_full_width_s", []).append(_cpu_s(proc.pid))
                c = f"window.__rayplexView.charts[{tag!r}]"
                page.locator(f".chart[data-tag='{tag}']").scroll_into_view_if_needed()
                before = _until(page, f"(c => c && {STAGE_FULL} && c.answer.width)({c})")
                over = page.locator(f".chart[data-tag='{tag}'] .u-over")
                box = over.bounding_box()
                y = box["y"] + box["height"] / 2
                page.mouse.move(box["x"] + box["width"] * (0.3 + 0.02 * i), y)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] * (0.5 + 0.02 * i), y, steps=4)
                cpu0 = _cpu_s(proc.pid)
                t0 = time.perf_counter()
                page.mouse.up()
                _until(page, f"(c => c.answer.steps && c.answer.width < {before})({c})")
                out.setdefault("zoom_repainted_finer_s", []).append(time.perf_counter() - t0)
                out.setdefault("server_cpu_zoom_repaint_s", []).append(_cpu_s(proc.pid) - cpu0)
                _until(page, f"(c => c.answer.steps && {STAGE_FULL})({c})")
                out.setdefault("zoom_full_detail_s", []).append(time.perf_counter() - t0)
                out.setdefault("server_cpu_zoom_full_s", []).append(_cpu_s(proc.pid) - cpu0)
                out.setdefault("load_1min", []).append(load)
                out.setdefault("paints_until_zoom_full", []).append(
                    page.evaluate("(window.__rayplexView.paints || []).length") or
                    page.evaluate("window.__rayplexView.renders"))
            finally:
                context.close()
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            print(label, i, {k: round(v[-1], 2) for k, v in out.items()}, flush=True)
    return {label: {k: median(v) for k, v in out.items()} for label, out in got.items()}


TB_LINES = "ps => ps.filter(p => (p.getAttribute('d') || '').length > 1).length"
"""How many of TensorBoard's chart lines (``path.line``) are drawn."""
TB_TICKS = "ts => ts.map(t => t.textContent)"
SI = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "µ": 1e-6, "n": 1e-9}


def _tick_value(label: str) -> float:
    """A TensorBoard axis label as a number (``1.5k`` -> 1500, ``1M`` -> 1e6, ``1e+6``)."""
    label = label.strip().replace("\u2212", "-")
    try:
        return float(label[:-1]) * SI[label[-1]] if label and label[-1] in SI else float(label)
    except ValueError:
        return float("nan")


def _tb_axis_max(page: Any, tag: str) -> float:
    """The largest axis label of the chart of ``tag`` (its y-axis reaches the spike, 1e6, only
    if the spike is drawn: the x-axis ends at the last step, at most 5,000)."""
    card = page.locator("tf-scalar-card").filter(has_text=tag).first
    values = [_tick_value(t) for t in card.locator("text.tick-label").evaluate_all(TB_TICKS)]
    return max((v for v in values if v == v), default=float("nan"))


def bench_tensorboard(browser: Any, wide: str, spec: Spec, deadline_s: float) -> dict[str, Any]:
    """TensorBoard's scalars dashboard on the same logdir, read through playwright's locators
    (they pierce the Polymer dashboard's shadow roots, as tests/test_board.py does)."""
    import json
    import urllib.parse
    import urllib.request

    from rayplex.board import start_board

    spike_run, spike_step = spec.spike
    tag = spec.tags[0]
    t_start = time.perf_counter()
    with start_board(wide, port=0, timeout=600) as board:
        started = time.perf_counter() - t_start
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        page.goto(board.url + "#scalars")
        lines = page.locator("tf-scalar-card path.line")
        shown = 0
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            shown = lines.evaluate_all(TB_LINES)
            if shown:
                break
            page.wait_for_timeout(100)
        seconds = time.perf_counter() - t0
        runs = page.locator("tf-runs-selector paper-checkbox")
        listed = runs.count()
        enabled = page.locator("tf-runs-selector paper-checkbox[checked]").count()
        spike_default = spike_full = None
        if shown:
            spike_default = _tb_axis_max(page, tag) >= SPIKE / 2
            before = _tb_axis_max(page, tag)
            page.locator("paper-checkbox").filter(has_text="Ignore outliers").first.click()
            redrawn = time.monotonic() + 30
            while _tb_axis_max(page, tag) == before and time.monotonic() < redrawn:
                page.wait_for_timeout(100)  # until TensorBoard has redrawn the axes
            spike_full = _tb_axis_max(page, tag) >= SPIKE / 2
        page.close()
        query = urllib.parse.urlencode({"run": spike_run, "tag": tag})
        with urllib.request.urlopen(board.url + "data/plugin/scalars/scalars?" + query,
                                    timeout=600) as r:
            points = json.load(r)
    return {"server_start_s": started,
            "first_chart_s": seconds if shown else f"none in {deadline_s:g} s",
            "lines_drawn": shown, "runs_listed": listed, "runs_enabled_by_default": enabled,
            "spike_visible_by_default": spike_default,
            "spike_visible_full_range": spike_full, "points_served": len(points),
            "spike_kept": any(step == spike_step and value == SPIKE for _, step, value in points)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="1 = the issue's scale")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR",
                        help="write the logdirs under DIR and keep them (reused when there)")
    parser.add_argument("--tensorboard", action="store_true", help="also measure TensorBoard")
    parser.add_argument("--cold-against", metavar="CHECKOUT",
                        help="only the cold-server page and zoom, alternating this checkout "
                             "of rayplex ('before') with this one ('after'), --repeats each")
    parser.add_argument("--tb-deadline", type=float, default=120.0,
                        help="seconds to wait for TensorBoard's first drawn line")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    import rayplex

    all_specs = specs(args.scale)
    wide_spec, many_spec = all_specs["wide"], all_specs["many"]
    # The filter is measured on 3,000 runs at every scale (20 steps each: cheap to write).
    many_spec = Spec(many_spec.name, many_spec.group, 3000, many_spec.tags[:1], 20)
    keep = args.keep
    if keep:
        wide, many = os.path.join(keep, "wide"), os.path.join(keep, "many")
    else:
        wide, many = temp_logdir("view-wide"), temp_logdir("view-many")
    try:
        t0 = time.perf_counter()
        for logdir, spec in ((wide, wide_spec), (many, many_spec)):
            done = os.path.join(logdir, ".generated")
            if not os.path.exists(done):
                shutil.rmtree(logdir, ignore_errors=True)
                generate(logdir, spec)
                rayplex.index(logdir)
                open(done, "w").close()
        prepared = time.perf_counter() - t0
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            if args.cold_against:
                try:
                    cold = bench_cold(browser, wide, wide_spec,
                                      {"before": os.path.abspath(args.cold_against),
                                       "after": ROOT}, args.repeats)
                finally:
                    browser.close()
                print_table(["measure (medians)", "before", "after"],
                            [(k, v, cold["after"][k]) for k, v in cold["before"].items()],
                            title=f"cold server, wide: {wide_spec.runs} runs x "
                                  f"{len(wide_spec.tags)} tags x {wide_spec.steps} steps")
                write_json("view_cold", vars(args), cold)
                return
            try:
                view = bench_view(browser, wide, many, wide_spec, args.repeats)
                board = (bench_tensorboard(browser, wide, wide_spec, args.tb_deadline)
                         if args.tensorboard else {})
            finally:
                browser.close()
    finally:
        if not keep:
            shutil.rmtree(wide, ignore_errors=True)
            shutil.rmtree(many, ignore_errors=True)
    requests = {"first_page": view.pop("first_page_requests"), "zoom": view.pop("zoom_requests")}
    for name, title in (("first_page", "the first page's requests until its first chart"),
                        ("zoom", "the second page's requests from its zoom on")):
        print_table(["/api request", "started ms", "answered ms", "KiB", "server ms"],
                    [(r["url"], r["start_ms"], r["end_ms"], r["kb"], r["server_ms"])
                     for r in requests[name]], title=title)
    rows = [(k, v, board.get(k, "")) for k, v in view.items()]
    rows += [(k, "", v) for k, v in board.items() if k not in view]
    print_table(["measure", "rayplex view", "TensorBoard"], rows,
                title=f"wide: {wide_spec.runs} runs x {len(wide_spec.tags)} tags x "
                      f"{wide_spec.steps} steps ({wide_spec.points:,} points; written and "
                      f"indexed in {prepared:.0f} s); filter over {many_spec.runs} runs")
    write_json("view", vars(args), {"view": view, "tensorboard": board, "requests": requests,
                                    "wide_points": wide_spec.points, "many_runs": many_spec.runs})


if __name__ == "__main__":
    main()
