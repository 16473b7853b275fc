"""The columnar store (rayplex.store): exact M4 from the pyramids, exactly-once indexing across
SIGKILLs, torn and orphan segments, read-only SQL, bad input. Plain files, no Ray: logdirs are
written with tensorboardX's SummaryWriter, in TensorBoard's layout and in rayplex's
(event files under tensorboard/)."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rayplex
from rayplex.store import SERIES_COLUMNS, StoreWarning
from rayplex.store.format import Manifest
from rayplex.store.pyramid import plan
from tests.conftest import count_decoded

REPO = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- helpers


_FILES = iter(range(10**9))


def write_points(logdir: Path, run: str, points: list[tuple[str, int, float]]) -> None:
    """Append ``(tag, step, value)`` to run ``run`` (a new event file each call; the suffix keeps
    two files written within one second apart, and in name order)."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(logdir / run) if run != "." else str(logdir),
                       filename_suffix=f".{next(_FILES):06d}") as writer:
        for tag, step, value in points:
            writer.add_scalar(tag, value, step)


def f32(x: float) -> float:
    return float(np.float32(x))


def brute_m4(points: list[tuple[int, float]], lo: int, hi: int, buckets: int) -> list[tuple]:
    """Rows (step_lo, step_hi, first, last, min, max, count) from raw points in write order,
    bucketed by the width read_series chose (``plan``), computed point by point."""
    chosen = plan(lo, hi, buckets)
    groups: dict[int, list[tuple[int, int, float]]] = {}
    for order, (step, value) in enumerate(points):
        if lo <= step <= hi:
            key = 0 if chosen.width == 0 else step // chosen.width
            groups.setdefault(key, []).append((step, order, value))
    rows = []
    for key in sorted(groups):
        pts = sorted(groups[key])
        values = [v for _, _, v in pts]
        rows.append((pts[0][0], pts[-1][0], pts[0][2], pts[-1][2], min(values), max(values),
                     len(pts)))
    return rows


def rows_of(frame, run: str, tag: str) -> list[tuple]:
    mine = frame[(frame.run == run) & (frame.tag == tag)]
    return [tuple(r) for r in mine[["step_lo", "step_hi", "first", "last", "min", "max",
                                    "count"]].itertuples(index=False)]


def all_points(logdir: Path) -> list[tuple]:
    frame = rayplex.sql(logdir, "SELECT run, tag, step, value FROM scalars", refresh=False)
    return sorted(map(tuple, frame.itertuples(index=False)))


# ----------------------------------------------------------------------------- docstrings


@pytest.mark.parametrize("name", ["rayplex.store.format", "rayplex.store.pyramid",
                                  "rayplex.store.wire", "rayplex.store.indexer",
                                  "rayplex.store.query"])
def test_store_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------------------- M4 exactness


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_read_series_is_exact_m4_over_random_data_and_segments(tmp_path_factory, data):
    logdir = tmp_path_factory.mktemp("m4")
    n = data.draw(st.integers(1, 400), label="points")
    span = data.draw(st.sampled_from([5, 100, 3000, 1 << 20]), label="span")
    offset = data.draw(st.sampled_from([0, 7, -50]), label="offset")
    steps = data.draw(st.lists(st.integers(offset, offset + span), min_size=n, max_size=n))
    values = data.draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=n, max_size=n))
    points = list(zip(steps, values, strict=True))
    # several appends, indexed in between: several segments (and event files) per series
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    start = 0
    for cut in [*cuts, n]:
        if cut > start:
            write_points(logdir, "r", [("t", s, v) for s, v in points[start:cut]])
            rayplex.index(logdir, compaction=data.draw(st.booleans(), label="compaction"))
        start = max(start, cut)
    buckets = data.draw(st.integers(1, 300), label="buckets")
    lo, hi = min(steps), max(steps)
    if data.draw(st.booleans(), label="zoom"):
        lo = data.draw(st.integers(offset - 3, offset + span), label="lo")
        hi = data.draw(st.integers(lo, offset + span + 3), label="hi")
        frame = rayplex.read_series(logdir, "t", buckets=buckets, steps=(lo, hi), refresh=False)
    else:
        frame = rayplex.read_series(logdir, "t", buckets=buckets, refresh=False)
    expected = brute_m4([(s, f32(v)) for s, v in points], lo, hi, buckets)
    assert rows_of(frame, "r", "t") == expected
    assert len(frame) <= buckets
    assert list(frame.columns) == list(SERIES_COLUMNS)


def test_a_planted_spike_shows_at_every_zoom(tmp_path):
    rng = np.random.default_rng(0)
    n = 20_000
    spike_at = 12_345
    for run in ("a", "b"):
        values = rng.normal(size=n)
        values[spike_at] = 1e6 if run == "a" else -1e6
        write_points(tmp_path, run, [("loss", s, float(v)) for s, v in enumerate(values)])
    rayplex.index(tmp_path)
    for buckets in (1, 2, 3, 7, 10, 100, 999, 1000, 5000, 30_000):
        for steps in (None, (0, n - 1), (spike_at, spike_at), (12_000, 12_999), (5, spike_at)):
            frame = rayplex.read_series(tmp_path, "loss", buckets=buckets, steps=steps, refresh=False)
            a, b = frame[frame.run == "a"], frame[frame.run == "b"]
            assert a["max"].max() == 1e6 and b["min"].min() == -1e6, (buckets, steps)
            hit = a[(a.step_lo <= spike_at) & (a.step_hi >= spike_at)]
            assert len(hit) == 1 and hit["max"].iloc[0] == 1e6
            lo, hi = steps or (0, n - 1)
            assert a["count"].sum() == hi - lo + 1
            assert len(a) <= buckets


def test_read_series_reads_o_buckets_rows_not_every_point(tmp_path, monkeypatch):
    write_points(tmp_path, "r", [("t", s, float(s % 17)) for s in range(50_000)])
    rayplex.index(tmp_path)
    import pyarrow.parquet as pq

    from rayplex.store import query

    seen = []
    real = query._read

    def counting(path, columns, filters):
        table = real(path, columns, filters)
        seen.append(table.num_rows)
        return table

    monkeypatch.setattr(query, "_read", counting)
    frame = rayplex.read_series(tmp_path, "t", buckets=100, steps=(1234, 45_678), refresh=False)
    assert len(frame) <= 100 and frame["count"].sum() == 45_678 - 1234 + 1
    # catalogue (a row or so per series) + the rows planned: O(buckets + levels), not 44k points
    assert sum(seen) < 6 * 100 + 100, seen
    assert pq.ParquetFile(next(tmp_path.glob("store/seg-*.parquet"))).metadata.num_rows == 50_000


def _forty_runs(logdir: Path, steps: int = 20_000) -> None:
    """40 runs r00..r39 of tag ``t``, steps 0..steps-1 with value ``step % 7``, indexed."""
    from rayplex.event_bytes import file_version_record, scalar_records, scalar_tail, tag_header

    tails = [scalar_tail(tag_header("t"))]
    at = np.arange(steps, dtype=np.int64)
    for i in range(40):
        (logdir / f"r{i:02d}").mkdir()
        with open(logdir / f"r{i:02d}" / "events.out.tfevents.1.host", "wb") as f:
            f.write(file_version_record(1.7e9))
            f.write(scalar_records(tails, np.zeros(len(at), np.int64), 1.7e9 + at, at,
                                   (at % 7).astype(np.float64)))
    rayplex.index(logdir)


def test_one_runs_chart_decodes_about_its_own_rows_not_every_runs(tmp_path, monkeypatch):
    """A chart of one run among 40 decodes the Parquet row groups that may hold that run's
    pyramid rows (row-group statistics of run, and small pyramid row groups), not one large
    group with every run's rows of the level it reads."""
    _forty_runs(tmp_path)
    decoded = count_decoded(monkeypatch)
    frame = rayplex.read_series(tmp_path, "t", runs="r17", buckets=1000, refresh=False)
    assert frame["count"].sum() == 20_000 and set(frame.run) == {"r17"}
    assert frame["max"].max() == 6.0
    # r17's 1,250 rows of the level read are in one 8,192-row group, plus the groups that
    # straddle a level boundary (all runs in them): 24,576 rows; before, 65,536 (one group
    # holding every run's rows of the level: 40 x 1,250 = 50,000)
    assert sum(n for _, n in decoded) <= 3 * 8_192, decoded


def test_all_runs_at_a_coarse_level_decode_about_that_levels_rows_not_every_levels(
        tmp_path, monkeypatch):
    """One tag over all 40 runs at 100 buckets decodes level 6 (40 x 313 = 12,520 rows). The
    range's last level-6 bucket (steps 19,968..20,031) is cut by the last step (19,999); no
    point lies past it, so that bucket is read whole too, instead of its part at level 4,
    whose row groups each span every bucket of a few runs (all 50,000 level-4 rows decoded
    for 80 of them). The answer is exactly the M4 buckets of the raw points."""
    _forty_runs(tmp_path)
    decoded = count_decoded(monkeypatch)
    frame = rayplex.read_series(tmp_path, "t", buckets=100, refresh=False)
    pyramid_rows = sum(n for key, n in decoded if key == "bucket")
    raw_rows = sum(n for key, n in decoded if key == "step")
    # level 6's 12,520 rows are row groups of their own (a level starts a row group): before,
    # 70,192 rows (every level-4 group for the ragged end, then 8,192-row groups shared with
    # the neighbouring levels)
    assert 12_520 <= pyramid_rows <= 12_520 + 1_024 and raw_rows == 0, decoded
    width = plan(0, 19_999, 100).width
    at = np.arange(20_000)
    value = (at % 7).astype(np.float64)
    edges = np.flatnonzero(np.r_[True, np.diff(at // width) != 0])
    expected = list(zip((at[edges]).tolist(), np.r_[at[edges[1:] - 1], 19_999].tolist(),
                        value[edges].tolist(), np.r_[value[edges[1:] - 1], value[-1]].tolist(),
                        np.minimum.reduceat(value, edges).tolist(),
                        np.maximum.reduceat(value, edges).tolist(),
                        np.diff(np.r_[edges, 20_000]).tolist(), strict=True))
    for run in ("r00", "r17", "r39"):
        assert rows_of(frame, run, "t") == expected, run
    assert len(frame) == 40 * len(expected)


def test_ends_read_as_whole_coarse_buckets_stay_exact_across_runs_and_segments(tmp_path):
    """Unaligned first and last steps, two runs, two segments each: the range's ends read as
    whole coarse buckets (starting before the range's first step) give the exact M4 rows."""
    series = {"a": [(s, float((s * 37) % 101)) for s in range(3, 2001)],
              "b": [(s, float((s * 53) % 97)) for s in range(5, 1999)]}
    for half in (0, 1):
        for run, points in series.items():
            cut = len(points) // 2
            write_points(tmp_path, run, [("t", s, v) for s, v in
                                         (points[:cut] if half == 0 else points[cut:])])
        rayplex.index(tmp_path)
    for buckets, steps in [(7, None), (3, None), (50, None), (7, (-10, 3000)), (7, (1, 1998))]:
        frame = rayplex.read_series(tmp_path, "t", buckets=buckets, steps=steps, refresh=False)
        lo, hi = steps or (3, 2000)
        for run, points in series.items():
            assert rows_of(frame, run, "t") == brute_m4(points, lo, hi, buckets), (run, steps)


def test_plan_gives_at_most_n_aligned_buckets():
    for lo, hi, n in [(0, 9999, 1000), (3, 3, 5), (-100, 10**12, 7), (5, 1 << 40, 1000), (0, 5, 1)]:
        p = plan(lo, hi, n)
        assert p.width == 0 and n == 1 or p.width % (1 << p.level) == 0
        if p.width:
            assert hi // p.width - lo // p.width + 1 <= n
            assert (1 << p.level) * 4 > -(-(hi - lo + 1) // n) or p.level == 62


def test_equal_steps_resolve_first_and_last_in_reading_order(tmp_path):
    write_points(tmp_path, "r", [("t", 5, 1.0), ("t", 5, 2.0), ("t", 5, 3.0)])
    rayplex.index(tmp_path)
    write_points(tmp_path, "r", [("t", 5, 4.0), ("t", 4, 0.5)])
    frame = rayplex.read_series(tmp_path, "t", buckets=1)
    assert rows_of(frame, "r", "t") == [(4, 5, 0.5, 4.0, 0.5, 4.0, 5)]


# ----------------------------------------------------------------------------- layouts, naming


def test_rayplex_layout_names_runs_as_read_scalars_does(tmp_path):
    tb = tmp_path / "tensorboard"
    for i in range(3):
        write_points(tb, f"agent/{i}", [("agent/reward/0-7", s, float(i * s)) for s in range(50)])
    write_points(tb, "learner", [("main/loss", s, 1.0 / (s + 1)) for s in range(50)])
    (tmp_path / "params" / "learner").mkdir(parents=True)
    (tmp_path / "params" / "learner" / "main.json").write_text(
        json.dumps({"Args": {"lr": 0.001, "layers": [64, 64]}, "name": "ppo"}))
    frame = rayplex.read_series(tmp_path, "*", buckets=10)
    assert sorted(set(frame.run)) == rayplex.read_scalars(tmp_path).runs()
    assert (tmp_path / "store" / "MANIFEST.json").is_file()
    expected = rayplex.read_scalars(tmp_path)
    assert all_points(tmp_path) == sorted((r.run, r.tag, r.step, r.value) for r in expected)
    runs = rayplex.sql(tmp_path, 'SELECT run, "group", client, points FROM runs ORDER BY run')
    assert [[r, g, c if isinstance(c, str) else None, n] for r, g, c, n in runs.values.tolist()] == [
                                    ["agent/0", "agent", "agent/0", 50],
                                    ["agent/1", "agent", "agent/1", 50],
                                    ["agent/2", "agent", "agent/2", 50],
                                    ["learner", "learner", None, 50]]
    params = rayplex.sql(tmp_path, "SELECT run, key, value FROM params ORDER BY key")
    assert params.values.tolist() == [["learner/main", "Args/layers", "[64, 64]"],
                                      ["learner/main", "Args/lr", "0.001"],
                                      ["learner/main", "name", "ppo"]]


def test_any_tensorboard_logdir_runs_are_directories_relative_to_it(tmp_path):
    write_points(tmp_path, ".", [("top", 0, 1.0)])
    write_points(tmp_path, "lightning_logs/version_0", [("train_loss", 0, 2.0)])
    frame = rayplex.read_series(tmp_path, "*")
    assert sorted(zip(frame.run, frame.tag, strict=True)) == [(".", "top"),
                                                 ("lightning_logs/version_0", "train_loss")]


def test_torch_utils_tensorboard_logdir(tmp_path):
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    with torch_tb.SummaryWriter(str(tmp_path / "torchrun")) as writer:
        for step in range(30):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
    frame = rayplex.read_series(tmp_path, "loss", buckets=3)
    assert frame["count"].sum() == 30 and frame["max"].max() == 1.0


def test_tensor_valued_scalars_count_as_read_scalars_counts_them(tmp_path):
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_pb2 import TensorProto

    from rayplex.tfrecord import frame

    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    value = Summary.Value(tag="acc", metadata=meta, tensor=TensorProto(dtype=2, double_val=[0.75]))
    event = Event(step=3, wall_time=1.0, summary=Summary(value=[value]))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.out.tfevents.1").write_bytes(frame(event.SerializeToString()))
    assert rows_of(rayplex.read_series(tmp_path, "acc"), "run", "acc") == [
        (3, 3, 0.75, 0.75, 0.75, 0.75, 1)]


# ----------------------------------------------------------------------------- incremental


def test_incremental_indexing_adds_only_what_is_new(tmp_path):
    write_points(tmp_path, "r", [("t", s, float(s)) for s in range(100)])
    first = rayplex.index(tmp_path)
    assert first.points == 100 and first.segments == 1
    assert rayplex.index(tmp_path).points == 0
    write_points(tmp_path, "r", [("t", s, float(s)) for s in range(100, 250)])
    write_points(tmp_path, "s", [("t", 0, 1.0)])
    assert rayplex.index(tmp_path).points == 151
    points = all_points(tmp_path)
    assert len(points) == len(set(points)) == 251
    assert rayplex.read_series(tmp_path, "t", runs="r")["count"].sum() == 250


def test_a_live_file_is_read_up_to_its_last_whole_record(tmp_path):
    write_points(tmp_path, "r", [("t", s, float(s)) for s in range(10)])
    path = next((tmp_path / "r").glob("*tfevents*"))
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # a writer mid-record
    rayplex.index(tmp_path)
    assert len(all_points(tmp_path)) == 9
    path.write_bytes(whole)  # ... which then finishes it
    rayplex.index(tmp_path)
    assert [p[2] for p in all_points(tmp_path)] == list(range(10))


def test_compaction_merges_segments_atomically_and_keeps_every_point(tmp_path):
    for k in range(10):
        write_points(tmp_path, "r", [("t", k * 10 + s, float(s)) for s in range(10)])
        rayplex.index(tmp_path, compaction=False)
    assert len(Manifest.load(rayplex.store.format.Layout.of(tmp_path)).segments) == 10
    merged = rayplex.store.compact(tmp_path)
    manifest = Manifest.load(rayplex.store.format.Layout.of(tmp_path))
    assert merged == 10 and len(manifest.segments) == 1
    assert sorted(p.name for p in (tmp_path / "store").glob("*.parquet")) == [
        manifest.segments[0].pyr, manifest.segments[0].raw]
    assert [p[2] for p in all_points(tmp_path)] == list(range(100))


def test_store_is_smaller_than_the_event_files(tmp_path):
    rng = np.random.default_rng(1)
    for run in range(4):
        write_points(tmp_path, f"run{run}", [(tag, s, float(rng.normal()))
                                             for s in range(3000) for tag in ("loss", "acc")])
    report = rayplex.index(tmp_path)
    assert report.points == 24_000
    assert 0 < report.ratio <= 1.0, report.ratio


# ----------------------------------------------------------------------------- kills


def _index_in_subprocess(logdir: Path, env: dict[str, str] | None = None,
                         segment_rows: int = 40) -> subprocess.Popen:
    code = (f"import rayplex; rayplex.index({str(logdir)!r}, segment_rows={segment_rows})")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **(env or {}),
                            "PYTHONPATH": str(REPO)})


def _kill_logdir(tmp_path: Path) -> list[tuple]:
    expected = []
    for run in ("a", "b/0", "b/1"):
        points = [("x", s, float(s)) for s in range(150)] + [("y", s, -float(s)) for s in range(50)]
        write_points(tmp_path, run, points)
        expected += [(run, tag, step, value) for tag, step, value in points]
    return sorted(expected)


@pytest.mark.parametrize("stage", ["raw-written:1", "pyramid-written:2", "committed:3",
                                   "compact-written:1", "committed:16", "record-half:3"])
def test_sigkill_at_each_stage_loses_and_duplicates_nothing(tmp_path, stage):
    expected = _kill_logdir(tmp_path)
    killed = _index_in_subprocess(tmp_path, {"RAYPLEX_STORE_KILL_AT": stage})
    assert killed.wait(timeout=300) == -signal.SIGKILL
    report = rayplex.index(tmp_path)
    assert all_points(tmp_path) == expected
    if stage.startswith(("raw", "pyramid", "compact")):
        assert report.orphans_removed  # the killed run's uncommitted files
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".tmp-")]
    layout = rayplex.store.format.Layout.of(tmp_path)
    manifest, end = Manifest.read(layout)
    assert manifest.log and (layout.store / manifest.log).stat().st_size == end  # no torn tail


@pytest.mark.slow
def test_sigkill_at_random_times_loses_and_duplicates_nothing(tmp_path):
    expected = _kill_logdir(tmp_path)
    rng = random.Random(23)
    kills = 0
    for _ in range(30):
        proc = _index_in_subprocess(tmp_path)
        # wait for some progress (k new files in the store, or the end), then kill at random
        before = len(list((tmp_path / "store").glob("*.parquet"))) if (tmp_path / "store").exists() else 0
        want = before + rng.randint(1, 4)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            store = tmp_path / "store"
            if store.exists() and len(list(store.glob("*.parquet"))) >= want:
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        if proc.wait(timeout=120) == 0:
            break
    assert kills >= 1
    rayplex.index(tmp_path)
    assert all_points(tmp_path) == expected


_COMPACT_KILLED = """
import os, signal, sys
from pathlib import Path
import rayplex
import rayplex.store.indexer as indexer
from tests.test_store import write_points

logdir, stage = Path(sys.argv[1]), sys.argv[2]
real = indexer._stage

def at(name):
    if name == stage:  # an indexer commits new points here, then the compaction is killed
        write_points(logdir, "c", [("x", s, float(s)) for s in range(100)])
        rayplex.index(logdir, compaction=False, segment_rows=40)
        os.kill(os.getpid(), signal.SIGKILL)
    real(name)

indexer._stage = at
rayplex.store.compact(logdir)
"""


@pytest.mark.parametrize("stage", ["compact-reserved", "compact-written", "compact-committed"])
def test_a_compaction_killed_at_each_step_while_an_indexer_commits_loses_nothing(tmp_path,
                                                                                   stage):
    """Compaction merges without the store's lock: an indexer commits new points between its
    steps (its id reserved, its files written, its merge committed), then it is SIGKILLed.
    The next indexer loses and duplicates nothing, reuses no segment id and leaves no orphan."""
    expected = _kill_logdir(tmp_path)
    rayplex.index(tmp_path, segment_rows=40, compaction=False)
    proc = subprocess.Popen([sys.executable, "-c", _COMPACT_KILLED, str(tmp_path), stage],
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL
    finally:
        proc.kill()
    expected = sorted(expected + [("c", "x", s, float(s)) for s in range(100)])
    assert all_points(tmp_path) == expected  # the indexer's points are in, once
    rayplex.index(tmp_path, segment_rows=40)
    assert all_points(tmp_path) == expected
    layout = rayplex.store.format.Layout.of(tmp_path)
    manifest = Manifest.load(layout)
    ids = [seg.id for seg in manifest.segments]
    assert len(set(ids)) == len(ids) and len(ids) < 10
    listed = {name for seg in manifest.segments for name in seg.files}
    from rayplex.store.format import SEGMENT_FILE

    assert {p.name for p in layout.store.iterdir() if SEGMENT_FILE.match(p.name)} == listed


# ----------------------------------------------------------------------------- torn, orphan


def test_a_torn_segment_is_skipped_and_reported_then_rebuilt(tmp_path):
    write_points(tmp_path, "r", [("t", s, float(s)) for s in range(100)])
    rayplex.index(tmp_path)
    write_points(tmp_path, "r", [("t", s, float(s)) for s in range(100, 130)])
    rayplex.index(tmp_path)
    manifest = Manifest.load(rayplex.store.format.Layout.of(tmp_path))
    torn = tmp_path / "store" / manifest.segments[-1].raw
    torn.write_bytes(torn.read_bytes()[:-20])
    with pytest.warns(StoreWarning, match=manifest.segments[-1].raw):
        frame = rayplex.read_series(tmp_path, "t", refresh=False)
    assert frame.attrs["skipped_segments"] == [manifest.segments[-1].raw]
    assert frame["count"].sum() == 100
    with pytest.warns(StoreWarning):
        assert rayplex.sql(tmp_path, "SELECT count(*) AS n FROM scalars", refresh=False).n[0] == 100
    report = rayplex.index(tmp_path)
    assert report.rebuilt == [manifest.segments[-1].raw]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [p[2] for p in all_points(tmp_path)] == list(range(130))


def test_a_round_opens_only_new_or_changed_segments_and_still_rebuilds_a_torn_one(
        tmp_path, monkeypatch):
    """A round checks that the listed segments are whole; a segment it found whole that stats
    the same (immutable files) is not opened again, so a round's cost does not grow with the
    store: only new or changed files are opened, and a torn one is still rebuilt."""
    import rayplex.store.indexer as indexer

    opened = []
    real = indexer.segment_ok
    monkeypatch.setattr(indexer, "segment_ok",
                        lambda layout, seg: opened.append(seg.id) or real(layout, seg))
    for k in range(5):
        write_points(tmp_path, "r", [("t", 10 * k + s, float(s)) for s in range(10)])
        rayplex.index(tmp_path, compaction=False)
    rayplex.index(tmp_path, compaction=False)
    assert opened == [1, 2, 3, 4, 5]  # each segment once, in the round after its own
    opened.clear()
    rayplex.index(tmp_path, compaction=False)
    assert opened == []
    manifest = Manifest.load(rayplex.store.format.Layout.of(tmp_path))
    torn = tmp_path / "store" / manifest.segments[2].raw
    torn.write_bytes(torn.read_bytes()[:-20])
    report = rayplex.index(tmp_path, compaction=False)
    assert opened == [manifest.segments[2].id] and report.rebuilt == [torn.name]
    assert [p[2] for p in all_points(tmp_path)] == list(range(50))


def test_an_orphan_segment_is_ignored_by_readers_and_removed_by_the_indexer(tmp_path):
    write_points(tmp_path, "r", [("t", s, 1.0) for s in range(10)])
    rayplex.index(tmp_path)
    seg = next((tmp_path / "store").glob("seg-*.parquet"))
    orphan = seg.with_name("seg-99999999.parquet")
    orphan.write_bytes(seg.read_bytes())
    assert rayplex.read_series(tmp_path, "t", refresh=False)["count"].sum() == 10
    assert len(all_points(tmp_path)) == 10
    assert rayplex.index(tmp_path).orphans_removed == ["seg-99999999.parquet"]
    assert not orphan.exists()


# ----------------------------------------------------------------------------- sql


def test_sql_examples_argmax_mean_curve_params_join(tmp_path):
    tb = tmp_path / "tensorboard"
    for i in range(4):
        write_points(tb, f"agent/{i}", [("reward", s, float(i * 10 + s)) for s in range(5)])
        (tmp_path / "params" / "agent").mkdir(parents=True, exist_ok=True)
        (tmp_path / "params" / "agent" / f"{i}.json").write_text(json.dumps({"lr": 0.1 * i}))
    best = rayplex.sql(tmp_path, "SELECT arg_max(run, value) AS run, max(value) AS best "
                                 "FROM scalars WHERE tag = 'reward'")
    assert best.values.tolist() == [["agent/3", 34.0]]
    mean = rayplex.sql(tmp_path, "SELECT r.\"group\", s.step, avg(s.value) AS mean FROM scalars s "
                                 "JOIN runs r USING (run) GROUP BY ALL ORDER BY step")
    assert mean["mean"].tolist() == [15.0, 16.0, 17.0, 18.0, 19.0]
    joined = rayplex.sql(tmp_path, """
        SELECT p.run, CAST(p.value AS DOUBLE) AS lr, last(s.value ORDER BY s.step) AS final
        FROM params p JOIN scalars s ON s.run = p.run
        WHERE p.key = 'lr' AND s.tag = 'reward' GROUP BY ALL ORDER BY lr""")
    assert joined.final.tolist() == [4.0, 14.0, 24.0, 34.0]


@pytest.mark.parametrize("query", [
    "COPY (SELECT 1) TO 'out.csv'",
    "COPY scalars TO 'store/x.parquet'",
    "ATTACH 'other.db' AS other",
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO params VALUES ('a', 'b', 'c')",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "SELECT 1; SELECT 2",
    "",
])
def test_sql_refuses_anything_but_one_select(tmp_path, query):
    write_points(tmp_path, "r", [("t", 0, 1.0)])
    rayplex.index(tmp_path)
    before = sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="read-only"):
        rayplex.sql(tmp_path, query, refresh=False)
    assert sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*")) == before


def test_sql_cannot_read_or_write_other_files(tmp_path):
    import duckdb

    write_points(tmp_path, "r", [("t", 0, 1.0)])
    rayplex.index(tmp_path)
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for query in (f"SELECT * FROM read_csv('{secret}')", "SELECT * FROM read_text('/etc/hostname')",
                  f"SELECT * FROM read_parquet('{tmp_path}/store/*.parquet')"):
        with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
            rayplex.sql(tmp_path, query, refresh=False)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"buckets": 0}, "buckets"), ({"buckets": -3}, "buckets"), ({"buckets": 2.5}, "buckets"),
    ({"buckets": True}, "buckets"), ({"buckets": "10"}, "buckets"),
    ({"steps": (5, 1)}, "steps"), ({"steps": (1,)}, "steps"), ({"steps": "ab"}, "steps"),
    ({"steps": (1.5, 2)}, "steps"), ({"steps": 7}, "steps"), ({"steps": (None, 3)}, "steps"),
    ({"runs": 3}, "runs"), ({"runs": []}, "runs"),
])
def test_malformed_arguments_raise_value_error_naming_them(tmp_path, kwargs, name):
    write_points(tmp_path, "r", [("t", 0, 1.0)])
    with pytest.raises(ValueError, match=name):
        rayplex.read_series(tmp_path, "t", **kwargs)


def test_unknown_patterns_give_an_empty_frame(tmp_path):
    write_points(tmp_path, "r", [("t", 0, 1.0)])
    for kwargs in ({"tag": "nope"}, {"tag": "t", "runs": "zzz*"}):
        frame = rayplex.read_series(tmp_path, **kwargs)
        assert frame.empty and list(frame.columns) == list(SERIES_COLUMNS)
    assert rayplex.read_series(tmp_path, "t", steps=(10, 20)).empty
    table = rayplex.read_series(tmp_path, "nope", as_arrow=True)
    assert table.num_rows == 0 and table.column_names == list(SERIES_COLUMNS)


def test_missing_logdir_and_store_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rayplex.read_series(tmp_path / "nope", "t")
    write_points(tmp_path, "r", [("t", 0, 1.0)])
    with pytest.raises(FileNotFoundError, match="rayplex index"):
        rayplex.read_series(tmp_path, "t", refresh=False)


def _fresh_python(code: str, logdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter (``sys.argv[1]`` is ``logdir``): what it imports is
    its own."""
    return subprocess.run([sys.executable, "-c", code, str(logdir)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_cold_read_imports_only_what_it_needs(tmp_path):
    # a fresh process that reads pays for its imports: `import rayplex` imports neither Ray
    # nor pandas/pyarrow/duckdb, and read_series then imports pandas and pyarrow, not duckdb
    write_points(tmp_path, "r", [("t", s, float(s)) for s in range(10)])
    rayplex.index(tmp_path)
    code = ("import sys, rayplex\n"
            "heavy = ('ray', 'pandas', 'pyarrow', 'duckdb')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "frame = rayplex.read_series(sys.argv[1], 't', refresh=False)\n"
            "print(sorted(m for m in heavy if m in sys.modules), int(frame['count'].sum()))\n")
    done = _fresh_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "['pandas', 'pyarrow'] 10"]


def test_without_duckdb_read_series_names_the_extra(tmp_path):
    write_points(tmp_path, "r", [("t", 0, 1.0)])
    code = ("import sys; sys.modules['duckdb'] = None\n"
            "import rayplex\n"
            "for call in (lambda: rayplex.read_series(sys.argv[1], 't'),\n"
            "             lambda: rayplex.sql(sys.argv[1], 'SELECT 1'),\n"
            "             lambda: rayplex.index(sys.argv[1])):\n"
            "    try:\n"
            "        call()\n"
            "    except ImportError as exc:\n"
            "        print(exc)\n")
    done = _fresh_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and all('pip install "rayplex[store]"' in line for line in lines)
    assert all("duckdb" in line for line in lines)
    assert not (tmp_path / "store").exists()


# ----------------------------------------------------------------------------- CLI


def test_cli_index_builds_the_store_and_reports(tmp_path, capsys):
    from rayplex.cli import main

    write_points(tmp_path, "r", [("t", s, float(s)) for s in range(20)])
    assert main(["index", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "indexed 20 points" in out and "x the event files" in out
    assert main(["index", str(tmp_path)]) == 0
    assert "indexed 0 points" in capsys.readouterr().out
    assert main(["index", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["index", "--help"])
    assert exc.value.code == 0 and "--no-compact" in capsys.readouterr().out


def test_readers_see_whole_commits_while_an_indexer_appends_and_compacts(tmp_path):
    write_points(tmp_path, "r", [("t", s, 1.0) for s in range(20)])
    rayplex.index(tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[2]); import rayplex\n"
            "from tests.test_store import write_points\n"
            "from pathlib import Path\n"
            "for k in range(1, 13):\n"
            "    write_points(Path(sys.argv[1]), 'r', [('t', 20 * k + s, 1.0) for s in range(20)])\n"
            "    rayplex.index(sys.argv[1])\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(REPO)],
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a segment taken for torn would warn
        while proc.poll() is None or not seen:
            seen.append(int(rayplex.read_series(tmp_path, "t", refresh=False)["count"].sum()))
            seen.append(int(rayplex.sql(tmp_path, "SELECT count(*) AS n FROM scalars",
                                        refresh=False).n[0]))
    assert proc.wait(timeout=60) == 0
    assert all(n % 20 == 0 for n in seen) and seen == sorted(seen), seen
    assert rayplex.read_series(tmp_path, "t", refresh=False)["count"].sum() == 260
    assert len(Manifest.load(rayplex.store.format.Layout.of(tmp_path)).segments) < 13


# ----------------------------------------------------------------------------- bulk decoder


def _reference_scalars(blob: bytes) -> list[tuple[str, int, float, float]]:
    """What read_scalars takes from the records: one by one, protobuf and logdir_codec.scalar_of."""
    from tensorboard.compat.proto.event_pb2 import Event

    from rayplex.logdir_codec import scalar_of
    from rayplex.tfrecord import iter_records

    out = []
    for payload in iter_records(blob):
        event = Event.FromString(payload)
        for value in event.summary.value:
            scalar = scalar_of(value)
            if scalar is not None:
                out.append((value.tag, event.step, event.wall_time, scalar))
    return out


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_bulk_decoder_agrees_with_protobuf_record_by_record(data):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    from rayplex.event_bytes import file_version_record, scalar_records, scalar_tail, tag_header
    from rayplex.store.wire import decode_chunk
    from rayplex.tfrecord import frame

    tags = data.draw(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4,
                              unique=True), label="tags")
    parts = [file_version_record(1.0)]
    for _ in range(data.draw(st.integers(1, 6), label="blocks")):
        if data.draw(st.booleans(), label="template block"):  # the hub's records
            n = data.draw(st.integers(1, 80))
            steps = np.array(data.draw(st.lists(st.sampled_from(
                [0, 1, 127, 128, 16_383, 16_384, 1 << 21, 1 << 40, -1, -(1 << 40)]),
                min_size=n, max_size=n)), np.int64)
            index = np.array(data.draw(st.lists(st.integers(0, len(tags) - 1), min_size=n,
                                                max_size=n)), np.int64)
            values = np.array(data.draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=n,
                                                 max_size=n)))
            parts.append(scalar_records([scalar_tail(tag_header(t)) for t in tags], index,
                                        1.7e9 + np.arange(n), steps, values))
        else:  # several values in one event, step 0 omitted, other kinds: the general path
            values = [Summary.Value(tag=t, simple_value=float(i)) for i, t in enumerate(tags)]
            values.append(Summary.Value(tag="text", tensor={"dtype": 7, "string_val": [b"x"]}))
            event = Event(step=data.draw(st.integers(0, 5)), wall_time=2.5,
                          summary=Summary(value=values))
            parts.append(frame(event.SerializeToString()))
    blob = b"".join(parts)
    if data.draw(st.booleans(), label="damage"):
        cut = data.draw(st.integers(0, len(blob) - 1), label="at")
        if data.draw(st.booleans(), label="torn"):
            blob = blob[:cut]
        else:
            blob = blob[:cut] + bytes([blob[cut] ^ 0x40]) + blob[cut + 1:]
    chunk = decode_chunk(blob)
    got = [(chunk.tags[t], s, w, v) for t, s, w, v in zip(
        chunk.tag.tolist(), chunk.step.tolist(), chunk.wall_time.tolist(), chunk.value.tolist(),
        strict=True)]
    assert got == _reference_scalars(blob)
    from rayplex.tfrecord import iter_records

    assert chunk.used == sum(len(p) + 16 for p in iter_records(blob))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_bulk_decoder_agrees_on_long_cyclic_runs_with_damage_anywhere(data):
    # the hub's files: tags in turn, hundreds of records whose lengths repeat a short cycle
    # (framed by checking the predicted headers at once) and change where the step's varint
    # grows; payload CRCs from the bytes that differ. A flipped byte anywhere (a header, a
    # tag byte every other record shares, a value) or a cut ends the chunk where one by one
    # reading ends.
    from rayplex.event_bytes import file_version_record, scalar_records, scalar_tail, tag_header
    from rayplex.store.wire import decode_chunk
    from rayplex.tfrecord import iter_records

    tags = data.draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4,
                              unique=True), label="tags")
    n = data.draw(st.integers(20, 2000), label="steps")
    first = data.draw(st.sampled_from([0, 100, 16_300]), label="first step")
    steps = np.repeat(np.arange(first, first + n, dtype=np.int64), len(tags))
    index = np.tile(np.arange(len(tags)), n)
    values = np.random.default_rng(n).random(len(steps))
    blob = file_version_record(1.0) + scalar_records(
        [scalar_tail(tag_header(t)) for t in tags], index, 1.7e9 + steps * 0.01, steps, values)
    starts = [0]
    while starts[-1] < len(blob):
        starts.append(starts[-1] + int.from_bytes(blob[starts[-1]:starts[-1] + 8], "little")
                      + 16)
    damage = data.draw(st.sampled_from(["none", "torn", "flip"]), label="damage")
    if damage != "none":  # a byte of one record: its length, header CRC, payload or its CRC
        record = data.draw(st.integers(1, len(starts) - 2), label="record")
        size = starts[record + 1] - starts[record]
        cut = starts[record] + data.draw(st.sampled_from(
            [0, 3, 8, 11, 12, 13, size - 9, size - 5, size - 1]), label="offset in record")
        blob = blob[:cut] if damage == "torn" else \
            blob[:cut] + bytes([blob[cut] ^ 0x01]) + blob[cut + 1:]
    chunk = decode_chunk(blob)
    got = [(chunk.tags[t], s, w, v) for t, s, w, v in zip(
        chunk.tag.tolist(), chunk.step.tolist(), chunk.wall_time.tolist(), chunk.value.tolist(),
        strict=True)]
    assert got == _reference_scalars(blob)
    assert chunk.used == sum(len(p) + 16 for p in iter_records(blob))
    if damage == "none":
        assert len(got) == len(steps)


# ----------------------------------------------------------------------------- manifest size


def _append_round(logdir: Path, runs: int, step: int) -> None:
    """One live-feed-like round: one scalar record appended to each run's one event file."""
    from rayplex.event_bytes import scalar_record, tag_header

    for i in range(runs):
        path = logdir / f"run-with-a-long-name-like-a-worker/{i}" / "events.out.tfevents.1.host"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(scalar_record(tag_header("loss"), 1.0 + step, step, float(step)))


def _manifest_files(logdir: Path) -> dict[str, tuple[int, int, int]]:
    """``{name: (inode, mtime_ns, size)}`` of the store's manifest files (snapshot and log)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in (logdir / "store").glob("MANIFEST*")}


def test_the_stores_version_changes_with_every_commit_also_one_only_appended_to_the_log(tmp_path):
    # a reader polling for new points (the viewer) asks the store's version: a commit that
    # leaves the snapshot alone must change it too
    layout = rayplex.store.format.Layout.of(tmp_path)
    assert layout.version() == "none"
    seen = []
    for step in range(4):
        _append_round(tmp_path, 3, step)
        rayplex.index(tmp_path, compaction=False)
        seen.append(layout.version())
        assert layout.version() == seen[-1]  # stable while nothing commits
    assert len(set(seen)) == 4, seen


def test_a_commit_appends_a_record_and_leaves_the_snapshot_alone(tmp_path):
    """40 live-feed-like rounds over 60 files: each commit appends one record (its segment and
    the 60 cursors it moved) to the manifest log; the snapshot MANIFEST.json is not rewritten
    (beyond the first commit and rare checkpoints), so what a commit writes does not grow with
    the segments and files already committed."""
    written, rewrites = [], 0
    for step in range(40):
        _append_round(tmp_path, 60, step)
        before = _manifest_files(tmp_path)
        rayplex.index(tmp_path, compaction=False)
        after = _manifest_files(tmp_path)
        snapshot_rewritten = before.get("MANIFEST.json") != after["MANIFEST.json"]
        rewrites += snapshot_rewritten
        grown = sum(size - (before[name][2] if name in before and before[name][0] == ino else 0)
                    for name, (ino, _, size) in after.items() if name != "MANIFEST.json")
        written.append(grown + (after["MANIFEST.json"][2] if snapshot_rewritten else 0))
    assert rewrites <= 2, rewrites  # 40 before: every commit rewrote it whole
    early, late = sum(written[2:12]) / 10, sum(written[-10:]) / 10
    assert late < 1.1 * early, (early, late)  # before: 4.9 kB -> 7.1 kB a commit
    assert len(all_points(tmp_path)) == 40 * 60
    manifest = Manifest.load(rayplex.store.format.Layout.of(tmp_path))
    assert len(manifest.segments) == 40 and len(manifest.cursors) == 60
    torn = tmp_path / "store" / "seg-00000003.parquet"
    torn.write_bytes(torn.read_bytes()[:100])  # its ranges come from its src file
    report = rayplex.index(tmp_path)
    assert report.rebuilt == ["seg-00000003.parquet"]
    assert all_points(tmp_path) == sorted(
        (f"run-with-a-long-name-like-a-worker/{i}", "loss", s, float(s))
        for i in range(60) for s in range(40))


def test_manifest_log_replay_stops_at_a_torn_or_damaged_record():
    """Plain objects: records apply in order; a record cut anywhere, or with a flipped byte,
    and everything after it, is ignored."""
    from rayplex.store.format import Change, Segment, TagStat

    changes = [Change(next_id=k + 2, next_seq=10 * (k + 1), add=[Segment(k + 1, 10, 5, 6, 2)],
                      cursors={f"r{k}/ev": 100 * k, "r0/ev": 7 * k},
                      tags={"r": {"h": TagStat("histogram", 1, k, k, 1.0, 2 * k, 2 * k, None)}})
               for k in range(4)]
    changes.append(Change(next_id=7, next_seq=40, add=[Segment(6, 30, 1, 1, 4)], drop=[2, 3, 4]))
    lines = [c.line() for c in changes]
    blob = b"".join(lines)
    for cut in range(len(blob) + 1):
        whole = 0
        while whole < len(lines) and len(b"".join(lines[:whole + 1])) <= cut:
            whole += 1
        expected = Manifest.empty()
        for change in changes[:whole]:
            expected.apply(change)
        got = Manifest.empty()
        assert got.replay(blob[:cut]) == len(b"".join(lines[:whole]))
        assert got == expected, cut
    assert [s.id for s in expected.segments] == [1, 6]
    assert expected.tags == {"r": {"h": TagStat("histogram", 4, 0, 3, 1.0, 0, 6, None)}}
    damaged = bytearray(blob)
    damaged[len(lines[0]) + 30] ^= 0x01
    got = Manifest.empty()
    assert got.replay(bytes(damaged)) == len(lines[0])
    assert [s.id for s in got.segments] == [1]


def test_the_snapshot_alone_is_a_consistent_older_store(tmp_path):
    """MANIFEST.json without its log (what a copy that ships only the snapshot has) names only
    segment files that exist, with cursors that match them: indexing such a copy loses and
    duplicates nothing, even across compactions and rebuilds."""
    import shutil

    expected = []
    for k in range(12):
        points = [("t", 10 * k + s, float(k)) for s in range(10)]
        write_points(tmp_path, "r", points)
        expected += [("r", *p) for p in points]
        rayplex.index(tmp_path)
        snapshot = Manifest.from_json((tmp_path / "store" / "MANIFEST.json").read_bytes())
        for seg in snapshot.segments:
            for name in seg.files:
                assert (tmp_path / "store" / name).is_file(), (k, name)
    copy = tmp_path.parent / (tmp_path.name + "-copy")
    shutil.copytree(tmp_path, copy)
    for log in (copy / "store").glob("MANIFEST-*"):
        log.unlink()
    rayplex.index(copy)
    assert all_points(copy) == sorted(expected) == all_points(tmp_path)


def test_sigkill_between_a_segments_ranges_and_its_commit_leaves_no_trace(tmp_path):
    expected = _kill_logdir(tmp_path)
    killed = _index_in_subprocess(tmp_path, {"RAYPLEX_STORE_KILL_AT": "raw-written:2"})
    assert killed.wait(timeout=300) == -signal.SIGKILL
    listed = Manifest.load(rayplex.store.format.Layout.of(tmp_path)).segments
    srcs = {p.name for p in (tmp_path / "store").glob("src-*.json")}
    assert len(srcs) == len(listed) + 1  # the killed round's ranges, not committed
    report = rayplex.index(tmp_path)
    assert any(name.startswith("src-") for name in report.orphans_removed)
    assert all_points(tmp_path) == expected
    manifest = Manifest.load(rayplex.store.format.Layout.of(tmp_path))
    assert {p.name for p in (tmp_path / "store").glob("src-*.json")} == {
        seg.src for seg in manifest.segments}


def test_points_sort_by_tag_run_step_seq_whatever_their_order():
    """Plain objects: a segment's points are ordered by (tag, run, step, seq) whether they come
    in reading order, with steps going back, with equal steps, or with seqs out of order (as
    compaction concatenates segments)."""
    from rayplex.store.indexer import _Points

    rng = np.random.default_rng(23)
    for case in range(40):
        n, runs, tags = int(rng.integers(1, 400)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
        run, tag = rng.integers(0, runs, n), rng.integers(0, tags, n)
        step = np.arange(n) // int(rng.integers(1, 4))  # rising, with ties
        if case % 3 == 1:
            step = rng.integers(0, 20, n)  # going back
        seq = np.arange(n) if case % 2 else rng.permutation(n)
        points = _Points(run, [f"r{i}" for i in range(runs)], tag, [f"t{i}" for i in range(tags)],
                         step, step * 0.5, rng.random(n), seq)
        order = np.lexsort((seq, step, run, tag))
        got = points.sorted()
        assert got.seq.tolist() == seq[order].tolist(), case
        assert got.step.tolist() == step[order].tolist() and got.value.tolist() == \
            points.value[order].tolist()


# ----------------------------------------------------------------------------- batched decode


def _small_file(data, tags: list[str], name: str) -> bytes:
    """A small event file: the hub's records, a general-path event, or nothing; maybe torn or
    with a flipped byte."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    from rayplex.event_bytes import file_version_record, scalar_records, scalar_tail, tag_header
    from rayplex.tfrecord import frame

    kind = data.draw(st.sampled_from(["hub", "hub", "general", "version", "empty"]), label=name)
    if kind == "empty":
        return b""
    blob = file_version_record(1.0)
    if kind == "hub":
        n = data.draw(st.integers(1, 300), label=f"{name} steps")
        steps = np.repeat(np.arange(n, dtype=np.int64), len(tags))
        blob += scalar_records([scalar_tail(tag_header(t)) for t in tags],
                               np.tile(np.arange(len(tags)), n), 1.7e9 + steps * 0.01, steps,
                               np.random.default_rng(n).random(len(steps)))
    elif kind == "general":
        values = [Summary.Value(tag=t, simple_value=float(i)) for i, t in enumerate(tags)]
        values.append(Summary.Value(tag="text", tensor={"dtype": 7, "string_val": [b"x"]}))
        blob += frame(Event(step=3, wall_time=2.5, summary=Summary(value=values))
                      .SerializeToString())
    damage = data.draw(st.sampled_from(["none", "none", "torn", "flip"]), label=f"{name} damage")
    if damage != "none":
        cut = data.draw(st.integers(0, len(blob) - 1), label=f"{name} at")
        blob = blob[:cut] if damage == "torn" else \
            blob[:cut] + bytes([blob[cut] ^ 0x01]) + blob[cut + 1:]
    return blob


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_small_files_decoded_together_give_what_each_decoded_alone_gives(tmp_path_factory, data):
    # many small event files (a Tune sweep) are joined and decoded in one call; a torn,
    # damaged, empty or scalar-less file among them is cut back exactly where reading it
    # alone ends, and the files after it are still read
    from rayplex.store import indexer
    from rayplex.tfrecord import iter_records

    root = tmp_path_factory.mktemp("batch")
    tags = data.draw(st.lists(st.sampled_from(["a", "loss", "tune/reward", "é"]), min_size=1,
                              max_size=3, unique=True), label="tags")
    todo = []
    for i in range(data.draw(st.integers(1, 12), label="files")):
        path = root / f"events.{i}"
        path.write_bytes(_small_file(data, tags, f"file {i}"))
        start = data.draw(st.sampled_from([0, 0, 24]), label=f"file {i} start")
        size = path.stat().st_size
        if start <= size:  # 24: after the version record (a cursor)
            todo.append((f"run{i}", f"k{i}", path, start, size))
    got: dict[str, list[tuple]] = {}
    used: dict[str, int] = {}
    for run, key, at, chunk in indexer._file_chunks(todo):
        assert at == dict((k, s) for _, k, _, s, _ in todo)[key] + used.get(key, 0)
        got.setdefault(key, []).extend(
            (run, chunk.tags[t], s, w, v) for t, s, w, v in zip(
                chunk.tag.tolist(), chunk.step.tolist(), chunk.wall_time.tolist(),
                chunk.value.tolist(), strict=True))
        used[key] = used.get(key, 0) + chunk.used
    for run, key, path, start, _ in todo:
        blob = path.read_bytes()[start:]
        assert got.get(key, []) == [(run, *s) for s in _reference_scalars(blob)], key
        assert used.get(key, 0) == sum(len(p) + 16 for p in iter_records(blob)), key


def test_a_sweeps_store_is_the_same_decoded_in_batches_or_file_by_file(tmp_path, monkeypatch):
    # the store of many small files (some torn, one damaged) holds the same rows, seqs and
    # cursors whether the files were joined for decoding or decoded one at a time (the old way)
    import shutil

    import pyarrow.parquet as pq

    from rayplex.event_bytes import file_version_record, scalar_records, scalar_tail, tag_header
    from rayplex.store import indexer
    from rayplex.store.format import Layout

    tails = [scalar_tail(tag_header(t)) for t in ("x", "y")]
    steps = np.repeat(np.arange(1, 31, dtype=np.int64), 2)
    for run in range(40):  # the hub's records (tensorboardX's take a few seconds a file here)
        (tmp_path / "a" / f"r{run}").mkdir(parents=True)
        (tmp_path / "a" / f"r{run}" / "events.out.tfevents.1").write_bytes(
            file_version_record(1.0) + scalar_records(tails, np.tile([0, 1], 30), 1.7e9 + steps,
                                                      steps, run * steps.astype(float)))
    paths = sorted((tmp_path / "a").glob("r*/*tfevents*"))
    paths[5].write_bytes(paths[5].read_bytes()[:-9])  # a writer mid-record
    damaged = bytearray(paths[17].read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    paths[17].write_bytes(bytes(damaged))
    shutil.copytree(tmp_path / "a", tmp_path / "b")

    def store(logdir: Path) -> tuple[list[dict], dict[str, int]]:
        layout = Layout.of(logdir)
        manifest = Manifest.load(layout)
        rows = [row for seg in manifest.segments
                for row in pq.read_table(layout.store / seg.raw).to_pylist()]
        return sorted(rows, key=lambda r: r["seq"]), manifest.cursors

    calls = []
    real = indexer.decode_chunk
    monkeypatch.setattr(indexer, "decode_chunk", lambda blob: calls.append(1) or real(blob))
    batched = rayplex.index(tmp_path / "a")
    joined_calls = len(calls)
    monkeypatch.setattr(indexer, "INDEX_READ_CHUNK_BYTES", 1)  # no file is small: one by one
    calls.clear()
    alone = rayplex.index(tmp_path / "b")
    assert joined_calls < 10 < len(calls)
    readable = sum(len(_reference_scalars(p.read_bytes())) for p in paths)
    assert batched.points == alone.points == readable < 40 * 60
    assert store(tmp_path / "a") == store(tmp_path / "b")
