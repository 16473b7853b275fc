"""Every Python block of README.md and docs/*.md runs as written, on its own.

Each block runs in a fresh Python process, in an empty temporary directory (so relative logdirs
such as ``./rayplex_logs/exp1`` land there), with a timeout. The block's text is run unchanged;
only the environment says which Ray it uses. ``RAY_ADDRESS`` names this test worker's Ray
(``ray_session``), which the block's bare ``ray.init()`` (or the one ``rayplex.init`` does)
joins: starting a Ray was most of a block's time. A block that needs a Ray of its own
(``OWN_RAY``), or one run while a rayplex actor of someone else is alive in the worker's Ray,
gets ``RAY_ADDRESS=local`` instead: a new local Ray, never one found in /tmp/ray. Either way,
every rayplex actor the block started must be gone when it ends.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TIMEOUT_S = 180
OWN_RAY = re.compile(r"starts a local Ray|\(and Ray\)|forward=\[|os\.environ\[")
"""Blocks that need a Ray of their own: those that say rayplex starts Ray when none is running
(they prove it), those whose forwarders open relative paths (``sqlite:///mlruns.db``): an
actor resolves them in its Ray's working directory, the block's only if the block started it,
and those that set a ``RAYPLEX_*`` variable for the actors before Ray starts (telemetry)."""


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number of the block's first code line, code)`` for each ```python block."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1))
            for match in BLOCK.finditer(text)]


BLOCKS = [pytest.param(path, line, code, id=f"{path.name}:{line}")
          for path in DOCUMENTS for line, code in python_blocks(path)]


def test_the_readme_has_its_python_blocks():
    # A changed fence (```py, ```Python) would silently drop a block from the test below.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    fences = re.findall(r"^```(\S+)", readme, re.MULTILINE)
    assert set(fences) <= {"python", "bash", "text"}, fences
    assert len(python_blocks(REPO / "README.md")) >= 8


@pytest.mark.parametrize(("path", "line", "code"), BLOCKS)
def test_each_block_stops_what_it_starts(path, line, code):
    if "rayplex.init(" in code:
        assert "rayplex.shutdown()" in code, f"{path.name}:{line} never calls rayplex.shutdown()"


@pytest.mark.slow
@pytest.mark.parametrize(("path", "line", "code"), BLOCKS)
def test_the_block_runs_as_written(path, line, code, tmp_path, ray_session):
    from rayplex.actors import list_rayplex_actors

    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    joins = not OWN_RAY.search(code) and not list_rayplex_actors()
    address = ray_session.get_runtime_context().gcs_address if joins else "local"
    env = {**os.environ, "RAY_ADDRESS": address, "MPLBACKEND": "Agg"}
    try:
        try:
            done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{path.name}:{line} did not finish within {TIMEOUT_S} s; stderr:\n"
                        f"{(exc.stderr or b'')[-4000:]!r}")
        assert done.returncode == 0, (f"{path.name}:{line} exited with {done.returncode}; "
                                      f"stderr:\n{done.stderr[-6000:]}")
        if joins:  # what its rayplex.shutdown() stopped is gone from the Ray it joined
            wait_for(lambda: not list_rayplex_actors(), 60,
                     f"the rayplex actors {path.name}:{line} started to stop")
    finally:  # none is left to the tests that use this Ray next
        for name in list_rayplex_actors() if joins else ():
            ray_session.kill(ray_session.get_actor(name, namespace="rayplex"))
