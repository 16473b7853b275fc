"""The logdir layout lives in one module, :mod:`rayplex.layout`, and is the README's "On disk".

(a) A hub run as a plain object (no Ray) writes each file the README lists where
``rayplex.layout`` says; (b) no other module of the package spells a layout name.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from rayplex import layout
from rayplex.actors.hub import Hub
from rayplex.encoder import Encoder
from rayplex.forward.core import cursor_path
from rayplex.items import Line, Scalar
from rayplex.logdir_codec import params_path as client_params_path
from rayplex.records import Batch, Chunk, NodeCall
from rayplex.store.format import Layout

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rayplex"


def _on_disk_tree() -> list[str]:
    """The entries of the README's "On disk" code block (the part before each ``#``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## On disk", 1)[1].split("```", 2)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines()[2:] if line.strip()]


def test_a_plain_hub_writes_each_file_where_layout_and_the_readme_say(tmp_path):
    logdir = str(tmp_path / "exp")
    hub = Hub("plain", logdir)
    try:
        from rayplex.groups import GroupSpec
        hub.register_group(GroupSpec.normal("learner"))
        line = (1.0, 20, "learner/a", "node0001", 1, "app", "hello", None)
        batch = Encoder(hub.registry).encode(
            [Scalar("learner/a", "x", 1, 1.0, 2.0), Line(line)], "w1", 1, hub.experiment)
        poison = Batch("w2", 1, hub.registry.stamp, [Chunk("all.log/x", "all.log", b"\x00", 1)],
                       [], [], experiment=hub.experiment)
        hub.write_node(NodeCall("n", 1, [batch, poison]))
        assert hub.request("r1", "save_artifact", ("learner/a/model.bin", b"weights"))[0]
        assert hub.request("r2", "save_params", ("learner/a", {"lr": 0.1}))[0]
        assert hub.request("r3", "ping", ("learner/a", "running", "t1", {}))[0]
        hub.flush()
    finally:
        hub._stop.set()
        hub.close()

    state = layout.state_dir(logdir)
    expected = {
        layout.tensorboard_dir(logdir): "tensorboard/",
        layout.run_dir(logdir, "learner"): "tensorboard/<run dirs>/",
        layout.all_log_path(logdir): "logs/all.log",
        os.path.join(layout.logs_dir(logdir), "learner", "a.log"): "logs/<group>/<name>.log",
        os.path.join(layout.artifacts_dir(logdir), "learner", "a", "model.bin"):
            "artifacts/<group>/<name>/...",
        layout.params_path(logdir, "learner", "a"): "params/<group>/<name>.json",
        layout.registry_path(logdir): ".rayplex/registry.json",
        layout.journal_path(logdir): ".rayplex/journal",
        layout.owner_path(logdir): ".rayplex/owner.json",
        layout.lock_path(logdir): ".rayplex/lock",
        layout.quarantine_dir(logdir): ".rayplex/quarantine/",
        layout.control_path(logdir): ".rayplex/control.json",
    }
    for path, readme in expected.items():
        assert os.path.exists(path), f"{readme}: nothing at {path}"
        assert os.path.commonpath([path, logdir]) == logdir
    assert any("tfevents" in n for n in os.listdir(layout.run_dir(logdir, "learner")))
    quarantined = os.listdir(layout.quarantine_dir(logdir))
    assert [re.fullmatch(r".+-1\.json", n) is not None for n in quarantined] == [True]
    assert os.path.dirname(layout.journal_path(logdir)) == state
    assert client_params_path(logdir, "learner/a") == layout.params_path(logdir, "learner", "a")

    # the two files this hub does not write: a forwarder's cursor and the store's manifest
    class _Tracker:
        key = "mlflow-1"
    assert cursor_path(logdir, _Tracker()) == layout.forward_cursor_path(logdir, "mlflow-1")  # type: ignore[arg-type]
    assert layout.forward_cursor_path(logdir, "mlflow-1") == os.path.join(state, "forward-mlflow-1.json")
    store = Layout.of(logdir)
    assert str(store.manifest) == layout.manifest_path(logdir)
    assert str(store.store) == layout.store_dir(logdir)

    # every path named above is a line of the README's tree
    tree = _on_disk_tree()
    relative = {os.path.relpath(p, logdir) for p in [
        layout.tensorboard_dir(logdir), layout.all_log_path(logdir), layout.artifacts_dir(logdir),
        layout.params_dir(logdir), layout.registry_path(logdir), layout.journal_path(logdir),
        layout.owner_path(logdir), layout.lock_path(logdir), layout.quarantine_dir(logdir),
        layout.control_path(logdir), layout.forward_cursor_path(logdir, "<tracker>"),
        layout.manifest_path(logdir)]}
    for rel in relative:
        assert any(entry.startswith(rel) or f" {rel}" in entry or f", {rel}" in entry
                   for entry in tree), f"{rel} is not in the README's On disk tree: {tree}"
    assert set(layout.RESERVED_TREES) == {layout.TENSORBOARD, layout.LOGS, layout.ARTIFACTS,
                                          layout.PARAMS}


LAYOUT_NAMES = {
    layout.STATE_DIR, layout.REGISTRY_FILE, layout.LEGACY_REGISTRY_FILE, layout.OWNER_FILE,
    layout.CONTROL_FILE, layout.MANIFEST, layout.ALL_LOG, layout.TENSORBOARD, layout.LOGS,
    layout.ARTIFACTS, layout.PARAMS, layout.JOURNAL_FILE, layout.LOCK_FILE,
    layout.QUARANTINE_DIR, layout.STORE_DIR,
}
"""A string constant equal to one of these, in code (docstrings are prose), is a spelled-out
layout name."""

ALLOWED = {
    ("board.py", "tensorboard"),  # the tensorboard package and program, not the directory
    ("cli.py", "artifacts"),  # the title and a column label of `rayplex ls`'s table
}
"""``(module, name)`` pairs where the string is not a path (each checked by hand)."""


def _not_paths(tree: ast.AST) -> set[int]:
    """Docstrings (prose) and JSON keys (``{"logs": ...}``, ``data["params"]``)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            for stmt in body:
                if (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                        and isinstance(stmt.value.value, str)):
                    ids.add(id(stmt.value))  # a docstring, or an attribute docstring
        if isinstance(node, ast.Dict):
            ids.update(id(key) for key in node.keys if key is not None)
        if isinstance(node, ast.Subscript):
            ids.add(id(node.slice))
    return ids


def layout_literals() -> list[tuple[str, int, str]]:
    """``(module, line, string)`` of each layout name spelled outside ``rayplex/layout.py``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "layout.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        prose = _not_paths(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in prose):
                value = node.value.rstrip("/")
                if (value in LAYOUT_NAMES or value.startswith("forward-")) \
                        and (rel, value) not in ALLOWED:
                    found.append((rel, node.lineno, node.value))
    return found


def test_no_module_but_layout_spells_a_layout_name():
    assert layout_literals() == []


def test_the_scan_finds_a_spelled_out_name(tmp_path, monkeypatch):
    """The scan is not vacuous: a module that joins ``".rayplex"`` by hand is found, its
    docstring is not."""
    package = tmp_path / "rayplex"
    package.mkdir()
    (package / "bad.py").write_text('"""Doc: .rayplex"""\nimport os\nP = os.path.join("x", ".rayplex")\n')
    monkeypatch.setitem(globals(), "PACKAGE", package)
    assert layout_literals() == [("bad.py", 3, ".rayplex")]


# ------------------------------------------------------------------------------ tunables

TUNABLE_NAME = re.compile(
    r"(_S|_MB|_BYTES|_BUFSIZE|_CHUNK|_TRIES|_RETRIES|_ROW_GROUP)$|TIMEOUT|INTERVAL|(^|_)MAX(_|$)")
"""Names of module constants that are tunables: they live in ``rayplex/config.py``."""

PROTOCOL = {
    # validation rules of names, tags and steps: their one home is rules.py
    ("rules.py", "STEP_MAX"), ("rules.py", "MAX_PART_LENGTH"), ("rules.py", "MAX_TAG_LENGTH"),
    ("rules.py", "MAX_LOGGER_NAME_LENGTH"),
    ("logger_jobs.py", "_MAX_STATUS"),  # ML-Logger's ping status: a validation rule
    # file-system limits an artifact path must fit (NAME_MAX and a portable path bound)
    ("artifacts.py", "MAX_COMPONENT_BYTES"), ("artifacts.py", "MAX_PATH_BYTES"),
    ("projector.py", "MAX_SPRITE_SIZE"),  # TensorBoard's projector refuses larger sprites
    ("media.py", "_MAX_PR_THRESHOLDS"),  # tensorboardX's clamp, kept for compatibility
    # the MLflow server's documented limits per call and per value
    ("forward/trackers.py", "MLFLOW_MAX_METRICS"), ("forward/trackers.py", "MLFLOW_MAX_BYTES"),
    ("forward/trackers.py", "MLFLOW_MAX_PARAMS"), ("forward/trackers.py", "MLFLOW_PARAM_MAX_CHARS"),
    ("forward/trackers.py", "MLFLOW_TAG_MAX_CHARS"), ("forward/trackers.py", "MLFLOW_KEY_MAX_CHARS"),
}
"""``(module, name)`` of protocol and format constants that stay with their codec or rule."""


def _numeric(node: ast.expr) -> bool:
    """A number, or arithmetic on numbers (``64 * 2**20``, ``-(2**63)``)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _numeric(node.operand)
    if isinstance(node, ast.BinOp):
        return _numeric(node.left) and _numeric(node.right)
    return False


def tunables_outside_config(package: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of module-level numeric constants named like tunables outside
    ``config.py`` and the protocol list."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel == "config.py":
            continue
        for stmt in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = (stmt.targets if isinstance(stmt, ast.Assign)
                       else [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
            value = getattr(stmt, "value", None)
            for target in targets:
                if (isinstance(target, ast.Name) and TUNABLE_NAME.search(target.id)
                        and value is not None and _numeric(value)
                        and (rel, target.id) not in PROTOCOL):
                    found.append((rel, target.id))
    return found


def test_every_tunable_lives_in_config():
    assert tunables_outside_config(PACKAGE) == []


def test_the_tunable_scan_finds_a_timeout_outside_config(tmp_path):
    (tmp_path / "mod.py").write_text("RETRY_S = 0.5\nNAME = 'x'\nLIMIT_BYTES: int = 4 * 2**20\n"
                                     "FROM_CONFIG_S = RETRY_S\n")
    (tmp_path / "config.py").write_text("FLUSH_TIMEOUT_S = 1.0\n")
    assert tunables_outside_config(tmp_path) == [("mod.py", "RETRY_S"), ("mod.py", "LIMIT_BYTES")]
