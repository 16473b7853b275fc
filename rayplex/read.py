"""Reading a finished logdir back: scalars, hyper-parameters, artifacts, a summary. No Ray needed.

Event files are read with :func:`rayplex.tfrecord.read_records` (re-exported here as
:func:`iter_event_records`), so that neither TensorFlow nor TensorBoard is needed; a torn last
record (a writer that crashed, or is still writing) ends a file quietly. Only regular files are
ever opened: a FIFO or device named like an event file, a log or a params file is skipped, so a
reader never blocks on one. Scalars are ``simple_value`` in rayplex's files; ``tensor``
values of the ``scalars`` plugin (written by other tools, or migrated by TensorBoard) count too.

Example:
    >>> rows = read_scalars("/tmp/exp1", tag="agent/reward/*")  # doctest: +SKIP
    >>> rows[0]  # doctest: +SKIP
    ScalarRow(run='agent/0', tag='agent/reward/0-7', step=0, wall_time=1767225600.1, value=0.02)
    >>> read_scalars("/tmp/exp1", group="learner", as_frame=True).head()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Union, overload

from rayplex.artifacts import ArtifactInfo, ArtifactStore
from rayplex.layout import TENSORBOARD, artifacts_dir, logs_dir, params_dir, tensorboard_dir
from rayplex.logdir_codec import event_files, file_events, kind_of, read_params_tree, scalar_of
from rayplex.tfrecord import read_records as iter_event_records

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    from tensorboardX.proto.event_pb2 import Event

__all__ = [
    "FileSummary",
    "LogdirSummary",
    "RunSummary",
    "ScalarRow",
    "ScalarTable",
    "TagSummary",
    "check_logdir",
    "iter_event_records",
    "iter_events",
    "list_artifacts",
    "list_runs",
    "read_params",
    "read_scalars",
    "summarize",
]

PathLike = Union[str, "os.PathLike[str]"]

# ----------------------------------------------------------------------------- logdir layout


def check_logdir(logdir: PathLike) -> Path:
    """Return ``logdir`` as an absolute path after checking that it looks like a rayplex logdir.

    Args:
        logdir: The experiment's logdir; ``~`` is expanded.

    Returns:
        The absolute path.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist, is not a directory or has no
            ``tensorboard/`` subdirectory (the message says which, and suggests the parent when
            given the ``tensorboard/`` folder itself).
        ValueError: If ``logdir`` is a ``scheme://`` that ``pyarrow.fs`` cannot resolve or a
            bucket that cannot be listed. A logdir on object storage is read from a local
            copy synced from the bucket first (:func:`rayplex.remote.readable`); every reader
            checks its logdir here.

    Example:
        >>> check_logdir("/nonexistent")
        Traceback (most recent call last):
        ...
        FileNotFoundError: logdir '/nonexistent' does not exist
    """
    from rayplex.remote import readable
    from rayplex.rules import local_logdir

    path = Path(os.path.abspath(os.path.expanduser(local_logdir(readable(logdir)))))
    if not path.exists():
        raise FileNotFoundError(f"logdir {str(path)!r} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"logdir {str(path)!r} is not a directory")
    if not os.path.isdir(tensorboard_dir(path)):
        hint = ""
        if path.name == TENSORBOARD or any("tfevents" in p.name for p in path.iterdir()):
            hint = f" (this looks like the tensorboard/ folder itself: pass {str(path.parent)!r})"
        raise FileNotFoundError(
            f"{str(path)!r} is not a rayplex logdir: it has no tensorboard/ subdirectory{hint}"
        )
    return path


def _group_of(run: str) -> str:
    return run.split("/", 1)[0]


def _matches(name: str, pattern: str | None) -> bool:
    """``pattern`` is an exact name or an :mod:`fnmatch` pattern (case-sensitive)."""
    return pattern is None or name == pattern or fnmatch.fnmatchcase(name, pattern)


def list_runs(logdir: PathLike) -> list[str]:
    """List the TensorBoard runs of a logdir (directories holding event files), sorted.

    A normal group's run is the group (``learner``); an indexed or combined group has one run per
    client (``agent/3``).

    Args:
        logdir: The experiment's logdir (the directory given to ``rayplex.init``).

    Returns:
        Run names relative to ``logdir/tensorboard``, with ``/`` separators.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist or has no ``tensorboard/`` subdirectory.

    Example:
        >>> list_runs("/tmp/exp1")  # doctest: +SKIP
        ['agent/0', 'agent/1', 'eval/stochastic-1', 'learner']
    """
    return sorted(event_files(Path(tensorboard_dir(check_logdir(logdir)))))


# ----------------------------------------------------------------------------- event files


def iter_events(
    logdir: PathLike, run: str | None = None, group: str | None = None
) -> Iterator[tuple[str, Event]]:
    """Yield ``(run, Event)`` for every event of every run of a logdir, run by run, in file order.

    Records that are intact but not a valid ``Event`` are skipped.

    Args:
        logdir: The experiment's logdir.
        run: Only runs matching this name or :mod:`fnmatch` pattern; ``None`` for all.
        group: Only runs of this client group (the run's first path component).

    Yields:
        The run name and a ``tensorboardX.proto.event_pb2.Event``.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist or has no ``tensorboard/`` subdirectory.

    Example:
        >>> for run, event in iter_events("/tmp/exp1"):  # doctest: +SKIP
        ...     print(run, event.step, [v.tag for v in event.summary.value])
    """
    runs = event_files(Path(tensorboard_dir(check_logdir(logdir))))
    for name in sorted(runs):
        if not _matches(name, run) or (group is not None and _group_of(name) != group):
            continue
        for path in runs[name]:
            for event in file_events(path):
                yield name, event


# ----------------------------------------------------------------------------- values

# ----------------------------------------------------------------------------- scalars


class ScalarRow(NamedTuple):
    """One scalar point.

    Example:
        >>> ScalarRow("learner", "main/loss", 3, 1767225600.0, 0.25).value
        0.25
    """

    run: str
    """TensorBoard run (``learner``, ``agent/3``)."""
    tag: str
    """TensorBoard tag (``main/loss``, ``agent/reward/0-7``)."""
    step: int
    """Global step."""
    wall_time: float
    """Seconds since the epoch, taken on the worker at the log call."""
    value: float
    """The value (float32 in rayplex's files)."""


class ScalarTable(list[ScalarRow]):
    """A list of :class:`ScalarRow`, sorted by ``(run, tag, step, wall_time)``.

    Example:
        >>> table = ScalarTable([ScalarRow("learner", "main/loss", 0, 0.0, 1.0)])
        >>> table.runs(), table.tags()
        (['learner'], ['main/loss'])
        >>> table.to_pandas().columns.tolist()  # doctest: +SKIP
        ['run', 'tag', 'step', 'wall_time', 'value']
    """

    columns = ScalarRow._fields

    def runs(self) -> list[str]:
        """The distinct runs, sorted."""
        return sorted({row.run for row in self})

    def tags(self) -> list[str]:
        """The distinct tags, sorted."""
        return sorted({row.tag for row in self})

    def to_pandas(self) -> pandas.DataFrame:
        """The rows as a :class:`pandas.DataFrame` with columns ``run, tag, step, wall_time, value``.

        Returns:
            The data frame (``step`` is int64, ``wall_time`` and ``value`` float64).

        Raises:
            ImportError: If pandas is not installed.

        Example:
            >>> ScalarTable().to_pandas().shape  # doctest: +SKIP
            (0, 5)
        """
        try:
            import pandas
        except ImportError as exc:
            raise ImportError(
                "ScalarTable.to_pandas() needs pandas: pip install pandas"
            ) from exc
        dtypes = {"run": object, "tag": object, "step": "int64", "wall_time": "float64",
                  "value": "float64"}
        return pandas.DataFrame({
            name: pandas.Series([row[i] for row in self], dtype=dtypes[name])
            for i, name in enumerate(self.columns)
        })


def _scalar_rows(
    logdir: PathLike, group: str | None, tag: str | None, run: str | None
) -> Iterator[ScalarRow]:
    for run_name, event in iter_events(logdir, run=run, group=group):
        for value in event.summary.value:
            if not _matches(value.tag, tag):
                continue
            scalar = scalar_of(value)
            if scalar is not None:
                yield ScalarRow(run_name, value.tag, event.step, event.wall_time, scalar)


@overload
def read_scalars(
    logdir: PathLike, group: str | None = ..., tag: str | None = ..., run: str | None = ...,
    *, as_frame: Literal[False] = ...,
) -> ScalarTable: ...


@overload
def read_scalars(
    logdir: PathLike, group: str | None = ..., tag: str | None = ..., run: str | None = ...,
    *, as_frame: Literal[True],
) -> pandas.DataFrame: ...


def read_scalars(
    logdir: PathLike,
    group: str | None = None,
    tag: str | None = None,
    run: str | None = None,
    *,
    as_frame: bool = False,
) -> ScalarTable | pandas.DataFrame:
    """Read the scalars of a logdir back.

    Args:
        logdir: The experiment's logdir (the directory given to ``rayplex.init``).
        group: Only runs of this client group (the run's first path component).
        tag: Only tags equal to this, or matching it as an :mod:`fnmatch` pattern
            (``"agent/reward/*"``; ``*`` also matches ``/``).
        run: Only runs equal to this or matching it as a pattern (``"agent/*"``).
        as_frame: Return a :class:`pandas.DataFrame` instead of a :class:`ScalarTable`.

    Returns:
        A :class:`ScalarTable` of :class:`ScalarRow` sorted by ``(run, tag, step, wall_time)``,
        or the same as a data frame.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist or has no ``tensorboard/`` subdirectory.
        ImportError: If ``as_frame`` is true and pandas is not installed.

    Example:
        >>> rows = read_scalars("/tmp/exp1", group="learner", tag="main/loss")  # doctest: +SKIP
        >>> [(r.step, r.value) for r in rows]  # doctest: +SKIP
        [(10, 0.30000001192092896)]
    """
    with stored_scalars(logdir, group, tag, run) as tables:
        if tables is not None:
            table = ScalarTable(row for part in tables for row in _arrow_rows(part))
        else:
            table = ScalarTable(_scalar_rows(logdir, group, tag, run))
            table.sort(key=lambda row: (row.run, row.tag, row.step, row.wall_time))
    return table.to_pandas() if as_frame else table


def _arrow_rows(table: Any) -> Iterator[ScalarRow]:
    columns = [table.column(name).to_pylist() for name in ScalarRow._fields]
    return map(ScalarRow._make, zip(*columns, strict=True))


@contextlib.contextmanager
def stored_scalars(logdir: PathLike, group: str | None = None, tag: str | None = None,
                   run: str | None = None) -> Iterator[Iterator[Any] | None]:
    """The rows :func:`read_scalars` gives, as Arrow tables (columns ``run, tag, step,
    wall_time, value``) in the same order, read batch by batch from the columnar store —
    or None when the store is absent or not current (then read the event files): see
    :mod:`rayplex.store.scan` for what current means.

    Example:
        >>> with stored_scalars("/tmp/exp1", tag="loss") as tables:  # doctest: +SKIP
        ...     rows = 0 if tables is None else sum(t.num_rows for t in tables)
    """
    from rayplex.store.scan import open_current

    scan = open_current(logdir)
    if scan is None:
        yield None
        return
    with scan:
        yield scan.tables(
            runs=lambda name: _matches(name, run) and (group is None or _group_of(name) == group),
            tags=lambda name: _matches(name, tag))


# ----------------------------------------------------------------------------- params, artifacts


def read_params(logdir: PathLike, *,
                errors: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Read the hyper-parameters every client logged with ``log_params``.

    Args:
        logdir: The experiment's logdir.
        errors: If given, a params file that cannot be read (not JSON, not an object, nested
            too deeply, unreadable) is recorded here as ``{client: message}`` and left out,
            instead of raising: one bad or hostile file then costs only its own client
            (``rayplex ls`` lists the rest this way).

    Returns:
        ``{"group/name": params}`` from ``logdir/params/<group>/<name>.json``, sorted by client
        id; empty when nothing was logged.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist or has no ``tensorboard/`` subdirectory.
        ValueError: If a params file cannot be read (the message names the file), unless
            ``errors`` is given; or if ``logdir`` is a URL.

    Example:
        >>> read_params("/tmp/exp1")  # doctest: +SKIP
        {'learner/main': {'Args': {'lr': 0.001}}}
    """
    return read_params_tree(params_dir(check_logdir(logdir)), errors)


def list_artifacts(logdir: PathLike) -> list[ArtifactInfo]:
    """List the artifacts of a logdir (pickles, modules, images, videos, files), sorted by path.

    Args:
        logdir: The experiment's logdir.

    Returns:
        :class:`rayplex.artifacts.ArtifactInfo` entries; ``path`` is relative to
        ``logdir/artifacts`` and starts with the client id (``learner/main/model.pkl``).

    Raises:
        FileNotFoundError: If ``logdir`` does not exist or has no ``tensorboard/`` subdirectory.

    Example:
        >>> [a.path for a in list_artifacts("/tmp/exp1")]  # doctest: +SKIP
        ['learner/main/model.pkl']
    """
    root = Path(artifacts_dir(check_logdir(logdir)))
    if not root.is_dir():
        return []
    return ArtifactStore(root).list()


# ----------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class TagSummary:
    """One tag of one run, as :func:`summarize` sees it.

    Attributes:
        run: The run.
        tag: The tag.
        kind: ``scalar``, ``histogram``, ``text``, ``image``... (TensorBoard's plugin).
        points: How many records the tag has.
        first_step: The smallest step.
        last_step: The largest step.
        last_value: For scalars, the value at the largest step (latest wall time); else None.
    """

    run: str
    tag: str
    kind: str
    points: int
    first_step: int
    last_step: int
    last_value: float | None


@dataclass(frozen=True)
class RunSummary:
    """One TensorBoard run (a normal group, or one client of an indexed / combined group).

    Attributes:
        run: The run.
        group: The client group (the run's first path component).
        event_files: How many event files the run has.
        bytes: Their total size.
        tags: How many tags.
        points: How many records, all tags together.
        last_step: The largest step of any tag (None if the run has no values yet).
    """

    run: str
    group: str
    event_files: int
    bytes: int
    tags: int
    points: int
    last_step: int | None


@dataclass(frozen=True)
class FileSummary:
    """A file of the logdir, e.g. a text log.

    Attributes:
        path: Relative to the logdir, with ``/`` separators (``logs/agent/3.log``).
        bytes: Its size.
    """

    path: str
    bytes: int


@dataclass(frozen=True)
class LogdirSummary:
    """An experiment at a glance (what ``rayplex ls`` prints).

    Attributes:
        logdir: The absolute logdir.
        groups: Client groups seen anywhere (runs, logs, params, artifacts), sorted.
        clients: Client ids ``group/name`` seen in run directories, log files, params and
            artifacts, sorted; a normal group's clients share one run and are inferred from its
            tags (``main/loss`` in run ``learner`` is client ``learner/main``).
        runs: One entry per run.
        tags: One entry per (run, tag), sorted by run then tag.
        artifacts: Every artifact.
        log_files: Every text log file (``all.log``, per-client files, rotated backups).
        params: Client ids with hyper-parameters.
        total_bytes: Size of everything under the logdir.
        errors: ``{client: message}`` for each client whose files could not be read (a params
            file that is not a JSON object, or nested too deeply): everything else is listed.
    """

    logdir: str
    groups: list[str]
    clients: list[str]
    runs: list[RunSummary]
    tags: list[TagSummary]
    artifacts: list[ArtifactInfo]
    log_files: list[FileSummary]
    params: list[str]
    total_bytes: int
    errors: dict[str, str] = field(default_factory=dict)


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):  # vanished while we walked
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _log_files(root: Path) -> list[FileSummary]:
    logs = Path(logs_dir(root))
    files: list[FileSummary] = []
    if not logs.is_dir():
        return files
    for dirpath, dirnames, filenames in os.walk(logs):
        dirnames.sort()
        for name in sorted(filenames):
            if ".log" not in name:
                continue
            path = Path(dirpath, name)
            try:
                info = path.stat()
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            size = info.st_size
            files.append(FileSummary(path.relative_to(root).as_posix(), size))
    return files


def _clients_in(paths: Iterable[str], min_parts: int) -> set[str]:
    """Client ids ``group/name`` named by the first two components of relative paths."""
    out = set()
    for path in paths:
        parts = path.split("/")
        if len(parts) >= min_parts and parts[0] and parts[1]:
            out.add(f"{parts[0]}/{parts[1]}")
    return out


def _normal_group_clients(tags: Iterable[TagSummary]) -> set[str]:
    """Clients of normal groups, inferred from their tags' prefixes.

    A normal group's clients share the run named after the group; client ``learner/main``'s
    tags read ``main/<tag>``, or ``main.<section>/<tag>`` for a tag that opened a section of its
    own. A dotted prefix counts as a section of a plain prefix seen in the same run.
    """
    prefixes: dict[str, set[str]] = defaultdict(set)
    for t in tags:
        if "/" not in t.run and t.run != "." and "/" in t.tag:
            prefixes[t.run].add(t.tag.split("/", 1)[0])
    clients = set()
    for run, names in prefixes.items():
        for name in names:
            if "." in name and name.split(".", 1)[0] in names:
                continue
            clients.add(f"{run}/{name}")
    return clients


def _event_tag_summaries(root: Path) -> list[TagSummary]:
    """Every (run, tag), read from every event."""
    # (run, tag) -> [kind, points, first_step, last_step, last_wall_time, last_value]
    tags: dict[tuple[str, str], list[Any]] = {}
    for run, event in iter_events(root):
        step, wall_time = event.step, event.wall_time
        for value in event.summary.value:
            key = (run, value.tag)
            entry = tags.get(key)
            if entry is None:
                entry = tags[key] = [kind_of(value), 0, step, step, -math.inf, None]
            entry[1] += 1
            entry[2] = min(entry[2], step)
            if (step, wall_time) >= (entry[3], entry[4]):
                entry[3], entry[4] = step, wall_time
                if entry[0] == "scalar":
                    entry[5] = scalar_of(value)
    return [TagSummary(run, tag, kind, points, first, last, value)
            for (run, tag), (kind, points, first, last, _wall, value) in sorted(tags.items())]


def _stored_tag_summaries(root: Path) -> list[TagSummary] | None:
    """The same list from the columnar store when it is current, without reading an event;
    None otherwise (:func:`rayplex.store.scan.stored_tags`)."""
    from rayplex.store.scan import stored_tags

    stats = stored_tags(root)
    if stats is None:
        return None
    return [TagSummary(run, tag, s.kind, s.points, s.first_step, s.last_step,
                       s.last_value if s.kind == "scalar" else None)
            for (run, tag), s in stats.items()]


class ClientStatus(NamedTuple):
    """What ``rayplex ls`` says of one client: its state and its latest alert."""

    client: str
    state: str
    """``running``, ``finished``, ``silent`` or ``crashed`` (see :func:`client_states`)."""
    last_alert: Any
    """The latest :class:`rayplex.Alert` about it, or None."""


def client_states(logdir: PathLike, clients: Iterable[str], *,
                  heartbeats: Mapping[str, Mapping[str, Any]] | None = None,
                  alert_list: Sequence[Any] | None = None) -> list[ClientStatus]:
    """Each client's state as the logdir tells it, read back without Ray (``rayplex ls``).

    ``crashed``: its latest alert is a ``crashed`` one. ``finished``: its last ``ping`` status
    says it ended (``finished``, ``completed``, ``done``, ``stopped``, ``errored``), or no live
    hub holds the logdir on this machine (the experiment is over). ``silent``: its latest alert
    is a ``silent`` one and it has not pinged since. ``running``: otherwise. The hub knows
    more while it runs (``silent`` ends with the client's next record); the logdir keeps only
    alerts and heartbeats. A caller that has read them already passes them (``heartbeats``:
    the control file's, ``alert_list``: :func:`rayplex.alerts`'s) and they are not read again.

    Example:
        >>> client_states("/tmp/exp1", ["agent/0"])  # doctest: +SKIP
        [ClientStatus(client='agent/0', state='finished', last_alert=None)]
    """
    from rayplex.actors.control import read_control
    from rayplex.actors.watchbook import ENDED
    from rayplex.owner import holder
    from rayplex.watch import alerts

    path = os.fspath(logdir)
    live = holder(path) is not None
    if heartbeats is None:
        try:
            heartbeats = read_control(path).heartbeats
        except RecursionError:  # a hostile control file: no heartbeat is known
            heartbeats = {}
    beats = heartbeats
    latest = {alert.client: alert  # oldest first: the last wins
              for alert in (alerts(path) if alert_list is None else alert_list)}
    out = []
    for client in clients:
        alert = latest.get(client)
        kind = alert.rule.partition("(")[0] if alert is not None else ""
        beat = beats.get(client, {})
        beat_time = beat.get("time")
        pinged_since = isinstance(beat_time, (int, float)) and alert is not None and (
            beat_time > alert.wall_time)
        if kind == "crashed":
            state = "crashed"
        elif beat.get("status") in ENDED or not live:
            state = "finished"
        elif kind == "silent" and not pinged_since:
            state = "silent"
        else:
            state = "running"
        out.append(ClientStatus(client, state, alert))
    return out


def summarize(logdir: PathLike) -> LogdirSummary:
    """Summarize a logdir: groups, clients, runs, tags (last step, point count), artifacts, logs.

    Reads every event file once, or none when the columnar store is current (the same summary
    from its catalogues: :func:`rayplex.store.scan.stored_tags`).

    Args:
        logdir: The experiment's logdir.

    Returns:
        A :class:`LogdirSummary`.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist or has no ``tensorboard/`` subdirectory.
        ValueError: If ``logdir`` is a URL. A file that cannot be read is not an error here: it
            is listed in :attr:`LogdirSummary.errors` under its client.

    Example:
        >>> s = summarize("/tmp/exp1")  # doctest: +SKIP
        >>> s.groups, [(t.tag, t.last_step) for t in s.tags if t.run == "learner"]  # doctest: +SKIP
        (['agent', 'eval', 'learner'], [('main/loss', 99)])
    """
    root = check_logdir(logdir)
    files = event_files(Path(tensorboard_dir(root)))
    tag_summaries = _stored_tag_summaries(root)
    if tag_summaries is None:
        tag_summaries = _event_tag_summaries(root)

    runs = []
    for run in sorted(files):
        mine = [t for t in tag_summaries if t.run == run]
        size = 0
        for path in files[run]:
            with contextlib.suppress(OSError):
                size += path.stat().st_size
        runs.append(RunSummary(
            run=run, group=_group_of(run), event_files=len(files[run]), bytes=size, tags=len(mine),
            points=sum(t.points for t in mine),
            last_step=max((t.last_step for t in mine), default=None),
        ))

    artifacts = list_artifacts(root)
    log_files = _log_files(root)
    errors: dict[str, str] = {}
    params = sorted(read_params(root, errors=errors))
    clients = _clients_in((r for r in files if r != "."), min_parts=2)
    clients |= _clients_in((a.path for a in artifacts), min_parts=3)
    clients |= set(params) | set(errors)
    for log in log_files:
        parts = log.path.split("/")
        if len(parts) == 3 and parts[2].endswith(".log"):
            clients.add(f"{parts[1]}/{parts[2][: -len('.log')]}")
    clients |= _normal_group_clients(tag_summaries)
    groups = {c.split("/", 1)[0] for c in clients} | {_group_of(r) for r in files if r != "."}
    return LogdirSummary(
        logdir=str(root),
        groups=sorted(groups),
        clients=sorted(clients),
        runs=runs,
        tags=tag_summaries,
        artifacts=artifacts,
        log_files=log_files,
        params=params,
        total_bytes=_tree_bytes(root),
        errors=dict(sorted(errors.items())),
    )
