"""``rayplex view``'s states and alerts from a live hub (real Ray): while the hub holds the
logdir a run is "running"; a NaN the watchers see is an alert the viewer lists, newest first,
with the run it belongs to; the run carries it as its last alert."""

from __future__ import annotations

import math

import pytest

import rayplex
from rayplex import watch
from rayplex.view.api import Source
from tests.conftest import wait_for

pytestmark = pytest.mark.slow
pytest.importorskip("duckdb")


def test_a_live_hubs_runs_are_running_and_its_nan_alert_is_listed(experiment):
    experiment.register_indexed_group("viewnan", 2).watch(watch.nan("loss", group="viewnan"))
    log = rayplex.get_logger("viewnan/0")
    quiet = rayplex.get_logger("viewnan/1")
    for step in range(3):
        log.add_scalar("loss", 1.0, step=step)
        quiet.add_scalar("loss", 1.0, step=step)
    log.add_scalar("loss", math.nan, step=3)
    rayplex.flush()
    wait_for(lambda: rayplex.alerts(experiment.logdir), 10, "the NaN alert")
    source = Source(experiment.logdir)
    source.refresh()
    runs = source.known().runs
    assert runs["viewnan/0"]["state"] == "running" and runs["viewnan/1"]["state"] == "running"
    assert runs["viewnan/0"]["alert"]["rule"] == "nan(loss, group=viewnan)"
    assert runs["viewnan/1"]["alert"] is None
    (alert,) = source.alerts()["alerts"]
    assert (alert["client"], alert["run"], alert["step"], alert["value"]) == (
        "viewnan/0", "viewnan/0", 3, "nan")
    version = source.version()
    experiment.shutdown()
    # The hub gave the logdir up: the experiment is over, the page's version changes.
    assert source.version() != version
    assert source.known().runs["viewnan/1"]["state"] == "finished"
