"""ML-Logger's API on rayplex: change ``from ml_logger import logger`` to
``from rayplex.compat.ml_logger import logger`` and the code logs through Ray.

What maps to what:

* ``root`` (``configure(root=...)``, ``ML_Logger(root=...)``, old spellings ``root_dir=`` and
  ``log_directory=``, env ``ML_LOGGER_ROOT``; default: the working directory, as ML-Logger) is
  the rayplex **logdir**. The first call that needs it starts Ray if this process has none
  (a bare ``ray.init()``, which honours ``RAY_ADDRESS``) and joins the hub that already writes
  to that logdir, or starts one (named ``RAYPLEX_HUB``/``default`` if that name is free, else
  ``ml_logger-<hash of the logdir>``).
* ``prefix`` (``"alice/scratch/exp-1"``) is one rayplex **client**: see
  :func:`client_id_for_prefix`. The whole prefix is the client's *group* (``/`` becomes ``.``)
  and the name is always ``main``, so every prefix has its own TensorBoard run
  (``tensorboard/alice.scratch.exp-1``, tags ``main/<key>``), its own artifact directory
  (``artifacts/alice.scratch.exp-1/main/``) and its own ``store_metrics`` summaries (run
  ``tensorboard/alice.scratch.exp-1/summary``) -- two experiments never merge their statistics.
* ``log(...)`` keeps one row, as ML-Logger does; the row is written when a different ``step``
  arrives, on ``flush()``, and at interpreter exit (never lost). Writing a row adds its numbers
  as scalars at the row's ``step`` (the ``step`` key, else the previous row's step + 1), appends
  the whole row (text and arrays too) to ``metrics.pkl`` as ML-Logger does, and prints the
  table unless ``silent``.
* ``store_metrics`` keeps raw values here (nested and ragged lists flattened, ``None`` -> NaN);
  ``log_metrics_summary`` computes ML-Logger's statistics for the row (``<key>/mean``, ...) and
  hands the values to rayplex's cluster-wide summary (run ``<group>/summary``).
* Refused by design (``ValueError``): absolute and ``//`` paths and prefixes, ``..`` that
  leaves the prefix, ``s3://``/``gs://`` and ``http://`` roots, and ``shell()``. Everything
  stays under the logdir.

Example:
    >>> from rayplex.compat.ml_logger import client_id_for_prefix
    >>> client_id_for_prefix("alice/scratch/exp-1")
    'alice.scratch.exp-1/main'
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import io
import logging
import numbers
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import cloudpickle
import numpy as np

from rayplex.artifacts import safe_relpath
from rayplex.compat._rows import RowWriter
from rayplex.logger_files import jsonl_line
from rayplex.nested import deep_merge, flatten

# The same Color and percent as rayplex.Logger's printed tables (percent shows two decimals:
# "85.00%", where ML-Logger's README shows "85.0%").
from rayplex.terminal import Color, color_enabled, percent

__all__ = [
    "LOGGER_USER",
    "ROOT",
    "USER",
    "Color",
    "ML_Logger",
    "MetricsCache",
    "client_id_for_prefix",
    "default",
    "flatten_values",
    "format_params_table",
    "format_row_table",
    "format_tabular",
    "gray",
    "green",
    "grey",
    "logger",
    "metrify",
    "ms",
    "percent",
    "red",
    "sec",
    "summarize_values",
    "yellow",
]

log = logging.getLogger("rayplex")

USER: str = (os.environ.get("ML_LOGGER_USER") or os.environ.get("LOGGER_USER")
             or os.environ.get("USER") or "user")
"""``ML_LOGGER_USER`` (old spelling ``LOGGER_USER``), else ``USER``."""
LOGGER_USER: str = USER
ROOT: str = os.environ.get("ML_LOGGER_ROOT") or os.getcwd()
"""The default root (logdir): ``ML_LOGGER_ROOT``, else the working directory."""
PREFIX: str = os.environ.get("ML_LOGGER_PREFIX", "{USER}/scratch/{now:%Y/%m-%d/%H%M%S}")
"""The default prefix template (``ML_LOGGER_PREFIX``), formatted with ``USER`` and ``now``."""

CLIENT_NAME = "main"
"""The name part of every client id this module makes (see :func:`client_id_for_prefix`)."""
EMPTY_PREFIX_GROUP = "ml_logger"
_PRINT_KEY_WIDTH = 20


# ------------------------------------------------------------------ colours and formats
def _coloured(text: str, colour: str | None) -> str:
    """``text`` in ``colour`` when stdout is a terminal: the colour names and the terminal rule
    are rayplex.terminal's (:class:`Color`, :func:`color_enabled`); ``FORCE_COLOR`` also
    colours a pipe, as termcolor (ML-Logger's) does."""
    style = Color(None, colour).style
    forced = bool(os.environ.get("FORCE_COLOR")) and not os.environ.get("NO_COLOR")
    if style is None or not (forced or color_enabled(sys.stdout)):
        return text
    from rich.color import ColorSystem
    from rich.style import Style

    return Style.parse(style).render(text, color_system=ColorSystem.STANDARD)


def ms(v: float) -> str:
    """Seconds as milliseconds: ``0.0123`` -> ``'12.3ms'``."""
    return f"{v * 1000:.1f}ms"


def sec(v: float) -> str:
    """Seconds: ``1.5`` -> ``'1.500s'``."""
    return f"{v:.3f}s"


def default(value: Any, *args: Any) -> Color:
    """``Color(value, None, ...)``."""
    return Color(value, None, *args)


def red(value: Any, *args: Any) -> Color:
    """``Color(value, "red", ...)``."""
    return Color(value, "red", *args)


def green(value: Any, *args: Any) -> Color:
    """``Color(value, "green", ...)``."""
    return Color(value, "green", *args)


def yellow(value: Any, *args: Any) -> Color:
    """``Color(value, "yellow", ...)``."""
    return Color(value, "yellow", *args)


def gray(value: Any, *args: Any) -> Color:
    """``Color(value, "gray", ...)``."""
    return Color(value, "gray", *args)


grey = gray


def metrify(data: Any) -> Any:
    """A logged value as plain Python data: numpy arrays become lists, numpy scalars and 0-d
    arrays numbers, a :class:`Color` its value.

    Example:
        >>> metrify(np.array(10.0)), metrify(np.array([1, 2])), metrify(Color(3, "red"))
        (10.0, [1, 2], 3)
    """
    if isinstance(data, Color):
        return metrify(data.value)
    if isinstance(data, np.ndarray):
        return data.tolist()
    if isinstance(data, np.generic):
        return data.item()
    if isinstance(data, Mapping):
        return {k: metrify(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(metrify(v) for v in data)
    return data


def _cell(value: Any) -> str:
    if isinstance(value, Color):
        return str(value)
    if isinstance(value, np.ndarray) and value.ndim:
        return np.array2string(value, precision=3, separator=",", suppress_small=True)
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3f}"
    if value is None:
        return "NA"
    return str(value)


def format_tabular(row: Mapping[str, Any], hidden: Sequence[str] = ()) -> str:
    """The box table ML-Logger prints for one row (``_`` in keys shown as spaces; floats with
    3 decimals; :class:`Color` cells coloured on a terminal). Empty if nothing is shown.

    Example:
        >>> print(format_tabular({"step": 9, "D_loss": 0.2}), end="")
        ╒════════════════════╤════════════════════╕
        │        step        │         9          │
        ├────────────────────┼────────────────────┤
        │       D loss       │       0.200        │
        ╘════════════════════╧════════════════════╛
    """
    keys = [k for k in row if k not in hidden]
    if not keys:
        return ""
    key_w = max([_PRINT_KEY_WIDTH] + [len(k) for k in keys])
    val_w = max([_PRINT_KEY_WIDTH] + [len(_cell(row[k])) for k in keys])
    lines = ["╒" + "═" * key_w + "╤" + "═" * val_w + "╕"]
    for i, key in enumerate(keys):
        if i:
            lines.append("├" + "─" * key_w + "┼" + "─" * val_w + "┤")
        value = row[key]
        text = _cell(value)
        cell = f"{text:^{val_w}}"
        if isinstance(value, Color):
            cell = _coloured(cell, value.color)
        lines.append(f"│{key.replace('_', ' '):^{key_w}}│{cell}│")
    lines.append("╘" + "═" * key_w + "╧" + "═" * val_w + "╛")
    return "\n".join(lines) + "\n"


def format_params_table(namespaces: Mapping[str, Any]) -> str:
    """The table ML-Logger's ``log_params`` prints: one section per namespace.

    Example:
        >>> print(format_params_table({"Args": {"seed": 1}}), end="")  # doctest: +NORMALIZE_WHITESPACE
        ══════════════════════════════════════════
                Args
        ────────────────────┬─────────────────────
                seed        │ 1
        ════════════════════╧═════════════════════
    """
    width = _PRINT_KEY_WIDTH
    lines: list[str] = []
    for n, (title, section) in enumerate(namespaces.items()):
        lines.append("═" * width + ("═" if n == 0 else "╧") + "═" * (width + 1))
        lines.append(_coloured(f"{title:^{width}}", "yellow"))
        lines.append("─" * width + "┬" + "─" * (width + 1))
        if isinstance(section, Mapping):
            for key, value in section.items():
                lines.append(f"{key:^{width}}│ {value!s:<{width}}")
        else:
            lines.append(str(section))
    if lines:
        lines.append("═" * width + "╧" + "═" * (width + 1))
    return "\n".join(lines) + ("\n" if lines else "")


def format_row_table(columns: Mapping[str, Sequence[Any]], hidden: Sequence[str] = ()) -> str:
    """The column table ``peek_stored_metrics`` prints (one column per key, newest last).

    Example:
        >>> print(format_row_table({"some": [20, 20], "timestep": [0, 1]}),
        ...       end="")  # doctest: +NORMALIZE_WHITESPACE
        some |timestep
        ━━━━━┿━━━━━━━━
         20  |   0
         20  |   1
    """
    keys = [k for k in columns if k not in hidden]
    values = [[f"{v:g}" if isinstance(v, float) else _cell(v) for v in columns[k]]
              for k in keys]
    widths = [max([5, len(k)] + [len(v) for v in vs]) for k, vs in zip(keys, values, strict=True)]
    lines = ["|".join(f"{k:^{w}}" for k, w in zip(keys, widths, strict=True)),
             "┿".join("━" * w for w in widths)]
    depth = max((len(vs) for vs in values), default=0)
    for i in range(depth):
        lines.append("|".join(f"{(vs[i] if i < len(vs) else ''):^{w}}"
                              for vs, w in zip(values, widths, strict=True)))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ metrics (pure)
def flatten_values(value: Any) -> list[float]:
    """Every number in a nested, possibly ragged structure, ``None`` as NaN (ML-Logger's rule).

    Example:
        >>> flatten_values([[0], [1, 2], np.array([None, 1]), [np.array([10])]])
        [0.0, 1.0, 2.0, nan, 1.0, 10.0]

    Raises:
        TypeError: for text or another value that is not a number.
    """
    if value is None:
        return [float("nan")]
    if isinstance(value, (str, bytes)):
        raise TypeError(f"store_metrics takes numbers, got {type(value).__name__} {value!r:.40}")
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            return [float(v) for v in value.ravel()]
        return [v for item in value.ravel() for v in flatten_values(item)]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in flatten_values(item)]
    if isinstance(value, Color):
        return flatten_values(value.value)
    try:
        return [float(value)]
    except (TypeError, ValueError):
        raise TypeError(f"store_metrics takes numbers, got {type(value).__name__}") from None


_STAT_ORDER = ("sum", "max", "min", "mean", "min_max", "std", "quantile")


def summarize_values(values: Sequence[float], mode: str = "mean") -> dict[str, float]:
    """ML-Logger's statistics of one key, NaNs left out: ``mode`` contains any of ``sum``,
    ``min``, ``max``, ``mean``, ``std`` (stddev, mean, mode) or ``quantile`` (0, 25, median as
    ``mean``, 75, 100); ``min_max`` is min, max and mean. Keys are the suffixes ML-Logger
    writes after ``<key>/``. Empty if no value is a number.

    Example:
        >>> summarize_values([1.0, 3.0, float("nan")])
        {'mean': 2.0}
        >>> summarize_values([1.0, 3.0], "min_max")
        {'max': 3.0, 'min': 1.0, 'mean': 2.0}
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {}
    out: dict[str, float] = {}
    if "sum" in mode:
        out["sum"] = float(arr.sum())
    if "max" in mode:
        out["max"] = float(arr.max())
    if "min" in mode:
        out["min"] = float(arr.min())
    if "mean" in mode or mode == "min_max":
        out["mean"] = float(arr.mean())
    if "std" in mode:
        out["stddev"] = float(arr.std())
        out["mean"] = float(arr.mean())
        uniques, counts = np.unique(arr, return_counts=True)
        out["mode"] = float(uniques[int(np.argmax(counts))])
    if "quantile" in mode:
        for q in (0, 25, 75, 100):
            out[str(q)] = float(np.percentile(arr, q))
        out["mean"] = float(np.percentile(arr, 50))
    return out


def rayplex_stats(modes: Sequence[str]) -> tuple[str, ...]:
    """The statistics of rayplex's cluster-wide summary that cover ML-Logger's ``modes``
    (rayplex has no ``sum`` and ``mode``: ``sum`` asks for ``mean`` and ``count``).

    Example:
        >>> rayplex_stats(["mean", "quantile"])
        ('mean', 'min', 'max', 'p25', 'p50', 'p75')
    """
    names: list[str] = []
    for mode in modes:
        wanted: list[str] = []
        if "mean" in mode or mode == "min_max" or "std" in mode:
            wanted.append("mean")
        if "min" in mode or "quantile" in mode:
            wanted.append("min")
        if "max" in mode or "quantile" in mode:
            wanted.append("max")
        if "std" in mode:
            wanted.append("std")
        if "quantile" in mode:
            wanted += ["p25", "p50", "p75"]
        if "sum" in mode:
            wanted += ["mean", "count"]
        names += [w for w in wanted if w not in names]
    return tuple(names) or ("mean",)


class MetricsCache:
    """ML-Logger's summary cache (``tiled`` mode): raw values per key until summarized.

    Example:
        >>> cache = MetricsCache()
        >>> cache.store(reward=1.0); cache.store(reward=[2.0, None])
        ['reward']
        ['reward']
        >>> cache.get("reward").tolist()
        [1.0, 2.0, nan]
        >>> cache.summarize()
        {'reward/mean': 1.5}
        >>> bool(cache)
        False
    """

    def __init__(self) -> None:
        self.data: dict[str, list[float]] = {}

    def __bool__(self) -> bool:
        return any(self.data.values())

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def store(self, metrics: Mapping[str, Any] | None = None, **key_values: Any) -> list[str]:
        """Add values (flattened, ``None`` -> NaN); checks every value before storing any.

        Raises:
            TypeError: if a value is not a number or a nested sequence of numbers.
        """
        items = {**(metrics or {}), **key_values}
        flat = {str(k): flatten_values(v) for k, v in items.items()}
        for key, values in flat.items():
            self.data.setdefault(key, []).extend(values)
        return list(flat)

    def get(self, key: str, default: Any = None) -> Any:
        """The values of ``key`` as an array, or ``default``."""
        return np.array(self.data[key]) if key in self.data else default

    __getitem__ = get

    def pop(self, key: str, default: Any = None) -> Any:
        """Like :meth:`get`, and forget the key."""
        return np.array(self.data.pop(key)) if key in self.data else default

    def peek(self, *keys: str, len: int | None = 5) -> dict[str, list[float]]:  # noqa: A002
        """The last ``len`` values of each key (all keys by default)."""
        return {k: self.data[k][-len if len else None:] for k in (keys or tuple(self.data))
                if self.data.get(k)}

    def clear(self) -> None:
        self.data.clear()

    def summarize(self, key_stats: Mapping[str, str] | None = None,
                  default_stats: str | None = None) -> dict[str, float]:
        """``{"<key>/<stat>": value}`` for every key, then clear (tiled mode)."""
        stats = dict(key_stats or {})
        summary: dict[str, float] = {}
        for key, values in self.data.items():
            for stat, value in summarize_values(values, stats.get(key, default_stats or "mean")
                                                ).items():
                summary[f"{key}/{stat}"] = value
        self.clear()
        return summary


# ------------------------------------------------------------------ prefixes and paths
def _refuse_location(what: str, path: str) -> None:
    lowered = path.lower()
    if lowered.startswith(("s3://", "gs://", "http://", "https://")):
        raise ValueError(
            f"{what} {path!r}: cloud buckets and logging servers are refused by design; rayplex "
            "writes through Ray into the logdir (pass a local directory as root, and paths "
            "relative to the prefix)")
    if path.startswith("/"):
        raise ValueError(
            f"{what} {path!r} is absolute: absolute and '//' paths are refused by design, "
            "everything stays under the logdir; use a path relative to the prefix")


def normalize_prefix(prefix: str) -> str:
    """A prefix as ``a/b/c`` (no empty, ``.`` or trailing parts).

    Example:
        >>> normalize_prefix("./alice//exp/")
        'alice/exp'

    Raises:
        ValueError: for an absolute or ``//`` prefix, a bucket or server URL, or one whose
            ``..`` leaves the logdir.
        TypeError: if ``prefix`` is not a str.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    _refuse_location("prefix", prefix)
    parts: list[str] = []
    for part in prefix.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ValueError(f"prefix {prefix!r} leaves the logdir ('..' above its root)")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


@functools.lru_cache(maxsize=1024)
def client_id_for_prefix(prefix: str) -> str:
    """The rayplex client id of an ML-Logger prefix: ``<group>/main`` where the group is the
    whole prefix with ``/`` turned into ``.``, as :func:`rayplex.rules.group_name_for` names it.

    A prefix that is a valid group name that way is the group itself. Any other (characters
    other than ASCII letters, digits, ``_ - .``, as in ``实验/run1``; a leading ``.`` or ``-``;
    a reserved group name such as ``system``; longer than 128 characters) is made valid
    (``_`` for each such character, a leading ``_``, cut to 119 characters) and ends in ``-``
    and 8 hex digits of the SHA-1 of the dotted prefix, so it keeps a client of its own. The
    empty prefix is group ``ml_logger``. Only prefixes that differ just in ``/`` vs ``.`` share
    a client.

    Example:
        >>> client_id_for_prefix("alice/scratch/exp-1")
        'alice.scratch.exp-1/main'
        >>> client_id_for_prefix("实验/run1"), client_id_for_prefix("测试/run1")
        ('__.run1-8b3b33c4/main', '__.run1-51f415cb/main')
        >>> client_id_for_prefix("")
        'ml_logger/main'

    Raises:
        ValueError: as :func:`normalize_prefix`.
    """
    from rayplex.rules import group_name_for

    norm = normalize_prefix(prefix)
    group = group_name_for(norm.replace("/", ".")) if norm else EMPTY_PREFIX_GROUP
    return f"{group}/{CLIENT_NAME}"


def _join(*keys: Any) -> str:
    parts = [os.fspath(k) for k in keys if k not in (None, "")]
    if not parts:
        raise ValueError("no path given")
    path = "/".join(str(p) for p in parts)
    _refuse_location("path", path)
    return path


def _now(fmt: str | None = None) -> Any:
    now = datetime.now().astimezone()
    return now.strftime(fmt) if fmt else now


def _utcnow(fmt: str | None = None) -> Any:
    now = datetime.now(timezone.utc)
    return now.strftime(fmt) if fmt else now


def _as_step(value: Any) -> int | None:
    """An integral ``step`` value as an int, else None (then the row's step is counted)."""
    if isinstance(value, Color):
        value = value.value
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    if isinstance(value, (numbers.Real, np.floating)) and float(value).is_integer():
        return int(float(value))
    return None


def _number(value: Any) -> float | None:
    from rayplex.rules import to_float

    if isinstance(value, Color):
        value = value.value
    if isinstance(value, (str, bytes)) or value is None:
        return None
    try:
        return to_float(value, "value")
    except TypeError:
        return None


# ------------------------------------------------------------------ the logger
_live: weakref.WeakSet[ML_Logger] = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for instance in list(_live):
        instance._flush_at_exit()


class ML_Logger:  # noqa: N801 - ML-Logger's name
    """ML-Logger's logger, backed by a rayplex client (see the module docstring).

    Example:
        >>> from rayplex.compat.ml_logger import ML_Logger
        >>> ml = ML_Logger("alice/exp-1", root="/tmp/ml-logs")  # doctest: +SKIP
        >>> ml.log(step=0, loss=0.5); ml.flush()  # doctest: +SKIP
    """

    metric_filename = "metrics.pkl"
    log_filename = "outputs.log"

    def __init__(self, prefix: str = "", *prefixae: str, root: str | None = None,
                 root_dir: str | None = None, log_directory: str | None = None,
                 user: str | None = None, **ignored: Any) -> None:
        """Accepts ML-Logger's other options (``asynchronous``, ``max_workers``,
        ``access_token``, ``buffer_size``, ``summary_cache_opts``) and ignores them.

        Raises:
            ValueError: for a refused prefix or root (see the module docstring).
        """
        self.root = ROOT
        self.prefix = ""
        self.metrics_prefix = ""
        self.user = user or USER
        self._lock = threading.RLock()
        self._hub: Any = None
        self._hub_root: str | None = None
        self._clients: dict[str, Any] = {}
        self._rows = RowWriter()
        self._registered: set[str] = set()
        self._row: dict[str, Any] = {}
        self._row_step: int | None = None
        self._row_client: str | None = None
        self._row_file: str | None = None
        self._row_hidden: set[str] = set()
        self._row_summary: set[str] = set()
        self._last_step: dict[str, int] = {}
        self._caches: dict[str | None, MetricsCache] = {}
        self._hidden_metrics: set[str] = set()
        self._set_location((prefix, *prefixae), root or root_dir or log_directory,
                           default_prefix=True)
        _live.add(self)

    # ------------------------------------------------------------ configuration
    def _set_location(self, prefixae: Sequence[Any], root: str | None,
                      default_prefix: bool = False) -> None:
        from rayplex.rules import local_logdir

        if root:
            root = os.fspath(root)
            if root.lower().startswith("file://"):
                root = root[len("file://"):]
            if root.lower().startswith(("s3://", "gs://", "http://", "https://")):
                _refuse_location("root", root)
            local_logdir(root)  # any other scheme:// (checked before anything changes)
        parts = [str(p) for p in prefixae if p]
        if parts:
            prefix = "/".join(parts).format(USER=self.user, now=datetime.now())
            self.prefix = normalize_prefix(prefix)
        elif default_prefix:
            self.prefix = normalize_prefix(PREFIX.format(USER=self.user, now=datetime.now()))
        if root:
            self.root = root

    def configure(self, prefix: str | None = None, *prefixae: str, root: str | None = None,
                  root_dir: str | None = None, log_directory: str | None = None,
                  user: str | None = None, silent: bool = False, **ignored: Any) -> None:
        """Set the prefix (client) and root (logdir) and connect: start Ray if needed, join or
        start the logdir's hub. Writes the pending row first. ML-Logger's other options are
        accepted and ignored.

        Example:
            >>> logger.configure(root="/tmp/ml-logs", prefix="alice/exp-1")  # doctest: +SKIP

        Raises:
            ValueError: for a refused prefix or root, or a logdir that cannot be created.
        """
        with self._lock:
            self._write_row()
            if user:
                self.user = user
            self._set_location((prefix, *prefixae), root or root_dir or log_directory)
            self._hub = None
            self._clients.clear()
            self._connect()
        if not silent:
            print(f"rayplex: logging {self.prefix!r} as client {self.client_id!r} into "
                  f"{self._hub.logdir}")

    def __repr__(self) -> str:
        return f'ML_Logger(root="{self.root}",\n          prefix="{self.prefix}")'

    @property
    def client_id(self) -> str:
        """The rayplex client id of the current prefix."""
        return client_id_for_prefix(self.prefix)

    @property
    def hub(self) -> Any:
        """The :class:`rayplex.HubHandle` of the root's experiment (connects if needed)."""
        return self._connect()

    @property
    def rayplex_logger(self) -> Any:
        """The :class:`rayplex.Logger` of the current prefix (connects if needed), once the
        queued rows are appended."""
        return self._requests()

    def _connect(self) -> Any:
        with self._lock:
            root = os.path.realpath(os.path.expanduser(self.root))
            if self._hub is not None and self._hub_root == root:
                return self._hub
            import ray

            import rayplex
            from rayplex.config import config

            if not ray.is_initialized():
                ray.init()  # honours RAY_ADDRESS, as rayplex.init does
            name = None
            live = []
            for info in rayplex.status():
                live.append(info.get("name"))
                if info.get("logdir") == root:
                    name = str(info["name"])
            if name is None:
                name = config().hub
                if name in live:
                    name = "ml_logger-" + hashlib.sha1(root.encode("utf-8")).hexdigest()[:8]
            self._hub = rayplex.init(root, name=name)
            self._hub_root = root
            self._clients.clear()
            self._registered.clear()
            return self._hub

    def _logger(self, client_id: str | None = None) -> Any:
        cid = client_id or self.client_id
        rl = self._clients.get(cid)
        if rl is not None and self._hub is not None:
            return rl
        with self._lock:
            hub = self._connect()
            import rayplex
            from rayplex.groups import GroupSpec
            from rayplex.rules import split_client_id

            group, _ = split_client_id(cid)
            if group not in self._registered:  # bounded: a wedged hub is HubNotFoundError
                if not hub.registry().route(cid).registered:
                    hub.register(GroupSpec.normal(group))
                self._registered.add(group)
            rl = rayplex.get_logger(cid, hub=hub.name)
            self._clients[cid] = rl
            # The session made by get_logger registered its own atexit (close); ours must run
            # before it (atexit is last-in first-out), so move ours to the end every time.
            atexit.unregister(_flush_all_at_exit)
            atexit.register(_flush_all_at_exit)
            return rl

    def _requests(self, client_id: str | None = None) -> Any:
        """The rayplex Logger for a request to the hub, once the queued rows are appended (so
        that requests and rows reach the files in the order they were made)."""
        self._rows.flush()
        return self._logger(client_id)

    def _delegate(self, name: str) -> Any:
        method = getattr(self._requests(), name, None)
        if method is None:
            raise NotImplementedError(f"rayplex.Logger.{name} is not available in this version "
                                      "of rayplex")
        return method

    # ------------------------------------------------------------------ contexts
    @contextlib.contextmanager
    def Prefix(self, *praefixa: str, metrics: str | bool | None = None,  # noqa: N802
               sep: str = "/") -> Iterator[ML_Logger]:
        """A context with the path prefix joined with ``praefixa`` (``".."`` goes up; another
        prefix is another client), and/or metric keys prefixed with ``metrics + sep``
        (``metrics=False``: no key prefix).

        Example:
            >>> with logger.Prefix(metrics="evaluate"):  # doctest: +SKIP
            ...     logger.log(loss=1.0, flush=True)   # key "evaluate/loss"

        Raises:
            ValueError: if the joined prefix is absolute or leaves the logdir.
        """
        old_prefix, old_metrics = self.prefix, self.metrics_prefix
        if praefixa:
            for part in praefixa:
                if str(part).startswith("/"):
                    _refuse_location("prefix", str(part))
            self.prefix = normalize_prefix("/".join([self.prefix, *map(str, praefixa)]))
        if metrics:
            self.metrics_prefix = str(metrics) + (sep or "")
        elif metrics is False:
            self.metrics_prefix = ""
        try:
            yield self
        finally:
            self.prefix, self.metrics_prefix = old_prefix, old_metrics

    PrefixContext = Prefix

    @contextlib.contextmanager
    def Sync(self, clean: bool = False, **ignored: Any) -> Iterator[ML_Logger]:  # noqa: N802
        """A context on whose exit everything logged is on disk (:meth:`flush`)."""
        yield self
        self.flush()

    SyncContext = Sync
    Async = Sync
    AsyncContext = Sync

    def __enter__(self) -> ML_Logger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()

    # --------------------------------------------------------------- key/values
    def _prefixed(self, values: Mapping[str, Any]) -> dict[str, Any]:
        if not self.metrics_prefix:
            return {str(k): v for k, v in values.items()}
        return {self.metrics_prefix + str(k): v for k, v in values.items()}

    def log(self, *args: Any, metrics: Mapping[str, Any] | None = None, silent: bool = False,
            sep: str = " ", end: str = "\n", flush: bool | None = None, cache: Any = None,
            file: str | None = None, **key_values: Any) -> None:
        """Add key/values to the current row; positional text is a line of the text log, or of
        ``file`` when no key/values are given (a positional mapping is metrics, as in
        ML-Logger's README). A different ``step`` than
        the row's writes the row first; ``flush=True`` writes it now.

        Example:
            >>> logger.log(step=3, loss=0.5, acc=Color(0.9, "green", percent))  # doctest: +SKIP

        Raises:
            ValueError: if ``file`` is absolute or a bucket URL.
        """
        texts = [a for a in args if not isinstance(a, Mapping)]
        merged: dict[str, Any] = {}
        for a in args:
            if isinstance(a, Mapping):
                merged.update(a)
        merged.update(metrics or {})
        merged.update(key_values)
        if texts:
            # Text alone with ``file=`` is appended to that file; with key/values the file
            # is the row's (ML-Logger's metrics file) and the text goes to the text log.
            self.log_line(*texts, sep=sep, end=end, file=None if merged else file)
        if merged or not texts:
            self.log_metrics(merged, silent=silent, file=file, flush=flush)

    def log_metrics(self, metrics: Mapping[str, Any] | None = None, silent: bool | None = None,
                    cache: Any = None, file: str | None = None, flush: bool | None = None,
                    **key_values: Any) -> None:
        """ML-Logger's ``log_metrics``: :meth:`log` without text."""
        values = self._prefixed({**(metrics or {}), **key_values})
        self._update_row(values, silent=bool(silent), file=file)
        if flush:
            self.flush_metrics()

    def log_key_value(self, *args: Any, cache: Any = None) -> None:
        """``log_key_value(key, value)``, or the old ``log_key_value(step, key, value)``.

        Raises:
            TypeError: for any other number of arguments.
        """
        if len(args) == 3:
            step, key, value = args
            self.log_metrics({key: value, "step": step})
        elif len(args) == 2:
            key, value = args
            self.log_metrics({key: value})
        else:
            raise TypeError("log_key_value takes (key, value) or (step, key, value), got "
                            f"{len(args)} arguments")

    def _update_row(self, values: dict[str, Any], silent: bool, file: str | None = None,
                    summary_keys: Sequence[str] = ()) -> None:
        with self._lock:
            cid = self.client_id
            step = _as_step(values["step"]) if "step" in values else None
            if self._row and (self._row_client != cid or
                              (step is not None and self._row_step is not None
                               and step != self._row_step)):
                self._write_row()
            self._row_client = cid
            if step is not None:
                self._row_step = step
            if file:
                _join(file)
                self._row_file = file
            self._row.update(values)
            if silent:
                self._row_hidden.update(values)
            self._row_summary.update(summary_keys)

    def _next_step(self, cid: str) -> int:
        last = self._last_step.get(cid)
        return 0 if last is None else last + 1

    def _write_row(self, silent: bool | None = None) -> None:
        with self._lock:
            row, cid = self._row, self._row_client
            if not row or cid is None:
                self._clear_row()
                return
            rl = self._logger(cid)  # raises with the row still pending (nothing lost)
            step = self._row_step if self._row_step is not None else self._next_step(cid)
            hidden = set(self._row_hidden) | self._hidden_metrics
            summary_keys, file = set(self._row_summary), self._row_file
            self._clear_row()
            self._last_step[cid] = step
            scalars = {}
            for key, value in row.items():
                if key == "step" or key in summary_keys:
                    continue
                number = _number(value)
                if number is not None:
                    scalars[key] = number
            if scalars:
                rl.add_scalars(scalars, step=step)
            plain = {k: metrify(v) for k, v in row.items()}
            target = file or self.metric_filename
            safe_relpath(target)  # a bad path fails here, not on the row thread
            if target.endswith(".jsonl"):
                self._rows.put(rl.artifacts, target, jsonl_line(plain), framed=False)
            else:
                self._rows.put(rl.artifacts, target, cloudpickle.dumps(plain), framed=True)
            if not silent:
                table = format_tabular(row, sorted(hidden))
                if table:
                    print(table, end="")
            self._hidden_metrics.clear()

    def _clear_row(self) -> None:
        self._row = {}
        self._row_step = None
        self._row_client = None
        self._row_file = None
        self._row_hidden = set()
        self._row_summary = set()

    def flush_metrics(self, cache: Any = None, file: str | None = None,
                      silent: bool | None = None) -> None:
        """Write the pending row now (to ``file`` if given: ``.jsonl`` or a pickle file)."""
        if file:
            _join(file)
            self._row_file = file
        self._write_row(silent=silent)

    def flush(self, cache: Any = None, file: str | None = None) -> None:
        """Write the pending row, then wait until everything logged is on disk at the hub."""
        self.flush_metrics(file=file)
        self._rows.flush()
        if self._hub is not None and self._clients:
            # one barrier covers every client: they share this process's session
            next(iter(self._clients.values())).flush()

    def _flush_at_exit(self) -> None:
        try:
            if self._row:
                self._write_row(silent=True)
                self.flush()  # durable now: a session made during exit gets no atexit call
        except Exception as exc:  # never raise at interpreter exit
            log.warning("rayplex.compat.ml_logger: could not write the last row at exit: %s",
                        exc)

    # ------------------------------------------------------------ stored metrics
    def _cache(self, cache: str | None) -> MetricsCache:
        return self._caches.setdefault(cache, MetricsCache())

    @property
    def summary_cache(self) -> MetricsCache:
        """The default :class:`MetricsCache`."""
        return self._cache(None)

    def store_metrics(self, metrics: Mapping[str, Any] | None = None, silent: bool | None = None,
                      cache: str | None = None, **key_values: Any) -> None:
        """Keep values (nested/ragged lists flattened, None as NaN) for
        :meth:`log_metrics_summary`; the metrics prefix is applied here.

        Raises:
            TypeError: if a value is not a number (nothing of the call is stored).
        """
        values = self._prefixed({**(metrics or {}), **key_values})
        keys = self._cache(cache).store(values)
        if silent:
            self._hidden_metrics.update(f"{k}/mean" for k in keys)

    store = store_metrics

    def store_key_value(self, key: str, value: Any, silent: bool | None = None,
                        cache: str | None = None) -> None:
        """``store_metrics({key: value})``."""
        self.store_metrics({key: value}, silent=silent, cache=cache)

    def peek_stored_metrics(self, *keys: str, len: int = 5,  # noqa: A002
                            print_only: bool = True, cache: str | None = None) -> str:
        """Print (and return) the last ``len`` stored values of each key as columns."""
        table = format_row_table(self._cache(cache).peek(*keys, len=len))
        if print_only:
            print(table, end="")
        else:
            self.log_line(table)
        return table

    def pop(self, key: str, cache: str | None = None, default: Any = None) -> Any:
        """The stored values of ``key`` as an array (``default`` if none); forgets them."""
        return self._cache(cache).pop(key, default)

    def log_metrics_summary(self, key_values: Mapping[str, Any] | None = None,
                            cache: str | None = None, key_stats: Mapping[str, str] | None = None,
                            default_stats: str | None = None, silent: bool = False,
                            flush: bool = True, **key_modes: str) -> dict[str, float]:
        """Summarize the stored values (ML-Logger's ``<key>/mean`` etc., added to the row and
        ``metrics.pkl``; the metrics prefix is not applied again) and hand them to rayplex's
        cluster-wide summary (run ``<group>/summary``) at the row's step. Returns the summary.

        Example:
            >>> for r in (1.0, 3.0): logger.store_metrics(reward=r)  # doctest: +SKIP
            >>> logger.log_metrics_summary(key_values={"step": 10})  # doctest: +SKIP
            {'reward/mean': 2.0}
        """
        stats = {**(key_stats or {}), **key_modes}
        store = self._cache(cache)
        raw = {k: np.asarray(v, dtype=np.float64) for k, v in store.data.items() if v}
        modes = {stats.get(k, default_stats or "mean") for k in raw}
        summary = store.summarize(stats, default_stats)
        extra = self._prefixed(dict(key_values or {}))
        with self._lock:
            cid = self.client_id
            step = _as_step(extra["step"]) if "step" in extra else None
            if step is None:
                pending = self._row_step if self._row and self._row_client == cid else None
                step = pending if pending is not None else self._next_step(cid)
            if raw:
                rl = self._logger()
                rl.store_metrics(raw)
                rl.log_metrics_summary(step=step, stats=rayplex_stats(sorted(modes)))
            self._update_row({**summary, **extra}, silent=silent, summary_keys=list(summary))
            if self._row_step is None:
                self._row_step = step
            if flush:
                self._write_row(silent=silent)
        return summary

    # ------------------------------------------------------------------ params
    def log_params(self, path: str = "parameters.pkl", silent: bool = False,
                   **namespaces: Any) -> None:
        """Print the parameters table, append the namespaces to ``parameters.pkl`` (as
        ML-Logger) and store the mapping ones as rayplex params (``rayplex.read_params``,
        TensorBoard's HParams tab).

        Example:
            >>> logger.log_params(Args={"lr": 1e-3, "seed": 1})  # doctest: +SKIP
        """
        plain = {k: metrify(v) for k, v in namespaces.items()}
        if not silent:
            print(format_params_table(namespaces), end="")
        rl = self._requests()
        mappings = {k: v for k, v in plain.items() if isinstance(v, Mapping)}
        if mappings:
            rl.log_params(**mappings)
        rl.save_pkl(plain, _join(path), append=True)

    log_parameters = log_params

    def read_params(self, *keys: str, path: str = "parameters.pkl", not_exist_ok: bool = False,
                    **kwargs: Any) -> Any:
        """ML-Logger's ``read_params``: every ``log_params`` call merged, dot-flattened; one
        key gives its value (a namespace gives its dict), several a tuple, none the whole flat
        dict. ``default=`` answers a missing key.

        Raises:
            FileNotFoundError: if nothing was logged (unless ``not_exist_ok``).
            KeyError: for a missing key without ``default``.
        """
        chunks = self.load_pkl(path)
        if chunks is None:
            if not not_exist_ok:
                raise FileNotFoundError(f"no parameters at {path!r} for prefix {self.prefix!r}")
            chunks = []
        merged: dict[str, Any] = {}
        for chunk in chunks:
            merged = deep_merge(merged, chunk)
        flat = flatten(merged, sep=".")  # ML-Logger's dotted look-up: "Args.lr"

        def value(key: str) -> Any:
            if key in flat:
                return flat[key]
            if key in merged:
                return merged[key]
            if "default" in kwargs:
                return kwargs["default"]
            raise KeyError(f"{key!r} is not among the parameters {sorted(flat)}")

        if len(keys) > 1:
            return tuple(value(k) for k in keys)
        if keys:
            return value(keys[0])
        return flat

    get_parameters = read_params

    def read_metrics(self, *keys: str, path: str = "metrics.pkl") -> Any:
        """The rows written to ``metrics.pkl`` as a pandas DataFrame; one key gives that column
        without its missing values (index from 0), several a list of such columns. None if
        nothing was written."""
        import pandas as pd

        rows = self.load_jsonl(path) if path.endswith(".jsonl") else self.load_pkl(path)
        if rows is None:
            return None
        frame = pd.DataFrame(rows)
        if not keys:
            return frame
        columns = [frame[k].dropna().reset_index(drop=True) if k in frame else None
                   for k in keys]
        return columns[0] if len(keys) == 1 else columns

    get_dataframe = read_metrics

    # ------------------------------------------------------------------ pickles
    def save_pkl(self, data: Any, *keys: str, path: str | None = None, append: bool = False,
                 use_dill: bool = False) -> str:
        """Pickle ``data`` (cloudpickle: lambdas too, so ``use_dill`` is not needed) to the
        path; ``append=True`` adds it to what is there. Returns the path.

        Raises:
            ValueError: for an absolute, ``//`` or bucket path.
        """
        import cloudpickle

        from rayplex.artifacts import encode_chunk

        target = _join(*keys, path) if (keys or path) else "data.pkl"
        rl = self._requests()
        if append:
            rl.save_pkl(data, target, append=True)
        else:
            # One framed chunk, written whole: load_pkl gives [data], and appends can follow.
            rl.save_bytes(encode_chunk(cloudpickle.dumps(data)), target)
        return target

    def log_data(self, data: Any, path: str | None = None, overwrite: bool = False) -> str:
        """Append ``data`` to the pickle file at ``path`` (``overwrite=True`` replaces it)."""
        return self.save_pkl(data, path=path, append=not overwrite)

    def load_pkl(self, *keys: str, start: int | None = None, stop: int | None = None,
                 tries: int = 1, delay: float = 1) -> list[Any] | None:
        """Every object stored at the path, as a list (one per save or append); None if
        there is no such file, as ML-Logger.

        Example:
            >>> data, = logger.load_pkl("weights.pkl")  # doctest: +SKIP
        """
        import cloudpickle

        from rayplex.artifacts import decode_chunks

        try:
            data = self._requests().load_bytes(_join(*keys))
        except FileNotFoundError:
            return None
        chunks, end, problem = decode_chunks(data)
        if chunks and problem is None and end == len(data):
            objects = [cloudpickle.loads(chunk) for chunk in chunks[start:stop]]
        else:
            objects = [cloudpickle.loads(data)][start:stop]
        return objects

    # ------------------------------------------------------------ text and files
    def log_line(self, *args: Any, sep: str = " ", end: str = "\n", flush: bool = True,
                 file: str | None = None, **ignored: Any) -> None:
        """A line of text: into the client's text log (``logs/<group>/main.log``, rayplex's
        ``outputs.log``), or appended to the text file ``file``."""
        text = sep.join(str(a) for a in args)
        if file:
            self._append_text(_join(file), text + end)
        else:
            self._logger().info("%s", text + (end if end != "\n" else ""))

    def print(self, *args: Any, sep: str = " ", end: str = "\n", flush: bool = True,
              file: str | None = None, color: str | None = None, dedent: bool = False,
              **ignored: Any) -> None:
        """Print to stdout (in ``color``) and :meth:`log_line` the same text."""
        text = sep.join(str(a) for a in args)
        if dedent:
            import textwrap

            text = textwrap.dedent(text).lstrip()
        print(_coloured(text, color), end=end)
        self.log_line(text, end=end, file=file)

    def pprint(self, object: Any = None, **kwargs: Any) -> None:  # noqa: A002
        """:meth:`print` of ``pprint.pformat(object)``."""
        from pprint import pformat

        self.print(pformat(object), **kwargs)

    def log_text(self, text: str | None = None, filename: str | None = None,
                 dedent: bool = False, overwrite: bool = False) -> None:
        """Append ``text`` to ``filename`` (default: the text log); ``overwrite`` replaces."""
        if text is None:
            return
        text = str(text)
        if dedent:
            import textwrap

            text = textwrap.dedent(text).lstrip()
        if filename is None:
            self._logger().info("%s", text)
        elif overwrite:
            self._requests().save_text(text, _join(filename))
        else:
            self._append_text(_join(filename), text)

    def _append_text(self, path: str, text: str) -> None:
        # The hub's raw append (as Logger.log_jsonl and capture_error use): one journalled
        # transaction, applied once.
        self._requests().artifacts.append_bytes(path, text.encode("utf-8"))

    def load_text(self, *keys: str) -> str | None:
        """The text stored at the path; None if there is none."""
        try:
            return bytes(self._requests().load_bytes(_join(*keys))).decode("utf-8")
        except FileNotFoundError:
            return None

    def upload_file(self, file_path: str, target_path: str = "files/") -> None:
        """Copy a local file into the store (``target_path`` ending in ``/`` keeps its name)."""
        self._requests().upload_file(file_path, _join(target_path))

    def upload_buffer(self, buffer: bytes, key: str) -> None:
        """Store raw bytes at ``key``."""
        self._requests().save_bytes(bytes(buffer), _join(key))

    def save_json(self, data: Any, file: str) -> None:
        """Store ``data`` as JSON."""
        self._delegate("save_json")(data, _join(file))

    def load_json(self, *keys: str) -> Any:
        """Load a JSON file."""
        return self._delegate("load_json")(_join(*keys))

    def log_jsonl(self, data: Any, key: str, **ignored: Any) -> None:
        """Append ``data`` as one JSON line."""
        self._delegate("log_jsonl")(metrify(data or {}), _join(key))

    def load_jsonl(self, *keys: str, start: int | None = None, stop: int | None = None,
                   **ignored: Any) -> list[Any] | None:
        """Every JSON line of the file; None if there is no such file."""
        try:
            return list(self._delegate("load_jsonl")(_join(*keys)))[start:stop]
        except FileNotFoundError:
            return None

    def save_yaml(self, data: Any, file: str) -> None:
        """Store ``data`` as YAML."""
        self._delegate("save_yaml")(data, _join(file))

    def load_yaml(self, *keys: str, Loader: Any = None) -> Any:  # noqa: N803
        """Load a YAML file (safely)."""
        return self._delegate("load_yaml")(_join(*keys))

    def remove(self, *paths: str) -> Any:
        """Remove files or directories (glob patterns too)."""
        return self._delegate("remove")(*(_join(p) for p in paths))

    def move(self, source: str, to: str) -> Any:
        """Move a file or directory within the prefix."""
        return self._delegate("move")(_join(source), _join(to))

    def duplicate(self, source: str, to: str, **ignored: Any) -> Any:
        """Copy a file or directory within the prefix."""
        return self._delegate("duplicate")(_join(source), _join(to))

    def glob(self, query: str, wd: str | None = None, recursive: bool = True,
             start: int | None = None, stop: int | None = None) -> list[str]:
        """Paths under the prefix (or under ``wd`` in it) that match ``query``, relative to it.

        Raises:
            ValueError: for an absolute or ``//`` query or ``wd``.
        """
        pattern = _join(wd, query) if wd else _join(query)
        found = [str(p) for p in self._delegate("glob")(pattern)]
        if wd:
            base = _join(wd).strip("/") + "/"
            found = [p[len(base):] if p.startswith(base) else p for p in found]
        return sorted(found)[start:stop]

    def upload_dir(self, dir_path: str, target: str, excludes: Sequence[str] = (),
                   archive: str = "tar", temp_dir: str | None = None) -> Any:
        """Archive a local directory into the store as ``target`` (a ``.tar``)."""
        return self._delegate("upload_dir")(dir_path, _join(target), excludes=tuple(excludes))

    def download_dir(self, source_path: str, to: str, unpack: str = "tar") -> Any:
        """Unpack a stored archive into the local directory ``to``."""
        return self._delegate("download_dir")(_join(source_path), to)

    def make_archive(self, *args: Any, **kwargs: Any) -> Any:
        """Refused by design (``ValueError``): archives are made of local directories with
        :meth:`upload_dir`."""
        raise ValueError("make_archive() is refused by design: it runs on ML-Logger's server; "
                         "use upload_dir")

    def shell(self, command: str, wd: str = "") -> Any:
        """Refused by design (``ValueError``): rayplex runs no shell for its clients."""
        raise ValueError("shell() is refused by design: rayplex runs no remote shell")

    # ------------------------------------------------------------------ media
    def save_image(self, image: Any, key: str, cmap: str | None = None,
                   normalize: Any = None, dtype: Any = None) -> str:
        """Store an image file (2-D grayscale too; ``cmap``/``normalize`` as ML-Logger)."""
        options: dict[str, Any] = {}
        if cmap is not None:
            options["cmap"] = cmap
        if normalize not in (None, False):
            options["normalize"] = normalize
        self._requests().save_image(image, _join(key), **options)
        return key

    def save_images(self, stack: Any, key: str, n_rows: int | None = None,
                    n_cols: int | None = None, cmap: str | None = None, normalize: Any = None,
                    **ignored: Any) -> str:
        """Store a stack of same-shape images as one grid image (``n_rows`` x ``n_cols``)."""
        images = [np.asarray(i) for i in stack]
        if not images:
            raise ValueError("save_images needs at least one image")
        n_cols = n_cols or len(images)
        n_rows = n_rows or -(-len(images) // n_cols)
        h, w = images[0].shape[:2]
        grid = np.zeros((n_rows * h, n_cols * w, *images[0].shape[2:]), dtype=images[0].dtype)
        for i, img in enumerate(images[:n_rows * n_cols]):
            r, c = divmod(i, n_cols)
            grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
        return self.save_image(grid, key, cmap=cmap, normalize=normalize)

    def save_video(self, frame_stack: Any, key: str, format: str | None = None,  # noqa: A002
                   fps: float = 20, **ignored: Any) -> str:
        """Store a video (mp4 by default; ``.gif`` too); grayscale frames are accepted."""
        if format:
            key = f"{key}.{format}"
        elif not os.path.splitext(key)[1]:
            key += ".mp4"
        self._requests().save_video(frame_stack, _join(key), fps=fps)
        return key

    log_video = save_video

    def make_video(self, files: Any, key: str, wd: str | None = None,
                   order: str = "ascending", **options: Any) -> Any:
        """A video of stored images (a glob pattern or a list of paths); None if none match."""
        if isinstance(files, str):
            files = _join(wd, files) if wd else _join(files)
        else:
            files = [_join(wd, f) if wd else _join(f) for f in files]
        return self._delegate("make_video")(files, _join(key), order=order, **options)

    def savefig(self, key: str, fig: Any = None, format: str | None = None,  # noqa: A002
                **kwargs: Any) -> str:
        """Store a matplotlib figure (default: the current one) and close it."""
        return self.save_pyplot(key, fig=fig, format=format, **kwargs)

    def save_pyplot(self, path: str = "plot.png", fig: Any = None,
                    format: str | None = None, close: bool = True,  # noqa: A002
                    **kwargs: Any) -> str:
        """ML-Logger's ``save_pyplot``: format from ``format`` or the extension (png)."""
        import matplotlib.pyplot as plt

        if format:
            path = f"{path}.{format}"
        elif not os.path.splitext(path)[1]:
            path += ".png"
        figure = plt.gcf() if fig is None else fig
        self._requests().savefig(_join(path), figure, **kwargs)
        if close:
            plt.close(figure)
        return path

    # ------------------------------------------------------------------ torch
    def save_module(self, module: Any, path: str = "weights.pkl", **ignored: Any) -> str:
        """Store a torch module's ``state_dict``."""
        self._requests().save_module(module, _join(path))
        return path

    def load_module(self, module: Any, path: str = "weights.pkl", **ignored: Any) -> Any:
        """Load a stored ``state_dict`` into ``module``."""
        return self._requests().load_module(module, _join(path))

    def save_torch(self, obj: Any, *keys: str, path: str | None = None, **ignored: Any) -> str:
        """``torch.save`` of any object."""
        import torch

        target = _join(*keys, path)
        buf = io.BytesIO()
        torch.save(obj, buf)
        self._requests().save_bytes(buf.getvalue(), target)
        return target

    torch_save = save_torch

    def load_torch(self, *keys: str, path: str | None = None, map_location: Any = None,
                   weights_only: bool = True, **kwargs: Any) -> Any:
        """``torch.load`` of what :meth:`save_torch` stored, with ``weights_only=True`` as the
        native :meth:`rayplex.Logger.load_torch`: tensors and plain containers only. A whole
        module needs ``weights_only=False``, which runs the file's code: pass it only for
        files you trust (ML-Logger always unpickles everything)."""
        import torch

        data = self._requests().load_bytes(_join(*keys, path))
        return torch.load(io.BytesIO(data), map_location=map_location,
                          weights_only=weights_only, **kwargs)

    torch_load = load_torch

    def torch_jit_save(self, obj: Any, *keys: str, path: str | None = None,
                       **ignored: Any) -> str:
        """Store a TorchScript module (scripted here if it is a plain module)."""
        target = _join(*keys, path)
        self._delegate("torch_jit_save")(obj, target)
        return target

    def torch_jit_load(self, *keys: str, path: str | None = None, map_location: Any = None,
                       **ignored: Any) -> Any:
        """Load a stored TorchScript module."""
        options = {} if map_location is None else {"map_location": map_location}
        return self._delegate("torch_jit_load")(_join(*keys, path), **options)

    # ------------------------------------------------------- timers and counters
    def every(self, n: int | None = 1, key: str = "default", start_on: int = 0) -> bool:
        """True every ``n``-th call for ``key``."""
        return bool(self._delegate("every")(n, key, start_on=start_on))

    def count(self, key: str = "default") -> int:
        """Count one call for ``key``; returns the count."""
        return int(self._delegate("count")(key))

    def clear(self, key: str = "default") -> None:
        """Forget the counter ``key``."""
        self._delegate("clear")(key)

    def start(self, *keys: str) -> Any:
        """(Re)start timers."""
        return self._delegate("start")(*keys)

    def split(self, *keys: str) -> Any:
        """Seconds since the last split (None the first time); restarts."""
        return self._delegate("split")(*keys)

    def since(self, *keys: str) -> Any:
        """Seconds since the timer's start or last split."""
        return self._delegate("since")(*keys)

    def time(self, key: str = "default", interval: int = 1, **options: Any) -> Any:
        """``with logger.time("upload"):`` times the block and logs the duration."""
        return self._delegate("time")(key, interval=interval, **options)

    @staticmethod
    def now(fmt: str | None = None) -> Any:
        """The local time (a datetime, or formatted with ``fmt``)."""
        return _now(fmt)

    @staticmethod
    def utcnow(fmt: str | None = None) -> Any:
        """The UTC time (a datetime, or formatted with ``fmt``)."""
        return _utcnow(fmt)

    # ------------------------------------------------------------------ runs
    @contextlib.contextmanager
    def capture_error(self, file: str = "error.log", reraise: bool = False) -> Iterator[None]:
        """Write an exception's traceback to the text log and ``error.log``; swallow it unless
        ``reraise``."""
        caught: list[BaseException] = []
        with self._delegate("capture_error")():
            try:
                yield
            except Exception as exc:
                caught.append(exc)
                raise
        if reraise and caught:
            raise caught[0]

    def _job(self, status: str, job: Mapping[str, Any] | None, params: Mapping[str, Any]) -> None:
        # ML-Logger's job_* are log_params(job={..., "status": s, "<s>Time": now}, **params):
        # the native call stores them as rayplex params (job status in `rayplex ls`, get_exps);
        # the same entry, with the same time, is appended to the prefix's parameters.pkl.
        from rayplex.logger_jobs import JOB_STATUSES

        mappings = {k: v for k, v in params.items() if isinstance(v, Mapping)}
        stored = self._delegate(f"job_{status}")(metrify(dict(job or {})), **metrify(mappings))
        time_key = JOB_STATUSES[status]
        entry = {**metrify(dict(job or {})), "status": status, time_key: stored["job"][time_key]}
        chunk = {"job": entry, **{k: metrify(v) for k, v in params.items()}}
        self._requests().save_pkl(chunk, _join("parameters.pkl"), append=True)

    def job_started(self, job: Mapping[str, Any] | None = None, **params: Any) -> None:
        """Mark the run started (extra namespaces are logged as params)."""
        self._job("started", job, params)

    def job_running(self, job: Mapping[str, Any] | None = None, **params: Any) -> None:
        """Mark the run running."""
        self._job("running", job, params)

    def job_completed(self, job: Mapping[str, Any] | None = None, **params: Any) -> None:
        """Mark the run completed."""
        self._job("completed", job, params)

    def job_errored(self, job: Mapping[str, Any] | None = None, **params: Any) -> None:
        """Mark the run errored."""
        self._job("errored", job, params)

    def ping(self, status: str = "running", interval: float | None = None) -> Any:
        """A heartbeat; returns the signals a driver set for this client."""
        ping = self._delegate("ping")
        return ping(status) if interval is None else ping(status, interval)

    def diff(self, *args: Any, **kwargs: Any) -> Any:
        """Store ``git diff HEAD`` of the working directory as an artifact."""
        return self._delegate("diff")()

    @property
    def hostname(self) -> str:
        """This machine's fully qualified host name (ML-Logger's ``hostname -f``)."""
        import socket

        return socket.getfqdn()

    def get_exps(self, *prefixes: str, as_dataframe: bool = True, **ignored: Any) -> Any:
        """The experiments (clients) of the logdir as a DataFrame (params flattened, job
        status). Prefix patterns use ``*``; ``**`` and a trailing ``parameters.pkl`` are
        accepted as in ML-Logger."""
        patterns = [_prefix_pattern(p) for p in prefixes] or ["*"]
        frames = [self._delegate("get_exps")(p) for p in patterns]
        if len(frames) == 1:
            return frames[0]
        import pandas as pd

        return pd.concat(frames, ignore_index=True)

    def _git(self, *args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                 check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    @property
    def __head__(self) -> str | None:  # noqa: PLW3201 - ML-Logger's name
        return self._git("rev-parse", "HEAD")

    @property
    def __current_branch__(self) -> str | None:  # noqa: PLW3201 - ML-Logger's name
        """``git symbolic-ref HEAD`` as ML-Logger: ``'refs/heads/<branch>'``; None when HEAD
        is detached or this is not a git checkout."""
        return self._git("symbolic-ref", "HEAD")

    @property
    def __tags__(self) -> str | None:  # noqa: PLW3201 - ML-Logger's name
        return self._git("describe", "--tags", "--always")


def _prefix_pattern(pattern: str) -> str:
    """An ML-Logger path pattern (``"**/parameters.pkl"``, ``"alice/*"``) as a client-id
    pattern (``"*"``, ``"alice.*/main"``)."""
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if parts and parts[-1].endswith(".pkl"):
        parts = parts[:-1]
    if not parts or all(p in ("*", "**") for p in parts):
        return "*"
    return ".".join("*" if p == "**" else p for p in parts) + "/" + CLIENT_NAME


atexit.register(_flush_all_at_exit)

logger = ML_Logger()
"""The module-level logger, as ``from ml_logger import logger``; connects at first use."""
