"""Make ``docs/tensorboard.png``: TensorBoard's scalars page on a ``rayplex demo`` logdir.

The picture comes from the browser test itself
(``tests/test_board.py::test_the_demos_scalars_page_shows_the_grouped_charts``), which runs a
short demo, serves it with TensorBoard, checks in headless Chromium that every grouped chart
drew a line per run, and then takes the screenshot: the README's picture is what the test saw.

Run by hand from the repository root (not part of the tests); needs the test extra
(``pip install -e ".[test]"``) and the Debian ``chromium`` package (no ``playwright install``)::

    python docs/make_screenshot.py                   # writes docs/tensorboard.png
    python docs/make_screenshot.py --out /tmp/tb.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEST = "tests/test_board.py::test_the_demos_scalars_page_shows_the_grouped_charts"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "tensorboard.png"),
                        help="where to write the PNG")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    # CI=true: a missing Chromium fails the test instead of skipping it (and writing nothing).
    env = {**os.environ, "RAYPLEX_SCREENSHOT": out, "CI": "true"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
                          cwd=os.path.dirname(HERE), env=env)
    if done.returncode == 0:
        print(f"wrote {out}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
