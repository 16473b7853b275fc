"""Fixtures a test module imports to opt in (pytest registers a fixture where it is imported)."""

from __future__ import annotations

import pytest


@pytest.fixture(name="experiment")
def shared_experiment(module_experiment):
    """The module's one hub (``module_experiment`` in conftest) under the name ``experiment``:
    ``from tests.fixtures import shared_experiment  # noqa: F401`` makes a module's tests share
    it; each test then uses client ids of its own."""
    return module_experiment
