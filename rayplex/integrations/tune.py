"""rayplex as a Ray Tune logger: :class:`RayplexLoggerCallback`.

Every trial is client ``<group>/<trial_id>`` of a combined group with one bin, so each trial
is its own TensorBoard run and one chart per metric overlays all trials (tag
``<group>/<metric>/all``). Every numeric entry of a result (nested dicts flattened with
``/``; the ``config`` entry left out, it goes to the params) is a scalar at
``step = training_iteration``.

A trial retried under ``FailureConfig`` or restored from a checkpoint replays iterations; the
callback remembers the highest iteration written per trial and skips results at or below it,
so no point is written twice. After a Tune experiment restore (the callback comes back from
Tune's pickle, its ``set_state`` from Tune's snapshot) that memory is taken from the logdir,
not from the snapshot, which lags what the crashed driver had already shipped (duplicates) or
runs ahead of what it never shipped (losses): at a trial's first start or result in the
restored driver, the callback flushes the experiment once (what the hub acknowledged is then
in the event files, and what was still in node buffers reaches it) and reads that trial's run
back, once, with :func:`rayplex.read_scalars`. A replayed iteration is then written only for
the metrics the logdir does not hold at it (an iteration the crash cut short is completed).

The callback runs on Tune's driver loop: a result costs a few buffered ``add_scalar`` calls
and never waits on the network (the Logger's background thread ships them). A trial's config
is stored at its end by a thread of the callback's own (that call waits for the hub), so a
trial's end does not wait either; the end of the sweep waits for those and flushes (each at
most ``END_FLUSH_TIMEOUT_S``), so the logdir is complete when ``Tuner.fit()`` returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from ray.exceptions import RayError
from ray.tune.logger import LoggerCallback

import rayplex
from rayplex.config import TUNE_END_FLUSH_TIMEOUT_S
from rayplex.errors import RayplexError
from rayplex.groups import GroupRegistry, GroupSpec, Route
from rayplex.integrations._common import (
    connect,
    flush_quietly,
    int_step,
    is_number,
    log,
    numeric_items,
    strip_ansi,
)
from rayplex.logger import Logger

if TYPE_CHECKING:
    from ray.tune.experiment.trial import Trial

TRIALS_BIN = "all"
"""The one chart bin every trial is overlaid in: tag ``<group>/<metric>/all``."""

_NOT_SCALARS = frozenset({"config"})

END_FLUSH_TIMEOUT_S = TUNE_END_FLUSH_TIMEOUT_S
"""Longest the end of a sweep, or the first look at the logdir after a restore, waits for the
hub; the data of a slower hub stays buffered."""


def one_bin(name: str) -> str:
    """The combined group's ``bin_fn``: every trial in one bin (a module-level function, so
    the hub can unpickle it)."""
    return TRIALS_BIN


class RayplexLoggerCallback(LoggerCallback):
    """Log a Tune sweep into one rayplex experiment: scalars, config, trial events.

    Args:
        logdir: Start (or join) the experiment writing there. ``None``: log into the running
            experiment ``hub``.
        hub: The experiment's name (default ``RAYPLEX_HUB`` or ``"default"``).
        group: The client group of the trials; registered here as a combined group with one
            bin.

    Example:
        >>> from ray import tune  # doctest: +SKIP
        >>> cb = RayplexLoggerCallback("/tmp/sweep")  # doctest: +SKIP
        >>> tune.Tuner(trainable, run_config=tune.RunConfig(callbacks=[cb])).fit()  # doctest: +SKIP
        >>> rayplex.read_scalars("/tmp/sweep", group="tune")  # doctest: +SKIP

    Raises:
        ValueError: if ``group`` is not a valid group name, or ``logdir`` cannot be used.
        HubNotFoundError: if ``logdir`` is None and no experiment ``hub`` runs.
    """

    def __init__(self, logdir: str | os.PathLike[str] | None = None, *, hub: str | None = None,
                 group: str = "tune") -> None:
        super().__init__()
        GroupSpec.combined(group, one_bin)  # ValueError for a bad name, before Ray starts
        handle = connect(logdir, hub)
        handle.register_combined_group(group, one_bin)
        self.hub = handle.name
        self.logdir = handle.logdir
        self.group = group
        self.replayed = 0
        """Results skipped because their iteration was already written for that trial."""
        self._written: dict[str, int] = {}
        self._restored = False  # True once unpickled or given a state: ask the logdir
        self._recalled: set[str] = set()  # trials whose logdir record this process has read
        self._cut: dict[str, dict[str, int]] = {}  # recalled trial -> tag -> last step on disk
        self._flushed = False  # the experiment flushed once since the restore
        self._last: dict[str, dict[str, float]] = {}
        self._loggers: dict[str, Logger] = {}
        self._connected = True
        self._params: ThreadPoolExecutor | None = None  # params calls, off Tune's loop
        self._pending: list[Future[None]] = []

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment: names and counters only.
        state = dict(self.__dict__)
        state["_loggers"] = {}
        state["_connected"] = False
        state["_restored"] = True
        state["_recalled"] = set()
        state["_cut"] = {}
        state["_flushed"] = False
        state["_params"] = None
        state["_pending"] = []
        return state

    def __repr__(self) -> str:
        return f"RayplexLoggerCallback(hub={self.hub!r}, group={self.group!r})"

    # ----------------------------------------------------------------- Tune's hooks
    def setup(self, *args: Any, **info: Any) -> None:
        """Reconnect when the callback was unpickled in a new driver: get (or, in a new Ray
        cluster, start again) the experiment in the same logdir and re-register the group."""
        if not self._connected:
            connect(self.logdir, self.hub).register_combined_group(self.group, one_bin)
            self._connected = True

    def get_state(self) -> dict[str, Any] | None:
        """The highest iteration written per trial (Tune saves it with the experiment)."""
        return {"written": dict(self._written)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned. It is only a fallback: each trial's
        memory is read again from the logdir at its first start or result, because Tune's
        snapshot lags what was shipped."""
        written = state.get("written", {})
        self._written = {str(k): int(v) for k, v in written.items()}
        self._restored = True

    def log_trial_start(self, trial: Trial) -> None:
        trial_id = str(trial.trial_id)
        logger = self._logger(trial_id)
        self._recall(trial_id)
        done = self._written.get(trial_id)
        if done is None:
            logger.info("trial %s started; config %s", trial_id, _plain(trial.config))
        else:
            logger.info("trial %s started again; iterations up to %d are logged already and "
                        "their replays are skipped", trial_id, done)

    def log_trial_restore(self, trial: Trial) -> None:
        self._logger(str(trial.trial_id)).info("trial %s restored from a checkpoint",
                                               trial.trial_id)

    def log_trial_save(self, trial: Trial) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        trial_id = str(trial.trial_id)
        step = int_step(result.get("training_iteration"))
        if step is None:
            log.warning("rayplex: a result of trial %s has no integer training_iteration; "
                        "it is not logged", trial_id)
            return
        self._recall(trial_id)
        values = numeric_items(result, skip=_NOT_SCALARS)
        self._last[trial_id] = values
        if step <= self._written.get(trial_id, -1):
            values = self._not_on_disk(trial_id, step, values)
            if not values:
                self.replayed += 1
                return
        else:
            self._written[trial_id] = step
            self._cut.pop(trial_id, None)  # what is older than this step stays as it is
        self._logger(trial_id).add_scalars(values, step=step)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        self._logger(str(trial.trial_id)).warning(
            "trial %s failed and is retried:\n%s", trial.trial_id, _last_error(trial))

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        trial_id = str(trial.trial_id)
        logger = self._logger(trial_id)
        if failed:
            logger.error("trial %s failed:\n%s", trial_id, _last_error(trial))
        else:
            logger.info("trial %s completed at iteration %s", trial_id,
                        self._written.get(trial_id))
        config = _plain(trial.config)
        metrics = self._last.pop(trial_id, {})
        if self._params is None:
            self._params = ThreadPoolExecutor(1, thread_name_prefix="rayplex-tune-params")
        self._pending = [f for f in self._pending if not f.done()]
        # a params call waits for the hub: it runs off Tune's loop, in order, one at a time
        self._pending.append(self._params.submit(_save_config, logger, trial_id, config, metrics))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        wait(self._pending, timeout=END_FLUSH_TIMEOUT_S)
        self._pending = []
        if self._loggers:  # one flush covers every trial: they share this process's session
            flush_quietly(next(iter(self._loggers.values())), END_FLUSH_TIMEOUT_S)

    # ------------------------------------------------------------------- helpers
    def _recall(self, trial_id: str) -> None:
        """After a restore, take a trial's memory from the logdir (once per trial): the last
        step of each of its tags, after one flush of the experiment (tried once). If the
        experiment cannot be flushed, or the run read, Tune's snapshot stays the memory (with
        a warning): for every trial, or for that trial."""
        if not self._restored or trial_id in self._recalled:
            return
        self._recalled.add(trial_id)
        self.setup()
        if not self._flushed:
            try:
                rayplex.flush(self.hub, END_FLUSH_TIMEOUT_S)
            except (RayplexError, RayError) as exc:
                log.warning("rayplex: could not flush experiment %r after the restore (%s); "
                            "replays are skipped up to Tune's snapshot of the callback",
                            self.hub, exc)
                self._restored = False
                return
            self._flushed = True
        try:
            last = _last_steps(self.logdir, self._route(trial_id).run)
        except OSError as exc:
            log.warning("rayplex: could not read what %s holds for trial %s (%s); its replays "
                        "are skipped up to Tune's snapshot of the callback, iteration %s",
                        self.logdir, trial_id, exc, self._written.get(trial_id))
            return
        if last:
            self._written[trial_id] = max(last.values())
            self._cut[trial_id] = last
        else:
            self._written.pop(trial_id, None)

    def _not_on_disk(self, trial_id: str, step: int,
                     values: dict[str, float]) -> dict[str, float]:
        """Of a replayed result, the metrics the logdir lacks at ``step`` (a recalled trial
        whose last iteration the crash cut short); nothing for any other trial."""
        last = self._cut.get(trial_id)
        if last is None:
            return {}
        route = self._route(trial_id)
        missing = {key: v for key, v in values.items() if last.get(route.tag(key), -1) < step}
        for key in missing:
            last[route.tag(key)] = step
        return missing

    def _route(self, trial_id: str) -> Route:
        """Where a trial's scalars go: its run and its tags (the hub's own routing rules)."""
        spec = GroupSpec.combined(self.group, one_bin)
        return GroupRegistry().with_group(spec).route(f"{self.group}/{trial_id}")

    def _logger(self, trial_id: str) -> Logger:
        logger = self._loggers.get(trial_id)
        if logger is None:
            self.setup()
            logger = self._loggers[trial_id] = rayplex.get_logger(
                f"{self.group}/{trial_id}", hub=self.hub)
        return logger


def _last_steps(logdir: str, run: str) -> dict[str, int]:
    """``{tag: last step}`` of the scalars of one run of ``logdir`` (empty if it has none)."""
    last: dict[str, int] = {}
    try:
        rows = rayplex.read_scalars(logdir, run=run)
    except FileNotFoundError:  # no tensorboard/ yet: nothing was written
        return last
    for row in rows:
        if row.run == run:
            last[row.tag] = max(row.step, last.get(row.tag, row.step))
    return last


def _save_config(logger: Logger, trial_id: str, config: Any, metrics: dict[str, float]) -> None:
    try:
        # HParams first: TensorBoard keeps the first hparams summary of a run, and
        # log_params writes one without metrics.
        logger.add_hparams(_hparams(config), metrics)
        logger.log_params(config=config)
    except (RayplexError, TypeError, ValueError) as exc:
        log.warning("rayplex: the config of trial %s was not logged: %s", trial_id, exc)


def _plain(config: Any) -> Any:
    """A trial's config as JSON-like data (Tune's search-space objects become strings)."""
    if isinstance(config, Mapping):
        return {str(k): _plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain(v) for v in config]
    if config is None or isinstance(config, (bool, int, float, str)):
        return config
    if is_number(config):
        return config.item() if hasattr(config, "item") else float(config)
    return repr(config)


def _hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The config flattened with ``/`` as HParams values (like Tune's own TensorBoard
    logger); lists and None become strings."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_hparams(value, name + "/"))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


_FAILURE_HEADER = "Failure # "


def _last_error(trial: Trial) -> str:
    """The latest failure in the trial's error file (Tune appends one block per failure):
    Ray's formatted message with the remote frames. Read as text, never unpickled: first the
    driver's local copy (written before Tune calls back), else the one in storage."""
    text: str | None = None
    try:
        local = trial.error_file
        if local and os.path.isfile(local):
            with open(local, encoding="utf-8", errors="replace") as f:
                text = f.read()
        else:
            found = trial.get_error()  # annotated as TuneError, returns the file's text
            text = None if found is None else str(found)
    except Exception as exc:  # storage not reachable: say so instead of failing Tune's loop
        return f"(the error text could not be read: {exc!r})"
    if not text:
        return "(no error text recorded)"
    start = text.rfind(_FAILURE_HEADER)
    return strip_ansi(text[start:] if start >= 0 else text).rstrip("\n")
