"""The ``rayplex`` command line, through ``rayplex.cli.main``, on a logdir built without Ray.

The logdir is written with rayplex's own event writer and text-log files, in the layout the hub
produces (runs ``learner`` and ``agent/<i>``, ``logs/all.log``, ``params/``, ``artifacts/``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayplex import cli
from rayplex.actors.logfiles import LogFiles
from rayplex.cli import main
from rayplex.event_bytes import ScalarTemplate, tag_header
from rayplex.events import EventWriter
from rayplex.read import ScalarRow, read_scalars
from rayplex.tail import follow
from rayplex.textlog import LogLine, format_line

WALL = 1_700_000_000.0
COMMANDS = ["demo", "board", "ls", "export", "plot", "tail"]
LOG_LINES = [
    LogLine(WALL + 0, 20, "learner/main", "1a2b3c4d", 10, "train", "starting"),
    LogLine(WALL + 1, 30, "agent/3", "1a2b3c4d", 11, "env", "slow step\nsecond line"),
    LogLine(WALL + 2, 20, "agent/3", "1a2b3c4d", 11, "env", "episode done"),
    LogLine(WALL + 3, 40, "agent/30", "1a2b3c4d", 12, "env", "crashed", "Traceback: boom"),
    LogLine(WALL + 4, 15, "agent/4", "1a2b3c4d", 13, "env", "fine detail"),
]


def _scalars() -> list[ScalarRow]:
    rows = []
    for step in range(5):
        rows.append(ScalarRow("learner", "main/loss", step, WALL + step, 1.0 / 2**step))
        rows.append(ScalarRow("learner", "main/lr", step, WALL + step, 0.25))
    for index, bin_name in ((0, "0-3"), (1, "0-3"), (5, "4-7")):
        for step in range(3):
            rows.append(ScalarRow(f"agent/{index}", f"agent/reward/{bin_name}", step,
                                  WALL + 10 + step, index + step * 0.5))
    return sorted(rows, key=lambda row: row[:4])


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "exp"
    writers: dict[str, EventWriter] = {}
    for row in _scalars():
        writer = writers.get(row.run) or writers.setdefault(
            row.run, EventWriter(root / "tensorboard" / row.run))
        writer.write(ScalarTemplate(tag_header(row.tag)).record(row.wall_time, row.step, row.value))
    for writer in writers.values():
        writer.close()
    with LogFiles(root / "logs") as files:
        files.write(LOG_LINES)
    (root / "params" / "learner").mkdir(parents=True)
    (root / "params" / "learner" / "main.json").write_text(json.dumps({"Args": {"lr": 0.25}}))
    (root / "artifacts" / "learner" / "main").mkdir(parents=True)
    (root / "artifacts" / "learner" / "main" / "model.pkl").write_bytes(b"\x80" * 2048)
    return str(root)


def _text(lines: list[LogLine]) -> str:
    return "".join(format_line(line) for line in lines)


# ----------------------------------------------------------------------------- every command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: rayplex {command}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["board"], ["ls"], ["export"], ["plot", "--tag", "x"], ["tail"]])
def test_a_missing_logdir_is_one_line_on_stderr_and_exit_code_1(argv, tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert main([argv[0], missing, *argv[1:]]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"rayplex {argv[0]}: error: ") and missing in captured.err


@pytest.mark.parametrize("command", ["ls", "export", "tail"])
def test_a_folder_that_is_not_a_logdir_says_so(command, tmp_path, capsys):
    assert main([command, str(tmp_path)]) == 1
    assert "no tensorboard/ subdirectory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ls


def test_ls_shows_groups_runs_tags_and_last_steps(logdir, capsys):
    assert main(["ls", logdir]) == 0
    out = capsys.readouterr().out
    for text in ("agent", "learner", "agent/0", "agent/5", "main/loss", "agent/reward/0-3",
                 "agent/reward/4-7"):
        assert text in out
    (loss_line,) = [line for line in out.splitlines() if "main/loss" in line]
    cells = [cell.strip() for cell in loss_line.strip("│ ").split("│")]
    assert cells == ["main/loss", "scalar", "1", "5", "4", "0.0625"]  # runs, points, last step


def test_ls_shows_artifacts_log_files_and_params(logdir, capsys):
    assert main(["ls", logdir]) == 0
    out = capsys.readouterr().out
    assert "learner/main/model.pkl" in out and "2.0 kB" in out
    assert "logs/all.log" in out and "logs/agent/3.log" in out
    assert "params: learner/main" in out


def test_ls_shows_each_clients_job_status_and_when_it_was_last_seen(tmp_path, capsys):
    from rayplex.actors.control import ControlBook
    from rayplex.actors.writer import STATE_DIR
    from rayplex.rules import CONTROL_FILE

    root = tmp_path / "exp"
    (root / "tensorboard").mkdir(parents=True)
    (root / "params" / "agent").mkdir(parents=True)
    (root / "params" / "agent" / "1.json").write_text(json.dumps({"job": {"status": "completed"}}))
    (root / "params" / "agent" / "2.json").write_text(json.dumps({"job": {"status": "running"}}))
    book = ControlBook(str(root / STATE_DIR / CONTROL_FILE))
    book.ping("agent/2", "training", "t1", {"hostname": "node-7"}, now=time.time() - 30)
    book.ping("agent/3", "evaluating", "t2", {"hostname": "node-8"}, now=time.time() - 7200)
    assert main(["ls", str(root)]) == 0
    cells = [[c.strip() for c in line.strip()[1:-1].split("│")]
             for line in capsys.readouterr().out.splitlines() if line.startswith("│ agent/")]
    rows = {row[0]: row for row in cells}
    assert rows["agent/1"] == ["agent/1", "finished", "", "completed", "", "", ""]
    assert rows["agent/2"][:5] == ["agent/2", "finished", "", "running", "training"]
    assert rows["agent/2"][5] in ("30 s ago", "31 s ago") and rows["agent/2"][6] == "node-7"
    assert rows["agent/3"] == ["agent/3", "finished", "", "", "evaluating", "2.0 h ago", "node-8"]


def test_ls_shows_every_clients_state_without_job_status_or_heartbeats(logdir, capsys):
    assert main(["ls", logdir]) == 0
    cells = [[c.strip() for c in line.strip()[1:-1].split("│")]
             for line in capsys.readouterr().out.splitlines() if line.startswith("│ agent/3 ")]
    assert ["agent/3", "finished", "", "", "", "", ""] in cells  # no live hub: it is over


def test_ls_names_each_clients_state_and_last_alert(tmp_path, capsys):
    from rayplex.actors.claim import LogdirClaim
    from rayplex.actors.control import ControlBook
    from rayplex.layout import alerts_path, control_path, state_dir
    from rayplex.watch import Alert, alert_to_json

    root = tmp_path / "exp"
    (root / "tensorboard").mkdir(parents=True)
    now = time.time()

    def alert(rule: str, client: str, step: int | None, at: float) -> str:
        return json.dumps(alert_to_json(Alert(rule, "agent", client, "n1", 7, step, 1.0, None,
                                              at, "m")))

    with open(alerts_path(str(root)), "w", encoding="utf-8") as f:
        f.write("\n".join([alert("nan(loss)", "agent/1", 3, now - 60),
                           alert("crashed()", "agent/1", None, now - 50),
                           alert("silent(5)", "agent/2", None, now - 40),
                           alert("silent(5)", "agent/3", None, now - 40)]) + "\n")
    book = ControlBook(control_path(str(root)))
    book.ping("agent/3", "training", "t1", {}, now=now - 10)  # heard of again: running
    book.ping("agent/4", "finished", "t2", {}, now=now - 10)
    book.ping("agent/5", "training", "t3", {}, now=now - 10)
    claim = LogdirClaim(str(root), state_dir(str(root)), "exp")
    claim.take()  # a live hub holds the logdir
    try:
        assert main(["ls", str(root)]) == 0
    finally:
        claim.release()
    out = capsys.readouterr().out
    cells = [[c.strip() for c in line.strip()[1:-1].split("│")]
             for line in out.splitlines() if line.startswith("│ agent/")]
    states = {row[0]: row[1] for row in cells if len(row) == 7}
    assert states == {"agent/1": "crashed", "agent/2": "silent", "agent/3": "running",
                      "agent/4": "finished", "agent/5": "running"}
    last = {row[0]: row[2] for row in cells if len(row) == 7}
    assert last["agent/1"].startswith("crashed(), ") and last["agent/2"].startswith("silent(5)")
    assert last["agent/5"] == ""
    assert main(["ls", str(root)]) == 0  # the hub is gone: over, but a crash stays a crash
    cells = [[c.strip() for c in line.strip()[1:-1].split("│")]
             for line in capsys.readouterr().out.splitlines() if line.startswith("│ agent/")]
    assert {row[0]: row[1] for row in cells if len(row) == 7} == {
        "agent/1": "crashed", "agent/2": "finished", "agent/3": "finished",
        "agent/4": "finished", "agent/5": "finished"}


def test_ls_prints_no_colour_codes_when_piped(logdir, capsys):
    main(["ls", logdir])
    assert "\x1b[" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- export


def test_export_csv_to_stdout_holds_every_scalar(logdir, capsys):
    assert main(["export", logdir, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [ScalarRow(r["run"], r["tag"], int(r["step"]), float(r["wall_time"]), float(r["value"]))
            for r in rows] == _scalars()


def test_export_json_to_stdout_holds_every_scalar(logdir, capsys):
    assert main(["export", logdir, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [ScalarRow(**r) for r in rows] == _scalars()


def test_export_filters_by_tag_run_and_group(logdir, capsys):
    main(["export", logdir, "--format", "json", "--tag", "agent/reward/*", "--run", "agent/[01]"])
    rows = json.loads(capsys.readouterr().out)
    assert {(r["run"], r["tag"]) for r in rows} == {("agent/0", "agent/reward/0-3"),
                                                   ("agent/1", "agent/reward/0-3")}
    main(["export", logdir, "--format", "json", "--group", "learner", "--tag", "main/lr"])
    assert [r["value"] for r in json.loads(capsys.readouterr().out)] == [0.25] * 5


def test_export_to_a_file_takes_the_format_from_its_suffix(logdir, tmp_path, capsys):
    out = tmp_path / "scalars.json"
    assert main(["export", logdir, "-o", str(out)]) == 0
    assert [ScalarRow(**r) for r in json.loads(out.read_text())] == _scalars()
    captured = capsys.readouterr()
    assert captured.out == "" and f"wrote {len(_scalars())} rows" in captured.err


def test_export_parquet_round_trips(logdir, tmp_path):
    parquet = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "scalars.parquet"
    assert main(["export", logdir, "--format", "parquet", "-o", str(out)]) == 0
    table = parquet.read_table(out).to_pylist()
    assert [ScalarRow(**r) for r in table] == _scalars()


def test_export_parquet_needs_an_output_file(logdir, capsys):
    assert main(["export", logdir, "--format", "parquet"]) == 1
    assert "-o FILE" in capsys.readouterr().err


def test_export_parquet_without_pyarrow_says_what_to_install(logdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["export", logdir, "--format", "parquet", "-o", str(tmp_path / "x.parquet")]) == 1
    assert "pip install pyarrow" in capsys.readouterr().err


def test_export_of_a_tag_that_matches_nothing_lists_the_tags(logdir, capsys):
    assert main(["export", logdir, "--tag", "nope/*"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope/*'" in err and "main/loss" in err


# ----------------------------------------------------------------------------- plot


def test_plot_writes_a_png_with_one_chart_per_tag(logdir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    out = tmp_path / "reward.png"
    assert main(["plot", logdir, "--tag", "agent/reward/*", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        width, height = image.size
    assert width > height > 100  # two charts side by side
    assert "2 charts, 3 runs" in capsys.readouterr().out


def test_plot_needs_a_tag(logdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plot", logdir])
    assert exit_.value.code == 2
    assert "--tag" in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_to_install(logdir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    assert main(["plot", logdir, "--tag", "main/loss", "-o", str(tmp_path / "x.png")]) == 1
    assert "needs matplotlib" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tail


def test_tail_prints_the_whole_log_by_default(logdir, capsys):
    assert main(["tail", logdir]) == 0
    assert capsys.readouterr().out == _text(LOG_LINES)


def test_tail_keeps_one_client_with_its_continuation_lines(logdir, capsys):
    assert main(["tail", logdir, "--client", "agent/3"]) == 0
    assert capsys.readouterr().out == _text(LOG_LINES[1:3])


def test_tail_keeps_a_whole_group(logdir, capsys):
    assert main(["tail", logdir, "--client", "agent"]) == 0
    assert capsys.readouterr().out == _text(LOG_LINES[1:])


def test_tail_keeps_records_at_or_above_a_level(logdir, capsys):
    assert main(["tail", logdir, "--level", "WARNING"]) == 0
    assert capsys.readouterr().out == _text([LOG_LINES[1], LOG_LINES[3]])
    assert main(["tail", logdir, "--level", "INFO5", "--client", "agent/4"]) == 0
    assert capsys.readouterr().out == _text([LOG_LINES[4]])


def test_tail_rejects_an_unknown_level(logdir, capsys):
    assert main(["tail", logdir, "--level", "LOUD"]) == 1
    assert "unknown log level 'LOUD'" in capsys.readouterr().err


def test_tail_without_text_logs_says_so(tmp_path, capsys):
    (tmp_path / "tensorboard").mkdir()
    assert main(["tail", str(tmp_path)]) == 1
    assert "no text logs" in capsys.readouterr().err


@contextlib.contextmanager
def _tail_following(logdir: Path, monkeypatch, written: list[LogLine],
                    *options: str) -> Iterator[LogFiles]:
    """Runs ``tail LOGDIR --follow OPTIONS`` in a thread over text logs that hold ``written``;
    yields their files to append to, then stops the follow and checks that it returned 0."""
    (logdir / "tensorboard").mkdir()
    stop = threading.Event()
    monkeypatch.setattr(cli, "_follow", lambda path, from_start=True: follow(
        path, poll_s=0.05, stop=stop, from_start=from_start))
    files = LogFiles(logdir / "logs")
    files.write(written)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(
        ["tail", str(logdir), "--follow", *options])))
    thread.start()
    try:
        yield files
    finally:
        stop.set()
        thread.join(10)
        files.close()
    assert result == [0]


def _printed(capsys, expected: str, deadline: float, out: str = "") -> str:
    """``out`` and what is printed after it, read until it is ``expected`` or the deadline."""
    while out != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        out += capsys.readouterr().out
    return out


def test_tail_follow_prints_lines_appended_later(tmp_path, monkeypatch, capsys):
    with _tail_following(tmp_path, monkeypatch, LOG_LINES[:1], "--client", "agent/3") as files:
        files.write(LOG_LINES[1:])
        expected = _text(LOG_LINES[1:3])
        assert _printed(capsys, expected, time.monotonic() + 10) == expected


def test_tail_does_not_colour_piped_output(logdir, capsys):
    main(["tail", logdir])
    assert "\x1b[" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- special files, terminals

REPO = str(Path(__file__).resolve().parent.parent)
HOSTILE = ("red \x1b[31mX\x1b[0m title\x1b]0;pwned\x07 csi\x9b2J bell\x07 del\x7f "
           "ls\u2028ps\u2029 tab\tend")
"""Log text that would drive a terminal: ANSI, OSC and C1 sequences, a bell, line separators."""


def _run_cli(*argv: str, timeout: float = 60.0, **kwargs) -> subprocess.CompletedProcess:
    """``python -m rayplex.cli ARGV`` in a subprocess that is killed if it hangs."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "rayplex.cli", *argv], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)


@pytest.fixture
def logdir_with_fifos(logdir, tmp_path):
    """The module's logdir plus a FIFO wherever a command looks for a file."""
    root = tmp_path / "exp"
    shutil.copytree(logdir, root)
    (root / "tensorboard" / "x").mkdir()
    os.mkfifo(root / "tensorboard" / "x" / "events.out.tfevents.1.h.1.r")
    os.mkfifo(root / "tensorboard" / "learner" / "events.out.tfevents.9.h.1.r")
    os.mkfifo(root / "logs" / "agent" / "fifo.log")
    os.mkfifo(root / "params" / "learner" / "fifo.json")
    os.mkfifo(root / "artifacts" / "learner" / "main" / "fifo.pkl")
    return str(root)


def test_ls_finishes_when_fifos_are_named_like_event_params_and_log_files(logdir_with_fifos):
    done = _run_cli("ls", logdir_with_fifos, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "agent/reward/0-3" in done.stdout and "learner/main/model.pkl" in done.stdout
    for name in ("fifo.log", "fifo.json", "fifo.pkl", "fifo"):
        assert f"/{name}" not in done.stdout and f" {name}" not in done.stdout
    assert "│ x " not in done.stdout  # the run holding only a FIFO is no run


def test_export_finishes_when_a_fifo_is_named_like_an_event_file(logdir_with_fifos):
    done = _run_cli("export", logdir_with_fifos, "--format", "csv", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == len(_scalars())


def test_tail_refuses_a_fifo_in_place_of_the_log_file(tmp_path):
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "logs").mkdir()
    os.mkfifo(tmp_path / "logs" / "all.log")
    done = _run_cli("tail", str(tmp_path), capture_output=True, text=True)
    assert done.returncode == 1
    assert "FIFO" in done.stderr and "all.log" in done.stderr


def _hostile_logdir(root: Path) -> Path:
    (root / "tensorboard").mkdir(parents=True)
    (root / "logs").mkdir()
    text = _text(LOG_LINES[:2]) + HOSTILE + "\n" + _text([LOG_LINES[2]._replace(message=HOSTILE)])
    (root / "logs" / "all.log").write_bytes(text.encode("utf-8"))
    return root


def _tail_on_a_terminal(logdir: Path, *argv: str, no_color: bool = False) -> str:
    """What ``rayplex tail`` (or ``rayplex ARGV`` when given) writes when its stdout is a
    terminal (a pty)."""
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    argv = argv or ("tail", str(logdir))
    proc = subprocess.Popen([sys.executable, "-m", "rayplex.cli", *argv],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the pty is gone
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
        os.close(master)
    return out.decode("utf-8").replace("\r\n", "\n")  # the tty turns \n into \r\n


def test_tail_to_a_terminal_shows_control_characters_escaped(tmp_path):
    import re

    out = _tail_on_a_terminal(_hostile_logdir(tmp_path / "exp"))
    escaped = ("red \\x1b[31mX\\x1b[0m title\\x1b]0;pwned\\x07 csi\\x9b2J bell\\x07 "
               "del\\x7f ls\\u2028ps\\u2029 tab\tend")
    assert escaped + "\n" in out  # the foreign line, whole
    # The formatted record (whose writer split it at U+2028/U+2029) is escaped as well.
    assert out.count("red \\x1b[31mX\\x1b[0m title\\x1b]0;pwned\\x07") == 2
    # Only rayplex's own colour codes (SGR) remain; no other control character reaches the tty.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert not [c for c in plain if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F
                or c in "\u2028\u2029"]
    assert "starting" in plain and "slow step" in plain


def test_tail_piped_writes_the_log_text_unchanged(tmp_path):
    logdir = _hostile_logdir(tmp_path / "exp")
    done = _run_cli("tail", str(logdir), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (logdir / "logs" / "all.log").read_bytes()


def test_ls_shows_foreign_tags_literally_without_markup_or_control_characters(tmp_path):
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    from rayplex.event_bytes import frame

    root = tmp_path / "exp"
    run = root / "tensorboard" / "other"
    run.mkdir(parents=True)
    tag = "[bold]x[/] \x1b]0;pwned\x07"
    event = Event(wall_time=WALL, step=1, summary=Summary(value=[Summary.Value(tag=tag,
                                                                               simple_value=1.0)]))
    (run / "events.out.tfevents.1.h").write_bytes(frame(event.SerializeToString()))
    done = _run_cli("ls", str(root), "--all", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "[bold]x[/] \\x1b]0;pwned\\x07" in done.stdout


# ----------------------------------------------------------------------------- board


def test_board_without_tensorboard_says_what_to_install(logdir, monkeypatch, capsys):
    import rayplex.board

    monkeypatch.setattr(rayplex.board.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(rayplex.board.shutil, "which", lambda name: None)
    assert main(["board", logdir]) == 1
    err = capsys.readouterr().err
    assert err == 'rayplex board: error: TensorBoard is not installed: pip install "rayplex[board]"\n'


def test_the_readers_see_what_the_cli_exports(logdir, capsys):
    main(["export", logdir, "--format", "json", "--tag", "main/loss"])
    exported = [ScalarRow(**r) for r in json.loads(capsys.readouterr().out)]
    assert exported == list(read_scalars(logdir, tag="main/loss"))


# ----------------------------------------------------------------------------- conventions


def test_version_prints_the_package_version(capsys):
    import rayplex

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"rayplex {rayplex.__version__}\n"


@pytest.mark.parametrize(("command", "shown"), [
    ("demo", ["(default: ./rayplex_logs/demo)", "(default: 40)", "(default: 8)", "(default: 20.0)",
              "(default: start a local Ray)", "(default: 6006)", "(default: 127.0.0.1)"]),
    ("board", ["(default: 6006)", "(default: 127.0.0.1)"]),
    ("view", ["(default: a free one)", "(default: 127.0.0.1)"]),
    ("ls", ["(default: 30 per table)"]),
    ("export", ["(default: from -o's suffix, else csv)", "(default: stdout)"]),
    ("plot", ["(default: scalars.png)", "(default: 100)"]),
    ("tail", ["(default: all)"]),
])
def test_every_help_shows_the_defaults(command, shown, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped at the terminal width
    for text in shown:
        assert text in out, text
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize(("word", "suggestion"), [("dmeo", "demo"), ("tial", "tail"),
                                                  ("export_", "export"), ("bord", "board")])
def test_a_misspelt_command_suggests_the_closest_and_exits_2(word, suggestion, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([word, str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rayplex")
    assert f"rayplex: error: unknown command {word!r}; did you mean {suggestion!r}?" in err


def test_an_unknown_word_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["xyzzy"])
    assert exit_.value.code == 2
    assert ("unknown command 'xyzzy' (choose from demo, board, view, ls, export, plot, tail, "
            "index, alerts)") in capsys.readouterr().err


def test_exit_codes_are_0_for_success_1_for_errors_and_2_for_usage(logdir, tmp_path, capsys):
    assert main(["ls", logdir]) == 0
    assert main(["ls", str(tmp_path / "missing")]) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["ls", logdir, "--no-such-option"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["tail", logdir, "-n", "-1"])
    assert exit_.value.code == 2
    assert "must be 0 or more" in capsys.readouterr().err


def test_the_installed_command_exits_with_2_on_a_misspelt_command():
    done = _run_cli("dmeo", capture_output=True, text=True)
    assert done.returncode == 2
    assert "did you mean 'demo'?" in done.stderr and done.stdout == ""


# ----------------------------------------------------------------------------- tail -n


def test_tail_n_keeps_the_last_records_with_their_continuation_lines(logdir, capsys):
    assert main(["tail", logdir, "-n", "3"]) == 0
    assert capsys.readouterr().out == _text(LOG_LINES[2:])
    assert main(["tail", logdir, "-n", "4"]) == 0
    assert capsys.readouterr().out == _text(LOG_LINES[1:])  # "slow step" with its second line


def test_tail_n_counts_after_filtering(logdir, capsys):
    assert main(["tail", logdir, "--client", "agent/3", "-n", "1"]) == 0
    assert capsys.readouterr().out == _text(LOG_LINES[2:3])
    assert main(["tail", logdir, "--level", "WARNING", "--lines", "5"]) == 0
    assert capsys.readouterr().out == _text([LOG_LINES[1], LOG_LINES[3]])


def test_tail_n_0_prints_nothing_and_more_than_there_are_prints_all(logdir, capsys):
    assert main(["tail", logdir, "-n", "0"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["tail", logdir, "-n", "1000"]) == 0
    assert capsys.readouterr().out == _text(LOG_LINES)


def test_tail_n_with_follow_prints_the_last_records_then_new_ones(tmp_path, monkeypatch, capsys):
    with _tail_following(tmp_path, monkeypatch, LOG_LINES[:3], "-n", "1") as files:
        deadline = time.monotonic() + 10
        out = _printed(capsys, _text(LOG_LINES[2:3]), deadline)
        assert out == _text(LOG_LINES[2:3])
        files.write(LOG_LINES[3:])
        expected = _text(LOG_LINES[2:])
        assert _printed(capsys, expected, deadline, out) == expected


# ----------------------------------------------------------------------------- natural order


def test_natural_key_orders_numbers_by_value():
    names = ["agent/10", "agent/2", "agent/1", "agent/reward/16-23", "agent/reward/8-15",
             "agent/reward/0-7", "learner", "agent/summary"]
    assert sorted(names, key=cli.natural_key) == [
        "agent/1", "agent/2", "agent/10", "agent/reward/0-7", "agent/reward/8-15",
        "agent/reward/16-23", "agent/summary", "learner"]


@pytest.fixture(scope="module")
def many_agents(tmp_path_factory):
    """Runs agent/0..agent/11 in bins of 4 (tags agent/reward/0-3, 4-7, 8-11), one point each."""
    root = tmp_path_factory.mktemp("natural") / "exp"
    for index in range(12):
        low = index // 4 * 4
        writer = EventWriter(root / "tensorboard" / f"agent/{index}")
        writer.write(ScalarTemplate(tag_header(f"agent/reward/{low}-{low + 3}")).record(
            WALL, 0, float(index)))
        writer.close()
    with LogFiles(root / "logs") as files:
        files.write([LogLine(WALL, 20, "agent/10", "1a2b3c4d", 1, "env", "x"),
                     LogLine(WALL, 20, "agent/2", "1a2b3c4d", 1, "env", "x"),
                     LogLine(WALL, 20, "rayplex/hub", "hub", 1, "rayplex.hub", "hub started")])
    return str(root)


def test_ls_lists_runs_tags_and_log_files_in_natural_order(many_agents, capsys):
    assert main(["ls", many_agents]) == 0
    out = capsys.readouterr().out
    cells = [line.strip("│ ").split("│")[0].strip() for line in out.splitlines()
             if line.startswith("│")]
    runs = [c for c in cells if c.startswith("agent/") and "reward" not in c]
    assert runs == [f"agent/{i}" for i in range(12)] * 2  # the runs table, then the clients'
    assert [c for c in cells if c.startswith("agent/reward/")] == [
        "agent/reward/0-3", "agent/reward/4-7", "agent/reward/8-11"]
    assert [c for c in cells if c.startswith("logs/agent/")] == ["logs/agent/2.log",
                                                                 "logs/agent/10.log"]


def test_ls_explains_the_hubs_own_rayplex_group_instead_of_listing_it(many_agents, capsys):
    assert main(["ls", many_agents]) == 0
    out = capsys.readouterr().out
    assert " 1 groups, " in out.splitlines()[0]  # agent only
    assert not [line for line in out.splitlines() if line.startswith("│ rayplex ")]
    assert "also rayplex/: the hub's own log lines (client rayplex/hub, logs/rayplex/hub.log)" in out
    assert "logs/rayplex/hub.log" in out


def test_plot_draws_the_charts_in_natural_order(many_agents, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    drawn: list[tuple[str, list[str]]] = []
    save = Figure.savefig

    def record(self, *args, **kwargs):
        for axes in self.axes:
            drawn.append((axes.get_title(), [line.get_label() for line in axes.get_lines()]))
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    assert main(["plot", many_agents, "--tag", "agent/reward/*", "-o", str(tmp_path / "r.png")]) == 0
    assert [title for title, _ in drawn] == ["agent/reward/0-3", "agent/reward/4-7",
                                             "agent/reward/8-11"]
    assert drawn[2][1] == ["agent/8", "agent/9", "agent/10", "agent/11"]


# ----------------------------------------------------------------------------- NO_COLOR


def test_tail_on_a_terminal_is_coloured_unless_no_color_is_set(tmp_path):
    logdir = tmp_path / "exp"
    (logdir / "tensorboard").mkdir(parents=True)
    with LogFiles(logdir / "logs") as files:
        files.write(LOG_LINES)
    coloured = _tail_on_a_terminal(logdir)
    assert "\x1b[" in coloured
    plain = _tail_on_a_terminal(logdir, no_color=True)
    assert "\x1b" not in plain
    assert plain == _text(LOG_LINES)


def test_ls_on_a_terminal_has_no_escape_codes_when_no_color_is_set(logdir):
    assert "\x1b[" in _tail_on_a_terminal(Path(logdir), "ls", logdir)
    assert "\x1b" not in _tail_on_a_terminal(Path(logdir), "ls", logdir, no_color=True)


# ----------------------------------------------------------------------------- hostile files, URLs


def test_ls_of_a_logdir_with_a_100000_deep_params_file_lists_everything_else(logdir, tmp_path):
    # through the real command: one hostile file is an error row for its client, not a crash
    root = tmp_path / "exp"
    shutil.copytree(logdir, root)
    (root / "params" / "agent").mkdir()
    (root / "params" / "agent" / "7.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "params" / "learner" / "main.json").write_text(json.dumps(
        {"Args": {"lr": 0.25}, "job": {"status": "running"}}))
    done = _run_cli("ls", str(root), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "agent/reward/0-3" in done.stdout and "learner/main/model.pkl" in done.stdout
    assert "params: learner/main" in done.stdout
    rows: dict[str, list[str]] = {}  # a client's rows: the errors table's, the clients table's
    for line in done.stdout.splitlines():
        if line.startswith("│ agent/7") or line.startswith("│ learner/main"):
            rows.setdefault(line.split("│")[1].strip(), []).append(line)
    assert any("nested too deeply" in row for row in rows["agent/7"]) and "7.json" in done.stdout
    assert any("running" in row for row in rows["learner/main"])
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [
    ["ls", "nosuch://bucket/exp"], ["export", "nosuch://bucket/exp"],
    ["tail", "nosuch://bucket/exp"], ["tail", "nosuch://bucket/exp", "-f"],
    ["plot", "nosuch://bucket/exp", "--tag", "x"], ["board", "nosuch://bucket/exp", "--port", "0"],
    ["demo", "--logdir", "nosuch://bucket/exp"], ["ls", "az://bucket/exp"],
    ["ls", "https://host/exp"],
], ids=lambda argv: " ".join(argv[:1] + argv[-1:]))
def test_every_command_refuses_an_unresolvable_url_logdir_in_one_line(argv, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where a URL taken as a relative path would land
    logdir = tmp_path / "nosuch:" / "bucket" / "exp"
    (logdir / "tensorboard").mkdir(parents=True)
    (logdir / "logs").mkdir()
    (logdir / "logs" / "all.log").write_text("")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a storage URI pyarrow.fs can open" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nosuch:"]


def test_ls_of_a_logdir_with_a_100000_deep_control_file_lists_everything_else(logdir, tmp_path,
                                                                               capsys):
    from rayplex.actors.writer import STATE_DIR
    from rayplex.rules import CONTROL_FILE

    root = tmp_path / "exp"
    shutil.copytree(logdir, root)
    (root / STATE_DIR).mkdir()
    (root / STATE_DIR / CONTROL_FILE).write_text("[" * 100_000 + "]" * 100_000)
    (root / "params" / "learner" / "main.json").write_text(json.dumps({"job": {"status": "done"}}))
    assert main(["ls", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "learner/main/model.pkl" in out and any(
        line.startswith("│ learner/main") and "done" in line for line in out.splitlines())
    assert "control.json" in err and "heartbeats are not shown" in err
