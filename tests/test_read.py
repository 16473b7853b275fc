"""Reading a logdir back (rayplex.read): scalars written by the real library on a real Ray,
hyper-parameters and artifacts laid out by hand, torn files, bad logdirs."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass

import pytest

import rayplex
from rayplex.event_bytes import frame
from rayplex.read import (
    ScalarRow,
    ScalarTable,
    check_logdir,
    iter_event_records,
    iter_events,
    list_artifacts,
    list_runs,
    read_params,
    read_scalars,
    summarize,
)
from tests.conftest import event_files, returns_within, tb_scalars

WALL = 1_700_000_000.0  # wall times are given explicitly so that rows compare exactly


@dataclass(frozen=True)
class Written:
    """A logdir written through rayplex, and every scalar row it must hold."""

    logdir: str
    rows: list[ScalarRow]


def write_experiment(hub: rayplex.HubHandle) -> list[ScalarRow]:
    """Log scalars from a normal group and an indexed group (bin 4); return the expected rows.

    Values are exact in float32 (event files store scalars as float32).
    """
    hub.register_normal_group("learner").register_indexed_group("agent", 4)
    expected = []
    learner = rayplex.get_logger("learner/main", hub=hub.name)
    for step in range(5):
        learner.add_scalar("loss", 1.0 / (step + 1) if step in (0, 1, 3) else step * 0.25,
                           step=step, walltime=WALL + step)
        learner.add_scalar("lr", 0.5, step=step, walltime=WALL + step)
    for step in range(5):
        loss = 1.0 / (step + 1) if step in (0, 1, 3) else step * 0.25
        expected.append(ScalarRow("learner", "main/loss", step, WALL + step, loss))
        expected.append(ScalarRow("learner", "main/lr", step, WALL + step, 0.5))
    for index in (0, 1, 5):
        agent = rayplex.get_logger(f"agent/{index}", hub=hub.name)
        bin_name = "0-3" if index < 4 else "4-7"
        for step in range(3):
            agent.add_scalar("reward", index + step * 0.5, step=step, walltime=WALL + 10 + step)
            expected.append(ScalarRow(f"agent/{index}", f"agent/reward/{bin_name}", step,
                                      WALL + 10 + step, index + step * 0.5))
        agent.flush()
    learner.flush()
    expected.sort(key=lambda row: row[:4])
    return expected


@pytest.fixture(scope="module")
def written(ray_session, tmp_path_factory):
    """One experiment for the whole module (a hub of its own, stopped before the tests read)."""
    hub = rayplex.init(str(tmp_path_factory.mktemp("read") / "exp"), name="readback")
    try:
        rows = write_experiment(hub)
    finally:
        rayplex.shutdown(hub.name)
    return Written(hub.logdir, rows)


def _plain_logdir(tmp_path):
    logdir = tmp_path / "exp"
    (logdir / "tensorboard").mkdir(parents=True)
    return logdir


# ----------------------------------------------------------------------------- scalars


def test_read_scalars_returns_every_logged_point_sorted_by_run_tag_step(written):
    rows = read_scalars(written.logdir)
    assert isinstance(rows, ScalarTable)
    assert list(rows) == written.rows


def test_read_scalars_agrees_with_tensorboards_own_loader(written):
    mine: dict = {}
    for row in read_scalars(written.logdir):
        mine.setdefault(row.run, {}).setdefault(row.tag, []).append((row.step, row.value))
    theirs = {run: {tag: sorted(points) for tag, points in tags.items()}
              for run, tags in tb_scalars(written.logdir).items()}
    assert mine == theirs


def test_an_indexed_groups_clients_share_the_tag_of_their_bin(written):
    rows = read_scalars(written.logdir, tag="agent/reward/0-3")
    assert rows.runs() == ["agent/0", "agent/1"]
    assert read_scalars(written.logdir, tag="agent/reward/4-7").runs() == ["agent/5"]


def test_the_group_filter_keeps_only_runs_of_that_group(written):
    assert read_scalars(written.logdir, group="agent").runs() == ["agent/0", "agent/1", "agent/5"]
    assert read_scalars(written.logdir, group="learner").runs() == ["learner"]
    assert read_scalars(written.logdir, group="agen") == []


def test_the_tag_filter_takes_an_exact_tag_or_a_glob(written):
    assert read_scalars(written.logdir, tag="main/lr").tags() == ["main/lr"]
    assert read_scalars(written.logdir, tag="agent/reward/*").tags() == [
        "agent/reward/0-3", "agent/reward/4-7"]
    assert read_scalars(written.logdir, tag="*/l*").tags() == ["main/loss", "main/lr"]
    assert read_scalars(written.logdir, tag="main") == []


def test_the_run_filter_takes_an_exact_run_or_a_glob(written):
    assert [r for r in read_scalars(written.logdir, run="agent/1")] == [
        r for r in written.rows if r.run == "agent/1"]
    assert read_scalars(written.logdir, run="agent/*").runs() == ["agent/0", "agent/1", "agent/5"]


def test_list_runs_names_every_run_directory(written):
    assert list_runs(written.logdir) == ["agent/0", "agent/1", "agent/5", "learner"]


def test_to_pandas_has_one_row_per_point_with_typed_columns(written):
    pytest.importorskip("pandas")
    frame_ = read_scalars(written.logdir).to_pandas()
    assert list(frame_.columns) == ["run", "tag", "step", "wall_time", "value"]
    assert [tuple(r) for r in frame_.itertuples(index=False)] == [tuple(r) for r in written.rows]
    assert str(frame_["step"].dtype) == "int64" and str(frame_["value"].dtype) == "float64"


def test_as_frame_returns_the_data_frame_directly(written):
    pandas = pytest.importorskip("pandas")
    frame_ = read_scalars(written.logdir, tag="main/loss", as_frame=True)
    assert isinstance(frame_, pandas.DataFrame)
    assert frame_["value"].tolist() == [r.value for r in written.rows if r.tag == "main/loss"]


def test_to_pandas_without_pandas_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        ScalarTable().to_pandas()


# ----------------------------------------------------------------------------- torn and foreign files


def test_garbage_after_the_last_record_is_ignored(written, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(written.logdir, copy)
    for path in event_files(str(copy)):
        with open(path, "ab") as file:
            file.write(b"\x17\x00\x00\x00\x00\x00\x00\x00garbage")
    assert list(read_scalars(copy)) == written.rows


def test_a_file_cut_inside_its_last_record_keeps_the_records_before_it(written, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(written.logdir, copy)
    (path,) = [p for p in event_files(str(copy)) if "/learner/" in p]
    with open(path, "rb+") as file:
        file.truncate(os.path.getsize(path) - 7)
    learner = [r for r in written.rows if r.run == "learner"]
    rows = read_scalars(copy, run="learner")
    assert len(rows) == len(learner) - 1
    assert set(rows) < set(learner)


def test_a_corrupt_checksum_ends_the_file_quietly(tmp_path):
    path = tmp_path / "events.out.tfevents.1"
    good, bad = frame(b"first"), bytearray(frame(b"second"))
    bad[-1] ^= 0xFF
    path.write_bytes(good + bytes(bad) + frame(b"third"))
    assert list(iter_event_records(path)) == [b"first"]


def test_tensor_scalars_written_by_other_tools_are_read_too(tmp_path):
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_pb2 import TensorProto

    logdir = _plain_logdir(tmp_path)
    run = logdir / "tensorboard" / "other"
    run.mkdir()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    records = b""
    for step, tensor in enumerate([TensorProto(dtype=1, float_val=[0.5]),
                                   TensorProto(dtype=2, double_val=[0.1]),
                                   TensorProto(dtype=2, tensor_content=b"\x00" * 7 + b"\x40")]):
        value = Summary.Value(tag="acc", tensor=tensor, metadata=metadata)
        event = Event(wall_time=WALL, step=step, summary=Summary(value=[value]))
        records += frame(event.SerializeToString())
    text = Summary.Value(tag="note", tensor=TensorProto(dtype=7, string_val=[b"hi"]),
                         metadata=SummaryMetadata(
                             plugin_data=SummaryMetadata.PluginData(plugin_name="text")))
    records += frame(Event(wall_time=WALL, step=3, summary=Summary(value=[text])).SerializeToString())
    (run / "events.out.tfevents.1.host").write_bytes(records)
    assert [(r.tag, r.step, r.value) for r in read_scalars(logdir)] == [
        ("acc", 0, 0.5), ("acc", 1, 0.1), ("acc", 2, 2.0)]


def _logdir_with_fifos(tmp_path):
    """A logdir with one real scalar and a FIFO wherever a reader looks for a file."""
    from rayplex.event_bytes import ScalarTemplate, tag_header
    from rayplex.events import EventWriter

    logdir = _plain_logdir(tmp_path)
    with EventWriter(logdir / "tensorboard" / "learner") as writer:
        writer.write(ScalarTemplate(tag_header("main/loss")).record(WALL, 1, 0.5))
    (logdir / "tensorboard" / "x").mkdir()
    os.mkfifo(logdir / "tensorboard" / "x" / "events.out.tfevents.1.h.1.r")
    os.mkfifo(logdir / "tensorboard" / "learner" / "events.out.tfevents.9.h.1.r")
    (logdir / "params" / "learner").mkdir(parents=True)
    (logdir / "params" / "learner" / "main.json").write_text('{"lr": 0.5}')
    os.mkfifo(logdir / "params" / "learner" / "fifo.json")
    (logdir / "logs").mkdir()
    (logdir / "logs" / "all.log").write_text("x\n")
    os.mkfifo(logdir / "logs" / "fifo.log")
    (logdir / "artifacts" / "learner" / "main").mkdir(parents=True)
    os.mkfifo(logdir / "artifacts" / "learner" / "main" / "fifo.bin")
    return logdir


def test_a_fifo_named_like_an_event_file_is_skipped_not_read(tmp_path):
    logdir = _logdir_with_fifos(tmp_path)
    rows = returns_within(10.0, lambda: read_scalars(logdir))
    assert [(r.run, r.tag, r.step, r.value) for r in rows] == [("learner", "main/loss", 1, 0.5)]
    assert returns_within(10.0, lambda: list_runs(logdir)) == ["learner"]


def test_only_regular_files_count_as_params_logs_or_event_files(tmp_path):
    logdir = _logdir_with_fifos(tmp_path)
    assert returns_within(10.0, lambda: read_params(logdir)) == {"learner/main": {"lr": 0.5}}
    summary = returns_within(10.0, lambda: summarize(logdir))
    assert [(r.run, r.event_files) for r in summary.runs] == [("learner", 1)]
    assert [f.path for f in summary.log_files] == ["logs/all.log"]
    assert summary.artifacts == []
    assert summary.params == ["learner/main"]


# ----------------------------------------------------------------------------- bad logdirs


def test_a_missing_logdir_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_scalars(tmp_path / "nope")


def test_a_logdir_without_a_tensorboard_folder_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tensorboard/ subdirectory"):
        read_scalars(tmp_path)


def test_the_tensorboard_folder_itself_gets_a_hint_to_pass_its_parent(tmp_path):
    logdir = _plain_logdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass .*exp'"):
        check_logdir(logdir / "tensorboard")


@pytest.mark.parametrize("reader", [list_runs, read_params, list_artifacts, summarize])
def test_every_reader_rejects_a_missing_logdir(reader, tmp_path):
    with pytest.raises(FileNotFoundError):
        reader(tmp_path / "nope")


# ----------------------------------------------------------------------------- params, artifacts


def test_read_params_maps_each_client_to_its_json_object(tmp_path):
    logdir = _plain_logdir(tmp_path)
    (logdir / "params" / "learner").mkdir(parents=True)
    (logdir / "params" / "agent").mkdir()
    (logdir / "params" / "learner" / "main.json").write_text(
        json.dumps({"Args": {"lr": 0.001, "layers": [64, 64]}, "Seed": 3}))
    (logdir / "params" / "agent" / "7.json").write_text(json.dumps({"Args": {"eps": 0.1}}))
    assert read_params(logdir) == {
        "agent/7": {"Args": {"eps": 0.1}},
        "learner/main": {"Args": {"lr": 0.001, "layers": [64, 64]}, "Seed": 3},
    }


def test_read_params_of_a_logdir_without_params_is_empty(tmp_path):
    assert read_params(_plain_logdir(tmp_path)) == {}


def test_a_params_file_that_is_not_an_object_is_named_in_the_error(tmp_path):
    logdir = _plain_logdir(tmp_path)
    (logdir / "params" / "learner").mkdir(parents=True)
    (logdir / "params" / "learner" / "main.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="main.json"):
        read_params(logdir)


def test_list_artifacts_lists_every_file_with_its_size(tmp_path):
    logdir = _plain_logdir(tmp_path)
    (logdir / "artifacts" / "learner" / "main" / "ckpt").mkdir(parents=True)
    (logdir / "artifacts" / "learner" / "main" / "ckpt" / "model.pkl").write_bytes(b"x" * 10)
    (logdir / "artifacts" / "learner" / "main" / "notes.txt").write_bytes(b"hi")
    assert [(a.path, a.size) for a in list_artifacts(logdir)] == [
        ("learner/main/ckpt/model.pkl", 10), ("learner/main/notes.txt", 2)]


def test_list_artifacts_of_a_logdir_without_artifacts_is_empty(tmp_path):
    assert list_artifacts(_plain_logdir(tmp_path)) == []


# ----------------------------------------------------------------------------- summary


def test_summarize_counts_points_and_last_steps_per_tag(written):
    summary = summarize(written.logdir)
    by_key = {(t.run, t.tag): t for t in summary.tags}
    loss = by_key[("learner", "main/loss")]
    assert (loss.kind, loss.points, loss.first_step, loss.last_step, loss.last_value) == (
        "scalar", 5, 0, 4, 1.0)
    reward = by_key[("agent/5", "agent/reward/4-7")]
    assert (reward.points, reward.last_step, reward.last_value) == (3, 2, 6.0)


def test_summarize_names_groups_clients_and_runs(written):
    summary = summarize(written.logdir)
    assert summary.groups == ["agent", "learner"]
    assert summary.clients == ["agent/0", "agent/1", "agent/5", "learner/main"]
    assert [(r.run, r.group, r.tags, r.points) for r in summary.runs] == [
        ("agent/0", "agent", 1, 3), ("agent/1", "agent", 1, 3), ("agent/5", "agent", 1, 3),
        ("learner", "learner", 2, 10)]
    assert all(r.bytes > 0 and r.event_files >= 1 for r in summary.runs)
    assert summary.total_bytes >= sum(r.bytes for r in summary.runs)


def test_summarize_lists_log_files_params_and_artifacts(tmp_path):
    logdir = _plain_logdir(tmp_path)
    (logdir / "logs" / "agent").mkdir(parents=True)
    (logdir / "logs" / "all.log").write_text("x\n")
    (logdir / "logs" / "agent" / "3.log").write_text("x\n")
    (logdir / "params" / "eval").mkdir(parents=True)
    (logdir / "params" / "eval" / "greedy.json").write_text("{}")
    (logdir / "artifacts" / "learner" / "main").mkdir(parents=True)
    (logdir / "artifacts" / "learner" / "main" / "a.bin").write_bytes(b"abc")
    summary = summarize(logdir)
    assert [(f.path, f.bytes) for f in summary.log_files] == [
        ("logs/all.log", 2), ("logs/agent/3.log", 2)]
    assert summary.params == ["eval/greedy"]
    assert [a.path for a in summary.artifacts] == ["learner/main/a.bin"]
    assert summary.clients == ["agent/3", "eval/greedy", "learner/main"]
    assert summary.groups == ["agent", "eval", "learner"]


# ----------------------------------------------------------------------------- hostile params


DEEP = 100_000


def logdir_with_a_hostile_params_file(root):
    """A logdir whose ``agent/bad`` params are 100,000 nested JSON arrays (more than Python's
    json can nest), ``agent/junk`` is not JSON, and ``learner/main`` is fine."""
    logdir = _plain_logdir(root)
    (logdir / "params" / "agent").mkdir(parents=True)
    (logdir / "params" / "learner").mkdir(parents=True)
    (logdir / "params" / "agent" / "bad.json").write_text("[" * DEEP + "]" * DEEP)
    (logdir / "params" / "agent" / "junk.json").write_bytes(b"{\xff")
    (logdir / "params" / "learner" / "main.json").write_text(json.dumps(
        {"job": {"status": "running"}, "Args": {"lr": 0.5}}))
    return logdir


def test_a_too_deeply_nested_params_file_is_a_value_error_naming_it(tmp_path):
    logdir = logdir_with_a_hostile_params_file(tmp_path)
    (logdir / "params" / "agent" / "junk.json").unlink()
    with pytest.raises(ValueError, match=r"bad\.json.*nested too deeply"):
        read_params(logdir)


def test_read_params_can_collect_per_client_errors_and_read_the_rest(tmp_path):
    logdir = logdir_with_a_hostile_params_file(tmp_path)
    errors: dict[str, str] = {}
    assert read_params(logdir, errors=errors) == {
        "learner/main": {"job": {"status": "running"}, "Args": {"lr": 0.5}}}
    assert sorted(errors) == ["agent/bad", "agent/junk"]
    assert "bad.json" in errors["agent/bad"] and "nested too deeply" in errors["agent/bad"]
    assert "junk.json" in errors["agent/junk"] and "not valid JSON" in errors["agent/junk"]


def test_summarize_lists_a_logdir_with_a_hostile_params_file_naming_the_client(tmp_path):
    logdir = logdir_with_a_hostile_params_file(tmp_path)
    summary = summarize(logdir)
    assert summary.params == ["learner/main"]
    assert sorted(summary.errors) == ["agent/bad", "agent/junk"]
    assert "nested too deeply" in summary.errors["agent/bad"]
    assert summary.clients == ["agent/bad", "agent/junk", "learner/main"]


# ----------------------------------------------------------------------------- URLs


def _local_s3_lookalike(tmp_path, monkeypatch):
    """cwd/s3:/bucket/exp, a real logdir that the string 's3://bucket/exp' would name if it were
    taken as a relative path."""
    monkeypatch.chdir(tmp_path)
    logdir = tmp_path / "s3:" / "bucket" / "exp"
    (logdir / "tensorboard" / "learner").mkdir(parents=True)
    (logdir / "params" / "learner").mkdir(parents=True)
    (logdir / "params" / "learner" / "main.json").write_text("{}")
    return logdir


@pytest.mark.parametrize("reader", [
    check_logdir, list_runs, read_params, list_artifacts, summarize, read_scalars,
    lambda logdir: list(iter_events(logdir)),
], ids=["check_logdir", "list_runs", "read_params", "list_artifacts", "summarize",
        "read_scalars", "iter_events"])
def test_every_reader_refuses_an_unresolvable_url_instead_of_reading_a_local_lookalike(
        reader, tmp_path, monkeypatch):
    _local_s3_lookalike(tmp_path, monkeypatch)
    (tmp_path / "nosuch:").symlink_to(tmp_path / "s3:")  # what 'nosuch://bucket/exp' would be
    with pytest.raises(ValueError, match="'nosuch://bucket/exp' is not a storage URI pyarrow"):
        reader("nosuch://bucket/exp")


def test_a_relative_path_with_a_colon_is_still_read_as_a_path(tmp_path, monkeypatch):
    _local_s3_lookalike(tmp_path, monkeypatch)
    assert read_params("s3:/bucket/exp") == {"learner/main": {}}
    assert read_params("./s3:/bucket/exp") == {"learner/main": {}}


@pytest.mark.parametrize("logdir", ["nosuch://bucket/exp", "az://c/exp", "https://host/exp"])
def test_init_refuses_an_unresolvable_url_logdir_and_writes_no_local_lookalike(
        logdir, ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"{logdir!r} is not a storage URI pyarrow.fs can open"):
        rayplex.init(logdir, name="urllogdir")
    assert list(tmp_path.iterdir()) == []
    assert "urllogdir" not in [info.get("name") for info in rayplex.status()]
    with pytest.raises(ValueError, match="not a storage URI"):
        read_scalars(logdir)


def test_init_takes_a_relative_path_with_a_colon_as_a_path(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub = rayplex.init("runs:1/exp", name="colonpath")
    try:
        assert hub.logdir == str(tmp_path / "runs:1" / "exp")
    finally:
        rayplex.shutdown(hub.name)
    assert list_runs("runs:1/exp") == []
