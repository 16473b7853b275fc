"""What the Tune and Train callbacks share: finding the experiment, flattening a result into
numbers, and a bounded flush that never raises into Ray's loop.

Example:
    >>> numeric_items({"loss": 0.5, "info": {"lr": 1e-3, "name": "adam"}, "done": False})
    {'loss': 0.5, 'info/lr': 0.001, 'done': 0.0}
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from rayplex.config import CALLBACK_FLUSH_TIMEOUT_S
from rayplex.errors import RayplexError
from rayplex.handle import HubHandle
from rayplex.rules import MAX_TAG_LENGTH

log = logging.getLogger("rayplex")

FLUSH_TIMEOUT_S = CALLBACK_FLUSH_TIMEOUT_S


def connect(logdir: str | os.PathLike[str] | None, hub: str | None) -> HubHandle:
    """The experiment a callback logs into: ``rayplex.init(logdir, name=hub)`` when ``logdir``
    is given (get-or-create), else the running hub ``hub`` (default: ``RAYPLEX_HUB`` or
    ``"default"``).

    Raises:
        HubNotFoundError: if ``logdir`` is None and no such hub runs.
        RayplexError: if neither a logdir is given nor Ray is initialized.
    """
    import ray

    import rayplex

    if logdir is not None:
        return rayplex.init(logdir, name=hub)
    if not ray.is_initialized():
        raise RayplexError("no logdir given and Ray is not initialized: pass a logdir, or call "
                           "rayplex.init(logdir) before creating the callback")
    return HubHandle.connect(hub)


def is_number(value: Any) -> bool:
    """A real number (bool and numpy scalars included), not text, not an array."""
    return isinstance(value, (numbers.Real, np.bool_)) and not isinstance(value, np.ndarray)


def numeric_items(result: Mapping[str, Any], prefix: str = "",
                  skip: frozenset[str] = frozenset()) -> dict[str, float]:
    """Every numeric entry of ``result``, nested mappings flattened with ``/``, as floats;
    other entries (text, lists, arrays, None) and keys that cannot be tags are left out.
    ``skip`` names top-level keys to leave out."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if not prefix and key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_items(value, name + "/"))
        elif is_number(value) and _tag_ok(name):
            out[name] = float(value)
    return out


def _tag_ok(name: str) -> bool:
    return (0 < len(name) <= MAX_TAG_LENGTH and name not in ("/", ".")
            and not any(c in name for c in "\x00\n\r"))


def flush_quietly(logger: Any, timeout: float = FLUSH_TIMEOUT_S) -> None:
    """Flush ``logger``'s process within ``timeout``; a failure is a warning, not an exception
    (the data stays buffered and is resent), so Ray's loop goes on."""
    try:
        logger.flush(timeout)
    except RayplexError as exc:
        log.warning("rayplex: flushing %s failed: %s", logger, exc)


def int_step(value: Any) -> int | None:
    """``value`` as a step if it is an integral number (bool excluded), else None."""
    if isinstance(value, (bool, np.bool_)) or not is_number(value):
        return None
    number = float(value)
    if not number.is_integer() or abs(number) >= 2**63:
        return None
    return int(number)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours its remote error headers)."""
    return _ANSI.sub("", text)
