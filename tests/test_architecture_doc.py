"""docs/architecture.md cannot go stale silently: every name it uses must exist.

The document writes files as repository paths (``rayplex/actors/hub.py``) and code as fully
qualified dotted names (``rayplex.actors.hub.Hub.write_node``). These tests check, without
starting Ray, that

* every file or directory it names exists (and every ``tests/x.py::test_name`` is defined),
* every dotted ``rayplex.…`` name resolves (read from the source; if that fails, imported),
* every module under ``rayplex/`` is named in it,
* it uses no bare ``Class.method`` (which the checks above could not resolve),
* every ``RAYPLEX_*`` variable it names is a setting of :class:`rayplex.config.Config`,
* every request the hub answers is in its request table.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"

PATH = re.compile(r"(?<![\w/.-])((?:rayplex|tests|docs|benchmarks)/[A-Za-z0-9_./-]*)(::[\w.]+)?")
FILE_ENDINGS = (".py", ".md", ".png", ".json", ".toml", ".txt", "/")
DOTTED = re.compile(r"(?<![\w/.@-])rayplex(?:\.[A-Za-z_]\w*)+")
BARE = re.compile(r"(?<![\w./:-])([A-Z][A-Za-z0-9_]*)\.([A-Za-z_]\w*)")
NOT_CODE = {"md", "py", "json", "jsonl", "log", "pbtxt", "toml", "png", "pkl", "tsv", "txt"}
ENV = re.compile(r"\bRAYPLEX_([A-Z][A-Z0-9_]*[A-Z0-9])")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def named_paths(text: str) -> list[tuple[str, str | None]]:
    """``(path, test name or None)`` for every repository path the text names."""
    out = []
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".")
        if path.endswith(FILE_ENDINGS):
            test = match.group(2)[2:] if match.group(2) else None
            out.append((path, test))
    return out


def dotted_names(text: str) -> set[str]:
    return {m.group(0) for m in DOTTED.finditer(text)}


# ------------------------------------------------------------------ resolving a dotted name
def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _bindings(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names bound by the statements of a module or class body (also inside if/try)."""
    out: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                out[alias.asname or alias.name] = node
        elif isinstance(node, (ast.If, ast.Try)):
            for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                out.update(_bindings(block))
    return out


def _static(module: str, attrs: list[str]) -> bool:
    """Whether ``module.attrs`` is defined in rayplex's source (False: not found this way)."""
    path = _module_file(module)
    if path is None:
        return False
    if not attrs:
        return True
    if _module_file(f"{module}.{attrs[0]}") is not None:
        return _static(f"{module}.{attrs[0]}", attrs[1:])
    node = _bindings(_tree(path).body).get(attrs[0])
    if isinstance(node, ast.ImportFrom):
        assert node.module is not None
        name = next(a.name for a in node.names if (a.asname or a.name) == attrs[0])
        return _static(node.module, [name, *attrs[1:]])
    if node is None:
        return False
    if len(attrs) == 1:
        return True
    if isinstance(node, ast.ClassDef) and len(attrs) == 2:
        return _in_class(module, node, attrs[1])
    return False


def _in_class(module: str, cls: ast.ClassDef, attr: str) -> bool:
    if attr in _bindings(cls.body):
        return True
    path = _module_file(module)
    assert path is not None
    scope = _bindings(_tree(path).body)
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            continue
        found = scope.get(base.id)
        if isinstance(found, ast.ClassDef) and _in_class(module, found, attr):
            return True
        if isinstance(found, ast.ImportFrom) and found.module and found.module.startswith(
                "rayplex"):
            origin = _module_file(found.module)
            if origin is not None:
                target = _bindings(_tree(origin).body).get(base.id)
                if isinstance(target, ast.ClassDef) and _in_class(found.module, target, attr):
                    return True
    return False


def _imported(name: str) -> str | None:
    """``None`` if importing and walking ``name`` works, else why not."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module.startswith(exc.name):
                continue  # this prefix is not a module: try a shorter one
            return f"importing {module}: {exc}"
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return f"{module} has no {'.'.join(parts[cut:])}"
            obj = getattr(obj, attr)
        return None
    return "no such module"


def unresolved(names: set[str]) -> list[str]:
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        # the longest module prefix that is a file, then the attributes
        cut = next((c for c in range(len(parts), 0, -1)
                    if _module_file(".".join(parts[:c])) is not None), 0)
        if cut and _static(".".join(parts[:cut]), parts[cut:]):
            continue
        why = _imported(name)
        if why is not None:
            missing.append(f"{name} ({why})")
    return missing


# --------------------------------------------------------------------------------- tests
def test_every_named_file_exists() -> None:
    missing = []
    for path, test in named_paths(doc_text()):
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif test is not None:
            scope = _bindings(_tree(target).body)
            head, *rest = test.split(".")
            node = scope.get(head)
            if node is None or (rest and not (isinstance(node, ast.ClassDef)
                                              and rest[0] in _bindings(node.body))):
                missing.append(f"{path}::{test}")
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_dotted_name_resolves() -> None:
    names = dotted_names(doc_text())
    assert len(names) > 100, "the document should name the code it describes"
    missing = unresolved(names)
    assert not missing, "docs/architecture.md names code that does not exist:\n" + "\n".join(
        missing)


def test_every_module_is_named() -> None:
    named = {path for path, _ in named_paths(doc_text())}
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "rayplex").rglob("*.py"))
    absent = [m for m in modules if m not in named]
    assert not absent, f"modules missing from docs/architecture.md: {absent}"


def test_no_bare_class_method() -> None:
    bare = sorted({m.group(0) for m in BARE.finditer(doc_text())
                   if m.group(2) not in NOT_CODE})
    assert not bare, ("write code fully qualified (rayplex.module.Class.method) so that it is "
                      f"checked: {bare}")


def test_every_setting_exists() -> None:
    from rayplex.config import Config

    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted({m.group(1) for m in ENV.finditer(doc_text())
                      if m.group(1).lower() not in fields})
    assert not unknown, f"docs/architecture.md names unknown settings: RAYPLEX_{unknown}"


def test_every_hub_request_is_described() -> None:
    """The request table lists every request/response operation the hub answers."""
    from rayplex.actors.requests import REQUESTS

    text = doc_text()
    absent = sorted(name for name in REQUESTS if f"`{name}`" not in text)
    assert not absent, f"hub requests missing from docs/architecture.md: {absent}"


def test_the_checks_catch_wrong_names() -> None:
    """The checks themselves: a wrong name in any form is caught, a right one is not."""
    text = ("`rayplex/actors/hub.py` `rayplex/nope.py` `tests/test_summaries.py::nope` "
            "`rayplex.actors.hub.Hub.write_node` `rayplex.session.Session.put` "
            "`rayplex.nope.Thing` `Session.put` see README.md")
    paths = named_paths(text)
    assert [p for p, _ in paths if not (ROOT / p).exists()] == ["rayplex/nope.py"]
    assert ("tests/test_summaries.py", "nope") in paths
    missing = unresolved(dotted_names(text))
    assert [m.split(" ")[0] for m in missing] == ["rayplex.nope.Thing", "rayplex.session.Session.put"]
    assert [m.group(0) for m in BARE.finditer(text) if m.group(2) not in NOT_CODE] == [
        "Session.put"]
