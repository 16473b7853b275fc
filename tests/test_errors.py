"""Every exception a user can catch is declared in ``rayplex/errors.py`` (issue 22 item 9)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import rayplex
from rayplex import errors

PACKAGE = pathlib.Path(rayplex.__file__).parent

# Exceptions used as internal control flow between two functions of one module or layer; each is
# caught before it reaches a caller of the public API (the test below names where).
INTERNAL = {
    "Unwritable": "rayplex/actors/writer.py: the hub writer's 'answer with an error' signal",
    "LogdirLost": "rayplex/actors/claim.py: turned into HubWriteError by the hub",
    "RunGone": "rayplex/forward/trackers.py: a tracker's run deleted, counted by the forwarder",
    "Stopped": "rayplex/board.py: a BaseException like KeyboardInterrupt, ends `rayplex board`",
    "NotRegularFileError": "rayplex/tfrecord.py: a symlinked event file, skipped by readers",
    "StoreFormatError": "rayplex/store/format.py: a torn segment, skipped with a StoreWarning",
    "BadRequest": "rayplex/view/api.py: a request the viewer refuses, answered HTTP 400 by "
                  "rayplex/view/server.py",
}


def _exception_classes() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = [ast.unparse(base) for base in node.bases]
            if any(base.split(".")[-1].endswith(("Error", "Exception", "Interrupt")) for base in bases):
                found.append((str(path.relative_to(PACKAGE.parent)), node.name))
    return found


def test_every_public_exception_class_lives_in_errors_py() -> None:
    outside = [(path, name) for path, name in _exception_classes()
               if path != "rayplex/errors.py" and name not in INTERNAL]
    assert outside == [], f"declare these in rayplex/errors.py (or make them private): {outside}"


def test_the_scan_sees_the_errors_module_itself() -> None:
    # The scan above would pass vacuously if it found nothing: it must find errors.py's classes.
    names = {name for path, name in _exception_classes() if path == "rayplex/errors.py"}
    assert {"RayplexError", "HubWriteError", "BoardStartError", "NoCurrentLoggerError"} <= names


def test_every_error_class_is_a_rayplex_error_and_a_runtime_error() -> None:
    classes = [getattr(errors, name) for name in dir(errors)
               if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), Exception)
               and getattr(errors, name).__module__ == "rayplex.errors"]
    assert len(classes) >= 8
    for cls in classes:
        assert issubclass(cls, errors.RayplexError) and issubclass(cls, RuntimeError), cls


def test_current_logger_outside_a_logged_task_names_the_error() -> None:
    with pytest.raises(errors.NoCurrentLoggerError, match="only available inside a @rayplex.logged"):
        rayplex.current_logger()
    with pytest.raises(RuntimeError):  # what it was before it had a name: still caught the same way
        rayplex.current_logger()


def test_the_board_errors_are_importable_from_both_homes() -> None:
    from rayplex import board

    assert board.BoardStartError is errors.BoardStartError
    assert board.TensorBoardNotInstalledError is errors.TensorBoardNotInstalledError
