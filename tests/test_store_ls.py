"""``rayplex ls`` answers from the store when it is current: runs, every tag (scalars and the
others: histograms, images, text) with its kind, count, last step and last value, without
decoding an event; the same output as from the event files. Plain files, no Ray."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import rayplex
from rayplex import read
from rayplex.cli import main
from rayplex.store import scan

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parents[1]


def _write(logdir: str, run: str, suffix: str, seed: int, steps: range) -> None:
    """Scalars (template and step 0), histograms, images and text, with repeated steps and
    equal wall times, into one event file of ``run`` (rayplex layout)."""
    from tensorboardX import SummaryWriter

    rng = random.Random(seed)
    with SummaryWriter(os.path.join(logdir, "tensorboard", run), filename_suffix=suffix) as w:
        for step in steps:
            wall = 1000.0 + step // 3  # equal wall times at neighbouring steps
            w.add_scalar("loss", rng.random(), step, walltime=wall)
            if step % 4 == 0:
                w.add_scalar("loss", rng.random(), step, walltime=wall)  # a step twice
                w.add_histogram("weights", np.arange(5) * rng.random(), step, walltime=wall)
            if step % 7 == 0:
                w.add_text("notes", f"step {step}", step, walltime=wall)
            if step % 9 == 0:
                w.add_image("frame", np.zeros((3, 2, 2)), step, walltime=wall)
        w.add_scalar("loss", -1.0, steps[0], walltime=999.0)  # an old step, late


def _logdir(root: Path) -> str:
    logdir = str(root / "exp")
    _write(logdir, "agent/0", ".a", 0, range(0, 40))
    _write(logdir, "agent/0", ".b", 1, range(30, 60))  # a second file of the run
    _write(logdir, "agent/1", ".a", 2, range(0, 25))
    _write(logdir, "learner", ".a", 3, range(5, 50))
    from tensorboardX import SummaryWriter

    with SummaryWriter(os.path.join(logdir, "tensorboard", "media"), filename_suffix=".m") as w:
        for step in range(3):  # a run without one scalar
            w.add_text("log", "x", step)
    return logdir


def _from_events(logdir: str, monkeypatch: pytest.MonkeyPatch) -> read.LogdirSummary:
    with monkeypatch.context() as m:
        m.setattr(scan, "stored_tags", lambda _logdir: None)
        return read.summarize(logdir)


def _ls(logdir: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["ls", "--all", logdir]) == 0
    return out.getvalue()


def _from_store(logdir: str, monkeypatch: pytest.MonkeyPatch) -> tuple[read.LogdirSummary, str]:
    """The summary and ``ls`` output with the store answering and no event decoded."""
    assert scan.stored_tags(logdir) is not None
    with monkeypatch.context() as m:
        m.setattr(read, "iter_events", lambda *a, **k: pytest.fail("an event was decoded"))
        return read.summarize(logdir), _ls(logdir)


def test_ls_from_the_store_is_ls_from_the_event_files(tmp_path, monkeypatch):
    logdir = _logdir(tmp_path)
    before = _from_events(logdir, monkeypatch)
    assert {t.kind for t in before.tags} == {"scalar", "histogram", "text", "image"}
    rayplex.index(logdir, segment_rows=50)  # many segments, some without a scalar of a run
    summary, stored_listing = _from_store(logdir, monkeypatch)
    assert summary == _from_events(logdir, monkeypatch)  # the same logdir, store and all
    assert (summary.tags, summary.runs) == (before.tags, before.runs)  # as before the store
    with monkeypatch.context() as m:
        m.setattr(scan, "stored_tags", lambda _logdir: None)
        assert stored_listing == _ls(logdir)
    assert "weights" in stored_listing and "histogram" in stored_listing


def test_ls_after_incremental_indexing_and_compaction(tmp_path, monkeypatch):
    logdir = _logdir(tmp_path)
    rayplex.index(logdir, segment_rows=70, compaction=False)
    _write(logdir, "agent/1", ".c", 4, range(20, 45))  # more of a run, a new file
    assert scan.stored_tags(logdir) is None  # behind: the event files answer
    assert _ls(logdir) == _ls(logdir)
    rayplex.index(logdir, segment_rows=70, compaction=False)
    assert rayplex.store.compact(logdir, below=10**6) > 1
    summary, listing = _from_store(logdir, monkeypatch)
    assert summary == _from_events(logdir, monkeypatch)
    assert summary.tags == _from_events(logdir, monkeypatch).tags
    with monkeypatch.context() as m:
        m.setattr(scan, "stored_tags", lambda _logdir: None)
        assert _ls(logdir) == listing


def test_a_store_without_the_tag_table_is_not_used_by_ls(tmp_path, monkeypatch):
    import json

    logdir = _logdir(tmp_path)
    rayplex.index(logdir)
    manifest = Path(logdir, "store", "MANIFEST.json")
    obj = json.loads(manifest.read_bytes())
    del obj["tags"]  # as a store written before the table was kept
    manifest.write_text(json.dumps(obj))
    assert scan.stored_tags(logdir) is None
    rayplex.index(logdir)  # nothing new: still unknown, never half a table
    assert scan.stored_tags(logdir) is None
    assert read.summarize(logdir) == _from_events(logdir, monkeypatch)


def _index_in_subprocess(logdir: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = f"import rayplex; rayplex.index({logdir!r}, segment_rows=30)"
    return subprocess.Popen([sys.executable, "-c", code],
                            env={**os.environ, **env, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_killed_indexers_lose_and_duplicate_no_tag_entry(tmp_path, monkeypatch):
    """SIGKILL the indexer at each stage of its commit, and at random times, many times over;
    the tag table (counts of every kind) equals the event files' afterwards."""
    logdir = _logdir(tmp_path)
    expected = _from_events(logdir, monkeypatch)
    kills = 0
    for stage in ("raw-written:2", "pyramid-written:3", "committed:4", "committed:7"):
        proc = _index_in_subprocess(logdir, {"RAYPLEX_STORE_KILL_AT": stage})
        kills += proc.wait(timeout=300) == -signal.SIGKILL
    rng = random.Random(23)
    for _ in range(10):
        proc = _index_in_subprocess(logdir, {})
        deadline = time.monotonic() + rng.uniform(0.05, 1.5)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=120)
    assert kills >= 4
    rayplex.index(logdir)
    summary, _ = _from_store(logdir, monkeypatch)
    assert (summary.tags, summary.runs) == (expected.tags, expected.runs)
    assert sum(t.points for t in summary.tags) == sum(t.points for t in expected.tags)
