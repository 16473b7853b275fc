"""The client handle every worker logs through: :class:`Logger`, made by :func:`get_logger`.

A log call validates its arguments here, on the caller's side (a clear exception at the call
site), appends one small tuple to this process's buffer and returns; it never waits on the
network. See :mod:`rayplex.session` for what happens next.
"""

from __future__ import annotations

import io
import logging
import math
import numbers
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

import cloudpickle
import numpy as np
import ray

from rayplex import media
from rayplex.artifacts import decode_chunks, safe_relpath
from rayplex.config import config
from rayplex.encode import simple_value
from rayplex.errors import RayplexError
from rayplex.items import (
    FixedValue,
    Line,
    PartialItem,
    Value,
    line_nbytes,
)
from rayplex.items import nbytes as item_nbytes
from rayplex.logger_files import FilesMixin
from rayplex.logger_projector import ProjectorMixin
from rayplex.logger_runs import RunsMixin
from rayplex.records import Partial
from rayplex.rules import check_step, split_client_id, to_float, validate_logger_name, validate_tag
from rayplex.session import Session, session_for
from rayplex.stats import DEFAULT_STATS, MetricsWindow, PartialStats
from rayplex.textlog import FINE_LEVELS, build_line, format_line, line_from_record

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


class Logger(FilesMixin, RunsMixin, ProjectorMixin):
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
        self._put: Any = None
        self._put_scalar: Any = None
        session.bind(self)
        self._steps: dict[str, int] = {}
        self._tags_ok: set[str] = set()
        self._window = MetricsWindow()
        self._row: dict[str, float] = {}
        self._row_step: int | None = None
        self._last_row_step: int | None = None

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
        self._put(item, item_nbytes(item))

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
        self._put_scalar((self.client_id, tag, step,  # a Scalar's fields as a plain tuple
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
            self._put(item, item_nbytes(item))
        for tag, value in metrics.items():
            payload = simple_value(to_float(value, f"metrics[{tag!r}]"))
            item = FixedValue(self.client_id, tag, 0, wt, payload, run)
            self._put(item, item_nbytes(item))

    # ------------------------------------------------- ML-Logger conveniences
    def log(self, metrics: Mapping[str, Any] | None = None, *, step: int | None = None,
            print: bool = False, **kwargs: Any) -> None:
        """ML-Logger style: key/values for one step, written when the step changes or on flush.

        Example:
            >>> log.log(step=10, loss=0.3, accuracy=0.9)  # doctest: +SKIP
            >>> log.log({"loss": 0.2}, step=11, print=True)  # doctest: +SKIP

        Raises:
            TypeError: if a value is not a number.
            ValueError: if ``step`` (also the next one counted on) is outside the signed 64-bit
                range.
        """
        values = dict(metrics or {})
        values.update(kwargs)
        checked = {}
        for tag, value in values.items():
            validate_tag(tag)
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
        if print:
            _print_table(f"{self.client_id} step {step}", self._row)

    def _write_row(self) -> None:
        if self._row and self._row_step is not None:
            self.add_scalars(self._row, step=self._row_step)
            self._last_row_step = self._row_step
        self._row = {}
        self._row_step = None

    def log_params(self, print: bool = False, **namespaces: Any) -> dict[str, Any]:
        """Store hyper-parameters (merged across calls) in ``params/<group>/<name>.json`` and
        show them in TensorBoard's HParams tab.

        Example:
            >>> log.log_params(Args={"lr": 1e-3, "batch": 64})  # doctest: +SKIP

        Returns:
            Everything stored for this client so far.

        Raises:
            TypeError: if a namespace is not a mapping.
        """
        for key, value in namespaces.items():
            if not isinstance(value, Mapping):
                raise TypeError(f"log_params({key}=...) takes a mapping, got {type(value).__name__}")
        plain = {k: _jsonable(v) for k, v in namespaces.items()}
        merged = self._call_hub("save_params", self.client_id, plain)
        flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
                for k, v in _flatten(merged).items()}
        if flat:
            self.add_hparams(flat, {})
        if print:
            _print_table(f"{self.client_id} parameters", flat)
        return dict(merged)

    def store_metrics(self, metrics: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Record values whose statistics ``log_metrics_summary`` writes (cheap: updates local
        partial statistics, never ships raw values).

        Example:
            >>> log.store_metrics(reward=1.5, length=200)  # doctest: +SKIP

        Raises:
            TypeError: if a value is not a number (nothing of that call is stored).
        """
        self._window.store(metrics, **kwargs)

    def peek_stored_metrics(self) -> str:
        """This worker's current (not yet summarized) window as a table."""
        return self._window.table()

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
        self._put(item, item_nbytes(item))

    # -------------------------------------------------------------- artifacts
    def _artifact(self, path: str, client: str | None = None) -> str:
        owner = self.client_id if client is None else client
        split_client_id(owner)
        return f"{owner}/{safe_relpath(path)}"

    def _call_hub(self, method: str, *args: Any) -> Any:
        """A request/response operation at the hub, applied exactly once (request ids)."""
        return self._session.call(method, *args)

    def save_bytes(self, data: bytes, path: str, append: bool = False) -> str:
        """Store raw bytes at ``artifacts/<group>/<name>/<path>``; returns the path on the hub.

        Raises:
            ValueError: if ``path`` is absolute, has ``..``, or resolves outside the store.
        """
        rel = self._artifact(path)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        return str(self._call_hub("save_artifact", rel, bytes(data), append))

    def load_bytes(self, path: str, client: str | None = None) -> bytes:
        """Read back what ``client`` stored at ``path``.

        With ``client=None`` the path is looked up in this client's own directory first; if
        nothing is there and it starts with another client's id (``"learner/main/ckpt.pkl"``),
        that client's file is read.

        Raises:
            FileNotFoundError: if nothing is stored there.
        """
        try:
            return bytes(self._call_hub("load_artifact", self._artifact(path, client)))
        except FileNotFoundError:
            owner, rest = _split_addressed(path) if client is None else (None, None)
            if owner is None or rest is None:
                raise
            return bytes(self._call_hub("load_artifact", self._artifact(rest, owner)))

    def save_pkl(self, obj: Any, path: str, append: bool = False) -> str:
        """Pickle ``obj`` (cloudpickle) to ``path``; ``append=True`` adds one chunk, and
        :meth:`load_pkl` then returns the list of every appended object.

        Example:
            >>> log.save_pkl({"epoch": 3}, "checkpoints/latest.pkl")  # doctest: +SKIP
        """
        return self.save_bytes(cloudpickle.dumps(obj), path, append)

    def load_pkl(self, path: str, client: str | None = None) -> Any:
        """Load what :meth:`save_pkl` stored; any worker may read another's, either with
        ``client="learner/main"`` or by a path that starts with that client's id.

        Example:
            >>> log.load_pkl("checkpoints/latest.pkl", client="learner/main")  # doctest: +SKIP
            >>> log.load_pkl("learner/main/checkpoints/latest.pkl")  # doctest: +SKIP
        """
        data = self.load_bytes(path, client)
        chunks, end, problem = decode_chunks(data)
        if chunks and problem is None and end == len(data):
            return [cloudpickle.loads(chunk) for chunk in chunks]
        return cloudpickle.loads(data)

    def save_text(self, text: str, path: str) -> str:
        """Store ``text`` (UTF-8) at ``path``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.save_bytes(text.encode("utf-8"), path)

    def save_module(self, module: Any, path: str) -> str:
        """Store a torch module's ``state_dict`` (or a state dict) at ``path``."""
        torch = _torch()
        buf = io.BytesIO()
        state = module.state_dict() if hasattr(module, "state_dict") else module
        torch.save(state, buf)
        return self.save_bytes(buf.getvalue(), path)

    def load_module(self, module: Any, path: str, client: str | None = None) -> Any:
        """Load a state dict saved by :meth:`save_module` into ``module``; returns it."""
        torch = _torch()
        state = torch.load(io.BytesIO(self.load_bytes(path, client)), map_location="cpu")
        if hasattr(module, "load_state_dict"):
            module.load_state_dict(state)
            return module
        return state

    def save_image(self, image: Any, path: str, dataformats: str = "HWC") -> str:
        """Store an image file (format from the extension; PNG by default)."""
        import imageio.v3 as iio

        pixels = media.image_pixels(image, dataformats)
        ext = os.path.splitext(path)[1].lower() or ".png"
        return self.save_bytes(iio.imwrite("<bytes>", pixels, extension=ext), path)

    def save_video(self, frames: Any, path: str, fps: float = 20.0,
                   dataformats: str = "THWC") -> str:
        """Store a video file: mp4 through imageio-ffmpeg when installed, else a GIF (the
        extension then becomes ``.gif``, with a warning)."""
        pixels = media.video_pixels(frames, dataformats)
        root, ext = os.path.splitext(path)
        if ext.lower() in (".mp4", ".mov", ".avi", ".mkv", ""):
            try:
                import imageio.v3 as iio
                import imageio_ffmpeg  # noqa: F401

                data = iio.imwrite("<bytes>", pixels, extension=ext.lower() or ".mp4", fps=fps)
                return self.save_bytes(data, path if ext else path + ".mp4")
            except ImportError:
                warnings.warn("imageio-ffmpeg is not installed: saving a GIF instead "
                              "(pip install 'rayplex[media]')", stacklevel=2)
                path = root + ".gif"
        return self.save_bytes(media.encode_gif(pixels, fps), path)

    def savefig(self, path: str, fig: Any = None, **savefig_kwargs: Any) -> str:
        """Store a matplotlib figure (default: the current one) in the format of the extension."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("savefig needs matplotlib: pip install 'rayplex[media]'") from exc
        figure = plt.gcf() if fig is None else fig
        buf = io.BytesIO()
        fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
        figure.savefig(buf, format=fmt, **savefig_kwargs)
        return self.save_bytes(buf.getvalue(), path)

    def upload_file(self, local_path: str | os.PathLike[str], path: str | None = None) -> str:
        """Copy a file of this worker's machine into the artifact store (default: its name).

        A ``path`` ending in ``/`` is a directory, as in ML-Logger: ``upload_file(p, "files/")``
        stores ``files/<basename of p>``.
        """
        local = os.fspath(local_path)
        with open(local, "rb") as f:
            data = f.read()
        name = os.path.basename(local)
        if path is None:
            path = name
        elif path.endswith("/"):
            path += name
        return self.save_bytes(data, path)

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
        self._put(Line(line), line_nbytes(line))
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
        self._write_row()
        self._session.flush(timeout)

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
            logger._put(item, item_nbytes(item))
            if logger.echo:
                sys.stderr.write(format_line(item.line))
        except Exception:
            self.handleError(record)


def _split_addressed(path: str) -> tuple[str | None, str | None]:
    """``"group/name/rest"`` -> ``("group/name", "rest")`` if that is a valid client id."""
    parts = path.split("/", 2)
    if len(parts) < 3:
        return None, None
    try:
        split_client_id(f"{parts[0]}/{parts[1]}")
    except ValueError:
        return None, None
    return f"{parts[0]}/{parts[1]}", parts[2]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError("save_module/load_module need torch: pip install 'rayplex[torch]'") from exc
    return torch


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        elif value is not None:
            out[name] = value
    return out


def _print_table(title: str, values: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(str(key), f"{value:.6g}" if isinstance(value, float) else str(value))
    Console().print(table)


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
    its log calls raise :class:`~rayplex.errors.RayplexError`.

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
    if logger is not None:
        logger.echo = logger.echo or echo
        return logger
    with _loggers_lock:
        route = session.encoder.registry.route(client_id)  # ValueError for a bad id in its group
        logger = session.loggers.get(client_id)
        if logger is None:
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
