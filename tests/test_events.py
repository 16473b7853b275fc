"""Event files (rayplex.events): EventWriter and the bounded WriterPool, as plain objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from rayplex.event_bytes import ScalarTemplate, tag_header
from rayplex.events import EventWriter, WriterPool, default_max_open, event_file_name

REPO = str(Path(__file__).resolve().parent.parent)
TEMPLATE = ScalarTemplate(tag_header("run/value"))


def _record(step: int, value: float) -> bytes:
    return TEMPLATE.record(1_700_000_000.0 + step, step, value)


def _value_of(run: str) -> float:
    return float(int(run.rsplit("/", 1)[1]))


def _transaction(pool: WriterPool, runs: list[str], step: int) -> None:
    """What a hub transaction does: get every writer first, then write them, then flush."""
    writers = {run: pool.get(run) for run in runs}
    for run, writer in writers.items():
        writer.write(_record(step, _value_of(run)))
    for writer in writers.values():
        writer.flush()


def _tensorboard_points(tensorboard_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{run: sorted [(step, value)]}`` read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(tensorboard_dir.rglob("events.out.tfevents.*")):
        run = path.parent.relative_to(tensorboard_dir).as_posix()
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    number = value.simple_value
                else:
                    number = float(tensor_util.make_ndarray(value.tensor).item())
                points[run].append((event.step, number))
    return {run: sorted(p) for run, p in points.items()}


# ----------------------------------------------------------------------------- EventWriter


def test_event_file_names_sort_in_the_order_they_were_opened():
    names = [event_file_name(1_700_000_000.0) for _ in range(50)]
    assert sorted(names) == names
    assert len(set(names)) == len(names)


def test_a_writer_keeps_its_path_and_counts_the_bytes_it_wrote(tmp_path):
    with EventWriter(tmp_path / "run") as writer:
        before = writer.bytes_written
        record = _record(1, 0.5)
        writer.write(record)
        assert writer.bytes_written == before + len(record)
    assert writer.closed
    assert os.path.getsize(writer.path) == writer.bytes_written
    writer.close()  # twice is fine


# ----------------------------------------------------------------------------- WriterPool


def test_1500_runs_through_a_pool_of_64_are_all_written_and_read_back_by_tensorboard(tmp_path):
    pool = WriterPool(tmp_path, max_open=64)
    runs = [f"agent/{i}" for i in range(1500)]
    for step in range(2):
        for start in range(0, len(runs), 10):
            _transaction(pool, runs[start : start + 10], step)
            assert len(pool.open_writers()) <= 64
    pool.close_all()
    assert pool.open_writers() == []
    assert pool.runs() == sorted(runs)
    assert pool.files_opened == 3000  # every run was closed by the LRU before its second step
    points = _tensorboard_points(tmp_path)
    assert points == {run: [(0, _value_of(run)), (1, _value_of(run))] for run in runs}


def test_a_reopened_run_gets_a_new_file_and_the_old_one_is_never_touched_again(tmp_path):
    pool = WriterPool(tmp_path, max_open=1)
    _transaction(pool, ["a/1"], 0)
    first = pool.get("a/1").path
    pool.release_all()
    _transaction(pool, ["b/2"], 0)  # closes a/1's writer: one file open at most
    old_bytes = Path(first).read_bytes()
    _transaction(pool, ["a/1"], 1)
    second = pool.get("a/1").path
    pool.close_all()
    assert second != first and Path(first).read_bytes() == old_bytes
    assert sorted(p.name for p in Path(tmp_path, "a", "1").iterdir()) == [
        os.path.basename(first), os.path.basename(second)]
    assert _tensorboard_points(tmp_path)["a/1"] == [(0, 1.0), (1, 1.0)]


def test_the_writers_of_one_transaction_stay_open_even_beyond_max_open(tmp_path):
    pool = WriterPool(tmp_path, max_open=4)
    runs = [f"g/{i}" for i in range(10)]
    writers = [pool.get(run) for run in runs]
    assert not any(w.closed for w in writers) and len(pool.open_writers()) == 10
    for writer in writers:
        writer.write(_record(0, 1.0))  # none was closed under our feet
        writer.flush()
    pool.get("g/0")
    assert len(pool.open_writers()) == 4  # back within bounds once the pins ended
    assert not writers[0].closed and writers[1].closed


def test_release_all_unpins_and_shrinks_to_max_open(tmp_path):
    pool = WriterPool(tmp_path, max_open=3)
    writers = [pool.get(f"g/{i}") for i in range(6)]
    pool.release_all()
    assert [w.closed for w in writers] == [True, True, True, False, False, False]


def test_discard_closes_the_writer_and_the_next_get_opens_a_new_file(tmp_path):
    pool = WriterPool(tmp_path, max_open=8)
    writer = pool.get("g/1")
    pool.discard("g/1")
    assert writer.closed and pool.open_writers() == []
    assert pool.get("g/1").path != writer.path
    pool.discard("never/opened")  # a no-op
    assert pool.runs() == ["g/1"]
    pool.close_all()
    pool.close_all()


def test_flush_all_ends_every_pin(tmp_path):
    pool = WriterPool(tmp_path, max_open=2)
    writers = [pool.get(f"g/{i}") for i in range(4)]
    pool.flush_all()
    pool.get("g/9")
    assert sum(not w.closed for w in writers) == 1


@pytest.mark.parametrize("max_open", [0, -1, 2.5, True, "8"])
def test_a_bad_max_open_is_a_value_error(tmp_path, max_open):
    with pytest.raises(ValueError, match="max_open"):
        WriterPool(tmp_path, max_open=max_open)


@pytest.mark.parametrize("run", ["", "/abs", "a/../b", "..", "a//b", "./a"])
def test_a_run_outside_the_tensorboard_dir_is_a_value_error(tmp_path, run):
    with pytest.raises(ValueError, match="run"):
        WriterPool(tmp_path / "tb", max_open=2).get(run)
    assert not (tmp_path / "abs").exists() and not (tmp_path / "b").exists()


def test_the_default_max_open_is_a_quarter_of_the_soft_fd_limit():
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = 4096 if soft == resource.RLIM_INFINITY else max(16, min(4096, soft // 4))
    assert default_max_open() == expected
    assert WriterPool("unused").max_open == expected


# ----------------------------------------------------------------------------- fd limit

_UNDER_A_LOW_FD_LIMIT = r"""
import json, resource, sys
from rayplex.event_bytes import ScalarTemplate, tag_header
from rayplex.events import EventWriter, WriterPool

_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
root, mode = sys.argv[1], sys.argv[2]
template = ScalarTemplate(tag_header("run/value"))
runs = [f"agent/{i}" for i in range(1500)]
if mode == "no-pool":  # one writer per run, kept open: what the hub did before the pool
    writers = {}
    try:
        for run in runs:
            writers[run] = EventWriter(f"{root}/{run}")
    except OSError as exc:
        print(json.dumps({"errno": exc.errno, "opened": len(writers)}))
    sys.exit(0)
pool = WriterPool(root, max_open=None if mode == "default" else int(mode))
for step in range(2):
    for i in range(0, len(runs), 10):
        writers = {run: pool.get(run) for run in runs[i : i + 10]}
        for run, writer in writers.items():
            writer.write(template.record(1.7e9 + step, step, float(run.split("/")[1])))
        for writer in writers.values():
            writer.flush()
peak = len(pool.open_writers())
pool.close_all()
print(json.dumps({"max_open": pool.max_open, "open_at_end": peak, "evictions": pool.evictions,
                  "files_opened": pool.files_opened}))
"""


def _under_a_low_fd_limit(root: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _UNDER_A_LOW_FD_LIMIT, str(root), mode],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_a_pool_1500_open_runs_exceed_a_1024_fd_limit(tmp_path):
    import errno

    result = _under_a_low_fd_limit(tmp_path, "no-pool")
    assert result["errno"] == errno.EMFILE and result["opened"] < 1024


@pytest.mark.parametrize("mode", ["default", "100000"])
def test_a_pool_writes_1500_runs_under_a_1024_fd_limit(tmp_path, mode):
    """``default``: a quarter of the limit; ``100000``: a bound above the limit, where EMFILE
    itself makes the pool close writers."""
    result = _under_a_low_fd_limit(tmp_path, mode)
    if mode == "default":
        assert result["max_open"] == 256 and result["open_at_end"] <= 256
    assert result["evictions"] > 0
    assert result["files_opened"] == 3000
    points = _tensorboard_points(tmp_path)
    assert len(points) == 1500
    assert all(p == [(0, _value_of(run)), (1, _value_of(run))] for run, p in points.items())
