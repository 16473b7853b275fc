"""Forwarding to W&B in offline mode (its real client writing its real files, read back with
W&B's own reader ``wandb leet inspect --json``; nothing reaches the network)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.test_forward_mlflow import CLIENTS, event_contents, log_from_workers, start

pytest.importorskip("wandb")
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"


def wandb_records(directory):
    """Every record of every ``.wandb`` file under ``directory``, through W&B's reader."""
    wandb_cli = os.path.join(os.path.dirname(sys.executable), "wandb")
    found = glob.glob(os.path.join(directory, "**", "*.wandb"), recursive=True)
    for path in sorted({os.path.realpath(p) for p in found}):  # wandb/latest-run is a link
        out = subprocess.run([wandb_cli, "leet", "inspect", "--json", path], check=True,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "WANDB_MODE": "offline"}).stdout
        yield [json.loads(line) for line in out.splitlines() if line.strip()]


def wandb_contents(directory):
    """``({run name: {key: sorted [(step, value)]}}, rows, {run: (group, config)})``."""
    points = defaultdict(lambda: defaultdict(list))
    rows = defaultdict(list)
    runs = {}
    for records in wandb_records(directory):
        name = None
        config = {}
        for record in records:
            if record["type"] == "run":
                name = record["run"]["display_name"]
                runs[name] = (record["run"].get("run_group"), record["run"]["config"])
            elif record["type"] == "config":
                config.update(record["config"]["update"])
            elif record["type"] == "history":
                item = record["history"]["item"]
                rows[name].append(item)
                for key, value in item.items():
                    if not key.startswith("_") and key != "rayplex_step":
                        points[name][key].append((item["rayplex_step"], value))
        if name is not None:
            runs[name] = (runs[name][0], {**runs[name][1].get("update", {}), **config})
    return ({run: {k: sorted(v) for k, v in keys.items()} for run, keys in points.items()},
            rows, runs)


def test_wandb_holds_every_scalar_and_summary_at_its_own_step_with_row_wall_times(
        ray_session, tmp_path):
    import rayplex
    from rayplex.forward import WandB

    directory = str(tmp_path / "wandb")
    hub = start(tmp_path, WandB(project="rayplex-test", mode="offline", dir=directory),
                name="fwdwb")
    log_from_workers(hub.name, CLIENTS, steps=8)
    rayplex.shutdown(hub.name, timeout=120)  # drains the forwarder and finishes the W&B runs
    expected = event_contents(hub.logdir)
    points, rows, runs = wandb_contents(directory)
    assert points == {run: {tag: sorted((s, v) for s, _, v in pts) for tag, pts in tags.items()}
                      for run, tags in expected.items()}
    walls = {(run, tag, s, v): ms for run, tags in expected.items()
             for tag, pts in tags.items() for s, ms, v in pts}
    for run, items in rows.items():
        for item in items:
            mine = [walls[(run, k, item["rayplex_step"], v)] for k, v in item.items()
                    if not k.startswith("_") and k != "rayplex_step"]
            assert round(item["_timestamp"] * 1000) == min(mine)  # a row's one wall time
    assert runs["agent/3"][0] == "agent"
    assert runs["learner"][0] == "learner"
    assert runs["agent/3"][1]["Args/client"] == "agent/3"
    assert runs["learner"][1]["main/Args/lr"] == 0.001


@pytest.mark.slow
def test_a_killed_wandb_forwarder_loses_nothing_and_repeats_only_identical_rows(
        ray_session, tmp_path):
    import ray

    import rayplex
    from rayplex.forward import WandB
    from rayplex.forward.actor import forwarder_name
    from tests.conftest import wait_for
    from tests.test_forward_mlflow import _answers

    directory = str(tmp_path / "wandb")
    tracker = WandB(project="rayplex-test", mode="offline", dir=directory)
    hub = start(tmp_path, tracker, name="fwdwbkill")
    actor = ray.get_actor(forwarder_name(hub.name, tracker.key), namespace="rayplex")
    log_from_workers(hub.name, CLIENTS[:4], steps=6)
    wait_for(lambda: ray.get(actor.info.remote())["forwarded"] > 0, 60, what="a first round")
    ray.kill(actor, no_restart=False)
    log_from_workers(hub.name, CLIENTS[:4], steps=6, offset=100.0)
    wait_for(lambda: _answers(actor), 60, what="the restarted forwarder")
    rayplex.shutdown(hub.name, timeout=120)
    expected = event_contents(hub.logdir)
    points, rows, _ = wandb_contents(directory)
    for run, tags in expected.items():
        for tag, pts in tags.items():
            want = sorted((s, v) for s, _, v in pts)
            got = points[run][tag]
            assert set(got) == set(want), (run, tag)  # nothing lost, nothing invented
    walls = {(run, tag, s, v): ms for run, tags in expected.items()
             for tag, pts in tags.items() for s, ms, v in pts}
    for run, items in rows.items():  # a repeated row is a resend: the event files' wall times
        for item in items:
            mine = [walls[(run, k, item["rayplex_step"], v)] for k, v in item.items()
                    if not k.startswith("_") and k != "rayplex_step"]
            assert round(item["_timestamp"] * 1000) == min(mine)
