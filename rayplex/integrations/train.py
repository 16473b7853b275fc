"""rayplex as a Ray Train callback: :class:`RayplexTrainCallback`.

Ray Train keeps rank 0's metrics only; this callback keeps every rank's. It runs in Train's
controller actor, once per report round (after every rank called ``ray.train.report``):

* rank ``i``'s numeric metrics (nested dicts flattened with ``/``) go to client
  ``<group>/<i>`` of an indexed group, so the ranks overlay in one chart per metric (tag
  ``<group>/<metric>/<lo>-<hi>``), at the rank's own step: its ``step`` entry, else
  ``epoch``, else ``training_iteration``, else the round's ordinal (0, 1, 2, ... counted by
  this callback);
* the round's cross-rank statistics (mean, std, min, max, count over the ranks that reported
  the metric, so a rank that left a metric out of a round is not counted) go to run
  ``<group>/summary`` as tags ``<metric>/<stat>``, at **rank 0's step** for that round (the
  same rule: its ``step``/``epoch``/``training_iteration``, else the ordinal);
* worker exceptions go to the text logs of each failing rank, with the traceback;
* a run that Train restarts after a failure (``FailureConfig(max_failures=...)``) reports
  steps again: a rank's point at a step it already reported (by its ``step``/``epoch``/
  ``training_iteration`` entry) is not written twice, and neither is a summary at a step
  already summarised: the first report of a step is kept, as the Tune callback does.

``UserCallback`` has no end-of-run hook, so the callback flushes after every round (bounded,
a few milliseconds on a local hub): a run that fails or ends keeps every round it reported.

The group is registered when the callback is constructed, on the driver, so
``rayplex.get_logger(f"train/{rank}")`` inside the training function writes into the same
run ``train/<rank>`` as the callback, at any rate and without ``ray.train.report``.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from typing import Any

from ray.train import UserCallback

import rayplex
from rayplex.groups import GroupSpec
from rayplex.integrations._common import (
    connect,
    flush_quietly,
    int_step,
    numeric_items,
    strip_ansi,
)
from rayplex.logger import Logger

STEP_KEYS = ("step", "epoch", "training_iteration")
"""The metrics entries that give a rank's step, first match wins; else the round ordinal."""

SUMMARY_STATS = ("mean", "std", "min", "max", "count")


def round_step(metrics: Mapping[str, Any], ordinal: int) -> int:
    """The step of one rank's report: its first integral ``step``/``epoch``/
    ``training_iteration`` entry, else ``ordinal``.

    Example:
        >>> round_step({"loss": 0.5, "epoch": 3}, 7), round_step({"loss": 0.5}, 7)
        (3, 7)
    """
    for key in STEP_KEYS:
        step = int_step(metrics.get(key))
        if step is not None:
            return step
    return ordinal


class RayplexTrainCallback(UserCallback):
    """Log every rank's reported metrics, their cross-rank summary and worker failures.

    Args:
        logdir: Start (or join) the experiment writing there. ``None``: log into the running
            experiment ``hub``.
        hub: The experiment's name (default ``RAYPLEX_HUB`` or ``"default"``).
        group: The client group of the ranks, registered here as an indexed group.
        bin_size: How many ranks one chart overlays.

    Example:
        >>> from ray.train import RunConfig, ScalingConfig  # doctest: +SKIP
        >>> cb = RayplexTrainCallback("/tmp/train")  # doctest: +SKIP
        >>> trainer = DataParallelTrainer(train_fn, scaling_config=ScalingConfig(num_workers=2),
        ...                               run_config=RunConfig(callbacks=[cb]))  # doctest: +SKIP

    Raises:
        ValueError: if ``group`` is not a valid group name or ``bin_size < 1``.
        HubNotFoundError: if ``logdir`` is None and no experiment ``hub`` runs.
    """

    def __init__(self, logdir: str | os.PathLike[str] | None = None, *, hub: str | None = None,
                 group: str = "train", bin_size: int = 64) -> None:
        GroupSpec.indexed(group, bin_size)  # bad arguments fail here, before Ray starts
        handle = connect(logdir, hub)
        handle.register_indexed_group(group, bin_size)
        self.hub = handle.name
        self.logdir = handle.logdir
        self.group = group
        self.rounds = 0
        """Report rounds seen (in the controller; the driver's copy stays 0)."""
        self._loggers: dict[int, Logger] = {}
        self._reported: dict[int, set[int]] = {}
        """Per rank, the steps (from a step entry) already written: a restart's replays."""
        self._summarised: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Sent to Train's controller actor: names only; loggers are made there.
        state = dict(self.__dict__)
        state["_loggers"] = {}
        return state

    def __repr__(self) -> str:
        return f"RayplexTrainCallback(hub={self.hub!r}, group={self.group!r})"

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        ordinal = self.rounds
        self.rounds += 1
        if not metrics:
            return
        summary = self._logger(0)
        summary_step = round_step(metrics[0] or {}, ordinal)
        summarise = not (_has_step(metrics[0] or {}) and summary_step in self._summarised)
        for rank, rank_metrics in enumerate(metrics):
            values = numeric_items(rank_metrics or {})
            if not values:
                continue
            step = round_step(rank_metrics, ordinal)
            if _has_step(rank_metrics):
                seen = self._reported.setdefault(rank, set())
                if step in seen:
                    continue  # replayed after a restart: the first report stays
                seen.add(step)
            self._logger(rank).add_scalars(values, step=step)
            if summarise:
                summary.store_metrics(values)
        if summarise:
            if _has_step(metrics[0] or {}):
                self._summarised.add(summary_step)
            summary.log_metrics_summary(summary_step, SUMMARY_STATS)
        flush_quietly(summary)

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        for rank, exc in sorted(worker_exceptions.items()):
            self._logger(rank).error("rank %d raised:\n%s", rank, _exception_text(exc))
        if worker_exceptions:
            flush_quietly(self._logger(min(worker_exceptions)))

    def _logger(self, rank: int) -> Logger:
        logger = self._loggers.get(rank)
        if logger is None:
            logger = self._loggers[rank] = rayplex.get_logger(f"{self.group}/{rank}",
                                                              hub=self.hub)
        return logger


def _has_step(metrics: Mapping[str, Any]) -> bool:
    """Whether the report names its step (else the round ordinal, which never repeats)."""
    return any(int_step(metrics.get(key)) is not None for key in STEP_KEYS)


def _exception_text(exc: BaseException) -> str:
    """The exception with its frames (Ray's remote ones are in its message), colours off."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return strip_ansi(text).rstrip("\n")
