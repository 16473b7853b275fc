"""docs/guarantees.md names a test for every promise: each test it names must exist, so the
table cannot silently point at a test that was renamed or removed."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
_CELL = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"^(?:(?P<file>[\w/]+\.py))?(?:::(?P<test>\w+)(?:\[[^\]]*\])?)?$")


def _tests_in(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def _references() -> list[tuple[int, str, str | None]]:
    """(line, test file, test name or None) for every test the table names; a bare
    ``::name`` continues the file named before it in the same row."""
    refs = []
    for number, line in enumerate((ROOT / "docs" / "guarantees.md").read_text().splitlines(), 1):
        if not line.startswith("|"):
            continue
        current = None
        for cell in _CELL.findall(line):
            match = _NAME.match(cell.strip())
            if match is None or not (match["file"] or match["test"]):
                continue
            if match["file"]:
                if not match["file"].startswith("test_") and "/" not in match["file"]:
                    continue  # a module of the package, not a test file
                current = match["file"] if "/" in match["file"] else f"tests/{match['file']}"
            if current is not None:
                refs.append((number, current, match["test"]))
    return refs


def test_every_test_the_guarantees_table_names_exists() -> None:
    refs = _references()
    assert len(refs) > 100  # the parser reads the table
    defined: dict[str, set[str]] = {}
    missing = []
    for number, file, test in refs:
        path = ROOT / file
        if not path.exists():
            missing.append(f"docs/guarantees.md:{number}: {file} does not exist")
            continue
        names = defined.setdefault(file, _tests_in(path))
        if test is not None and test not in names:
            missing.append(f"docs/guarantees.md:{number}: {file}::{test} does not exist")
    assert not missing, "\n".join(missing)
