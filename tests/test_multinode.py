"""Several Ray nodes on one machine: one node buffer per node, exact cluster-wide summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.multinode
def test_three_nodes_have_one_buffer_each_and_exact_summaries(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "multinode_check.py")
    env = dict(os.environ, RAYPLEX_FLUSH_INTERVAL_S="0.2")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "exp")], capture_output=True,
                          text=True, timeout=600, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(lines[-1])
    assert report["problems"] == [] and proc.returncode == 0, report
    assert report["nodes"] == 3 and report["buffers"] == 3
