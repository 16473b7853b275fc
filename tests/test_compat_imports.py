"""The compat modules and the integrations use rayplex's public API only: no ``_private`` name
imported from rayplex, and never ``rayplex.actors`` or the worker side's internals (session,
buffer, encoder, sender). Read with ``ast``: no import runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rayplex"
FORBIDDEN = ("rayplex.actors", "rayplex.session", "rayplex.buffer", "rayplex.encoder",
             "rayplex.sender")
FILES = sorted([*PACKAGE.glob("compat/*.py"), *PACKAGE.glob("integrations/*.py")])


def offences(source: str, module: str) -> list[str]:
    """Every import of ``source`` (the module ``module``) that breaks the rule."""
    package = module.rsplit(".", 1)[0]  # its own helpers (compat._rows) are its business
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                parts = module.split(".")[: -node.level]
                base = ".".join([*parts, base] if base else parts)
            targets = [(base, alias.name) for alias in node.names]
        else:
            continue
        for mod, name in targets:
            if not mod.startswith("rayplex"):
                continue
            full = f"{mod}.{name}" if name else mod
            if any(full == f or full.startswith(f + ".") for f in FORBIDDEN):
                out.append(f"line {node.lineno}: {full} (rayplex.actors / worker internals)")
            elif _private(full) and not (mod + ".").startswith(package + "."):
                out.append(f"line {node.lineno}: {full} (a private name)")
    return out


def _private(dotted: str) -> bool:
    return any(p.startswith("_") and not p.endswith("__") for p in dotted.split("."))


def test_the_scanner_catches_what_the_rule_forbids() -> None:
    bad = ("from rayplex import actors\nimport rayplex.session\n"
           "from rayplex.read import _scalar_of\nfrom rayplex.actors.claim import holder\n")
    found = offences(bad, "rayplex.compat.x")
    assert len(found) == 4, found
    good = ("import rayplex\nfrom rayplex.handle import HubHandle\n"
            "from rayplex.compat._rows import RowWriter\nfrom rayplex.nested import flatten\n")
    assert offences(good, "rayplex.compat.x") == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compat_and_integrations_import_only_public_rayplex(path: Path) -> None:
    module = "rayplex." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    assert offences(path.read_text(encoding="utf-8"), module) == []


def private_uses(source: str) -> list[str]:
    """Every ``obj._name`` in ``source`` whose ``_name`` the module does not define itself
    (a def, a class attribute or a ``self._name =``): a private of rayplex's other modules."""
    tree = ast.parse(source)
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.endswith("__") and node.attr not in own):
            out.append(f"line {node.lineno}: .{node.attr}")
    return out


def test_the_private_use_scanner_sees_another_modules_private() -> None:
    assert private_uses("def f(logger):\n    logger._call_hub('x')\n") == ["line 2: ._call_hub"]
    assert private_uses("class A:\n    def _mine(self):\n        pass\n"
                        "    def g(self, other):\n        other._mine()\n") == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compat_and_integrations_touch_no_private_of_rayplex(path: Path) -> None:
    assert private_uses(path.read_text(encoding="utf-8")) == []
