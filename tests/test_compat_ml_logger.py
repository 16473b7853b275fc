"""rayplex.compat.ml_logger: ML-Logger's logging test cases (ml_logger_tests/), check by check,
written from ML-Logger's behaviour; each reads the result back from the logdir (TensorBoard's
loader, rayplex.read_params, the artifact files) or through the compat logger's own loaders.

ML-Logger's checks that rely on absolute or ``//`` paths, a remote shell or a server are the
by-design refusals: tested here as refusals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rayplex
from rayplex.compat import ml_logger as compat
from rayplex.compat.ml_logger import (
    Color,
    MetricsCache,
    ML_Logger,
    client_id_for_prefix,
    flatten_values,
    format_tabular,
    metrify,
    percent,
    summarize_values,
)
from tests.conftest import returns_within, tb_scalars

REPO = Path(__file__).resolve().parent.parent


def needs(name: str) -> None:
    """Skip while rayplex.Logger does not have ``name`` yet (added by other parts of issue 15)."""
    if not hasattr(rayplex.Logger, name):
        pytest.skip(f"rayplex.Logger.{name} is not there yet")


def needs_option(method: str, option: str) -> None:
    import inspect

    needs(method)
    if option not in inspect.signature(getattr(rayplex.Logger, method)).parameters:
        pytest.skip(f"rayplex.Logger.{method} has no {option!r} option yet")


@pytest.fixture(scope="module")
def exp(ray_session, tmp_path_factory):
    """One experiment for this module (a hub per test would cost seconds each); every test
    logs under its own prefix, so its own client, run and artifact directory."""
    hub = rayplex.init(str(tmp_path_factory.mktemp("mlcompat")), name="mlcompat")
    yield hub
    rayplex.shutdown(hub.name)


@pytest.fixture
def ml(exp, request):
    """A compat logger on the module's experiment, prefix ``alice/<test name>``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)
    instance = ML_Logger(f"alice/{name}", root=exp.logdir)
    yield instance
    instance._clear_row()  # a test that failed half-way must not write at exit


def group(ml):
    return ml.client_id.split("/")[0]


def scalars(ml, run=None):
    """``{tag: [(step, value)]}`` of the compat logger's run (or ``run``)."""
    return tb_scalars(ml.hub.logdir)[run or group(ml)]


def summaries(ml):
    return tb_scalars(ml.hub.logdir)[f"{group(ml)}/summary"]


def artifact(ml, path):
    return Path(ml.hub.logdir) / "artifacts" / ml.client_id / path


# ------------------------------------------------------------------ prefixes (pure)
@pytest.mark.parametrize("prefix, client", [
    ("alice/scratch/exp-1", "alice.scratch.exp-1/main"),
    ("./alice//exp/", "alice.exp/main"),  # test_local_relative: relative to the root
    ("wat", "wat/main"),                  # test_server_relative
    ("", "ml_logger/main"),
    ("alice/your-experiment-prefix!", "alice.your-experiment-prefix_-f61b4fe7/main"),
    ("system", "system-317f1e76/main"),
    ("-x/y", "_-x.y-ef5bb989/main"),
    ("实验/run1", "__.run1-8b3b33c4/main"),
])
def test_a_prefix_maps_to_one_documented_client_id(prefix, client):
    assert client_id_for_prefix(prefix) == client
    rayplex.rules.split_client_id(client)  # a valid client id


@pytest.mark.parametrize("a, b", [("实验/run1", "测试/run1"), ("exp/ä", "exp/ö"),
                                  ("alice/x!", "alice/x?"), ("alice/x!", "alice/x_"),
                                  ("system", "_system"), ("-x/y", "_-x/y")])
def test_prefixes_a_replaced_character_told_apart_get_distinct_clients(a, b):
    assert client_id_for_prefix(a) != client_id_for_prefix(b)


def test_rows_of_prefixes_that_differ_only_in_non_ascii_characters_never_mix(exp):
    loggers = [ML_Logger(prefix, root=exp.logdir) for prefix in ("实验/run1", "测试/run1")]
    for value, ml in enumerate(loggers):
        ml.log(step=0, loss=float(value), silent=True)
        ml.flush()
    for value, ml in enumerate(loggers):
        assert scalars(ml)["main/loss"] == [(0, float(value))]
        assert ml.read_metrics("loss").tolist() == [float(value)]


def test_a_long_prefix_keeps_a_hash_so_that_it_stays_distinct():
    a = client_id_for_prefix("x" * 200 + "/a")
    b = client_id_for_prefix("x" * 200 + "/b")
    assert a != b and len(a.split("/")[0]) == 128


@pytest.mark.parametrize("prefix", ["/wat", "//wat", "/tmp/ml-logger-demo", "..", "a/../..",
                                    "s3://bucket/x", "http://host:8081/x"])
def test_absolute_server_root_and_escaping_prefixes_are_refused_by_design(prefix):
    # ML-Logger's test_local_absolute, test_server_absolute, test_server_system_absolute
    with pytest.raises(ValueError, match="refused by design|leaves the logdir"):
        client_id_for_prefix(prefix)
    with pytest.raises(ValueError):
        ML_Logger(prefix, root="/tmp")


@pytest.mark.parametrize("root", ["s3://bucket/x", "gs://b", "hdfs://nn/x", "az://c/x"])
def test_a_url_root_is_refused_before_anything_starts(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(repr(root))):
        ML_Logger("alice/x", root=root)
    with pytest.raises(ValueError, match=re.escape(repr(root))):
        ML_Logger("alice/x", root=str(tmp_path)).configure(root=root, silent=True)
    assert list(tmp_path.iterdir()) == []


def test_a_prefix_context_joins_goes_up_and_restores():
    ml = ML_Logger("alice/exp", root="/tmp")
    with ml.Prefix("eval"):
        assert ml.prefix == "alice/exp/eval"
        with ml.Prefix(".."):
            assert ml.client_id == "alice.exp/main"
    assert ml.prefix == "alice/exp"
    with pytest.raises(ValueError, match="refused by design"), ml.Prefix("/abs"):
        pass
    assert ml.prefix == "alice/exp"


def test_the_default_prefix_is_ml_loggers_template_with_the_user():
    ml = ML_Logger(root="/tmp")
    assert ml.prefix.startswith(f"{compat.USER}/scratch/")


def test_old_spellings_of_the_root_are_accepted():
    assert ML_Logger("p", root_dir="/tmp/a").root == "/tmp/a"
    assert ML_Logger("p", log_directory="/tmp/b").root == "/tmp/b"
    with pytest.raises(ValueError, match="refused by design"):
        ML_Logger("p", root="http://luma01:4000")


# ------------------------------------------------------------------ values and tables (pure)
def test_metrify_turns_numpy_into_plain_values():
    # ML-Logger's test_metrify
    assert metrify(np.array(10)) == 10 and isinstance(metrify(np.array(10)), int)
    assert metrify(np.array(10.0)) == 10.0
    assert metrify(np.array([10.0, 2])) == [10.0, 2]
    assert metrify({"a": np.float32(0.5), "c": Color(3, "red")}) == {"a": 0.5, "c": 3}


def test_flatten_handles_nested_ragged_none_and_nan():
    # ML-Logger's test_flatten, test_flatten_different_shape, ..._containing_None/NaN
    assert flatten_values([[0], [1, 2], np.array([10, 1]), [np.array([10])]]) == [
        0.0, 1.0, 2.0, 10.0, 1.0, 10.0]
    assert flatten_values([[0], [1, 2], np.array([10, 1]),
                           [np.array([10]), np.array([1, 2])]]) == [
        0.0, 1.0, 2.0, 10.0, 1.0, 10.0, 1.0, 2.0]
    for odd in (None, np.nan):
        got = flatten_values([[0], [1, 2], np.array([odd, 1]), [np.array([10]),
                                                                 np.array([1, 2])]])
        assert np.allclose(got, [0, 1, 2, np.nan, 1, 10, 1, 2], equal_nan=True)
    with pytest.raises(TypeError, match="numbers"):
        flatten_values(["text"])


def test_the_metrics_cache_gets_pops_and_summarizes():
    # ML-Logger's test_single_key, test_pop, test_summary_cache
    cache = MetricsCache()
    rng = np.random.default_rng(0)
    for _ in range(50):
        cache.store(reward=rng.random(), uneven_length=np.ones(rng.integers(0, 5)))
    assert isinstance(cache.get("reward").mean(), float)
    popped = cache.pop("reward")
    assert popped.shape == (50,) and "reward" not in cache
    summary = cache.summarize(default_stats="min_max")
    assert summary == {"uneven_length/max": 1.0, "uneven_length/min": 1.0,
                       "uneven_length/mean": 1.0}
    assert not cache


def test_summary_modes_are_named_as_ml_logger_names_them():
    values = [1.0, 2.0, 2.0, 7.0, None]
    flat = flatten_values(values)
    assert summarize_values(flat, "std_dev") == pytest.approx(
        {"stddev": np.std([1, 2, 2, 7]), "mean": 3.0, "mode": 2.0})
    assert summarize_values(flat, "quantile") == pytest.approx(
        {"0": 1.0, "25": 1.75, "mean": 2.0, "75": 3.25, "100": 7.0})
    assert summarize_values(flat, "sum") == {"sum": 12.0}
    assert summarize_values([float("nan")]) == {}


def test_color_and_percent_format_as_in_ml_loggers_readme(monkeypatch):
    # ML-Logger's `test`: Color values, custom formatters, percent
    monkeypatch.setenv("NO_COLOR", "1")
    assert "{:.1}".format(Color(3.1415926, "red")) == "3e+00"
    assert str(Color(0.28571, "yellow", lambda v: f"{v * 100:.5f}%")) == "28.57100%"
    assert percent(0.85) == "85.00%"  # rayplex's percent; ML-Logger's README shows "85.0%"
    table = format_tabular({"some_var/smooth": 10, "some": Color(0.85, "yellow", percent)})
    assert table == textwrap.dedent("""\
        ╒════════════════════╤════════════════════╕
        │  some var/smooth   │         10         │
        ├────────────────────┼────────────────────┤
        │        some        │       85.00%       │
        ╘════════════════════╧════════════════════╛
        """)


def test_colour_codes_wrap_coloured_cells_on_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    table = format_tabular({"some": Color(0.1, "yellow")})
    assert "\x1b[33m" in table and "0.1" in table


def test_peek_prints_the_last_values_per_key(capsys):
    # README: store_metrics(...) then peek_stored_metrics(len=4)
    ml = ML_Logger("p", root="/tmp")
    for i in range(100):
        ml.store_metrics(metrics={"some_val/smooth": 10}, some=20, timestep=i)
    ml.peek_stored_metrics(len=4)
    lines = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["some_val/smooth", "some", "timestep"]
    assert [[c.strip() for c in line.split("|")] for line in lines[2:]] == [
        ["10", "20", str(i)] for i in range(96, 100)]


@pytest.mark.parametrize("pattern, clients", [
    ("**/parameters.pkl", "*"), ("**", "*"), ("alice/*", "alice.*/main"),
    ("alice/**/parameters.pkl", "alice.*/main")])
def test_get_exps_path_patterns_become_client_id_patterns(pattern, clients):
    assert compat._prefix_pattern(pattern) == clients


def test_log_key_value_takes_the_old_and_the_new_form():
    ml = ML_Logger("p", root="/tmp")
    with pytest.raises(TypeError, match="log_key_value takes"):
        ml.log_key_value("only-one")


# ------------------------------------------------------------------ rows (on Ray)
def test_a_row_is_written_when_a_new_step_arrives_and_on_flush(ml):
    ml.log(step=0, D_loss=0.2)
    ml.log(step=0, G_loss=0.1)
    ml.log(step=1, D_loss=0.3)  # a new step: row 0 is written
    rayplex.flush()
    runs = scalars(ml)
    assert runs["main/D_loss"] == [(0, pytest.approx(0.2))]
    assert runs["main/G_loss"] == [(0, pytest.approx(0.1))]
    ml.flush()
    assert scalars(ml)["main/D_loss"] == [(0, pytest.approx(0.2)),
                                                         (1, pytest.approx(0.3))]
    rows = ml.load_pkl("metrics.pkl")
    assert rows == [{"step": 0, "D_loss": 0.2, "G_loss": 0.1}, {"step": 1, "D_loss": 0.3}]


def test_readme_log_and_flush_prints_the_table_and_keeps_text_values(ml, capsys):
    for i in range(1):
        ml.log(metrics={"some_val/smooth": 10, "status": f"step ({i})"}, reward=20, timestep=i)
        ml.flush()
    out = capsys.readouterr().out
    assert "│  some val/smooth   │         10         │" in out
    assert "│       status       │      step (0)      │" in out
    assert ml.load_pkl("metrics.pkl") == [
        {"some_val/smooth": 10, "status": "step (0)", "reward": 20, "timestep": 0}]
    runs = scalars(ml)
    assert runs["main/reward"] == [(0, 20.0)] and runs["main/timestep"] == [(0, 0.0)]
    assert "main/status" not in runs  # text stays in metrics.pkl


def test_rows_without_step_are_counted_and_silent_rows_print_nothing(ml, capsys):
    ml.log(loss=1.0, silent=True, flush=True)
    ml.log(loss=2.0, silent=True, flush=True)
    assert capsys.readouterr().out == ""
    rayplex.flush()
    assert scalars(ml)["main/loss"] == [(0, 1.0), (1, 2.0)]


def test_log_key_value_old_form_is_a_step(ml):
    for epoch in range(3):
        ml.log(step=epoch, D_loss=0.2)
        ml.log_key_value(epoch, "some string key", 0.0012)
    ml.flush()
    assert [s for s, _ in scalars(ml)["main/some string key"]] == [0, 1, 2]


def test_colored_values_are_stored_as_their_values(ml, capsys, monkeypatch):
    # ML-Logger's `test` and the README's "Full Logging API"
    monkeypatch.setenv("NO_COLOR", "1")
    ml.log_params(G=dict(some_config="hey"))
    ml.log(some=Color(0.1, "yellow"), step=0)
    ml.log(some=Color(0.28571, "yellow", lambda v: f"{v * 100:.5f}%"), step=1)
    ml.log(some=Color(0.85, "yellow", percent), step=2)
    ml.log({"some_var/smooth": 10}, some=Color(0.85, "yellow", percent), step=3)
    ml.log(some=Color(10, "yellow"), step=4)
    ml.flush()
    out = capsys.readouterr().out
    for cell in ("0.1", "28.57100%", "85.00%", "10"):
        assert f" {cell} " in out
    assert [v for _, v in scalars(ml)["main/some"]] == pytest.approx(
        [0.1, 0.28571, 0.85, 0.85, 10])


def test_text_lines_go_to_the_clients_text_log(ml):
    ml.log("hello", "world", step=0, x=1.0)
    ml.print("works!", color="green")
    ml.flush()
    text = (Path(ml.hub.logdir) / "logs" / group(ml) / "main.log").read_text()
    assert "hello world" in text and "works!" in text


def test_the_last_row_is_written_at_exit(exp):
    import ray

    script = f"""
        import ray
        from rayplex.compat.ml_logger import ML_Logger
        ml = ML_Logger("alice/atexit", root={exp.logdir!r})
        ml.log(step=7, loss=0.5)   # never flushed by the script
        print(ml.hub.name, ray.get_runtime_context().gcs_address)
    """
    done = _run(script)
    # it joined this session's Ray (RAY_ADDRESS) and the hub that writes to the root
    assert done.stdout.split()[-2:] == [exp.name, ray.get_runtime_context().gcs_address]
    assert tb_scalars(exp.logdir)["alice.atexit"]["main/loss"] == [(7, 0.5)]


def _run(script, **env):
    """Run ``script`` (code, or a Path to run as a file) in a new Python process that joins
    this test session's Ray through ``RAY_ADDRESS``."""
    import ray

    environment = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
                   "PYTHONPATH": str(REPO), **env}
    command = [str(script)] if isinstance(script, Path) else ["-c", textwrap.dedent(script)]
    done = subprocess.run([sys.executable, *command], env=environment,
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


# ------------------------------------------------------------------ params
def test_a_row_can_go_to_a_jsonl_file_and_read_metrics_reads_it(ml):
    needs("log_jsonl")
    ml.log(step=0, loss=0.5, file="metrics.jsonl", flush=True)
    ml.log(step=1, loss=0.25, file="metrics.jsonl", flush=True)
    assert ml.load_jsonl("metrics.jsonl") == [{"step": 0, "loss": 0.5}, {"step": 1, "loss": 0.25}]
    assert ml.read_metrics("loss", path="metrics.jsonl").tolist() == [0.5, 0.25]
    assert ml.load_pkl("metrics.pkl") is None and ml.read_metrics() is None


def test_log_text_overwrites_or_appends_and_load_text_reads_it(ml):
    ml.log_text("first\n", filename="notes.txt")
    ml.log_text("""
        second
        """, filename="notes.txt", dedent=True)
    assert ml.load_text("notes.txt") == "first\nsecond\n"
    ml.log_text("new", filename="notes.txt", overwrite=True)
    assert ml.load_text("notes.txt") == "new"
    assert ml.load_text("missing.txt") is None


def test_read_params_reads_dotted_keys_and_namespaces(ml):
    # ML-Logger's test_read_params
    config = {"key_1": 10, "key_2": 20}
    ml.log_params(Config=config)
    assert ml.read_params("Config.key_1") == 10
    assert ml.read_params("Config") == {"key_1": 10, "key_2": 20}
    assert ml.read_params("Config.key_1", "Config.key_2") == (10, 20)
    assert ml.read_params("missing", default=None) is None
    assert rayplex.read_params(ml.hub.logdir)[ml.client_id] == {"Config": config}


def test_log_parameters_is_log_params_and_prints_its_table(ml, capsys):
    ml.log_parameters(Args=dict(learning_rate=10, hidden_size=np.array(200)), silent=False)
    out = capsys.readouterr().out
    assert "learning_rate" in out and "│ 10" in out
    assert ml.load_pkl("parameters.pkl") == [{"Args": {"learning_rate": 10, "hidden_size": 200}}]
    assert rayplex.read_params(ml.hub.logdir)[ml.client_id]["Args"]["hidden_size"] == 200


# ------------------------------------------------------------------ metrics prefix and summaries
def test_metrics_prefix_without_separator(ml):
    # ML-Logger's test_metrics_prefix
    with ml.Prefix(metrics="evaluate/", sep=""):
        ml.log(loss=0.5, flush=True)
    assert ml.read_metrics("evaluate/loss")[0] == 0.5
    rayplex.flush()
    assert scalars(ml)["main/evaluate/loss"] == [(0, 0.5)]


def test_metrics_prefix_with_the_default_separator(ml):
    # ML-Logger's test_metrics_prefix_2
    with ml.Prefix(metrics="evaluate"):
        ml.log(loss=1, flush=True)
    assert ml.read_metrics("evaluate/loss")[0] == 1.0


def test_store_metrics_prefix_is_applied_once_and_summaries_reach_tensorboard(ml):
    # ML-Logger's test_store_metrics_prefix
    for _ in range(10):
        with ml.Prefix(metrics="test"):
            ml.store_metrics(value=1.0)
        with ml.Prefix(metrics="eval"):
            ml.store_metrics(value=3.0)
    ml.log_metrics_summary(key_values={"step": 10})
    assert ml.read_metrics("test/value/mean")[0] == 1.0
    assert ml.read_metrics("eval/value/mean")[0] == 3.0
    assert ml.read_metrics("step")[0] == 10
    rayplex.flush()
    summary = summaries(ml)
    assert summary["test/value/mean"] == [(10, 1.0)]
    assert summary["eval/value/mean"] == [(10, 3.0)]


def test_readme_store_metrics_then_a_silent_summary(ml, capsys):
    for i in range(100):
        ml.store_metrics(metrics={"some_val/smooth": 10}, some=20, timestep=i)
    summary = ml.log_metrics_summary(silent=True)
    assert capsys.readouterr().out == ""
    assert summary == {"some_val/smooth/mean": 10.0, "some/mean": 20.0, "timestep/mean": 49.5}
    assert ml.load_pkl("metrics.pkl") == [summary]
    rayplex.flush()
    got = summaries(ml)
    assert got["timestep/mean"] == [(0, 49.5)]


def test_nested_ragged_and_none_values_are_summarized_without_the_nans(ml):
    ml.store_metrics(x=[[1], [2, 3], None], y=np.array([None, 4], dtype=object))
    summary = ml.log_metrics_summary(key_values={"step": 0}, default_stats="min_max")
    assert summary == {"x/max": 3.0, "x/min": 1.0, "x/mean": 2.0,
                       "y/max": 4.0, "y/min": 4.0, "y/mean": 4.0}
    rayplex.flush()
    got = summaries(ml)
    assert got["x/mean"] == [(0, 2.0)] and got["x/max"] == [(0, 3.0)]


def test_pop_takes_a_key_out_of_the_stored_metrics(ml):
    ml.store_metrics(reward=1.0)
    ml.store_metrics(reward=3.0, other=1.0)
    assert ml.pop("reward").tolist() == [1.0, 3.0]
    assert ml.log_metrics_summary(flush=False) == {"other/mean": 1.0}
    ml._clear_row()


# ------------------------------------------------------------------ pickles
def test_log_data_appends_and_load_pkl_returns_every_object(ml):
    # ML-Logger's test_log_data
    d1, d2 = np.random.randn(20, 10), np.random.randn(20, 10)
    ml.log_data(d1, "test_file.pkl")
    ml.log_data(d2, "test_file.pkl")
    data = ml.load_pkl("test_file.pkl")
    assert len(data) == 2
    assert np.array_equal(data[0], d1) and np.array_equal(data[1], d2)


def test_save_pkl_overwrites_and_load_pkl_still_returns_a_list(ml):
    # ML-Logger's test_save_pkl_abs_path, with a path relative to the prefix
    ml.save_pkl(np.zeros(3), "test_file_1.pkl")
    d1 = np.random.randn(20, 10)
    ml.save_pkl(d1, "test_file_1.pkl")
    data = ml.load_pkl("test_file_1.pkl")
    assert len(data) == 1 and np.array_equal(data[0], d1)
    ml.log_data(d1, "test_file_1.pkl")  # an append after a save works
    assert len(ml.load_pkl("test_file_1.pkl")) == 2
    assert ml.load_pkl("missing.pkl") is None
    assert artifact(ml, "test_file_1.pkl").is_file()


def test_a_rayplex_pickle_loads_as_a_one_element_list(ml):
    ml.rayplex_logger.save_pkl({"a": 1}, "native.pkl")
    assert ml.load_pkl("native.pkl") == [{"a": 1}]


class SomeClass:
    name = "local class"


def test_lambdas_functions_and_classes_pickle(ml):
    # ML-Logger's test_pkl_lambda
    config = dict(lmb_fn=lambda x: x * 2, local_cls=SomeClass, local_obj=SomeClass())
    with ml.Sync():
        ml.save_pkl(config, "test_data.pkl", use_dill=True)
    loaded, = ml.load_pkl("test_data.pkl")
    assert loaded["lmb_fn"](2) == 4 and loaded["local_obj"].name == "local class"


@pytest.mark.parametrize("call", [
    lambda ml: ml.save_pkl(1, "/tmp/ml-logger-test/test_file_1.pkl"),
    lambda ml: ml.load_pkl("//home/x.pkl"),
    lambda ml: ml.save_json({"a": 0}, "/tmp/ml-logger-test/data/d.json"),
    lambda ml: ml.save_video(np.zeros((2, 8, 8)), "/tmp/ml-logger-test/videos/test_video.gif"),
    lambda ml: ml.glob("**/videos/*.gif", wd="/tmp"),
    lambda ml: ml.save_pkl(1, "s3://bucket/x.pkl"),
])
def test_absolute_double_slash_and_bucket_paths_are_refused_by_design(ml, call):
    # ML-Logger's test_save_pkl_abs_path, test_json_abs, the abs half of test_video_gif
    with pytest.raises(ValueError, match="refused by design"):
        call(ml)


def test_shell_is_refused_by_design(ml):
    # ML-Logger's test_shell
    with pytest.raises(ValueError, match="refused by design"):
        ml.shell("ls")
    with pytest.raises(ValueError, match="refused by design"):
        ml.make_archive("dir", "x.tar")


# ------------------------------------------------------------------ files
def test_remove(ml):
    needs("remove"), needs("glob")
    ml.log("this is a file", file="test.txt", flush=True)
    assert "test.txt" in ml.glob("*")
    ml.remove("test.txt")
    assert "test.txt" not in ml.glob("*")


def test_log_with_file_appends_text(ml):
    ml.log("this is a file", file="test.txt", flush=True)
    ml.log("second line", file="test.txt", flush=True)
    assert ml.load_text("test.txt") == "this is a file\nsecond line\n"


def test_move(ml):
    needs("move"), needs("glob")
    ml.log("this is a file", file="test.txt", flush=True)
    ml.move("test.txt", "test_2.txt")
    files = ml.glob("*")
    assert "test_2.txt" in files and "test.txt" not in files


def test_copy_file(ml):
    needs("duplicate"), needs("glob")
    ml.log("this is a file", file="test.txt", flush=True)
    ml.duplicate("test.txt", "test_2.txt")
    assert {"test.txt", "test_2.txt"} <= set(ml.glob("*"))
    assert ml.load_text("test_2.txt") == "this is a file\n"


def test_copy_directory(ml):
    needs("duplicate"), needs("glob")
    ml.log("this is a file", file="test/test.txt", flush=True)
    ml.duplicate("test", "test_2")
    files = ml.glob("**/*")
    assert "test/test.txt" in files and "test_2/test.txt" in files


def test_glob_under_a_working_directory(ml):
    needs("glob")
    ml.save_pkl(1, "test-data/a.pkl")
    ml.save_pkl(2, "test-data/b.pkl")
    assert ml.glob("*.pkl", wd="test-data") == ["a.pkl", "b.pkl"]


def test_json(ml):
    needs("save_json")
    ml.save_json(dict(a=0), "data/d.json")
    assert ml.load_json("data/d.json") == dict(a=0)


def test_jsonl(ml):
    needs("log_jsonl")
    ml.log_jsonl(dict(a=10), "data/d.jsonl")
    ml.log_jsonl(dict(a=12), "data/d.jsonl")
    assert ml.load_jsonl("data/d.jsonl") == [dict(a=10), dict(a=12)]


def test_yaml(ml):
    needs("save_yaml")
    ml.save_yaml(dict(a=0), "data/d.yaml")
    assert ml.load_yaml("data/d.yaml") == dict(a=0)


def test_upload_file_keeps_the_name_under_a_folder(ml, tmp_path):
    # ML-Logger's test_upload_files and the README's upload_file(__file__)
    local = tmp_path / "script.py"
    local.write_text("print(1)\n")
    ml.upload_file(str(local))
    ml.upload_file(str(local), "target/renamed.py")
    assert artifact(ml, "files/script.py").read_text() == "print(1)\n"
    assert artifact(ml, "target/renamed.py").is_file()


def test_upload_dir_and_download_dir(ml, tmp_path):
    # ML-Logger's test_upload_dir and test_download_dir
    needs("upload_dir"), needs("download_dir"), needs("glob")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("a = 1\n")
    (src / "pkg" / "a.pyc").write_bytes(b"\0")
    ml.upload_dir(str(src), "upload_dir/target.tar", excludes=["*.pyc"])
    assert "target.tar" in ml.glob("**/*", wd="upload_dir")
    ml.download_dir("upload_dir/target.tar", str(tmp_path / "out"))
    got = {p.relative_to(tmp_path / "out").as_posix()
           for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert got == {"pkg/a.py"}


# ------------------------------------------------------------------ images and video
def _face():
    y, x = np.mgrid[0:96, 0:128]
    return np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)


def test_image_files_rgb_and_grayscale(ml):
    # README: save_image(face, ...) and save_image(face_bw, ...)
    import imageio.v3 as iio

    face = _face()
    ml.save_image(face, "figures/face_rgb.png")
    assert np.array_equal(iio.imread(artifact(ml, "figures/face_rgb.png")), face)
    try:
        ml.save_image(face.mean(axis=-1).astype(np.uint8), "figures/face_bw.png")
    except ValueError as exc:
        pytest.skip(f"rayplex.Logger.save_image does not take 2-D grayscale yet: {exc}")
    assert iio.imread(artifact(ml, "figures/face_bw.png")).shape[:2] == (96, 128)


def test_image_normalize_and_zero_images(ml):
    # ML-Logger's test_image, test_image_zero_norm, test_image_normalization
    needs_option("save_image", "normalize")
    face = _face()
    path = ml.save_image(face / 1000, "rgba_face_100_normalized.png", normalize="individual")
    assert path == "rgba_face_100_normalized.png"
    ml.save_image(face / 255, "rgb.png", normalize="grid")
    ml.save_image(np.zeros((64, 64, 1)), "zero_100.png", normalize="grid")
    for name in ("rgba_face_100_normalized.png", "rgb.png", "zero_100.png"):
        assert artifact(ml, name).stat().st_size > 0


def test_image_cmap(ml):
    # ML-Logger's test_image_cmap
    needs_option("save_image", "cmap")
    import imageio.v3 as iio

    face_bw = _face().mean(axis=-1)
    ml.save_image(face_bw, "face_bw_cmap.png", cmap="cool", normalize=True)
    assert iio.imread(artifact(ml, "face_bw_cmap.png")).shape[-1] in (3, 4)


def test_save_images_tiles_a_stack_into_one_grid(ml):
    import imageio.v3 as iio

    tiles = [np.full((8, 6, 3), v, np.uint8) for v in (0, 85, 170, 255)]
    ml.save_images(tiles, "grid.png", n_rows=2, n_cols=2)
    grid = iio.imread(artifact(ml, "grid.png"))
    assert grid.shape == (16, 12, 3)
    assert [grid[0, 0, 0], grid[0, 6, 0], grid[8, 0, 0], grid[8, 6, 0]] == [0, 85, 170, 255]


def test_make_video_from_stored_images(ml):
    # ML-Logger's test_make_video
    needs("make_video"), needs("glob")
    face = _face()
    with ml.Sync():
        for i in range(10):
            ml.save_image(face[i:80 + i, i:100 + i], f"face_{i:04d}.png")
    ml.make_video("face_*.png", key="videos/face_move_glob.mp4")
    ml.make_video("face_*.png", order="descending", key="videos/face_move_glob_descending.mp4")
    ml.make_video(ml.glob("face_*.png"), key="videos/face_move_list.mp4")
    assert ml.make_video("no_exist_*.png", key="videos/not_exist.mp4") is None
    # an .mp4 needs imageio-ffmpeg; without it rayplex stores a GIF (and warns)
    assert [p.suffix for p in artifact(ml, "videos").glob("face_move_glob.*")] in (
        [".mp4"], [".gif"])


def _frames(size=64):
    def im(x, y):
        canvas = np.zeros((size, size))
        canvas[max(x - 5, 0):x + 5, max(y - 5, 0):y + 5] = 1
        return canvas
    return [im(20 + i, 30) for i in range(20)]


def test_video_and_log_video(ml):
    # ML-Logger's test_video, test_video_gif, README's log_video
    try:
        ml.log_video(_frames(), "test_video.mp4")
    except ValueError as exc:
        pytest.skip(f"rayplex.Logger.save_video does not take grayscale frames yet: {exc}")
    ml.save_video(_frames(), "test_video", format="gif")
    files = {p.name for p in artifact(ml, ".").iterdir()}
    assert "test_video.gif" in files and ({"test_video.mp4"} & files or
                                          {"test_video.gif"} & files)


def test_pyplot_figures_in_the_format_of_the_extension(ml):
    # ML-Logger's test_pyplot and the README's savefig
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(0, 5, 100)
    fig = plt.figure(figsize=(4, 2))
    plt.plot(xs, np.cos(xs))
    ml.savefig("face_02.png", fig=fig)
    plt.plot(xs, np.sin(xs))
    ml.savefig("sine.pdf")
    assert artifact(ml, "face_02.png").read_bytes()[:4] == b"\x89PNG"
    assert artifact(ml, "sine.pdf").read_bytes()[:4] == b"%PDF"


# ------------------------------------------------------------------ torch
def _module():
    torch = pytest.importorskip("torch")
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def test_save_and_load_module(ml):
    # ML-Logger's test_module, test_load_module, README's save_module/load_module
    import torch

    module, other = _module(), _module()
    ml.save_module(module, "modules/test_module.pkl")
    ml.load_module(other, "modules/test_module.pkl")
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(),
                                                 other.state_dict().values(), strict=True))


def test_torch_save_and_load(ml):
    # ML-Logger's test_torch_save, test_torch_load, test_torch_load_sync; a whole module is
    # code: unpickled only with weights_only=False (README, Security)
    import torch

    module = _module()
    with ml.Sync():
        ml.torch_save(module, "modules/test_torch_save.pkl")
        loaded = ml.torch_load("modules/test_torch_save.pkl", weights_only=False)
    x = torch.ones(2, 4)
    assert torch.equal(loaded(x), module(x))
    ml.torch_save(module.state_dict(), "modules/state.pt")
    weights = ml.torch_load("modules/state.pt")
    assert all(torch.equal(a, b) for a, b in zip(weights.values(), module.state_dict().values(),
                                                 strict=True))


class _RunsCode:
    """Unpickling this creates the directory ``path``: a stand-in for any code in a pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_load_torch_runs_no_code_from_the_file_unless_weights_only_is_false(ml, tmp_path):
    import pickle

    import torch

    marker = tmp_path / "code-ran"
    ml.torch_save({"w": torch.ones(2), "payload": _RunsCode(str(marker))}, "hostile.pt")
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        ml.load_torch("hostile.pt")
    with pytest.raises(pickle.UnpicklingError):
        ml.torch_load(path="hostile.pt", map_location="cpu")
    assert not marker.exists()
    ml.load_torch("hostile.pt", weights_only=False)  # the caller's explicit choice
    assert marker.is_dir()


def test_torch_jit_save_and_load(ml):
    # ML-Logger's test_jit_save, test_jit_load
    needs("torch_jit_save"), needs("torch_jit_load")
    import torch

    module = _module()
    ml.torch_jit_save(module, "modules/test_module.pth")
    loaded = ml.torch_jit_load("modules/test_module.pth")
    x = torch.ones(2, 4)
    assert torch.equal(loaded(x), module(x))


# ------------------------------------------------------------------ timers and counters
def test_split_start_and_since(ml):
    # ML-Logger's test_split, test_start
    needs("split")
    assert ml.split() is None
    assert isinstance(ml.split(), float)
    assert isinstance(ml.start(), float)
    assert isinstance(ml.split(), float)
    assert isinstance(ml.since(), float)


def test_every(ml):
    # ML-Logger's test_every
    needs("every")
    assert sum(i for i in range(100) if ml.every(10)) == sum(list(range(100))[9::10])
    assert sum(i for i in range(101) if ml.every(10, "tail", start_on=1)) == sum(
        range(0, 101, 10))
    i_sum = j_sum = 0
    for i in range(100):
        for j in range(100):
            if ml.every(5, "j"):
                j_sum += j
            if ml.every(50, "i"):
                i_sum += i
    assert i_sum == 4950 * 2
    assert j_sum == sum(range(4, 100, 5)) * 100


def test_timing(ml):
    # ML-Logger's test_timing
    needs("time")
    with ml.time("upload files"):
        sum(range(1000))
    for _ in range(100):
        with ml.time("upload files", interval=50):
            sum(range(100))
    ml.flush()
    timed = scalars(ml)["main/time/upload files"]
    assert len(timed) >= 2 and all(seconds > 0 for _, seconds in timed)


def test_the_timing_line_reports_the_mean_of_every_block_of_the_key_so_far(ml):
    # ML-Logger's time(): every `interval` blocks, the mean of all the key's blocks so far
    import time

    with ml.time("step"):
        began = time.perf_counter()
        while time.perf_counter() - began < 0.5:  # a long first block (a duration, not a wait)
            pass
    for _ in range(9):
        with ml.time("step"):
            pass
    ml.flush()
    timed = scalars(ml)["main/time/step"]
    text = (Path(ml.hub.logdir) / "logs" / group(ml) / "main.log").read_text()
    means = [float(m) for m in re.findall(r"timing <step>: ([0-9.E+-]+)s", text)]
    assert [step for step, _ in timed] == list(range(1, 11)) and len(means) == 10
    totals = [n * mean for n, (_, mean) in enumerate(timed, start=1)]
    # the blocks' total time so far never shrinks, and the long first block stays in the mean
    assert all(b >= a * (1 - 1e-6) for a, b in zip(totals, totals[1:], strict=False))
    assert timed[-1][1] >= 0.5 / 10 and means[-1] >= 0.5 / 10
    assert means[-1] == pytest.approx(timed[-1][1], rel=1e-3)  # the line and the scalar agree


# ------------------------------------------------------------------ runs
def test_capture_error_swallows_and_writes_error_log(ml):
    # ML-Logger's test_capture_error
    needs("capture_error")
    with ml.capture_error():
        raise RuntimeError("this should not fail")
    ml.flush()
    assert "this should not fail" in artifact(ml, "error.log").read_text()
    with pytest.raises(RuntimeError), ml.capture_error(reraise=True):
        raise RuntimeError("this one is re-raised")


def test_job_status(ml):
    # ML-Logger's test_job_status
    needs("job_started")
    ml.job_started()
    ml.job_running()
    ml.job_completed()
    ml.job_errored(Args={"lr": 0.1})
    job = rayplex.read_params(ml.hub.logdir)[ml.client_id]["job"]
    assert job["status"] == "errored"
    assert {"startTime", "runTime", "completionTime", "errorTime"} <= set(job)
    assert ml.read_params("Args.lr") == 0.1


def test_job_status_alone_is_read_back_by_read_params(ml):
    # ML-Logger's job_* write job.status and the times into the prefix's parameters.pkl
    needs("job_started")
    ml.job_started()
    assert ml.read_params("job.status") == "started"
    ml.job_running(job={"queue": "gpu"})
    ml.job_errored()
    job = ml.read_params("job")
    assert job["status"] == "errored" and job["queue"] == "gpu"
    assert {"startTime", "runTime", "errorTime"} <= set(job)
    native = rayplex.read_params(ml.hub.logdir)[ml.client_id]["job"]
    assert native == job  # the same entries, the same times, in both stores
    assert sum("job" in chunk for chunk in ml.load_pkl("parameters.pkl")) == 3


def test_get_exps(ml):
    # ML-Logger's test_get_exps, test_get_exps_without_pkl
    needs("get_exps"), needs("job_started")
    ml.log_params(Args={"lr": 0.1}, silent=True)
    ml.job_started()
    with ml.Prefix(".."):
        table = ml.get_exps("**/parameters.pkl")
    assert "job.status" in table.columns
    row = table[table["client"] == ml.client_id].iloc[0]
    assert row["job.status"] == "started" and row["Args.lr"] == 0.1
    assert ml.client_id in set(ml.get_exps("**")["client"])


def test_hostname_and_diff(ml):
    # ML-Logger's test_hostname, test_diff
    assert len(ml.hostname) > 0
    needs("diff")
    patch = ml.diff()  # the tests run in rayplex's git checkout
    if patch is not None:
        assert artifact(ml, "index.diff").read_text() == patch


def test_git_revision_branch_and_tags(ml):
    # ML-Logger's test_git_rev, test_current_branch, test_git_tags (run in rayplex's checkout)
    head = ml.__head__
    if head is None:
        pytest.skip("not in a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    assert ml.__current_branch__ and ml.__tags__


def test_current_branch_is_git_symbolic_ref_as_ml_logger_returns_it(ml, tmp_path, monkeypatch):
    # ML-Logger's __current_branch__ is `git symbolic-ref HEAD`: 'refs/heads/<branch>'
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for argv in (["init", "-q", "-b", "trunk"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *argv], cwd=tmp_path, env=env, check=True)
    monkeypatch.chdir(tmp_path)
    assert ml.__current_branch__ == "refs/heads/trunk"
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=tmp_path, env=env, check=True)
    assert ml.__current_branch__ is None  # detached: no symbolic ref, as ML-Logger


def test_ping_returns_signals(ml):
    # ML-Logger's test_ping
    needs("ping")
    assert ml.ping("alive") == []
    ml.hub.signal(ml.client_id, "stop")
    ml.hub.signal(ml.client_id, "pause")
    assert ml.ping("other ping") == ["stop", "pause"]
    assert ml.ping("completed") == []


# ------------------------------------------------------------------ README examples, as written
def test_readme_examples_run_with_only_the_import_changed(exp):
    """ML-Logger's README "Simple Logging Example" (params_proto replaced by a plain class,
    scipy.misc.face by a synthetic image: neither is installed), the metrics, the Color and
    the summary examples: ``ML_LOGGER_ROOT``/``ML_LOGGER_USER`` set the root and the user."""
    examples = REPO / "examples" / "ml_logger"
    for name in ("simple_logging.py", "full_logging_api.py", "store_metrics_summary.py"):
        _run(examples / name, ML_LOGGER_ROOT=exp.logdir,
             ML_LOGGER_USER="readme-user")
    rayplex.flush(exp.name)  # summaries are cluster-wide: the hub writes them on a flush
    runs = tb_scalars(exp.logdir)
    group = "readme-user.scratch.your-experiment-prefix_-97d0c46d"  # '!' replaced: a hash suffix
    simple = runs[group]
    assert [s for s, _ in simple["main/D_loss"]] == list(range(10))
    assert [s for s, _ in simple["main/some string key"]] == list(range(10))
    params = rayplex.read_params(exp.logdir)
    assert params[f"{group}/main"]["Args"]["seed"] == 1
    files = {p.relative_to(exp.logdir).as_posix()
             for p in Path(exp.logdir, "artifacts").rglob("*") if p.is_file()}
    base = f"artifacts/{group}/main"
    assert {f"{base}/files/simple_logging.py", f"{base}/metrics.pkl",
            f"{base}/parameters.pkl", f"{base}/figures/face_rgb.png"} <= files
    summary = runs["readme-user.examples.summary/summary"]
    assert summary["some/mean"] == [(0, 20.0)]


# ------------------------------------------------------ rows never wait on the hub
def test_logging_rows_never_waits_on_a_stopped_hub_and_flush_appends_them_in_order(ml, exp):
    pid = exp.info()["pid"]
    ml.log(step=0, loss=0.0)
    ml.flush()  # connected, the first row appended
    os.kill(pid, signal.SIGSTOP)
    try:
        def rows() -> None:
            for step in range(1, 200):
                ml.log(step=step, loss=float(step), note=f"row {step}")
        returns_within(60, rows)  # a hub that is stopped for good would block a waiting call
    finally:
        os.kill(pid, signal.SIGCONT)
    ml.flush()
    got = ml.load_pkl("metrics.pkl")
    assert [row["step"] for row in got] == list(range(200))
    assert got[150] == {"step": 150, "loss": 150.0, "note": "row 150"}


def test_a_stopped_hub_never_wedges_the_caller_and_the_row_is_kept(ml, exp):
    """A new prefix needs the hub's group registry: a hub that does not answer is a clear
    HubNotFoundError within the hub answer timeout, never a caller blocked for good; the row
    stays pending and is written once the hub answers again."""
    from rayplex.config import HUB_ANSWER_TIMEOUT_S

    ml.log(step=0, loss=0.0, flush=True)
    ml.flush()  # connected
    pid = exp.info()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        def log_new_prefix() -> None:
            with ml.Prefix("fresh"), pytest.raises(rayplex.HubNotFoundError, match="answer"):
                ml.log(step=1, loss=1.0, flush=True)
        returns_within(HUB_ANSWER_TIMEOUT_S + 30, log_new_prefix)
    finally:
        os.kill(pid, signal.SIGCONT)
    with ml.Prefix("fresh"):
        ml.flush()
        assert [row["step"] for row in ml.load_pkl("metrics.pkl")] == [1]


def test_a_request_after_queued_rows_sees_them(ml):
    for step in range(50):
        ml.log(step=step, loss=float(step), file="rows.jsonl")
    ml.log(step=50, loss=50.0)
    ml.flush_metrics()  # rows queued, not waited for
    assert [r["step"] for r in ml.load_jsonl("rows.jsonl")] == list(range(50))
    assert [r["step"] for r in ml.load_pkl("metrics.pkl")] == [50]
