"""Nested params and retries, each rule in one place: :func:`flatten`, :func:`deep_merge` and
the retry :class:`Backoff` (pure: no Ray, no I/O).

The flattening rule (what every view of params shows: TensorBoard's HParams, ``rayplex ls`` /
``get_exps``, the trackers a forwarder feeds, the SQL ``params`` view):

- keys are joined with ``"/"`` (``{"Args": {"lr": 0.1}}`` -> ``{"Args/lr": 0.1}``); a key
  that is not a string is written as ``str(key)`` (what JSON, where params are stored, does);
- a nested mapping (any ``Mapping``) is descended into; an **empty** mapping is a leaf with the
  value ``{}``, so a namespace logged empty still shows;
- ``None`` is a leaf with the value ``None`` (it is a value the user logged: never dropped);
- lists, tuples, arrays and every other value are leaves, kept as they are (never indexed
  into); what a consumer cannot show (HParams take bool/number/str) it converts itself.

Example:
    >>> flatten({"Args": {"lr": 0.1, "net": {}, "ckpt": None}, 1: [64, 64]})
    {'Args/lr': 0.1, 'Args/net': {}, 'Args/ckpt': None, '1': [64, 64]}
    >>> deep_merge({"Args": {"lr": 0.1, "seed": 1}}, {"Args": {"lr": 0.2}})
    {'Args': {'lr': 0.2, 'seed': 1}}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rayplex.config import RETRY_START_BACKOFF_S, config
from rayplex.terminal import Color

__all__ = ["SEP", "Backoff", "deep_merge", "drain", "flatten", "flatten_text", "jsonable"]

SEP = "/"
"""The separator of flattened keys."""


def flatten(tree: Mapping[Any, Any], sep: str = SEP, prefix: str = "") -> dict[str, Any]:
    """``tree`` as one level: nested keys joined with ``sep`` (see the module docstring for
    the rule on ``None``, empty mappings, lists and keys that are not strings).

    ``sep="."`` is for ML-Logger's dotted look-ups only (``read_params("Args.lr")``).

    Example:
        >>> flatten({"a": {"b": {"c": 1}}, "d": (1, 2)})
        {'a/b/c': 1, 'd': (1, 2)}
        >>> flatten({"a": {"b": 1}}, sep=".")
        {'a.b': 1}
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, sep, name + sep))
        else:
            out[name] = {} if isinstance(value, Mapping) else value
    return out


def flatten_text(tree: Mapping[Any, Any], prefix: str = "") -> dict[str, str]:
    """:func:`flatten` with every value as text: a string as it is, anything else as JSON
    (``repr`` for what JSON cannot hold) — what trackers' params and the SQL ``params`` view
    store.

    Example:
        >>> flatten_text({"Args": {"lr": 0.001, "layers": [64, 64], "opt": {}, "tag": "x"}})
        {'Args/lr': '0.001', 'Args/layers': '[64, 64]', 'Args/opt': '{}', 'Args/tag': 'x'}
    """
    return {name: value if isinstance(value, str) else json.dumps(value, default=repr)
            for name, value in flatten(tree, prefix=prefix).items()}


def jsonable(value: Any) -> Any:
    """``value`` as what JSON holds, the way params are stored: mapping keys as ``str``,
    tuples as lists, a :class:`rayplex.Color` as its value, numpy scalars and arrays as Python
    numbers and lists, ``None``/bool/int/float/str as they are, anything else as its ``repr``.

    Example:
        >>> import numpy as np
        >>> jsonable({"lr": np.float32(0.5), 1: (1, 2), "f": len})
        {'lr': 0.5, '1': [1, 2], 'f': '<built-in function len>'}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Color):
        return jsonable(value.value)
    if isinstance(value, (np.generic, np.ndarray)):  # 0-d arrays become numbers
        return jsonable(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def deep_merge(base: Mapping[Any, Any], new: Mapping[Any, Any]) -> dict[Any, Any]:
    """A new dict: ``base`` with ``new`` merged in. A mapping merges into a mapping, key by
    key, at every depth; any other value (a list, ``None``, a number) replaces what was there,
    and so does a mapping that meets a non-mapping. Neither argument is changed, and the result
    shares no dict with them.

    Example:
        >>> deep_merge({"a": {"x": 1, "y": [1]}, "b": 1}, {"a": {"y": [2]}, "b": {"c": 2}})
        {'a': {'x': 1, 'y': [2]}, 'b': {'c': 2}}
    """
    out: dict[Any, Any] = {k: _copy(v) for k, v in base.items()}
    for key, value in new.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            out[key] = deep_merge(old, value)
        else:
            out[key] = _copy(value)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    return value


class Backoff:
    """The wait between retries: ``start`` (0.05 s), doubled after each failure, up to
    ``maximum`` (default ``RAYPLEX_RETRY_MAX_BACKOFF_S``); :meth:`reset` after a success.

    Example:
        >>> b = Backoff(maximum=0.2)
        >>> [b.next() for _ in range(4)]
        [0.05, 0.1, 0.2, 0.2]
        >>> b.reset(); b.next()
        0.05
    """

    __slots__ = ("_maximum", "_next", "start")

    def __init__(self, start: float = RETRY_START_BACKOFF_S,
                 maximum: float | None = None) -> None:
        if not start > 0:
            raise ValueError(f"back-off start must be > 0, got {start!r}")
        self.start = start
        self._maximum = maximum
        self._next = start

    @property
    def maximum(self) -> float:
        """The longest wait (read from the configuration when none was given)."""
        return config().retry_max_backoff_s if self._maximum is None else self._maximum

    def next(self) -> float:
        """The wait before the next retry; the one after it is doubled (up to the maximum)."""
        wait = min(self._next, self.maximum)
        self._next = min(self._next * 2, self.maximum)
        return wait

    def sleep(self, sleep: Callable[[float], Any] = time.sleep) -> float:
        """Wait :meth:`next` seconds (back-off between retries, not synchronisation); returns
        the wait."""
        wait = self.next()
        sleep(wait)
        return wait

    def reset(self) -> None:
        """Start again from ``start`` (after a success)."""
        self._next = self.start


def drain(attempt: Callable[[], bool | None], backoff_s: Callable[[], float], timeout: float,
          wait: Callable[[float], Any] = time.sleep) -> bool:
    """Call ``attempt`` until it says there is nothing left (``False``), for at most ``timeout``
    seconds; after a failed round (``None``) wait ``backoff_s()`` (cut short by the deadline).
    True when done, False if ``timeout`` passed first. The followers' (forwarders', store
    feed's) "catch up now".

    Example:
        >>> rounds = iter([True, None, False])
        >>> drain(lambda: next(rounds), lambda: 0.0, timeout=5)
        True
    """
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        busy = attempt()
        if busy is False:
            return True
        if busy is None:
            wait(min(backoff_s(), left))
    return False
