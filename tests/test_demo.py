"""`rayplex demo` end to end, small, on the session's Ray."""

from __future__ import annotations

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
