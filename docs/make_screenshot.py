"""Make the README's pictures from the browser tests that check what they show.

- ``tensorboard`` → ``docs/tensorboard.png``: TensorBoard's scalars page on a ``rayplex demo``
  logdir (``tests/test_board.py::test_the_demos_scalars_page_shows_the_grouped_charts``: every
  grouped chart drew a line per run);
- ``view`` → ``docs/view.png``: ``rayplex view`` on 1,000 generated runs with a planted spike
  (``tests/test_view_browser.py::test_the_band_chart_draws_and_its_maximum_is_the_spikes_bucket``:
  the band chart drew and its maximum is the spike's bucket).

The test takes the screenshot after its checks pass: the README's picture is what the test saw.
Run by hand from the repository root (not part of the tests); needs the test extra
(``pip install -e ".[test]"``) and the Debian ``chromium`` package (no ``playwright install``)::

    python docs/make_screenshot.py                    # writes docs/tensorboard.png
    python docs/make_screenshot.py view               # writes docs/view.png
    python docs/make_screenshot.py view --out /tmp/view.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHOTS = {  # picture -> (the test that takes it, the variable naming its file, default file)
    "tensorboard": ("tests/test_board.py::test_the_demos_scalars_page_shows_the_grouped_charts",
                    "RAYPLEX_SCREENSHOT", "tensorboard.png"),
    "view": ("tests/test_view_browser.py::"
             "test_the_band_chart_draws_and_its_maximum_is_the_spikes_bucket",
             "RAYPLEX_VIEW_SCREENSHOT", "view.png"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("picture", nargs="?", choices=sorted(SHOTS), default="tensorboard")
    parser.add_argument("--out", help="where to write the PNG (default: docs/<picture>.png)")
    args = parser.parse_args()
    test, variable, default = SHOTS[args.picture]
    out = os.path.abspath(args.out or os.path.join(HERE, default))
    # CI=true: a missing Chromium fails the test instead of skipping it (and writing nothing).
    env = {**os.environ, variable: out, "CI": "true"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          cwd=os.path.dirname(HERE), env=env)
    if done.returncode == 0:
        print(f"wrote {out}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
