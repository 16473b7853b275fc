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
  nested keys flattened with ``.``; MLflow params cannot change, so a param keeps its first
  value and a later value goes to the MLflow tag ``rayplex.param.<key>`` (latest wins);
* a tag MLflow would refuse as a key (over 250 characters, or a path such as ``eval/``,
  ``a//b``, ``./a``) -> a valid key, the same every time: see :func:`mlflow_key`;
* images -> MLflow artifacts ``images/<tag>/step_<step>.png``; W&B ``wandb.Image`` in the row.

Importing this module imports neither MLflow nor W&B: they are optional extras.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
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
MLFLOW_TAG_MAX_CHARS = 5000
"""A tag value MLflow accepts on every version (older servers refuse more than 5,000)."""
MLFLOW_KEY_MAX_CHARS = 250
PARAM_TAG_PREFIX = "rayplex.param."
"""A param whose value changed: MLflow tag ``rayplex.param.<key>`` holds its latest value."""
_MLFLOW_BAD_KEY = re.compile(r"[^/\w.\- :]")
MLFLOW_PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST",
                              "RESOURCE_ALREADY_EXISTS", "INVALID_STATE", "BAD_REQUEST"})
"""MLflow error codes that resending the same request can never fix. Anything else
(connection errors, ``TEMPORARILY_UNAVAILABLE``, ``INTERNAL_ERROR``,
``REQUEST_LIMIT_EXCEEDED``, permission errors a new token fixes) is retried with back-off."""


@dataclass(frozen=True)
class Refused:
    """Items a tracker refused for good (never retried): ``count`` items of ``kind``
    (``metric``, ``param``, ``image``, ``run``) under ``key``, and the tracker's ``error``."""

    kind: str
    key: str
    count: int
    error: str


class RunGone(Exception):
    """The tracker's run of a rayplex run is gone for good (deleted in MLflow)."""


def mlflow_permanent(exc: BaseException) -> bool:
    """Whether ``exc`` is an MLflow refusal that a retry cannot fix (:data:`MLFLOW_PERMANENT`)."""
    return str(getattr(exc, "error_code", "")) in MLFLOW_PERMANENT


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

    def log(self, run_id: str, points: list[Point], images: list[Image]) -> list[Refused]:
        """Send these points and images; return only once the tracker accepted them all but
        what it refused for good (returned).

        Raises:
            RunGone: if the tracker's run is gone for good.
            Exception: a failure a retry may fix.
        """
        raise NotImplementedError

    def log_params(self, run_id: str, params: dict[str, str]) -> list[Refused]:
        """Send flat params (as :meth:`log`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the tracker's runs (safe to call twice)."""


@dataclass(frozen=True)
class MLflow:
    """Forward to MLflow: one MLflow run per TensorBoard run, metrics with the event files'
    exact steps and wall times (milliseconds), batched by ``MlflowClient.log_batch``.

    Args:
        tracking_uri: MLflow's tracking URI (``sqlite:///mlruns.db``, ``http://...``); ``None``
            for MLflow's default (``MLFLOW_TRACKING_URI``). A relative path in it (and in
            ``artifact_location``) is taken from the directory the spec is written in.
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
        object.__setattr__(self, "tracking_uri", anchored(self.tracking_uri))
        object.__setattr__(self, "artifact_location", anchored(self.artifact_location))

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
        dir: Where W&B writes its files (``None``: W&B's default); a relative one is taken
            from the directory the spec is written in.
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
        if self.dir is not None and not isinstance(self.dir, str):
            raise TypeError(f"W&B dir must be a str, got {type(self.dir).__name__}")
        _check_seconds("slow_call_s", self.slow_call_s)
        _check_seconds("retry_max_s", self.retry_max_s)
        object.__setattr__(self, "dir", anchored(self.dir))

    @property
    def key(self) -> str:
        return "wandb-" + _slug(self.project)

    def connect(self, logdir: str) -> Connection:
        return _WandBConnection(self, logdir)


Tracker = MLflow | WandB


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def anchored(location: str | None) -> str | None:
    """``location`` (a path, a ``file:`` or ``sqlite:`` URI) with a relative path made absolute
    against this process's directory: a tracker spec is written on the driver, but its
    forwarder actor runs in a directory of Ray's choosing. Other URIs are returned as given.

    Example:
        >>> import os
        >>> anchored("sqlite:///runs.db") == "sqlite:///" + os.path.abspath("runs.db")
        True
        >>> anchored("http://127.0.0.1:5000"), anchored("sqlite:////tmp/runs.db")
        ('http://127.0.0.1:5000', 'sqlite:////tmp/runs.db')
    """
    if location is None or not location:
        return location
    if location.startswith("sqlite:///"):
        path = location[len("sqlite:///"):]
        return location if path.startswith("/") else "sqlite:///" + os.path.abspath(path)
    if location.startswith("file:"):
        path = location[len("file:"):]
        return location if path.startswith("/") else "file://" + os.path.abspath(path)
    if _SCHEME.match(location):
        return location
    return os.path.abspath(location)


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
    """A TensorBoard tag (or a param key) as a key MLflow accepts, the same every time.

    Characters MLflow refuses become ``_``. A key MLflow would still refuse, a path that is
    not its own normal form (``eval/``, ``a//b``, ``./a``, ``a/..``) or one longer than 250
    characters, has each empty, ``.`` or ``..`` part replaced by ``_``, is cut to 241
    characters and gets ``-`` and 8 hex digits of the tag's SHA-1 (so two tags cut alike
    stay apart).

    Example:
        >>> mlflow_key("agent.my.section/foo/16-23")
        'agent.my.section/foo/16-23'
        >>> mlflow_key("eval/")
        'eval/_-c4f23333'
        >>> len(mlflow_key("k" * 1024))
        250
    """
    key = _MLFLOW_BAD_KEY.sub("_", tag)
    if len(key) <= MLFLOW_KEY_MAX_CHARS and _normal_path(key):
        return key
    key = "/".join("_" if part in ("", ".", "..") else part for part in key.split("/"))
    if key.startswith(".."):
        key = "_" + key
    suffix = "-" + hashlib.sha1(tag.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return key[:MLFLOW_KEY_MAX_CHARS - len(suffix)] + suffix


def _normal_path(key: str) -> bool:
    """MLflow's rule for names that may become file paths (``path_not_unique`` negated)."""
    norm = posixpath.normpath(key)
    return norm == key and norm != "." and not norm.startswith(("..", "/"))


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
        """Idempotent: the run is looked up by its ``rayplex.run``/``rayplex.logdir`` tags
        before one is created and again after, and every forwarder settles on the oldest one.
        A create that ran twice (MLflow's HTTP client resends a POST whose answer was lost)
        or raced another forwarder leaves empty runs, which are tagged
        ``rayplex.duplicate_of`` and deleted.

        Raises:
            RunGone: if the run was deleted in MLflow (it is not made again).
        """
        experiment = self._experiment()
        found = self._find_runs(experiment, run)
        if not found:
            try:
                self.call(self.client.create_run, experiment, tags=tags, run_name=run)
            except Exception as exc:
                if mlflow_permanent(exc):
                    raise RunGone(f"MLflow refuses to create it: {_error(exc)}") from exc
                raise  # perhaps created all the same: the next round finds it
            found = self._find_runs(experiment, run)
            if not found:
                raise RuntimeError(f"MLflow created run {run!r} but does not find it yet")
        keep = found[0]
        for extra in found[1:]:
            if not extra.data.metrics and not extra.data.params \
                    and extra.info.lifecycle_stage == "active":
                self.call(self.client.set_tag, extra.info.run_id, "rayplex.duplicate_of",
                          keep.info.run_id)
                self.call(self.client.delete_run, extra.info.run_id)
        if keep.info.lifecycle_stage != "active":
            raise RunGone(f"MLflow run {keep.info.run_id} was deleted")
        return str(keep.info.run_id)

    def _find_runs(self, experiment: str, run: str) -> list[Any]:
        """MLflow's runs of rayplex run ``run`` (deleted ones too), oldest first, without the
        duplicates :meth:`open_run` set aside."""
        from mlflow.entities import ViewType

        query = (f"tags.`rayplex.run` = '{_quote(run)}' and "
                 f"tags.`rayplex.logdir` = '{_quote(self.logdir)}'")
        found = self.call(self.client.search_runs, [experiment], query,
                          run_view_type=ViewType.ALL, max_results=100)
        return sorted((r for r in found if "rayplex.duplicate_of" not in r.data.tags),
                      key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def log(self, run_id: str, points: list[Point], images: list[Image]) -> list[Refused]:
        from mlflow.entities import Metric

        refused: list[Refused] = []
        for batch in mlflow_batches(points):
            metrics = [Metric(mlflow_key(p.tag), p.value, wall_ms(p.wall_time), p.step)
                       for p in batch]
            refused += self._isolate(run_id, metrics, lambda items: self.call(
                self.client.log_batch, run_id, metrics=items, synchronous=True),
                lambda m: ("metric", m.key))
        for image in images:
            refused += self._isolate(run_id, [image], lambda items: self._log_image(
                run_id, items[0]), lambda i: ("image", mlflow_key(i.tag)))
        return refused

    def _log_image(self, run_id: str, image: Image) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            suffix = ".gif" if image.data[:3] == b"GIF" else ".png"
            path = os.path.join(tmp, f"step_{image.step:012d}{suffix}")
            with open(path, "wb") as f:
                f.write(image.data)
            self.call(self.client.log_artifact, run_id, path, f"images/{mlflow_key(image.tag)}")

    def log_params(self, run_id: str, params: dict[str, str]) -> list[Refused]:
        """New keys become MLflow params; a key MLflow already holds with another value (its
        params cannot change) sets the tag ``rayplex.param.<key>`` to the latest value."""
        from mlflow.entities import Param, RunTag

        data = self._get_run(run_id).data
        held, tagged = dict(data.params), dict(data.tags)
        mapped = {mlflow_key(k): v[:MLFLOW_PARAM_MAX_CHARS] for k, v in sorted(params.items())}
        new: list[Any] = []
        changed: list[Any] = []
        for key, value in mapped.items():
            tag = mlflow_key(PARAM_TAG_PREFIX + key)
            if key not in held:
                new.append(Param(key, value))
            elif (held[key] != value or tag in tagged) and \
                    tagged.get(tag) != value[:MLFLOW_TAG_MAX_CHARS]:
                changed.append(RunTag(tag, value[:MLFLOW_TAG_MAX_CHARS]))
        refused: list[Refused] = []
        for start in range(0, len(new), MLFLOW_MAX_PARAMS):
            refused += self._isolate(run_id, new[start:start + MLFLOW_MAX_PARAMS], lambda items:
                                     self.call(self.client.log_batch, run_id, params=items,
                                               synchronous=True), lambda p: ("param", p.key))
        for start in range(0, len(changed), MLFLOW_MAX_PARAMS):
            refused += self._isolate(run_id, changed[start:start + MLFLOW_MAX_PARAMS],
                                     lambda items: self.call(self.client.log_batch, run_id,
                                                             tags=items, synchronous=True),
                                     lambda t: ("param", t.key))
        return refused

    def _isolate(self, run_id: str, items: list[Any], send: Callable[[list[Any]], Any],
                 name: Callable[[Any], tuple[str, str]], checked: bool = False) -> list[Refused]:
        """Send ``items``; on an error MLflow will never accept, find the items it refuses by
        halving (MLflow checks a whole request before it writes any of it, so a refused
        request wrote nothing) and return them; everything else is sent exactly once."""
        try:
            send(items)
            return []
        except Exception as exc:
            if not mlflow_permanent(exc):
                raise
            if not checked:
                self._check_alive(run_id, exc)
            if len(items) == 1:
                kind, key = name(items[0])
                return [Refused(kind, key, 1, _error(exc))]
            half = len(items) // 2
            return (self._isolate(run_id, items[:half], send, name, True)
                    + self._isolate(run_id, items[half:], send, name, True))

    def _get_run(self, run_id: str) -> Any:
        try:
            return self.call(self.client.get_run, run_id)
        except Exception as exc:
            if mlflow_permanent(exc):
                raise RunGone(f"MLflow run {run_id} no longer exists: {_error(exc)}") from exc
            raise

    def _check_alive(self, run_id: str, cause: Exception) -> None:
        info = self._get_run(run_id).info
        if info.lifecycle_stage != "active":
            raise RunGone(f"MLflow run {run_id} was deleted ({_error(cause)})") from cause


def _error(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return f"{code or type(exc).__name__}: {str(exc)[:300]}"


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

    def log(self, run_id: str, points: list[Point], images: list[Image]) -> list[Refused]:
        run = self.runs[run_id]
        media = [(i.tag, i.step, i.wall_time, self._image(i)) for i in images]
        for row in wandb_rows(points, media):
            self.call(run.log, row)
        # A round trip to W&B's service process, after the rows in order: they were received.
        self.call(lambda: run.step)
        return []

    def _image(self, image: Image) -> Any:
        from PIL import Image as PILImage

        return self.wandb.Image(PILImage.open(io.BytesIO(image.data)))

    def log_params(self, run_id: str, params: dict[str, str]) -> list[Refused]:
        values = {k: _json_or_text(v) for k, v in params.items()}
        self.call(self.runs[run_id].config.update, values, allow_val_change=True)
        return []

    def close(self) -> None:
        runs, self.runs = self.runs, {}
        for run in runs.values():
            self.call(run.finish)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
