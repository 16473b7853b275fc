"""Logdirs for the viewer's tests, written fast: event files built with numpy
(:func:`rayplex.event_bytes.scalar_records`, byte-identical to what the hub writes) instead of
a SummaryWriter call per point, then :func:`rayplex.index`. 1,000 runs in seconds."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from rayplex.event_bytes import file_version_record, scalar_records, scalar_tail, tag_header

WALL = 1_700_000_000.0
_FILES = itertools.count()


def value_of(run_index: int, step: np.ndarray) -> np.ndarray:
    """The default curve: run ``i`` climbs from ``i / 100`` by 0.01 a step."""
    return run_index / 100 + step * 0.01


def write_run(root: str | os.PathLike[str], run: str, tags: Iterable[str], steps: np.ndarray,
              values: Callable[[str, np.ndarray], np.ndarray], wall: float = WALL) -> Path:
    """One new event file of ``run`` (a directory under ``root``) with ``values(tag, steps)``
    of each tag at ``steps``."""
    tags = list(tags)
    directory = Path(root) / run
    directory.mkdir(parents=True, exist_ok=True)
    steps = np.asarray(steps, np.int64)
    tag_index = np.repeat(np.arange(len(tags)), len(steps))
    all_steps = np.tile(steps, len(tags))
    all_values = np.concatenate([np.asarray(values(tag, steps), np.float64) for tag in tags])
    path = directory / f"events.out.tfevents.{int(wall)}.view{next(_FILES)}"
    with open(path, "wb") as f:
        f.write(file_version_record(wall) + scalar_records(
            [scalar_tail(tag_header(t)) for t in tags], tag_index,
            wall + all_steps.astype(np.float64), all_steps, all_values))
    return path


def write_runs(root: str | os.PathLike[str], runs: int, steps: int,
               tags: Iterable[str] = ("train/reward",),
               spike: tuple[int, str, int, float] | None = None) -> list[str]:
    """``agent/0 .. agent/{runs-1}``, each tag at steps ``0..steps-1`` (:func:`value_of`);
    ``spike = (run index, tag, step, value)`` plants one outlier. Returns the run names."""
    names = []
    step_array = np.arange(steps)
    for i in range(runs):
        def values(tag: str, s: np.ndarray, i: int = i) -> np.ndarray:
            out = value_of(i, s)
            if spike is not None and spike[0] == i and spike[1] == tag:
                out = np.where(s == spike[2], spike[3], out)
            return out

        write_run(root, f"agent/{i}", tags, step_array, values)
        names.append(f"agent/{i}")
    return names
