"""Make ``docs/tensorboard.png``: TensorBoard's scalars page on a ``rayplex demo`` logdir.

Run by hand (not part of the tests); needs Ray, TensorBoard, the ``playwright`` package and the
Debian ``chromium`` package (no ``playwright install``)::

    python docs/make_screenshot.py                       # runs a 30 s demo into a temp dir
    python docs/make_screenshot.py --logdir ./rayplex_logs/demo   # or reuses a logdir
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from playwright.sync_api import sync_playwright

from rayplex.board import start_board

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HERE = os.path.dirname(os.path.abspath(__file__))


def _demo_logdir(seconds: float) -> str:
    from rayplex.demo import run_demo

    logdir = os.path.join(tempfile.mkdtemp(prefix="rayplex-screenshot-"), "demo")
    result = run_demo(logdir, workers=16, evaluators=4, seconds=seconds, progress=False)
    print(f"demo: {result.records:,} records from {result.clients} clients in {logdir}")
    return logdir


def _wait_for_lines(page, cards: int, deadline_s: float = 90.0) -> None:
    """Until the first ``cards`` scalar charts have drawn lines."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        charts = page.locator("tf-scalar-card")
        drawn = sum(
            charts.nth(i).locator("path.line").evaluate_all(
                "paths => paths.some(p => (p.getAttribute('d') || '').length > 1)")
            for i in range(min(cards, charts.count()))
        )
        if drawn >= cards:
            time.sleep(2)  # let the last chart finish its transition
            return
        time.sleep(0.5)
    raise TimeoutError(f"{cards} charts did not render within {deadline_s:g} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", help="an existing logdir (default: run the demo first)")
    parser.add_argument("--seconds", type=float, default=30.0, help="demo length")
    parser.add_argument("--out", default=os.path.join(HERE, "tensorboard.png"))
    parser.add_argument("--filter", default="reward|loss|score",
                        help="TensorBoard tag filter (regex) for the charts shown")
    args = parser.parse_args()
    logdir = args.logdir or _demo_logdir(args.seconds)
    with start_board(logdir, port=0) as board, sync_playwright() as playwright:
        print(f"TensorBoard at {board.url}")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1060}, device_scale_factor=1)
            page.goto(f"{board.url}#scalars&tagFilter={args.filter}", timeout=90_000)
            _wait_for_lines(page, cards=3)
            page.screenshot(path=args.out)
        finally:
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
