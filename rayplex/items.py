"""What a Logger puts into its session's buffer: one small named tuple per log call.

These never leave the process: the encoder (:mod:`rayplex.encoder`) turns a list of them into
one :class:`~rayplex.records.Batch`. Every kind is a named tuple, except on the hottest path:
``add_scalar`` queues a plain 5-tuple laid out as :class:`Scalar` (building a named tuple costs
~0.13 µs, a third of the call), and the encoder takes a plain ``tuple`` as a scalar.

Example:
    >>> item = Scalar("agent/3", "reward", 10, 1700000000.0, 0.5)
    >>> item.tag, item.step
    ('reward', 10)
"""

from __future__ import annotations

from typing import Any, NamedTuple

SCALAR_NBYTES = 300
"""What one :class:`Scalar` costs in memory: ~250 B queued (the named tuple, its buffer entry,
float and int objects; strings are shared), plus its share of the encoded batch in flight."""
ITEM_OVERHEAD = 200
"""The fixed part of any other item's memory, on top of its payload's length."""


class Scalar(NamedTuple):
    """One scalar of one client (queued by ``add_scalar`` as a plain tuple of these fields)."""

    client_id: str
    tag: str
    step: int
    wall_time: float
    value: float


class Value(NamedTuple):
    """A pre-encoded ``Summary.Value`` without its tag (histogram, image, text, ...), routed
    like a scalar of the same tag."""

    client_id: str
    tag: str
    step: int
    wall_time: float
    payload: bytes


class FixedValue(NamedTuple):
    """Like :class:`Value`, but written with the tag as given into a fixed run (HParams)."""

    client_id: str
    tag: str
    step: int
    wall_time: float
    payload: bytes
    run: str


class Line(NamedTuple):
    """A text-log line (a :data:`rayplex.textlog.WireLine` tuple)."""

    line: tuple[Any, ...]


class PartialItem(NamedTuple):
    """One closed ``store_metrics`` window (a :class:`rayplex.records.Partial`)."""

    partial: Any


Item = Scalar | tuple[str, str, int, float, float] | Value | FixedValue | Line | PartialItem


def line_nbytes(line: tuple[Any, ...]) -> int:
    """Memory of a text line: its message and traceback text, plus the tuple around them."""
    exc = line[7]
    return ITEM_OVERHEAD + 200 + len(line[6]) + (len(exc) if exc else 0)


def nbytes(item: Item) -> int:
    """A realistic estimate of the memory ``item`` holds, for the buffer's byte bound."""
    kind = type(item)
    if kind is Scalar or kind is tuple:
        return SCALAR_NBYTES
    if kind is Value or kind is FixedValue:
        return ITEM_OVERHEAD + len(item.payload)  # type: ignore[union-attr]
    if kind is Line:
        return line_nbytes(item.line)  # type: ignore[union-attr]
    return ITEM_OVERHEAD + 2000 * len(getattr(item.partial, "metrics", ()))  # type: ignore[union-attr]
