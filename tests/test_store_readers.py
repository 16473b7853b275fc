"""read_scalars and ``rayplex export`` answer from the store when it is current: the same rows
in the same order as from the event files; the event files answer when the store is absent or
behind. Plain files, no Ray."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout

import pytest

import rayplex
from rayplex.cli import main
from rayplex.read import _scalar_rows, read_scalars, stored_scalars
from rayplex.store import scan

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")


def _write(logdir, run, points, suffix=""):
    """Event files under ``logdir/tensorboard/<run>`` (the rayplex layout) with tensorboardX."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(os.path.join(logdir, "tensorboard", run), filename_suffix=suffix) as w:
        for tag, value, step, wall in points:
            w.add_scalar(tag, value, step, walltime=wall)


@pytest.fixture
def logdir(tmp_path):
    root = str(tmp_path / "exp")
    for i in range(3):  # an indexed group: steps out of order, a step twice
        _write(root, f"agent/{i}", [("agent/reward/0-7", float(i * 10 + s), s, 1000.0 + s)
                                    for s in (0, 1, 3, 2, 2, 5)]
               + [("agent/len/0-7", 7.0 + i, 0, 999.0)], suffix=".a")
    _write(root, "agent/summary", [(f"ret/{stat}", float(n), s, 2000.0 + s)
                                   for s in range(4) for n, stat in enumerate(("mean", "std"))])
    _write(root, "learner", [("main/loss", 1.0 / (s + 1), s, 3000.0) for s in range(50)]
           + [("main/loss", -1.0, 10, 3000.0)], suffix=".1")  # same step and wall time twice
    _write(root, "learner", [("main/loss", 5.0, 7, 2999.0), ("main/lr", 0.1, 0, 3001.0)],
           suffix=".2")  # a second event file of the run
    return root


def _events(logdir, group=None, tag=None, run=None):
    rows = list(_scalar_rows(logdir, group, tag, run))
    rows.sort(key=lambda r: (r.run, r.tag, r.step, r.wall_time))
    return rows


SELECTIONS = [{}, {"tag": "agent/reward/*"}, {"group": "agent"}, {"run": "agent/[01]"},
              {"tag": "main/loss"}, {"run": "learner", "tag": "main/*"}, {"tag": "nope"}]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_read_scalars_from_the_store_gives_the_event_rows_in_order(logdir, selection):
    before = read_scalars(logdir, **selection)
    assert list(before) == _events(logdir, **selection)
    rayplex.index(logdir)
    with stored_scalars(logdir, **selection) as tables:
        assert tables is not None  # the store answers
    after = read_scalars(logdir, **selection)
    assert list(after) == list(before)
    assert [type(x) for x in after[0]] == [type(x) for x in before[0]] if before else True
    assert read_scalars(logdir, as_frame=True, **selection).equals(
        before.to_pandas()) if before else True


def test_a_store_behind_the_event_files_is_not_used(logdir):
    rayplex.index(logdir)
    _write(logdir, "learner", [("main/loss", 9.0, 99, 4000.0)], suffix=".3")
    with stored_scalars(logdir) as tables:
        assert tables is None  # a file without cursor: behind
    rows = read_scalars(logdir, tag="main/loss")
    assert rows[-1].step == 99 and list(rows) == _events(logdir, tag="main/loss")
    rayplex.index(logdir)
    with stored_scalars(logdir) as tables:
        assert tables is not None
    assert list(read_scalars(logdir, tag="main/loss")) == list(rows)


def test_batches_bound_what_is_read_at_once(logdir, monkeypatch):
    rayplex.index(logdir)
    monkeypatch.setattr(scan, "BATCH_POINTS", 3)
    with stored_scalars(logdir) as tables:
        sizes = [t.num_rows for t in tables]
    assert len(sizes) > 5 and max(sizes) <= 52  # one series (learner main/loss) alone
    assert list(read_scalars(logdir)) == _events(logdir)


def _export(logdir, fmt, out, *selection):
    with redirect_stdout(io.StringIO()) as stdout:
        assert main(["export", logdir, "--format", fmt, *selection]
                    + (["-o", out] if out else [])) == 0
    return stdout.getvalue() if out is None else open(out, "rb").read()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
@pytest.mark.parametrize("selection", [[], ["--group", "agent"], ["--tag", "main/*"]])
def test_export_from_the_store_writes_the_same_file(logdir, tmp_path, fmt, selection, monkeypatch):
    import pyarrow.parquet as pq

    out = str(tmp_path / f"before.{fmt}")
    before = _export(logdir, fmt, out, *selection)
    rayplex.index(logdir)
    monkeypatch.setattr(scan, "BATCH_POINTS", 4)  # several batches: several row groups
    out_after = str(tmp_path / f"after.{fmt}")
    after = _export(logdir, fmt, out_after, *selection)
    if fmt == "parquet":
        assert pq.read_table(out_after).equals(pq.read_table(out))
        assert pq.ParquetFile(out_after).metadata.num_row_groups > 1
    else:
        assert after == before
    if fmt == "json":
        assert len(json.loads(after)) == len(_events(logdir, *(
            [None, None] if not selection else
            ([selection[1]] if selection[0] == "--group" else [None, selection[1]]))))


def test_export_to_stdout_from_the_store(logdir):
    before = _export(logdir, "csv", None)
    rayplex.index(logdir)
    assert _export(logdir, "csv", None) == before


def test_export_of_nothing_still_says_so_with_a_store(logdir):
    rayplex.index(logdir)
    with pytest.raises(ValueError, match="no scalars match --tag 'nope'"):
        from rayplex.cli import _export as export
        from rayplex.cli import build_parser

        export(build_parser().parse_args(["export", logdir, "--tag", "nope"]))
