"""The client handle every worker logs through: :class:`Logger`, made by :func:`get_logger`.

A log call validates its arguments here, on the caller's side (a clear exception at the call
site), appends one small tuple to this process's buffer and returns; it never waits on the
network. See :mod:`rayplex.session` for what happens next.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import numbers
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import ray

from rayplex import media
from rayplex.artifact_client import ARTIFACT_VERBS, ArtifactClient
from rayplex.config import config
from rayplex.errors import RayplexError
from rayplex.event_bytes import simple_value
from rayplex.items import (
    FixedValue,
    Line,
    PartialItem,
    Value,
    line_nbytes,
)
from rayplex.items import nbytes as item_nbytes
from rayplex.logger_jobs import JobsMixin
from rayplex.logger_projector import ProjectorMixin
from rayplex.nested import flatten, jsonable
from rayplex.records import Partial
from rayplex.rules import check_step, split_client_id, to_float, validate_logger_name, validate_tag
from rayplex.session import Session, session_for
from rayplex.stats import DEFAULT_STATS, MetricsWindow, PartialStats
from rayplex.terminal import Color, percent, print_table
from rayplex.textlog import FINE_LEVELS, build_line, format_line, line_from_record
from rayplex.timers import Counters, TimedBlocks, Timers

__all__ = ["Color", "LogHandler", "Logger", "get_logger", "logger_for_task", "percent"]

_new = tuple.__new__


def _walltime(walltime: Any) -> float:
    if walltime is None:
        return time.time()
    if isinstance(walltime, bool) or not isinstance(walltime, numbers.Real):
        raise TypeError(f"walltime must be a number of seconds, got {type(walltime).__name__}")
    seconds = float(walltime)
    if not math.isfinite(seconds):
        raise ValueError(f"walltime must be finite, got {seconds}")
    return seconds


class Logger(JobsMixin, ProjectorMixin):
    """Logs one client's scalars, histograms, text and more into the experiment's hub.

    Make one with :func:`rayplex.get_logger` or receive one from ``@rayplex.logged``. A Logger
    pickles to its names only, so it can be passed into tasks and actors.

    Example:
        >>> import ray, rayplex, tempfile
        >>> _ = ray.init(ignore_reinit_error=True)
        >>> hub = rayplex.init(tempfile.mkdtemp())
        >>> log = rayplex.get_logger("learner/main")
        >>> log.add_scalar("loss", 0.25, step=1)
        >>> log.flush()
    """

    def __init__(self, client_id: str, hub: str, session: Session, echo: bool = False) -> None:
        self.client_id = client_id
        self.group, self.name = split_client_id(client_id)
        self.hub = hub
        self.echo = echo
        self._session = session
        self._artifacts = ArtifactClient(client_id, session.call)
        session.before_flush(self._write_row)
        self._steps: dict[str, int] = {}
        self._tags_ok: set[str] = set()
        self._window = MetricsWindow()
        self._row: dict[str, float] = {}
        self._row_cells: dict[str, Color] = {}  # how log(print=True) shows Color values
        self._row_step: int | None = None
        self._last_row_step: int | None = None
        # Per logger and per thread/async context: one thread's Prefix never renames another's.
        self._metrics_prefix: contextvars.ContextVar[str] = contextvars.ContextVar(
            f"rayplex_metrics_prefix_{client_id}", default="")
        self._timers = Timers()
        self._counters = Counters()
        self._timed = TimedBlocks()

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_logger, (self.client_id, self.hub, self.echo))

    def __repr__(self) -> str:
        return f"Logger({self.client_id!r}, hub={self.hub!r})"

    # ------------------------------------------------------------- helpers
    def _check_tag(self, tag: Any) -> None:
        validate_tag(tag)
        self._tags_ok.add(tag)

    def _next_step(self, tag: str, step: Any) -> int:
        checked = check_step(self._steps.get(tag, -1) + 1 if step is None else step)
        self._steps[tag] = checked
        return checked

    def _put_value(self, tag: str, payload: bytes, step: Any, walltime: Any) -> None:
        if tag not in self._tags_ok:
            self._check_tag(tag)
        item = _new(Value, (self.client_id, tag, self._next_step(tag, step), _walltime(walltime),
                            payload))
        self._session.put(item, item_nbytes(item))

    # ---------------------------------------------------------- TensorBoard
    def add_scalar(self, tag: str, value: Any, step: int | None = None,
                   walltime: float | None = None) -> None:
        """Log one scalar. ``step=None`` continues this tag's own count (0, 1, 2, ...).

        Example:
            >>> log.add_scalar("reward", 1.5, step=10)  # doctest: +SKIP

        Raises:
            TypeError: if ``value`` is not a real number or ``step`` not an int.
            ValueError: if ``tag`` is empty, too long, or has NUL or a line break, or if
                ``step`` (also the next one counted on) is outside the signed 64-bit range.
        """
        if tag not in self._tags_ok:
            self._check_tag(tag)
        if type(value) is not float:
            value = to_float(value, f"value for tag {tag!r}")
        # The hot path: rules.check_step's range inline (literals: no global look-up, no call).
        if step is None:
            step = self._steps.get(tag, -1) + 1
            if step > 9223372036854775807:
                step = check_step(step)
        elif type(step) is not int or not -9223372036854775808 <= step <= 9223372036854775807:
            step = check_step(step)
        self._steps[tag] = step
        self._session.put_scalar((self.client_id, tag, step,  # a Scalar's fields, a plain tuple
                                  time.time() if walltime is None else _walltime(walltime), value))

    def add_scalars(self, scalars: Mapping[str, Any], step: int | None = None,
                    walltime: float | None = None) -> None:
        """Log several scalars at one step (each its own tag, as in Tensorplex).

        Example:
            >>> log.add_scalars({"loss": 0.3, "lr": 1e-3}, step=10)  # doctest: +SKIP

        Raises:
            TypeError: if ``scalars`` is not a mapping or a value is not a number.
            ValueError: if ``step`` is outside the signed 64-bit range (nothing is logged).
        """
        if not isinstance(scalars, Mapping):
            raise TypeError(f"add_scalars takes a mapping of tag -> number, got {type(scalars)}")
        if step is not None:
            step = check_step(step)
        checked = [(tag, v if type(v) is float else to_float(v, f"value for tag {tag!r}"))
                   for tag, v in scalars.items()]
        for tag, _ in checked:
            if tag not in self._tags_ok:
                self._check_tag(tag)
        wt = _walltime(walltime)
        for tag, value in checked:
            self.add_scalar(tag, value, step, wt)

    def add_histogram(self, tag: str, values: Any, step: int | None = None,
                      bins: Any = "tensorflow", walltime: float | None = None,
                      max_bins: int | None = None) -> None:
        """Log the distribution of ``values`` (any array-like of numbers) as a histogram.

        Example:
            >>> log.add_histogram("weights", np.random.randn(1000), step=3)  # doctest: +SKIP

        Raises:
            ValueError: if ``values`` is empty or not numeric.
        """
        self._put_value(tag, media.histogram_value(values, bins, max_bins), step, walltime)

    def add_text(self, tag: str, text: str, step: int | None = None,
                 walltime: float | None = None) -> None:
        """Log a piece of text (Markdown) under ``tag``.

        Raises:
            TypeError: if ``text`` is not a str.
        """
        self._put_value(tag, media.text_value(text), step, walltime)

    def add_image(self, tag: str, img: Any, step: int | None = None, walltime: float | None = None,
                  dataformats: str = "HWC") -> None:
        """Log one image: uint8, or float in [0, 1]; ``dataformats`` HW, HWC or CHW.

        Example:
            >>> log.add_image("frame", np.zeros((32, 32, 3), np.uint8), step=0)  # doctest: +SKIP

        Raises:
            ValueError: for a wrong shape or dtype (the message shows the shape).
        """
        self._put_value(tag, media.image_value(img, dataformats), step, walltime)

    def add_images(self, tag: str, imgs: Any, step: int | None = None,
                   walltime: float | None = None, dataformats: str = "NCHW") -> None:
        """Log a batch of images shown as one grid.

        Raises:
            ValueError: for a wrong shape or dtype.
        """
        self._put_value(tag, media.images_value(imgs, dataformats), step, walltime)

    def add_video(self, tag: str, frames: Any, step: int | None = None, fps: float = 4.0,
                  walltime: float | None = None, dataformats: str = "THWC") -> None:
        """Log a video (T×H×W×C frames) shown as an animated GIF, encoded here with imageio.

        Raises:
            ValueError: for a wrong shape or dtype.
        """
        self._put_value(tag, media.video_value(frames, fps, dataformats), step, walltime)

    def add_figure(self, tag: str, figure: Any, step: int | None = None, close: bool = True,
                   walltime: float | None = None) -> None:
        """Log a matplotlib figure as an image (needs matplotlib: ``rayplex[media]``)."""
        self._put_value(tag, media.figure_value(figure, close), step, walltime)

    def add_audio(self, tag: str, samples: Any, step: int | None = None,
                  sample_rate: int = 44100, walltime: float | None = None) -> None:
        """Log mono or stereo audio samples in [-1, 1]."""
        self._put_value(tag, media.audio_value(samples, sample_rate), step, walltime)

    def add_pr_curve(self, tag: str, labels: Any, predictions: Any, step: int | None = None,
                     num_thresholds: int = 127, weights: Any = None,
                     walltime: float | None = None) -> None:
        """Log a precision-recall curve from binary labels and predictions in [0, 1]."""
        value = media.pr_curve_value(labels, predictions, num_thresholds, weights)
        self._put_value(tag, value, step, walltime)

    def add_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Log one HParams session for this client into run ``hparams/<group>/<name>``.

        ``metrics`` are written as scalars in that run so that TensorBoard's HParams tab shows
        them next to the hyper-parameters.

        Raises:
            TypeError: for a hyper-parameter that is not a bool, number or str.
        """
        values = media.hparams_values(hparams, metrics)
        run = f"hparams/{self.group}/{self.name}"
        wt = time.time()
        for tag, payload in values:
            item = FixedValue(self.client_id, tag, 0, wt, payload, run)
            self._session.put(item, item_nbytes(item))
        for tag, value in metrics.items():
            payload = simple_value(to_float(value, f"metrics[{tag!r}]"))
            item = FixedValue(self.client_id, tag, 0, wt, payload, run)
            self._session.put(item, item_nbytes(item))

    # ------------------------------------------------- ML-Logger conveniences
    def log(self, metrics: Mapping[str, Any] | None = None, *, step: int | None = None,
            print: bool = False, **kwargs: Any) -> None:
        """ML-Logger style: key/values for one step, written when the step changes or on flush.

        Keys get the :meth:`Prefix` in effect. A :class:`~rayplex.terminal.Color` value is
        logged as its number and printed formatted and coloured.

        Example:
            >>> log.log(step=10, loss=0.3, accuracy=0.9)  # doctest: +SKIP
            >>> acc = Color(0.9, "green", percent)  # doctest: +SKIP
            >>> log.log({"loss": 0.2}, step=11, acc=acc, print=True)  # doctest: +SKIP

        Raises:
            TypeError: if a value is not a number.
            ValueError: if ``step`` (also the next one counted on) is outside the signed 64-bit
                range.
        """
        values = dict(metrics or {})
        values.update(kwargs)
        prefix = self._metrics_prefix.get()
        checked = {}
        cells = {}
        for key, value in values.items():
            tag = prefix + key if prefix and isinstance(key, str) else key
            validate_tag(tag)
            if isinstance(value, Color):
                cells[tag] = value
                value = value.value
            checked[tag] = value if type(value) is float else to_float(value, f"value for tag {tag!r}")
        if step is None:
            if self._row_step is not None:
                step = self._row_step
            else:
                step = 0 if self._last_row_step is None else check_step(self._last_row_step + 1)
        else:
            step = check_step(step)
        if self._row and step != self._row_step:
            self._write_row()
        self._row_step = step
        self._row.update(checked)
        for tag in checked:
            if tag in cells:
                self._row_cells[tag] = cells[tag]
            else:
                self._row_cells.pop(tag, None)
        if print:
            print_table(f"{self.client_id} step {step}",
                        {k: self._row_cells.get(k, v) for k, v in self._row.items()})

    def _write_row(self) -> None:
        if self._row and self._row_step is not None:
            self.add_scalars(self._row, step=self._row_step)
            self._last_row_step = self._row_step
        self._row = {}
        self._row_cells = {}
        self._row_step = None

    def log_params(self, print: bool = False, **namespaces: Any) -> dict[str, Any]:
        """Store hyper-parameters (merged across calls) in ``params/<group>/<name>.json`` and
        show them in TensorBoard's HParams tab.

        numpy arrays and scalars are stored as numbers and (nested) lists; a
        :class:`~rayplex.terminal.Color` value as its value, shown coloured by ``print=True``.

        Example:
            >>> log.log_params(Args={"lr": 1e-3, "batch": 64})  # doctest: +SKIP
            >>> log.log_params(Args={"eps": Color(0.1, "yellow", percent)}, print=True)  # doctest: +SKIP

        Returns:
            Everything stored for this client so far.

        Raises:
            TypeError: if a namespace is not a mapping.
        """
        for key, value in namespaces.items():
            if not isinstance(value, Mapping):
                raise TypeError(f"log_params({key}=...) takes a mapping, got {type(value).__name__}")
        plain = {k: jsonable(v) for k, v in namespaces.items()}
        merged = self._call_hub("save_params", self.client_id, plain)
        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                for k, v in flatten(merged).items()}
        if flat:
            self.add_hparams(flat, {})
        if print:
            cells = {k: v for k, v in flatten(namespaces).items() if isinstance(v, Color)}
            print_table(f"{self.client_id} parameters", {k: cells.get(k, v) for k, v in flat.items()})
        return dict(merged)

    def store_metrics(self, metrics: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Record values whose statistics ``log_metrics_summary`` writes (cheap: updates local
        partial statistics, never ships raw values).

        As in ML-Logger, nested and ragged lists are flattened and ``None`` counts as NaN
        (reported as ``nan_count``); keys get the :meth:`Prefix` in effect, once, here.

        Example:
            >>> log.store_metrics(reward=1.5, length=200)  # doctest: +SKIP
            >>> log.store_metrics(returns=[[1.0], [2.0, None]])  # doctest: +SKIP

        Raises:
            TypeError: if a value is not a number (nothing of that call is stored).
        """
        prefix = self._metrics_prefix.get()
        if prefix:
            if metrics is not None and not isinstance(metrics, Mapping):
                raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
            dup = kwargs.keys() & (metrics or {}).keys()
            if dup:
                raise ValueError(f"metric(s) {sorted(dup)} given both in the mapping and as "
                                 "keywords")
            both = {**(metrics or {}), **kwargs}
            renamed = {prefix + k if isinstance(k, str) else k: v for k, v in both.items()}
            self._window.store(renamed)
            return
        self._window.store(metrics, **kwargs)

    def peek_stored_metrics(self) -> str:
        """This worker's current (not yet summarized) window as a table."""
        return self._window.table()

    def pop(self, key: str, default: Any = None) -> PartialStats | Any:
        """Take ``key`` out of this worker's metrics window: its statistics so far (or
        ``default``), which ``log_metrics_summary`` then no longer writes. ``key`` is the full
        key, with any :meth:`Prefix` it was stored under.

        Example:
            >>> log.store_metrics(reward=[1.0, 3.0])  # doctest: +SKIP
            >>> log.pop("reward").mean  # doctest: +SKIP
            2.0
        """
        return self._window.pop(key, default)

    @contextlib.contextmanager
    def Prefix(self, *, metrics: str | bool | None = None, sep: str | None = "/") -> Iterator[None]:  # noqa: N802  ML-Logger's name
        """A context in which :meth:`store_metrics` and :meth:`log` keys start with
        ``metrics + sep`` (ML-Logger's ``Prefix(metrics=...)``). The prefix is added once, when
        a value is stored; ``log_metrics_summary`` writes the stored keys as they are. A nested
        ``Prefix`` replaces the outer one; ``metrics=False`` turns prefixing off inside. It is
        per thread (and per asyncio task).

        Example:
            >>> with log.Prefix(metrics="evaluate"):  # doctest: +SKIP
            ...     log.store_metrics(reward=1.0)        # stored as "evaluate/reward"

        Raises:
            TypeError: if ``metrics`` is not a str, False or None, or ``sep`` not a str.
        """
        if metrics is not None and not isinstance(metrics, (str, bool)):
            raise TypeError(f"Prefix(metrics=...) takes a str, got {type(metrics).__name__}")
        if metrics is True:
            raise TypeError("Prefix(metrics=True) has no meaning: pass a str, or False for none")
        if sep is not None and not isinstance(sep, str):
            raise TypeError(f"Prefix(sep=...) takes a str, got {type(sep).__name__}")
        var = self._metrics_prefix
        if metrics is False:
            token = var.set("")
        elif metrics:
            token = var.set(metrics + (sep or ""))
        else:
            token = var.set(var.get())
        try:
            yield
        finally:
            var.reset(token)

    def log_metrics_summary(self, step: int, stats: Any = DEFAULT_STATS,
                            per_worker: bool = False) -> None:
        """Close this worker's window for ``step``: its statistics are merged with every other
        worker's of the same group and step, and written as ``<key>/<stat>`` tags to run
        ``tensorboard/<group>/summary``.

        ``stats`` picks from mean, std, min, max, count, p50, p90, p99 (any ``pNN``).
        ``per_worker=True`` also writes this worker's own summary into its own run.

        Raises:
            ValueError: for an unknown statistic name, or a ``step`` outside the signed 64-bit
                range.
            TypeError: if ``step`` is not an int.
        """
        step = check_step(step)
        names = (stats,) if isinstance(stats, str) else tuple(stats)
        PartialStats().summary(names)  # raises ValueError for unknown names, at the call site
        window = self._window.take()
        if not window:
            return
        if per_worker:
            for key, partial in window.items():
                for stat, value in partial.summary(names).items():
                    self.add_scalar(f"{key}/{stat}", value, step=step)
        item = PartialItem(Partial(self.group, step, names, window, clients=(self.client_id,)))
        self._session.put(item, item_nbytes(item))

    # ------------------------------------------------------ timers, counters
    def start(self, *keys: str) -> Any:
        """(Re)start timers (``"default"`` if no key is given); returns the
        :func:`time.perf_counter` reading, a list for several keys. Timers are local to this
        process.

        Example:
            >>> log.start("epoch", "batch")  # doctest: +SKIP
        """
        return self._timers.start(*keys)

    def split(self, *keys: str) -> Any:
        """Seconds since the timer's last ``start``/``split`` -- None the first time -- and
        restart it (a list for several keys).

        Example:
            >>> log.split("batch")  # doctest: +SKIP
            >>> dt = log.split("batch")  # seconds since the line above  # doctest: +SKIP
        """
        return self._timers.split(*keys)

    def since(self, *keys: str) -> Any:
        """Seconds since the timer's last ``start``/``split``, without restarting it (None,
        and started now, for a timer never started).

        Example:
            >>> log.start("run"); log.since("run")  # doctest: +SKIP
        """
        return self._timers.since(*keys)

    def every(self, n: int | None = 1, key: str = "default", start_on: int = 0) -> bool:
        """Count a call; True on every ``n``-th call with this ``key`` (``start_on=1``: on the
        1st, (n+1)-th, ... call instead of the n-th, 2n-th, ...).

        Example:
            >>> for i in range(100):  # doctest: +SKIP
            ...     if log.every(10, "eval"):
            ...         evaluate()

        Raises:
            ValueError: if ``n`` is not an int >= 1 (or None: never) or ``start_on`` < 0.
        """
        return self._counters.every(n, key, start_on)

    def count(self, key: str = "default") -> int:
        """Count a call with ``key``; returns the count so far (1 the first time).

        Example:
            >>> log.count("episodes")  # doctest: +SKIP
            1
        """
        return self._counters.count(key)

    def clear(self, key: str = "default") -> None:
        """Reset the counter of ``key`` (for :meth:`every` and :meth:`count`)."""
        self._counters.clear(key)

    @contextlib.contextmanager
    def time(self, key: str = "default", interval: int = 1,
             fmt: str | Callable[[float], str] = "{delta:0.3E}s") -> Iterator[None]:
        """Time the block. Every ``interval`` blocks of this ``key`` the mean duration of every
        block of the key so far (as ML-Logger reports it) is logged as the scalar
        ``time/<key>`` (step: blocks timed so far) and as an INFO line
        ``timing <key>: <mean>s±<std>`` in this client's text log (ML-Logger prints that
        line). A block that raises is not counted.

        Example:
            >>> for batch in range(100):  # doctest: +SKIP
            ...     with log.time("upload", interval=50):
            ...         upload(batch)

        Raises:
            ValueError: if ``interval`` is not an int >= 1 (before the block runs).
            TypeError: if ``key`` is not a str.
        """
        if not isinstance(key, str):
            raise TypeError(f"time(key) takes a str, got {type(key).__name__}")
        validate_tag(f"time/{key}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"time(interval=...) needs an int >= 1, got {interval!r}")
        began = time.perf_counter()
        yield
        due = self._timed.record(key, time.perf_counter() - began, interval)
        if due is None:
            return
        count, window = due
        mean = window.mean
        self.add_scalar(f"time/{key}", mean, step=count)
        text = fmt(mean) if callable(fmt) else fmt.format(delta=mean)
        if interval > 1:
            text += f"±{window.std:0.1E}"
        self._emit(logging.INFO, "timing <%s>: %s", (key, text))

    # -------------------------------------------------------------- artifacts
    # One-line façades over this client's ArtifactClient, where files are built, checked and
    # sent as one hub request each (the docstrings are the client's, copied below the class).
    @property
    def artifacts(self) -> ArtifactClient:
        """This client's artifact client: every ``save_*``/``load_*``/file method below is one
        statement over it, and it has the batched forms the Logger does not repeat
        (``append_rows``, ``append_bytes``, ``path``).

        Example:
            >>> logger.artifacts.append_bytes("notes.txt", b"one line\\n")  # doctest: +SKIP
            'agent/3/notes.txt'
        """
        return self._artifacts

    def _call_hub(self, method: str, *args: Any) -> Any:
        """A request/response operation at the hub, applied exactly once (request ids)."""
        return self._session.call(method, *args)

    def save_bytes(self, data: bytes, path: str, append: bool = False) -> str:
        return self._artifacts.save_bytes(data, path, append)

    def load_bytes(self, path: str, client: str | None = None) -> bytes:
        return self._artifacts.load_bytes(path, client)

    def save_pkl(self, obj: Any, path: str, append: bool = False) -> str:
        return self._artifacts.save_pkl(obj, path, append)

    def load_pkl(self, path: str, client: str | None = None) -> Any:
        return self._artifacts.load_pkl(path, client)

    def save_text(self, text: str, path: str) -> str:
        return self._artifacts.save_text(text, path)

    def save_module(self, module: Any, path: str) -> str:
        return self._artifacts.save_module(module, path)

    def load_module(self, module: Any, path: str, client: str | None = None) -> Any:
        return self._artifacts.load_module(module, path, client)

    def save_image(self, image: Any, path: str, dataformats: str | None = None,
                   normalize: Any = None, cmap: Any = None) -> str:
        return self._artifacts.save_image(image, path, dataformats, normalize, cmap)

    def save_video(self, frames: Any, path: str, fps: float = 20.0,
                   dataformats: str | None = None) -> str:
        return self._artifacts.save_video(frames, path, fps, dataformats)

    def make_video(self, files: str | Sequence[str], key: str, fps: float = 20.0,
                   order: str | int | None = "ascending") -> str | None:
        return self._artifacts.make_video(files, key, fps, order)

    def savefig(self, path: str, fig: Any = None, **savefig_kwargs: Any) -> str:
        return self._artifacts.savefig(path, fig, **savefig_kwargs)

    def upload_file(self, local_path: str | os.PathLike[str], path: str | None = None) -> str:
        return self._artifacts.upload_file(local_path, path)

    def remove(self, *paths: str) -> list[str]:
        return self._artifacts.remove(*paths)

    def move(self, source: str, to: str) -> str:
        return self._artifacts.move(source, to)

    def duplicate(self, source: str, to: str, exists_ok: bool = True) -> str:
        return self._artifacts.duplicate(source, to, exists_ok)

    def glob(self, query: str, wd: str | None = None) -> list[str]:
        return self._artifacts.glob(query, wd)

    def save_json(self, data: Any, file: str) -> str:
        return self._artifacts.save_json(data, file)

    def load_json(self, *keys: str, client: str | None = None) -> Any:
        return self._artifacts.load_json(*keys, client=client)

    def log_jsonl(self, data: Any, key: str) -> str:
        return self._artifacts.log_jsonl(data, key)

    def load_jsonl(self, *keys: str, start: int | None = None, stop: int | None = None,
                   client: str | None = None) -> list[Any]:
        return self._artifacts.load_jsonl(*keys, start=start, stop=stop, client=client)

    def save_yaml(self, data: Any, file: str) -> str:
        return self._artifacts.save_yaml(data, file)

    def load_yaml(self, *keys: str, Loader: Any = None, client: str | None = None) -> Any:  # noqa: N803
        return self._artifacts.load_yaml(*keys, Loader=Loader, client=client)

    def upload_dir(self, dir_path: str | os.PathLike[str], target: str,
                   excludes: Iterable[str] = (), archive: str = "tar") -> str:
        return self._artifacts.upload_dir(dir_path, target, excludes, archive)

    def download_dir(self, source_path: str, to: str | os.PathLike[str],
                     unpack: str = "tar", client: str | None = None,
                     max_bytes: int | None = None) -> list[str]:
        return self._artifacts.download_dir(source_path, to, unpack, client, max_bytes)

    def save_torch(self, obj: Any, *keys: str, path: str | None = None) -> str:
        return self._artifacts.save_torch(obj, *keys, path=path)

    def load_torch(self, *keys: str, path: str | None = None, map_location: Any = None,
                   client: str | None = None, **kwargs: Any) -> Any:
        return self._artifacts.load_torch(*keys, path=path, map_location=map_location,
                                          client=client, **kwargs)

    torch_save = save_torch
    torch_load = load_torch

    def torch_jit_save(self, obj: Any, *keys: str, path: str | None = None) -> str:
        return self._artifacts.torch_jit_save(obj, *keys, path=path)

    def torch_jit_load(self, *keys: str, path: str | None = None, map_location: Any = None,
                       client: str | None = None) -> Any:
        return self._artifacts.torch_jit_load(*keys, path=path, map_location=map_location,
                                              client=client)

    # ------------------------------------------------------------ Loggerplex
    def _emit(self, level: int, msg: Any, args: tuple[Any, ...], exc_info: Any = None,
              stack_info: bool = False, logger: str = "rayplex") -> None:
        # Checked before the level filter, so a bad call fails alike at every level. build_line
        # makes every other field pass rules.validate_log_line, which the hub's writer applies.
        if logger != "rayplex":
            validate_logger_name(logger)
        if level < self._session.log_level:
            return
        # stacklevel 3: the stack ends at the caller of info() etc., not in rayplex.
        line = build_line(level, msg, args, self.client_id, self._session.node_id[:8],
                          os.getpid(), logger, exc_info, stack_info, stacklevel=3)
        self._session.put(Line(line), line_nbytes(line))
        if self.echo:
            sys.stderr.write(format_line(line))

    def debug(self, msg: Any, *args: Any, **kw: Any) -> None:
        """Log a DEBUG line into ``logs/<group>/<name>.log`` and ``logs/all.log``."""
        self._emit(logging.DEBUG, msg, args, **kw)

    def info(self, msg: Any, *args: Any, **kw: Any) -> None:
        """Log an INFO line (``%``-style args, as :mod:`logging` does).

        Example:
            >>> log.info("episode %d done", 12)  # doctest: +SKIP
        """
        self._emit(logging.INFO, msg, args, **kw)

    def warning(self, msg: Any, *args: Any, **kw: Any) -> None:
        """Log a WARNING line."""
        self._emit(logging.WARNING, msg, args, **kw)

    def error(self, msg: Any, *args: Any, **kw: Any) -> None:
        """Log an ERROR line."""
        self._emit(logging.ERROR, msg, args, **kw)

    def critical(self, msg: Any, *args: Any, **kw: Any) -> None:
        """Log a CRITICAL line."""
        self._emit(logging.CRITICAL, msg, args, **kw)

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        """Log an ERROR line with the current exception's traceback, in full."""
        self._emit(logging.ERROR, msg, args, exc_info=exc_info, **kw)

    def log_text(self, level: int | str, msg: Any, *args: Any, **kw: Any) -> None:
        """Log a line at any level (a number or a name such as ``"INFO5"``)."""
        from rayplex.textlog import parse_level

        self._emit(parse_level(level), msg, args, **kw)

    def log_handler(self, level: int = logging.NOTSET) -> LogHandler:
        """A :class:`logging.Handler` that forwards stdlib records as this client."""
        return LogHandler(self.client_id, hub=self.hub, level=level)

    # -------------------------------------------------------------- control
    def flush(self, timeout: float | None = None) -> None:
        """Return once everything this process logged before the call is on disk at the hub.

        Raises:
            FlushTimeoutError: if the hub did not acknowledge within ``timeout`` seconds
                (default ``RAYPLEX_FLUSH_TIMEOUT_S``); the data stays buffered and is resent.
        """
        self._session.flush(timeout)  # writes the pending log() row first (before_flush)

    def stats(self) -> dict[str, int]:
        """Delivery counters of this process: batches sent, acked, retried, records, queued."""
        return self._session.stats()


def _fine_level_method(level: int, name: str) -> Any:
    def method(self: Logger, msg: Any, *args: Any, **kw: Any) -> None:
        self._emit(level, msg, args, **kw)

    method.__name__ = name
    method.__doc__ = f"Log a line at Tensorplex's finer level {name.upper()} ({level})."
    return method


for _name, _level in FINE_LEVELS.items():
    setattr(Logger, _name.lower(), _fine_level_method(_level, _name.lower()))

for _name in ARTIFACT_VERBS:  # the façades document what their client method does
    getattr(Logger, _name).__doc__ = getattr(ArtifactClient, _name).__doc__


class LogHandler(logging.Handler):
    """A :class:`logging.Handler` that ships stdlib log records to the hub as ``client_id``.

    Example:
        >>> logging.getLogger("my_lib").addHandler(rayplex.LogHandler("agent/3"))  # doctest: +SKIP
    """

    def __init__(self, client_id: str, hub: str | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.logger = get_logger(client_id, hub)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "rayplex" or record.name.startswith("rayplex."):
            return  # rayplex's own diagnostics stay local: no feedback loop through the hub
        logger = self.logger
        session = logger._session
        if record.levelno < session.log_level:
            return
        try:
            item = Line(tuple(line_from_record(record, logger.client_id, session.node_id[:8])))
            session.put(item, item_nbytes(item))
            if logger.echo:
                sys.stderr.write(format_line(item.line))
        except Exception:
            self.handleError(record)


_loggers_lock = threading.Lock()


def logger_for_task(client_id: str, hub: str | None = None, echo: bool = False) -> Logger:
    """Like :func:`get_logger`, but first checks that the experiment's hub was not replaced
    since this worker process last used it (worker processes outlive experiments)."""
    return get_logger(client_id, hub, echo)


def get_logger(client_id: str, hub: str | None = None, echo: bool = False) -> Logger:
    """The Logger of ``client_id`` (``"<group>/<name>"``) in the experiment ``hub``.

    Works in the driver, a task or an actor, anywhere in the Ray cluster: no address needed.
    ``hub`` defaults to ``RAYPLEX_HUB`` or ``"default"``. Calling it twice with the same id in
    one process returns the same Logger. ``echo=True`` also prints its text-log lines locally.
    It never waits on the hub for long: at most ``RAYPLEX_GET_LOGGER_TIMEOUT_S`` (0.25 s) for
    the group registry, once per process, then it goes on with the groups it knows.

    A Logger belongs to the experiment it was made for: once that experiment is shut down,
    its log calls raise :class:`~rayplex.errors.ExperimentClosedError`.

    Example:
        >>> log = rayplex.get_logger("agent/3")  # doctest: +SKIP

    Raises:
        ValueError: if ``client_id`` is not ``<group>/<name>`` with valid parts (letters,
            digits, ``_ - .``; a canonical integer name in an indexed group; not a reserved
            name).
        HubNotFoundError: if no hub of that name runs: call ``rayplex.init(logdir)`` first.
        RayplexError: if Ray is not initialized in this process.
    """
    split_client_id(client_id)
    hub = hub or config().hub
    if not ray.is_initialized():
        raise RayplexError(
            "Ray is not initialized in this process: call ray.init() and then "
            "rayplex.init(logdir) before rayplex.get_logger()"
        )
    session = session_for(hub)
    logger = session.loggers.get(client_id)
    if isinstance(logger, Logger):
        logger.echo = logger.echo or echo
        return logger
    with _loggers_lock:
        route = session.encoder.registry.route(client_id)  # ValueError for a bad id in its group
        logger = session.loggers.get(client_id)
        if not isinstance(logger, Logger):
            group = client_id.split("/", 1)[0]
            if (not route.registered and group not in session.warned_groups
                    and ray.get_runtime_context().get_task_id() is None):
                # In the driver, at the user's line; workers' unregistered groups are reported
                # once per experiment by the hub (logs/all.log and the driver's terminal).
                session.warned_groups.add(group)
                warnings.warn(
                    f"rayplex: group {group!r} is not registered with hub {hub!r}; it behaves "
                    "as a normal group (register it with hub.register_*_group)",
                    stacklevel=2,
                )
            logger = Logger(client_id, hub, session, echo)
            session.loggers[client_id] = logger
        return logger
