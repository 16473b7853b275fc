"""The trackers a forwarder feeds: what a user passes to ``rayplex.init(forward=[...])``, and
the connection each opens inside the forwarder actor.

Mapping (one rule for both trackers: a tracker run per TensorBoard run directory, a metric key
per TensorBoard tag, so the tracker overlays the same curves TensorBoard does):

* a normal group ``learner`` -> run ``learner`` (its clients' tags ``<name>/<tag>``);
* an indexed or combined client ``agent/17`` -> run ``agent/17`` whose key
  ``agent/reward/16-23`` is shared by the runs of its bin (compare runs to overlay them);
* a group's summaries -> run ``<group>/summary`` (keys ``<key>/<stat>``);
* tracker tags/grouping: ``rayplex.group``, ``rayplex.client`` (indexed/combined),
  ``rayplex.run``, ``rayplex.logdir`` (MLflow tags; W&B ``group=`` and config);
* params of client ``g/n`` -> its run's params (``n/<key>`` in a normal group's shared run),
  nested keys flattened with ``.``;
* images -> MLflow artifacts ``images/<tag>/step_<step>.png``; W&B ``wandb.Image`` in the row.

Importing this module imports neither MLflow nor W&B: they are optional extras.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rayplex.forward.follow import Image, Point

T = TypeVar("T")

MLFLOW_MAX_METRICS = 1000
"""MLflow ``log_batch``: at most 1,000 metrics per call..."""
MLFLOW_MAX_BYTES = 1_000_000
"""...and at most 1 MB per request (estimated conservatively per metric)."""
MLFLOW_MAX_PARAMS = 100
MLFLOW_PARAM_MAX_CHARS = 6000
_MLFLOW_BAD_KEY = re.compile(r"[^/\w.\- :]")


class Connection:
    """A tracker connection: every call goes through :meth:`call`, which counts and times it
    (the forwarder's watchdog reads ``call_started`` to report a call that hangs)."""

    def __init__(self) -> None:
        self.calls = 0
        self.call_started: float | None = None
        self.slowest_s = 0.0
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start = time.monotonic()
        with self._lock:
            self.call_started = start
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self.call_started = None
                self.calls += 1
                self.slowest_s = max(self.slowest_s, time.monotonic() - start)

    def open_run(self, run: str, tags: dict[str, str]) -> str:
        """The tracker's id of rayplex run ``run`` (found again after a restart, else made)."""
        raise NotImplementedError

    def log(self, run_id: str, points: list[Point], images: list[Image]) -> None:
        """Send these points and images; return only once the tracker accepted them all."""
        raise NotImplementedError

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        """Send flat params."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the tracker's runs (safe to call twice)."""


@dataclass(frozen=True)
class MLflow:
    """Forward to MLflow: one MLflow run per TensorBoard run, metrics with the event files'
    exact steps and wall times (milliseconds), batched by ``MlflowClient.log_batch``.

    Args:
        tracking_uri: MLflow's tracking URI (``sqlite:///mlruns.db``, ``http://...``); ``None``
            for MLflow's default (``MLFLOW_TRACKING_URI``).
        experiment: The MLflow experiment (created if missing).
        slow_call_s: A tracker call running longer than this is reported as an outage warning
            while it still runs (MLflow waits up to 20 s on a locked SQLite file).
        retry_max_s: The longest wait between retries after a failure (back-off doubles from
            0.5 s up to this).
        artifact_location: Where a new MLflow experiment keeps its artifacts (images). ``None``:
            the tracking server's default, except for a database URI (``sqlite:``,
            ``postgresql:``, ``mysql:``, ``mssql:``), whose default is ``./mlruns`` of whatever
            directory the forwarder runs in; there it is ``<logdir>/mlflow-artifacts``.

    Example:
        >>> MLflow(tracking_uri="sqlite:////tmp/mlruns.db", experiment="ppo").key
        'mlflow-ppo'
    """

    tracking_uri: str | None = None
    experiment: str = "rayplex"
    slow_call_s: float = 10.0
    retry_max_s: float = 30.0
    artifact_location: str | None = None

    def __post_init__(self) -> None:
        if self.artifact_location is not None and not isinstance(self.artifact_location, str):
            raise TypeError("artifact_location must be a str, got "
                            f"{type(self.artifact_location).__name__}")
        if not isinstance(self.experiment, str) or not self.experiment:
            raise ValueError(f"MLflow experiment must be a non-empty str, got {self.experiment!r}")
        if self.tracking_uri is not None and not isinstance(self.tracking_uri, str):
            raise TypeError(f"tracking_uri must be a str, got {type(self.tracking_uri).__name__}")
        _check_seconds("slow_call_s", self.slow_call_s)
        _check_seconds("retry_max_s", self.retry_max_s)

    @property
    def key(self) -> str:
        """Names the forwarder actor and its cursor file ``.rayplex/forward-<key>.json``."""
        return "mlflow-" + _slug(self.experiment)

    def connect(self, logdir: str) -> Connection:
        return _MLflowConnection(self, logdir)


@dataclass(frozen=True)
class WandB:
    """Forward to Weights & Biases: one W&B run per TensorBoard run (``group=`` the rayplex
    group), one history row per step with all the keys logged at that step, on a step axis of
    its own (``rayplex_step``) so that no lower step is dropped.

    Args:
        project: The W&B project.
        mode: ``"offline"`` (files only), ``"online"`` or ``"disabled"``.
        dir: Where W&B writes its files (``None``: W&B's default).
        entity: The W&B entity (team or user), if not the default.
        slow_call_s: See :class:`MLflow`.
        retry_max_s: See :class:`MLflow`.

    Example:
        >>> WandB(project="ppo", mode="offline").key
        'wandb-ppo'
    """

    project: str
    mode: str = "offline"
    dir: str | None = None
    entity: str | None = None
    slow_call_s: float = 10.0
    retry_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.project, str) or not self.project:
            raise ValueError(f"W&B project must be a non-empty str, got {self.project!r}")
        if self.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"W&B mode must be 'offline', 'online' or 'disabled', got "
                             f"{self.mode!r}")
        _check_seconds("slow_call_s", self.slow_call_s)
        _check_seconds("retry_max_s", self.retry_max_s)

    @property
    def key(self) -> str:
        return "wandb-" + _slug(self.project)

    def connect(self, logdir: str) -> Connection:
        return _WandBConnection(self, logdir)


Tracker = MLflow | WandB


def _check_seconds(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:40]
    if slug != text:
        slug += "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return slug


def run_tags(run: str, logdir: str) -> dict[str, str]:
    """The tags that name a rayplex run in a tracker.

    Example:
        >>> run_tags("agent/17", "/tmp/exp")["rayplex.client"]
        'agent/17'
    """
    parts = run.split("/")
    tags = {"rayplex.run": run, "rayplex.group": parts[0], "rayplex.logdir": logdir}
    if len(parts) == 2 and parts[1] == "summary":
        tags["rayplex.summary"] = "true"
    elif len(parts) == 2:
        tags["rayplex.client"] = run
    return tags


def mlflow_key(tag: str) -> str:
    """A TensorBoard tag as an MLflow metric key (characters MLflow refuses become ``_``).

    Example:
        >>> mlflow_key("agent.my.section/foo/16-23")
        'agent.my.section/foo/16-23'
    """
    return _MLFLOW_BAD_KEY.sub("_", tag)


def mlflow_batches(points: list[Point]) -> list[list[Point]]:
    """``points`` cut into ``log_batch`` calls of at most 1,000 metrics and 1 MB.

    Example:
        >>> pts = [Point("r", "t", i, 0.0, 1.0) for i in range(2500)]
        >>> [len(b) for b in mlflow_batches(pts)]
        [1000, 1000, 500]
    """
    out: list[list[Point]] = []
    current: list[Point] = []
    size = 0
    for point in points:
        cost = len(point.tag.encode()) + 100  # JSON of key, value, timestamp, step
        if current and (len(current) >= MLFLOW_MAX_METRICS or size + cost > MLFLOW_MAX_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(point)
        size += cost
    if current:
        out.append(current)
    return out


def wall_ms(wall_time: float) -> int:
    """The event's wall time in MLflow's milliseconds (the same every time it is resent)."""
    return int(round(wall_time * 1000))


_DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})


class _MLflowConnection(Connection):
    def __init__(self, spec: MLflow, logdir: str) -> None:
        super().__init__()
        from mlflow import MlflowClient

        self.logdir = logdir
        self.client = MlflowClient(tracking_uri=spec.tracking_uri)
        self.experiment = spec.experiment
        self.artifact_location = spec.artifact_location
        scheme = (spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")).split(":", 1)[0]
        if self.artifact_location is None and scheme.split("+")[0] in _DATABASE_SCHEMES:
            self.artifact_location = Path(logdir, "mlflow-artifacts").as_uri()
        self._experiment_id: str | None = None

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.call(self.client.get_experiment_by_name, self.experiment)
            if found is None:
                try:
                    self._experiment_id = str(self.call(
                        self.client.create_experiment, self.experiment,
                        artifact_location=self.artifact_location))
                except Exception:  # another process created it meanwhile
                    found = self.call(self.client.get_experiment_by_name, self.experiment)
                    if found is None:
                        raise
                    self._experiment_id = str(found.experiment_id)
            else:
                self._experiment_id = str(found.experiment_id)
        return self._experiment_id

    def open_run(self, run: str, tags: dict[str, str]) -> str:
        experiment = self._experiment()
        query = (f"tags.`rayplex.run` = '{_quote(run)}' and "
                 f"tags.`rayplex.logdir` = '{_quote(self.logdir)}'")
        found = self.call(self.client.search_runs, [experiment], query, max_results=1)
        if found:
            return str(found[0].info.run_id)
        created = self.call(self.client.create_run, experiment, tags=tags, run_name=run)
        return str(created.info.run_id)

    def log(self, run_id: str, points: list[Point], images: list[Image]) -> None:
        from mlflow.entities import Metric

        for batch in mlflow_batches(points):
            metrics = [Metric(mlflow_key(p.tag), p.value, wall_ms(p.wall_time), p.step)
                       for p in batch]
            self.call(self.client.log_batch, run_id, metrics=metrics, synchronous=True)
        for image in images:
            with tempfile.TemporaryDirectory() as tmp:
                suffix = ".gif" if image.data[:3] == b"GIF" else ".png"
                path = os.path.join(tmp, f"step_{image.step:012d}{suffix}")
                with open(path, "wb") as f:
                    f.write(image.data)
                self.call(self.client.log_artifact, run_id, path,
                          f"images/{mlflow_key(image.tag)}")

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), v[:MLFLOW_PARAM_MAX_CHARS])
                 for k, v in sorted(params.items())]
        for start in range(0, len(items), MLFLOW_MAX_PARAMS):
            self.call(self.client.log_batch, run_id, params=items[start:start + MLFLOW_MAX_PARAMS],
                      synchronous=True)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


STEP_KEY = "rayplex_step"
"""The W&B step metric every key is plotted against (W&B's own ``_step`` only counts rows)."""


def wandb_rows(points: list[Point], images: list[Any] | None = None) -> list[dict[str, Any]]:
    """One W&B history row per step with every key logged at that step (a key logged twice
    at one step starts a second row); the row's ``_timestamp`` is its earliest wall time.

    Example:
        >>> rows = wandb_rows([Point("r", "a", 1, 10.0, 0.5), Point("r", "b", 1, 10.5, 2.0),
        ...                    Point("r", "a", 0, 9.0, 0.25)])
        >>> [(r[STEP_KEY], sorted(k for k in r if not k.startswith("_") and k != STEP_KEY))
        ...  for r in rows]
        [(1, ['a', 'b']), (0, ['a'])]
    """
    rows: list[dict[str, Any]] = []
    open_rows: dict[int, dict[str, Any]] = {}
    items: list[tuple[str, int, float, Any]] = [(p.tag, p.step, p.wall_time, p.value)
                                                for p in points]
    items += images or []
    for tag, step, wall, value in items:
        row = open_rows.get(step)
        if row is None or tag in row:
            row = {STEP_KEY: step, "_timestamp": wall}
            open_rows[step] = row
            rows.append(row)
        row[tag] = value
        row["_timestamp"] = min(row["_timestamp"], wall)
    return rows


class _WandBConnection(Connection):
    def __init__(self, spec: WandB, logdir: str) -> None:
        super().__init__()
        import wandb

        self.wandb = wandb
        if spec.mode == "offline":  # nothing in this process may reach the network
            os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        self.spec = spec
        self.logdir = logdir
        self.runs: dict[str, Any] = {}

    def open_run(self, run: str, tags: dict[str, str]) -> str:
        run_id = "rp-" + hashlib.sha1(f"{self.logdir}\0{run}".encode()).hexdigest()[:20]
        if run_id in self.runs:
            return run_id
        settings = self.wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                       x_disable_meta=True, x_disable_machine_info=True)
        handle = self.call(self.wandb.init, project=self.spec.project, entity=self.spec.entity,
                           dir=self.spec.dir, mode=self.spec.mode, id=run_id, name=run,
                           group=tags["rayplex.group"], resume="allow", reinit="create_new",
                           config={"rayplex": tags}, settings=settings)
        handle.define_metric(STEP_KEY)
        handle.define_metric("*", step_metric=STEP_KEY)
        self.runs[run_id] = handle
        return run_id

    def log(self, run_id: str, points: list[Point], images: list[Image]) -> None:
        run = self.runs[run_id]
        media = [(i.tag, i.step, i.wall_time, self._image(i)) for i in images]
        for row in wandb_rows(points, media):
            self.call(run.log, row)
        # A round trip to W&B's service process, after the rows in order: they were received.
        self.call(lambda: run.step)

    def _image(self, image: Image) -> Any:
        from PIL import Image as PILImage

        return self.wandb.Image(PILImage.open(io.BytesIO(image.data)))

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        values = {k: _json_or_text(v) for k, v in params.items()}
        self.call(self.runs[run_id].config.update, values, allow_val_change=True)

    def close(self) -> None:
        runs, self.runs = self.runs, {}
        for run in runs.values():
            self.call(run.finish)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
