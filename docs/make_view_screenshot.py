"""Make ``docs/view.png``: ``rayplex view`` on 1,000 generated runs with a planted spike.

The picture comes from the browser test itself
(``tests/test_view_browser.py::test_the_band_chart_draws_and_its_maximum_is_the_spikes_bucket``),
which checks in headless Chromium that the band chart drew and that its maximum is the spike's
bucket, and then takes the screenshot: the README's picture is what the test saw.

Run by hand from the repository root (not part of the tests); needs the test extra
(``pip install -e ".[test]"``) and the Debian ``chromium`` package (no ``playwright install``)::

    python docs/make_view_screenshot.py                   # writes docs/view.png
    python docs/make_view_screenshot.py --out /tmp/view.png
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEST = "tests/test_view_browser.py::test_the_band_chart_draws_and_its_maximum_is_the_spikes_bucket"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "view.png"), help="where to write the PNG")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    # CI=true: a missing Chromium fails the test instead of skipping it (and writing nothing).
    env = {**os.environ, "RAYPLEX_VIEW_SCREENSHOT": out, "CI": "true"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
                          cwd=os.path.dirname(HERE), env=env)
    if done.returncode == 0:
        print(f"wrote {out}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
