"""rayplex.compat.tensorplex: Tensorplex's server/client scripts run on rayplex unchanged but
for the import, and give the runs, tags and values the native API gives."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import rayplex
from rayplex.compat import tensorplex as tp
from rayplex.textlog import parse_line
from tests.conftest import tb_scalars, tb_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "tensorplex")


# ------------------------------------------------------------------ plain objects, no Ray


def test_server_registers_groups_chainably_without_starting_anything():
    tplex = tp.Tensorplex("~/somewhere", max_processes=4)
    returned = (tplex.register_normal_group("learner")
                .register_indexed_group("agent", 8)
                .register_combined_group("ablation", lambda name: name[:2]))
    assert returned is tplex and tplex.hub is None
    assert [(g.name, g.kind, g.bin_size) for g in tplex.groups] == [
        ("learner", "normal", 1), ("agent", "indexed", 8), ("ablation", "combined", 1)]
    assert tplex.root_folder == os.path.expanduser("~/somewhere")


def test_bad_groups_are_refused_at_the_call():
    tplex = tp.Tensorplex("/tmp/x")
    with pytest.raises(ValueError, match="bin_size"):
        tplex.register_indexed_group("agent", 0)
    with pytest.raises(TypeError, match="callable"):
        tplex.register_combined_group("eval", "not a function")
    with pytest.raises(TypeError, match="root_folder"):
        tp.Tensorplex(42)


def test_a_loggerplex_id_without_a_slash_joins_the_loggerplex_group():
    assert tp.loggerplex_client_id("agent2") == "loggerplex/agent2"
    assert tp.loggerplex_client_id("agent/2") == "agent/2"
    with pytest.raises(TypeError):
        tp.loggerplex_client_id(2)


def test_tensorplex_levels_keep_the_lines_tensorplex_keeps():
    assert tp.tensorplex_level("info") == tp.FINE_LEVELS["INFO9"]  # info1..9 kept
    assert tp.tensorplex_level("info") > tp.FINE_LEVELS["DEBUG1"]  # debug1..9 dropped
    assert tp.tensorplex_level("debug") == tp.FINE_LEVELS["DEBUG9"]
    assert tp.tensorplex_level("warning") == 30


def test_messages_are_print_style_or_format_style():
    assert tp._message(["client", 2, {"k": 1}]) == "client 2 {'k': 1}"
    assert tp._message(["a", 1], sep=", ") == "a, 1"
    kwargs = {"x": 3, "exc_info": True}
    assert tp._format("{:0>5d} - {x}", (200,), kwargs) == "00200 - 3"
    assert kwargs == {"exc_info": True}  # logging's own keywords stay


@pytest.fixture
def hub_wait(monkeypatch):
    """Set RAYPLEX_HUB_WAIT_S for one test (the configuration is read once per process)."""
    from rayplex.config import reload_config

    def set_wait(value):
        monkeypatch.setenv("RAYPLEX_HUB_WAIT_S", value)
        reload_config()

    yield set_wait
    monkeypatch.undo()
    reload_config()


def test_hub_wait_comes_from_the_environment(hub_wait):
    hub_wait("2.5")
    assert tp.hub_wait_s() == 2.5
    with pytest.raises(ValueError, match="RAYPLEX_HUB_WAIT_S"):
        hub_wait("soon")


# ------------------------------------------------------------------ real Ray


def test_a_client_gives_up_waiting_for_a_hub_that_never_comes(ray_session, hub_wait):
    hub_wait("0.5")
    with pytest.raises(rayplex.HubNotFoundError, match="start the server script first"):
        tp.TensorplexClient("agent/0", host="localhost", port=8008, experiment="never_started")


def test_client_media_calls_land_in_the_clients_run_like_tensorboardx(experiment):
    experiment.register_indexed_group("agent", 8)
    client = tp.TensorplexClient("agent/3", host="localhost", port=8008)
    client.add_histogram("w", np.arange(10.0), 1)
    client.add_image("img", np.zeros((3, 4, 5)), 1)  # C×H×W, tensorboardX's default
    client.add_text("note", "hello", 1)
    client.add_audio("snd", np.zeros(100), 1, sample_rate=8000)
    client.add_scalars({"a": 1.0, ".sec/b": 2.0}, 1)
    client.flush()
    values = tb_values(experiment.logdir)["agent/3"]
    kinds = {tag: points[0][2].metadata.plugin_data.plugin_name for tag, points in values.items()}
    assert kinds == {"agent/w/0-7": "histograms", "agent/img/0-7": "images",
                     "agent/note/0-7": "text", "agent/snd/0-7": "audio",
                     "agent/a/0-7": "scalars", "agent.sec/b/0-7": "scalars"}
    width, height = values["agent/img/0-7"][0][2].tensor.string_val[:2]  # as TensorBoard reads it
    assert (width, height) == (b"5", b"4")
    assert all(points[0][0] == 1 for points in values.values())


def _lines(path):
    """The header lines of a text log (not a traceback's continuation lines)."""
    with open(path, encoding="utf-8") as f:
        parsed = [parse_line(line) for line in f]
    return [p for p in parsed if p is not None and p.level is not None]


def test_loggerplex_client_writes_tensorplex_style_lines(ray_session, tmp_path, capsys):
    server = tp.Loggerplex(str(tmp_path / "lp"), overwrite=True, level="info",
                           experiment="loggerplex_t")
    server.start()
    try:
        log = tp.LoggerplexClient("agent2", host="localhost", port=6379,
                                  enable_local_logger=True, local_logger_stream="stderr",
                                  experiment="loggerplex_t")
        log.info("client", 2)
        log.info7("client", 2, sep=", ")
        log.error("this", 2, "an", "error")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError as e:
            log.exception("myexc", 2, "yo", exc=e)
        log.section("yoyoyoo", sep="%")
        log.criticalfmt("Client format {:0>5d} - {:?<9}", 200, "foo")
        log.debug5fmt("debugger {:0>5d} - {:?<9}", 12, "yo")  # below the level: dropped
        log.infofmt("{a} and {b}", a=1, b="x")
        log.flush()
        lines = _lines(os.path.join(server.hub.logdir, "logs", "loggerplex", "agent2.log"))
    finally:
        rayplex.shutdown("loggerplex_t")
    got = [(p.level, p.message) for p in lines]
    assert got == [
        ("INFO", "client 2"),
        ("INFO7", "client, 2"),
        ("ERROR", "this 2 an error"),
        ("ERROR", "myexc 2 yo"),
        ("INFO", "%%%%%%%%%% yoyoyoo %%%%%%%%%%"),
        ("CRITICAL", "Client format 00200 - foo??????"),
        ("INFO", "1 and x"),
    ]
    assert all(p.client == "loggerplex/agent2" for p in lines)
    with open(os.path.join(server.hub.logdir, "logs", "loggerplex", "agent2.log")) as f:
        exc_text = f.read()
    assert "ZeroDivisionError: division by zero" in exc_text
    assert "INFO7> client, 2" in capsys.readouterr().err  # the local echo


QUIET_CLIENT = (
    "from rayplex.compat.tensorplex import TensorplexClient\n"
    "client = TensorplexClient('learner/quiet', host='localhost', port=8008)\n"
    "for i in range(2000):\n"
    "    client.add_scalar('x', i, i)\n"
)


def _plot_native(log, shift):
    # the workload of examples/tensorplex/run_client.py, through the native API
    x = math.pi / 200
    for i in range(300):
        log.add_scalar(".my.section/foo", math.sin(x * i + math.pi * shift) * (1 + shift), step=i)
        log.add_scalar(".my.section/bar", math.sin(x * i + math.pi * shift) * (1 + shift)
                       * math.exp(i / 200), step=i)
        log.add_scalar("mystats", 2 * math.cos(x * i + math.pi * shift) / (1 + shift)
                       * math.exp(-i / 100), step=i)


def _native_example(logdir):
    hub = rayplex.init(logdir, name="tplex_native")
    try:
        (hub.register_normal_group("learner").register_indexed_group("agent", 8)
            .register_indexed_group("eval", 4)
            .register_combined_group("ablation", lambda n: "RL" if n in ("PPO", "DDPG", "DQN")
                                     else "Evolution"))
        clients = ([(f"learner/{n}", 0.1 * k) for k, n in enumerate(["system", "training", "env"])]
                   + [(f"agent/{k}", -0.12 * k) for k in range(27)]
                   + [(f"eval/{k}", 0.2 * k) for k in range(10)]
                   + [(f"ablation/{n}", 1 * k)
                      for k, n in enumerate(["PPO", "DDPG", "DQN", "ES", "GA"])])
        for client_id, shift in clients:
            _plot_native(rayplex.get_logger(client_id, hub="tplex_native"), shift)
        rayplex.get_logger("learner/system", hub="tplex_native").flush()
    finally:
        rayplex.shutdown("tplex_native")


def _as_points(scalars):
    return {run: {tag: sorted(points) for tag, points in tags.items()}
            for run, tags in scalars.items()}


@pytest.mark.slow
def test_the_example_scripts_give_the_native_runs_tags_and_values(ray_session, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # HOME moves the examples' '~/Temp/tensorplex/' into tmp_path; Ray's token stays found
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    env = {**os.environ, "HOME": str(home), "RAYPLEX_HUB": "tplex_example",
           "RAY_AUTH_TOKEN_PATH": token,
           "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
           "RAYPLEX_HUB_WAIT_S": "120", "PYTHONUNBUFFERED": "1"}
    run = dict(env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
               text=True)
    # the client first: it waits for the server's hub, as a Tensorplex client waits
    client = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, "run_client.py")], **run)
    # a client that never flushes: its script's end flushes everything
    quiet = subprocess.Popen([sys.executable, "-c", QUIET_CLIENT], **run)
    server = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, "run_server.py")], **run)
    try:
        client_out, _ = client.communicate(timeout=240)
        quiet_out, _ = quiet.communicate(timeout=120)
        assert quiet.returncode == 0, quiet_out
        assert client.returncode == 0, client_out
        assert "agent/26 done" in client_out and "learner done" in client_out
        assert "is not registered" not in client_out  # it learned the server's groups
        # a Loggerplex client of the Tensorplex server (here, in the test's own process)
        log = tp.LoggerplexClient("agent2", host="localhost", port=6379,
                                  experiment="tplex_example")
        log.info("client", 2)
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError as e:
            log.exception("myexc", 2, exc=e)
        log.info3fmt("step {:>3d}", 7)
        log.flush()
        # Tensorplex's export: every run's scalars under <root>/json/
        tp.TensorplexClient("learner/system", experiment="tplex_example").export_json("json")
        server.send_signal(signal.SIGINT)  # Ctrl-C: flush and shut the experiment down
        server_out, _ = server.communicate(timeout=120)
        assert server.returncode == 0, server_out
        assert "shutting down experiment 'tplex_example'" in server_out
    finally:
        for proc in (client, quiet, server):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        rayplex.shutdown("tplex_example")  # this process's own session of it, too
    assert "hub:tplex_example" not in rayplex.actors.list_rayplex_actors()

    root = home / "Temp" / "tensorplex"
    native = tmp_path / "native"
    _native_example(str(native))
    got, want = _as_points(tb_scalars(str(root))), _as_points(tb_scalars(str(native)))
    assert got["learner"].pop("quiet/x") == [(i, float(i)) for i in range(2000)]
    assert sorted(got) == sorted(want) and len(got) == 1 + 27 + 10 + 5
    assert got == want
    assert "agent.my.section/foo/8-15" in got["agent/9"]
    assert "ablation/mystats/RL" in got["ablation/DQN"]

    with open(root / "json" / "agent.9.json", encoding="utf-8") as f:
        exported = json.load(f)
    assert {tag: [(s, v) for _, s, v in rows] for tag, rows in exported.items()} == \
        got["agent/9"]

    lines = _lines(root / "logs" / "loggerplex" / "agent2.log")
    assert [(p.level, p.message) for p in lines] == [
        ("INFO", "client 2"), ("ERROR", "myexc 2"), ("INFO3", "step   7")]
    assert "ZeroDivisionError" in (root / "logs" / "all.log").read_text()
