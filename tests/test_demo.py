"""`rayplex demo` end to end, small, on the session's Ray."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rayplex.cli import build_parser, main
from rayplex.demo import run_demo
from tests.conftest import tb_scalars


def test_demo_logs_all_three_group_kinds(ray_session, tmp_path):
    result = run_demo(str(tmp_path / "demo"), workers=4, evaluators=2, seconds=2, progress=False)
    scalars = tb_scalars(result.logdir)
    assert {f"agent/{i}" for i in range(4)} <= set(scalars)
    assert "agent/reward/0-7" in scalars["agent/0"]
    assert "eval/score/stochastic" in scalars["eval/stochastic-1"]
    assert "eval/score/deterministic" in scalars["eval/deterministic-0"]
    assert "main/loss" in scalars["learner"]
    assert "episode_reward/mean" in scalars["agent/summary"]
    assert result.clients == 4 + 2 + 1 and result.records > 0 and result.bytes > 0
    import os

    with open(os.path.join(result.logdir, "logs", "all.log")) as f:
        assert "rollout 0 done" in f.read()


def test_demo_help_lists_its_options(capsys):
    parser = build_parser()
    try:
        parser.parse_args(["demo", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    for option in ("--logdir", "--workers", "--seconds", "--address"):
        assert option in out


def test_cli_without_a_command_is_a_usage_error(capsys):
    try:
        main([])
    except SystemExit as exit_:
        assert exit_.code == 2


REPO = str(Path(__file__).resolve().parent.parent)


@pytest.mark.slow
def test_the_demo_piped_is_quiet_and_ends_with_three_whole_view_commands(tmp_path):
    """What a newcomer sees: no Ray noise, no warning, no traceback; the last lines are the
    commands to paste, each whole on its own line (nothing wraps them when piped)."""
    logdir = tmp_path / "a logdir with spaces and a rather long name to tempt any line wrapping"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "COLUMNS")}
    done = subprocess.run(
        [sys.executable, "-m", "rayplex.cli", "demo", "--seconds", "5", "--logdir", str(logdir)],
        cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out
    for noise in ("warning", "traceback", "(raylet)", "token authentication", "worker processes"):
        assert noise not in out.lower(), out
    lines = out.rstrip("\n").splitlines()
    assert lines[-3:] == [f"  rayplex board {shlex.quote(str(logdir))}",
                          f"  tensorboard --logdir {shlex.quote(str(logdir / 'tensorboard'))}",
                          f"  rayplex view {shlex.quote(str(logdir))}"], out
    assert lines[0].startswith("rayplex demo: ") and str(logdir) in lines[0]
    assert any(line.startswith("done: 49 clients wrote ") and "records/s" in line
               for line in lines), out
    # The pasted command names the folder TensorBoard reads.
    assert (logdir / "tensorboard").is_dir()


@pytest.mark.slow
def test_a_users_script_hears_no_warning_from_rayplexs_actors(ray_session, tmp_path):
    """With Ray's default log forwarding, a clean run prints nothing of the hub's or the node
    buffers' (e.g. a Ray deprecation warning raised inside a Ray API they call). The script
    joins this test worker's Ray, as a script joins a running cluster: its actors are its own."""
    script = tmp_path / "user.py"
    script.write_text(
        "import ray, rayplex\n"
        f"ray.init(address={ray_session.get_runtime_context().gcs_address!r})\n"
        f"rayplex.init({str(tmp_path / 'exp')!r})\n"
        "@ray.remote\n"
        "def work(i):\n"
        "    log = rayplex.get_logger(f'agent/{i}')\n"
        "    log.add_scalar('x', 1.0, step=0)\n"
        "    log.flush()\n"
        "ray.get([work.remote(i) for i in range(2)])\n"
        "rayplex.shutdown()\n"
        "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    ours = [line for line in done.stdout.splitlines()
            if any(f"({actor} pid=" in line for actor in ("Hub", "NodeBuffer", "Forwarder"))]
    assert not [line for line in ours if "warning" in line.lower()], "\n".join(ours)
