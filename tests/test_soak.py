"""Soak: 16 workers log every kind of record while the hub and node buffers are killed, the hub
stalls and the disk fills; afterwards every record is on disk exactly once."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import ray

import rayplex
from rayplex.actors import list_rayplex_actors
from rayplex.textlog import parse_line
from tests import conftest

tb_scalars: Callable[[str], Any] = conftest.tb_scalars
tb_values: Callable[[str], Any] = conftest.tb_values
wait_for: Callable[..., Any] = conftest.wait_for

HUB = "soak"
WORKERS = 16
HUB_KILLS = 7
NODE_BUFFER_KILLS = 5
SEED = 20240612
STEP_PACE_S = 0.02  # a worker's pace, so that 16 of them leave the 2 cores to the hub
IMAGE_EVERY = 5
PKL_EVERY = 10
VALUE_BASE = 1_000_000
TMPFS_SIZE = "128m"
_LATE_AGENT = re.compile(r"late store_metrics partial for group 'agent' step (\d+)")


class _Flag:
    """Starts the workers together (so that none joins the summaries late) and tells them when
    to stop (the test sets it once the faults are over)."""

    def __init__(self) -> None:
        self.stop = False
        self.arrived = 0
        self.go = False

    def arrive(self) -> int:
        self.arrived += 1
        return self.arrived

    def count(self) -> int:
        return self.arrived

    def start(self) -> None:
        self.go = True

    def started(self) -> bool:
        return self.go

    def set(self) -> None:
        self.stop = True

    def get(self) -> bool:
        return self.stop


class _Worker:
    """Logs scalars, lines, images, store_metrics and appended pickles; counts all of it."""

    def run(self, i: int, flag: Any) -> dict[str, Any]:
        log = rayplex.get_logger(f"agent/{i}", hub=HUB)
        image = np.full((8, 8, 3), i * 15, dtype=np.uint8)
        metrics: dict[int, int] = {}
        pickled: list[tuple[int, int]] = []
        append_errors = 0
        log.flush(timeout=60)  # the session is up before the start
        ray.get(flag.arrive.remote())
        while not ray.get(flag.started.remote()):
            time.sleep(0.02)  # polling the start flag
        step = 0
        while not (step % 20 == 0 and ray.get(flag.get.remote())):
            log.add_scalar("x", float(i * VALUE_BASE + step), step=step)
            log.info("worker %d step %d", i, step)
            if step % IMAGE_EVERY == 0:
                log.add_image("img", image, step=step, dataformats="HWC")
            n = 1 + (step + i) % 3
            for j in range(n):
                log.store_metrics(reward=float(step * 10 + j))
            metrics[step] = n
            log.log_metrics_summary(step=step)
            if step % PKL_EVERY == 0:
                while True:  # a HubWriteError means "not applied": the user appends again
                    try:
                        log.save_pkl((i, step), "rows.pkl", append=True)
                        break
                    except rayplex.HubWriteError:
                        append_errors += 1
                        time.sleep(0.2)  # back-off while the disk is full
                pickled.append((i, step))
            time.sleep(STEP_PACE_S)  # pace, not synchronisation
            step += 1
        log.flush(timeout=180)
        return {"steps": step, "metrics": metrics, "pickled": pickled,
                "append_errors": append_errors, "stats": log.stats()}


_FlagActor: Any = ray.remote(num_cpus=0)(_Flag)
_WorkerActor: Any = ray.remote(num_cpus=0, max_restarts=0)(_Worker)


@contextlib.contextmanager
def _tmpfs(path: str, size: str) -> Iterator[str | None]:
    """A tmpfs at ``path`` (None if this machine cannot mount one)."""
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                            capture_output=True)
    if result.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def _info(hub: rayplex.HubHandle) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = ray.get(hub.actor.info.remote(), timeout=10)
    except (ray.exceptions.RayError, TimeoutError):
        return None
    return info


def _wait_for_progress(hub: rayplex.HubHandle, timeout: float = 90.0) -> None:
    """Poll until one hub incarnation writes more records than when first seen."""
    base: list[tuple[int, int]] = []

    def progressed() -> bool:
        info = _info(hub)
        if info is None:
            return False
        if not base or base[0][0] != info["pid"]:
            base[:] = [(info["pid"], info["records_written"])]
            return False
        return bool(info["records_written"] > base[0][1])

    wait_for(progressed, timeout, "the hub's progress")


def _kill_hub(hub: rayplex.HubHandle) -> None:
    info = _info(hub)
    assert info is not None, "the hub does not answer"
    os.kill(info["pid"], signal.SIGKILL)


def _kill_node_buffer() -> None:
    names = [n for n in list_rayplex_actors() if n.startswith(f"node:{HUB}:")]
    assert names, "no node buffer to kill"
    ray.kill(ray.get_actor(names[0], namespace="rayplex"), no_restart=False)


def _stall_hub(hub: rayplex.HubHandle, seconds: float) -> None:
    ray.get(hub.actor.__ray_call__.remote(lambda self, s=seconds: time.sleep(s)), timeout=60)


def _fill_disk(hub: rayplex.HubHandle, mount: str, seconds: float) -> bool:
    """Fill the tmpfs for ``seconds``; return whether the hub reported the full disk."""
    filler = os.path.join(mount, "filler")
    chunk = b"\0" * 2**20
    try:
        with open(filler, "wb") as f:
            while True:
                try:
                    f.write(chunk)
                    f.flush()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    except OSError as exc:  # the close flushed into a full disk
        assert exc.errno == errno.ENOSPC, exc
    seen = False
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # the fault lasts this long; watch the hub meanwhile
        info = _info(hub)
        seen = seen or bool(info and info["problem"])
        time.sleep(0.1)
    os.unlink(filler)
    return seen


def _exactly_once(want: Counter[Any], got: Counter[Any]) -> tuple[int, int]:
    """(lost, duplicated) of ``got`` against ``want``; an unexpected record counts as
    duplicated."""
    lost = sum((want - got).values())
    duplicated = sum((got - want).values())
    return lost, duplicated


@pytest.mark.slow
def test_sixteen_workers_lose_and_duplicate_nothing_under_kills_a_stall_and_a_full_disk(
        ray_session: Any, tmp_path: Any) -> None:
    rng = random.Random(SEED)
    with _tmpfs(str(tmp_path / "fs"), TMPFS_SIZE) as mount:
        base = mount or str(tmp_path)
        hub = rayplex.init(os.path.join(base, "exp"), name=HUB)
        hub.register_indexed_group("agent", 4)
        faults = ["hub"] * HUB_KILLS + ["node_buffer"] * NODE_BUFFER_KILLS + ["stall"]
        faults += ["disk"] if mount else []
        rng.shuffle(faults)
        flag = _FlagActor.remote()
        workers = [_WorkerActor.remote() for _ in range(WORKERS)]
        runs = [w.run.remote(i, flag) for i, w in enumerate(workers)]
        injected: Counter[str] = Counter()
        timeline: list[str] = []
        disk_seen = False
        started = time.monotonic()
        try:
            wait_for(lambda: ray.get(flag.count.remote()) >= WORKERS, 120, "the workers to start")
            ray.get(flag.start.remote())
            _wait_for_progress(hub, timeout=120)
            for fault in faults:
                time.sleep(rng.uniform(0.2, 2.5))  # a random moment of live traffic
                if fault == "hub":
                    _kill_hub(hub)
                elif fault == "node_buffer":
                    _kill_node_buffer()
                elif fault == "stall":
                    _stall_hub(hub, 3.0)
                else:
                    assert mount is not None
                    disk_seen = _fill_disk(hub, mount, 3.0)
                injected[fault] += 1
                timeline.append(f"{fault}@{time.strftime('%H:%M:%S', time.gmtime())}")
                _wait_for_progress(hub)
            ray.get(flag.set.remote())
            results = ray.get(runs, timeout=240)
            faulted_s = time.monotonic() - started
            rayplex.flush(HUB)
            reader = rayplex.get_logger("reader/main", hub=HUB)
            pickles = {i: reader.load_pkl("rows.pkl", client=f"agent/{i}")
                       for i in range(WORKERS)}
            info = hub.info()
            rayplex.shutdown(name=HUB)
            if mount:  # keep the hub's own log for a post-mortem once the tmpfs is gone
                shutil.copytree(os.path.join(hub.logdir, "logs"), str(tmp_path / "logs"))
            print("soak: fault timeline (UTC)", " ".join(timeline))
            _check(hub.logdir, results, pickles, injected, disk_seen, mount, info, faulted_s)
        finally:
            ray.get(flag.set.remote())
            for worker in workers:
                ray.kill(worker)
            with contextlib.suppress(Exception):
                rayplex.shutdown(name=HUB)


def _check(logdir: str, results: list[dict[str, Any]], pickles: dict[int, Any],
           injected: Counter[str], disk_seen: bool, mount: str | None, info: dict[str, Any],
           faulted_s: float) -> None:
    values = tb_values(logdir)
    scalars = tb_scalars(logdir)
    report: dict[str, tuple[int, int, int]] = {}  # kind -> (checked, lost, duplicated)

    want_scalars: Counter[Any] = Counter()
    got_scalars: Counter[Any] = Counter()
    want_images: Counter[Any] = Counter()
    got_images: Counter[Any] = Counter()
    want_lines: Counter[Any] = Counter()
    got_lines: Counter[Any] = Counter()
    got_all_log: Counter[Any] = Counter()
    with open(os.path.join(logdir, "logs", "all.log"), encoding="utf-8") as f:
        for p in map(parse_line, f):
            if p is not None and not p.is_continuation and p.client.startswith("agent/"):
                got_all_log[(int(p.client.split("/")[1]), p.message)] += 1
    for i, result in enumerate(results):
        run = f"agent/{i}"
        steps = range(result["steps"])
        want_scalars.update((i, s, float(i * VALUE_BASE + s)) for s in steps)
        want_images.update((i, s) for s in steps if s % IMAGE_EVERY == 0)
        want_lines.update((i, f"worker {i} step {s}") for s in steps)
        for tag, points in scalars.get(run, {}).items():
            if "/x/" in tag:
                got_scalars.update((i, s, v) for s, v in points)
        for tag, points in values.get(run, {}).items():
            if "/img/" in tag:
                got_images.update((i, s) for s, _, _ in points)
        path = os.path.join(logdir, "logs", "agent", f"{i}.log")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                got_lines.update((i, p.message) for p in map(parse_line, f)
                                 if p is not None and not p.is_continuation)
    report["scalars"] = (sum(want_scalars.values()), *_exactly_once(want_scalars, got_scalars))
    report["images"] = (sum(want_images.values()), *_exactly_once(want_images, got_images))
    report["lines"] = (sum(want_lines.values()), *_exactly_once(want_lines, got_lines))
    report["all.log lines"] = (sum(want_lines.values()), *_exactly_once(want_lines, got_all_log))

    want_counts: Counter[int] = Counter()
    for result in results:
        for step, n in result["metrics"].items():
            want_counts[int(step)] += n
    points = scalars.get("agent/summary", {}).get("reward/count", [])
    per_step = Counter(s for s, _ in points)
    last = dict(points)  # file order: a step's last point is the one TensorBoard shows
    # A worker whose first summary came more than twice the hold after a step's first partial
    # (a 2-core machine under load, a fault early on) makes the documented second point at
    # that step, over all values, with a WARNING naming it: each such point is accounted for.
    with open(os.path.join(logdir, "logs", "all.log"), encoding="utf-8") as f:
        late_steps = Counter(int(m.group(1)) for line in f if (m := _LATE_AGENT.search(line)))
    missing_steps = sorted(set(want_counts) - set(per_step))
    twice = sorted(s for s, n in per_step.items() if n > 1 + late_steps[s])
    wrong = sorted(s for s in per_step if last[s] != want_counts.get(s))
    report["summary steps"] = (len(want_counts), len(missing_steps), len(twice))

    lost_pkl = dup_pkl = 0
    misordered = []
    for i, result in enumerate(results):
        want = [tuple(x) for x in result["pickled"]]
        got = [tuple(x) for x in pickles[i]]
        lost, dup = _exactly_once(Counter(want), Counter(got))
        lost_pkl += lost
        dup_pkl += dup
        if not lost and not dup and got != want:
            misordered.append(i)
    report["appended objects"] = (sum(len(r["pickled"]) for r in results), lost_pkl, dup_pkl)
    late = sum(late_steps.values())

    checked = sum(c for c, _, _ in report.values())
    lost_all = sum(lo for _, lo, _ in report.values())
    dup_all = sum(d for _, _, d in report.values())
    detail = ", ".join(f"{k}: {c} checked/{lo} lost/{d} dup" for k, (c, lo, d) in report.items())
    append_errors = sum(r["append_errors"] for r in results)
    print(f"\nsoak: faults injected {sum(injected.values())} ({dict(injected)}; disk fill "
          f"{'seen by the hub' if disk_seen else 'not seen' if mount else 'SKIPPED: no tmpfs'})"
          f" over {faulted_s:.0f} s; records checked {checked}, lost {lost_all}, duplicated "
          f"{dup_all}; {detail}; summary steps with a wrong count {len(wrong)}; "
          f"append retries {append_errors}; late-partial warnings {late}; hub duplicates_dropped "
          f"{info.get('duplicates_dropped')}, summaries_refused {info.get('summaries_refused')}")

    assert sum(injected[k] for k in ("hub", "node_buffer")) >= 10
    assert report["scalars"][1:] == (0, 0), f"scalars lost/duplicated: {report['scalars']}"
    assert report["images"][1:] == (0, 0), f"images lost/duplicated: {report['images']}"
    assert report["lines"][1:] == (0, 0), f"text lines lost/duplicated: {report['lines']}"
    assert report["all.log lines"][1:] == (0, 0), (
        f"lines in all.log lost/duplicated: {report['all.log lines']}")
    assert not missing_steps and not twice and not wrong, (
        f"summary steps: {len(missing_steps)} missing (first {missing_steps[:5]}), "
        f"{len(twice)} with more points than late-partial warnings (first {twice[:5]}), "
        f"{len(wrong)} with a wrong count (first {[(s, last.get(s), want_counts[s]) for s in wrong[:5]]})")
    assert (lost_pkl, dup_pkl, misordered) == (0, 0, []), (
        f"appended objects: {lost_pkl} lost, {dup_pkl} duplicated, out of order in "
        f"workers {misordered}")
