"""The worker-side session: what a Logger asks of it, and what a closed experiment raises.

The session knows nothing of the Logger (no import, no private attribute written into it):
a Logger puts through :attr:`rayplex.session.Session.put`/``put_scalar`` and registers what
must happen before a flush with :meth:`rayplex.session.Session.before_flush`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rayplex
from rayplex.errors import ExperimentClosedError, RayplexError

SESSION = Path(__file__).resolve().parent.parent / "rayplex" / "session.py"


def test_the_session_module_never_imports_the_logger_even_for_type_checking():
    imported = set()
    for node in ast.walk(ast.parse(SESSION.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {name for name in imported if name.startswith("rayplex.logger")}, imported
    assert "_write_row" not in SESSION.read_text(encoding="utf-8")


def test_a_closed_experiment_has_an_error_class_of_its_own_users_can_catch():
    assert issubclass(ExperimentClosedError, RayplexError)
    assert rayplex.ExperimentClosedError is ExperimentClosedError
    assert "ExperimentClosedError" in rayplex.__all__


def test_a_logger_kept_across_shutdown_raises_experiment_closed_at_every_call(
        ray_session, tmp_path):
    rayplex.init(str(tmp_path / "a"), name="closed-a")
    old = rayplex.get_logger("learner/main", hub="closed-a")
    old.add_scalar("x", 1.0, step=0)
    old.log(step=0, loss=1.0)  # a pending row: written by shutdown's flush
    rayplex.shutdown("closed-a")
    for call in (lambda: old.add_scalar("x", 2.0, step=1), lambda: old.info("late"),
                 lambda: old.add_text("t", "late"), old.flush,
                 lambda: old.save_text("late", "late.txt")):
        with pytest.raises(ExperimentClosedError, match="shut down|closed"):
            call()


def test_a_pending_row_is_written_by_the_sessions_flush_through_its_callback(experiment):
    log = rayplex.get_logger("learner/row-cb")
    log.log(step=3, loss=0.5)
    rayplex.flush()  # the session's flush: the Logger registered its row as a before-flush step
    from tests.conftest import tb_scalars

    assert tb_scalars(experiment.logdir)["learner"]["row-cb/loss"] == [(3, 0.5)]
