"""The runnable examples in the docstrings of the pure modules (no Ray needed) stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

PURE_MODULES = [
    "rayplex.rules", "rayplex.errors", "rayplex.groups", "rayplex.event_bytes", "rayplex.tfrecord",
    "rayplex.encoder",
    "rayplex.items", "rayplex.atomic", "rayplex.buffer", "rayplex.stats", "rayplex.textlog",
    "rayplex.records", "rayplex.config", "rayplex.artifacts", "rayplex.events",
    "rayplex.terminal", "rayplex.actors.summaries", "rayplex.actors.partials", "rayplex.actors.faults",
    "rayplex.actors.state", "rayplex.actors.journal", "rayplex.actors.writer", "rayplex.files",
    "rayplex.actors.claim",
    "rayplex.actors.logfiles", "rayplex.tail", "rayplex.timers", "rayplex.media",
    "rayplex.logger_files", "rayplex.logger_jobs", "rayplex.artifact_client",
    "rayplex.compat.ml_logger",
    "rayplex.projector", "rayplex.compat.tensorplex", "rayplex.compat._rows",
    "rayplex.forward", "rayplex.forward.follow", "rayplex.forward.trackers", "rayplex.integrations._common",
    "rayplex.integrations.train", "rayplex.nested", "rayplex.watch", "rayplex.actors.watchbook",
    "rayplex.actors.notify", "rayplex.cursor",
]


@pytest.mark.parametrize("name", PURE_MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
